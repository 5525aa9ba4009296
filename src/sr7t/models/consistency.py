"""Slice consistency: make a super-resolved volume agree with the thick slices it came from.

A thick-slice input records, per slice, the mean of the tissue across the slice's thickness
(:mod:`sr7t.data.resolution`'s box profile). A network's output need not: averaged over each
slice again it can drift from what was acquired, most where the slices are thick. This step
corrects each line along the thick axis by the smooth correction (a cubic B-spline through the
slice centres, the interpolation the input itself got) that makes the output's slice means
equal the acquired ones, scaled by ``weight`` (1: exact agreement; 0: no change).

The acquired slice values are recovered from the input as the network receives it (the slices
interpolated onto the fine grid by :func:`sr7t.data.resolution.interpolation_matrix`), by
least squares, so the step needs only the input's slice spacing and the phase of its slices on
the grid. Slices that the line does not wholly hold (at its ends) are not constrained.

It holds only where the input is the target degraded by such slices. On the demo's validation
subjects (sub-05 / sub-inia19, the final students of two seeds) it gained the simulated inputs
(the truth's own anatomy, acquired so) +0.50 / +0.41 dB and lost the real 1.5T 0.87 / 0.39
(README, *Benchmarks*, 2026-12-08): a 1.5T scan is not a degraded 7T, so the workflow leaves
it off (``meta["slice_consistency"]`` 0); ``benchmarks/validate.py --consistency`` measures
it, and the evaluation's ``bspline_consistent`` baseline applies it to B-spline.
"""

from __future__ import annotations

import numpy as np

from sr7t.data.resolution import interpolation_matrix, slice_averaging

# The correction is smoothed in-plane by a Gaussian of this sigma (grid voxels) wherever the
# workflow applies the step (models with slice_consistency on, the bspline_consistent
# baseline), so that the input's noise is not copied back: on the validation subjects 1 voxel
# scored best of 0, 0.5, 1, 1.5, 2, 3 and 5 on simulated inputs (README, *Benchmarks*).
SMOOTH_VOXELS = 1.0


def slice_means_operator(n: int, voxel_mm: float, slice_mm: float, offset_mm: float):
    """``(centres, W, inside)``: the slice centres (mm from the first voxel centre), the
    ``(n_slices, n)`` box-profile averaging weights and which slices lie wholly on the line."""
    centres, weights = slice_averaging(n, voxel_mm, slice_mm, offset_mm)
    lo_edge, hi_edge = -voxel_mm / 2, (n - 1) * voxel_mm + voxel_mm / 2
    tol = 1e-6 * voxel_mm
    inside = (centres - slice_mm / 2 >= lo_edge - tol) & (centres + slice_mm / 2 <= hi_edge + tol)
    return np.asarray(centres), np.asarray(weights), inside


def enforce_slice_means(
    pred: np.ndarray,
    acquired: np.ndarray,
    voxel_mm: float,
    slice_mm: float,
    offset_mm: float = 0.0,
    weight: float = 1.0,
    order: int = 3,
    smooth_voxels: float = 0.0,
) -> np.ndarray:
    """``pred`` corrected along its last axis towards the slice means of ``acquired``.

    ``pred``, ``acquired``: arrays of one shape, the thick axis last (``voxel_mm`` per voxel
    along it); ``acquired`` is the input on the fine grid, interpolated from its slices with
    spline ``order``; slices every ``slice_mm``, the first centred ``offset_mm`` from the
    first voxel centre. ``smooth_voxels``: the correction is smoothed across the other axes
    by a Gaussian of that sigma (voxels; 0: not), so the input's noise is not copied into the
    output. Returns float32 of ``pred``'s shape; lines shorter than three whole slices are
    returned unchanged.
    """
    pred = np.asarray(pred)
    n = pred.shape[-1]
    if weight == 0 or slice_mm <= voxel_mm * (1 + 1e-6):
        return pred.astype(np.float32, copy=False)
    centres, means, inside = slice_means_operator(n, voxel_mm, slice_mm, offset_mm)
    if inside.sum() < 3:
        return pred.astype(np.float32, copy=False)
    lines = pred.reshape(-1, n).astype(np.float64)
    seen = np.asarray(acquired, dtype=np.float64).reshape(-1, n)
    # the acquired slice values: the interpolant's coefficients, fitted to the input's lines
    interp = interpolation_matrix(centres, n, voxel_mm, order)  # (n, n_slices)
    values = np.linalg.lstsq(interp, seen.T, rcond=None)[0]
    kept = centres[inside]
    spread = interpolation_matrix(kept, n, voxel_mm, order)  # (n, k): smooth corrections
    gap = values[inside] - means[inside] @ lines.T  # (k, M): acquired minus the output's means
    coeffs = np.linalg.solve(means[inside] @ spread, gap)
    correction = (spread @ coeffs).T.reshape(pred.shape)
    if smooth_voxels > 0:
        from scipy.ndimage import gaussian_filter

        sigma = [float(smooth_voxels)] * (pred.ndim - 1) + [0.0]
        correction = gaussian_filter(correction, sigma, mode="nearest")
    return (pred + float(weight) * correction).astype(np.float32)
