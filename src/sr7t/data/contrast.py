"""Contrast maps between the 1.5T and the 7T: super-resolution in the input's own contrast.

With ``data.synth.target_contrast: input`` the network does not translate contrast at all:
its target is the 7T anatomy *in the input's contrast* (the same random intensity map, bias
and all, as the input; for the real 1.5T, the 7T mapped onto the 1.5T's intensities with the
1.5T's own smooth shading), so the residual it predicts is resolution only. The 7T-like
contrast of the final output then comes from one global monotone map, fitted on the training
subjects by matching the quantiles of their 1.5T and 7T inside the brain
(:func:`quantile_map`, stored in the model bundle as ``meta["contrast_map"]``).

Why: inferring an unknown input contrast patch by patch gives spatially varying intensity
errors that no global map can undo; on the validation subject they cost about 1 dB on the
simulated thick-slice inputs, more than the whole resolution gain (README § Benchmarks,
*Validation, sub-05: what the network should learn*).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

N_QUANTILES = 201
SHADING_SIGMA_MM = 15.0  # the smooth 1.5T/7T intensity ratio kept in the real target


def brain_quantiles(volume: np.ndarray, mask: np.ndarray, n: int = N_QUANTILES) -> np.ndarray:
    """``n`` quantiles (0 to 100 %) of ``volume`` inside ``mask``, float64."""
    values = np.asarray(volume)[np.asarray(mask) > 0]
    if values.size == 0:
        raise ValueError("empty brain mask")
    return np.percentile(values.astype(np.float64), np.linspace(0.0, 100.0, n))


def fit_quantile_map(sources: list[np.ndarray], targets: list[np.ndarray], masks) -> dict:
    """The monotone map from the pooled ``sources`` quantiles to the pooled ``targets``
    quantiles (each inside its mask): ``{"from": [...], "to": [...]}``, both non-decreasing."""
    return quantile_map_of(zip(sources, targets, masks, strict=True))


def quantile_map_of(triples) -> dict:
    """:func:`fit_quantile_map` from an iterable of ``(source, target, mask)``, one at a time
    (a generator keeps one subject in memory)."""
    pairs = [(brain_quantiles(s, m), brain_quantiles(t, m)) for s, t, m in triples]
    q_from, q_to = (np.mean([p[i] for p in pairs], 0) for i in (0, 1))
    return {"from": np.maximum.accumulate(q_from).tolist(), "to": q_to.tolist()}


def quantile_map(volume: np.ndarray, cmap: dict) -> np.ndarray:
    """``volume`` through the piecewise-linear monotone map ``cmap`` (clamped at its ends)."""
    q_from = np.asarray(cmap["from"], dtype=np.float64)
    # strictly increasing knots for np.interp: ties would make the map a step
    q_from = q_from + np.arange(q_from.size) * 1e-9
    return np.interp(volume, q_from, np.asarray(cmap["to"], dtype=np.float64)).astype(np.float32)


def target_in_input_contrast(
    target: np.ndarray, t1: np.ndarray, mask: np.ndarray, voxel_mm: float
) -> np.ndarray:
    """The 7T ``target`` in the contrast of the registered 1.5T ``t1`` of the same subject:
    the subject's own 7T-to-1.5T quantile map, times the smooth (``SHADING_SIGMA_MM``) ratio
    of the 1.5T to that mapped 7T inside the brain (residual bias and shading the 1.5T keeps).
    float32, the target's shape."""
    mask = np.asarray(mask) > 0
    cmap = fit_quantile_map([target], [t1], [mask])
    mapped = quantile_map(target, cmap)
    sigma = SHADING_SIGMA_MM / float(voxel_mm)
    weight = ndimage.gaussian_filter(mask.astype(np.float32), sigma)
    num = ndimage.gaussian_filter(np.where(mask, t1, 0.0).astype(np.float32), sigma)
    den = ndimage.gaussian_filter(np.where(mask, mapped, 0.0).astype(np.float32), sigma)
    ok = (weight > 1e-3) & (den > 1e-6)
    ratio = np.ones_like(mapped)
    ratio[ok] = np.clip(num[ok] / den[ok], 0.5, 2.0)
    return (mapped * ratio).astype(np.float32)
