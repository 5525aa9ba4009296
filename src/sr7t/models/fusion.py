"""Orthogonal-plane fusion: one volume from the predictions of each plane orientation.

A model plane holds the input's thick axis and one of its two in-plane axes, so planes
along frame axis 0 resolve frame axes 1 and 2, planes along frame axis 1 resolve axes 0 and
2 (the thick axis last, :func:`sr7t.models.predict.predict_volume`). Each orientation sees
the in-plane axis across its planes only through its few context slices. Ways to fuse:

- ``mean``: the voxel-wise mean of the orientations (every frequency half from each);
- ``axis``: in the cosine (DCT-II) domain, each frequency ``(f0, f1, f2)`` taken from the
  orientation that resolves its in-plane direction, weight ``|f_resolved| ** p`` over the sum
  of both (``p``: ``fusion_power``): a frequency along frame axis 1 comes from the planes
  along axis 0 and vice versa, a frequency along the thick axis alone half from each. It is
  linear and fixed; a symmetric extension (the cosine transform) keeps box edges free of
  wrap-around;
- ``fba``: Fourier burst accumulation (Delbracio & Sapiro 2015, as SMORE fuses its
  orthogonal-plane outputs): each cosine coefficient weighted by its magnitude ``** p``, so
  the orientation with more energy at a frequency (the sharper one there) wins it.
"""

from __future__ import annotations

import numpy as np

FUSIONS = ("mean", "axis", "fba")
DEFAULT_POWER = {"axis": 2.0, "fba": 4.0}


def fusion_plan(meta: dict) -> tuple[str, float]:
    """(mode, power) of a model's plan: ``meta["fusion"]`` (bundles from before it was
    recorded: ``mean``) and ``meta["fusion_power"]`` (default per mode). Raises
    ``ValueError`` for an unknown mode or a negative power."""
    mode = str(meta.get("fusion", "mean"))
    if mode not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {mode!r}")
    power = meta.get("fusion_power")
    power = DEFAULT_POWER.get(mode, 1.0) if power is None else float(power)
    if power < 0:
        raise ValueError(f"fusion_power must be >= 0, got {power}")
    return mode, power


def with_fusion(meta: dict, fusion: str | None, power: float | None = None) -> dict:
    """``meta`` with its fusion (and power) replaced (None: as it is); checked here, before
    any work."""
    if fusion is None and power is None:
        return meta
    meta = dict(meta)
    if fusion is not None:
        meta["fusion"] = str(fusion)
        meta.pop("fusion_power", None)
    if power is not None:
        meta["fusion_power"] = float(power)
    fusion_plan(meta)
    return meta


def _frequency(n: int) -> np.ndarray:
    """Cycles per voxel of the ``n`` DCT-II coefficients along one axis (0 .. 0.5)."""
    return np.arange(n, dtype=np.float64) / (2.0 * n)


def fuse(parts: list[np.ndarray], axes: list[int], mode: str = "mean", power: float = 1.0):
    """One (X, Y, Z) volume from the predictions ``parts`` of the plane orientations
    ``axes`` (frame axes, 0 or 1, one per part), by ``mode`` (:data:`FUSIONS`). float64."""
    if len(parts) != len(axes) or not parts:
        raise ValueError(f"{len(parts)} predictions for plane axes {axes}")
    if mode not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {mode!r}")
    stack = [np.asarray(p, dtype=np.float64) for p in parts]
    if len(stack) == 1 or mode == "mean":
        return sum(stack) / len(stack)
    from scipy.fft import dctn, idctn

    coeffs = [dctn(p, norm="ortho", workers=1) for p in stack]
    shape = stack[0].shape
    if mode == "axis":
        if sorted(axes) != [0, 1]:
            raise ValueError(f"axis fusion needs plane axes 0 and 1, got {axes}")
        f = (_frequency(shape[0])[:, None, None], _frequency(shape[1])[None, :, None])
        # planes along frame axis a resolve frame axis 1 - a
        weights = [np.broadcast_to(f[1 - a] ** power, shape) for a in axes]
    else:
        weights = [np.abs(c) ** power for c in coeffs]
    total = sum(weights)
    flat = total <= 0  # the thick axis alone (axis) or no energy anywhere (fba): half each
    fused = sum(w * c for w, c in zip(weights, coeffs, strict=True))
    fused = np.where(flat, sum(coeffs) / len(coeffs), fused / np.where(flat, 1.0, total))
    return idctn(fused, norm="ortho", workers=1)
