"""Simulate thick-slice acquisitions along one axis.

A thick-slice scan is modelled as a box slice profile: slice ``k`` records the mean of the
tissue within ``[c_k - s/2, c_k + s/2]`` (``s`` = slice thickness = slice spacing, mm), with
slice centres ``c_k = offset + k * s`` measured from the first voxel centre. The volume is
treated as piecewise constant over its voxels (each voxel covers ``[i*v - v/2, i*v + v/2]``,
``v`` = voxel size along the axis), so slice values are overlap-weighted voxel means. The
slices are then interpolated back to the voxel centres, linearly or with a cubic B-spline
(constant beyond the first and last slice centres), so the result has the input's shape and
grid.

The whole operation is linear and acts on each line along the axis independently, so it is one
``(n, n)`` matrix (:func:`slice_spacing_matrix`) shared by the numpy and torch versions.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

# Relative tolerance for "the slice spacing equals the voxel size".
_TOL = 1e-6


def slice_centres(n: int, voxel_mm: float, slice_mm: float, offset_mm: float) -> np.ndarray:
    """Centres (mm from the first voxel centre) of slices every ``slice_mm`` covering ``n``
    voxels of ``voxel_mm``, the first at ``offset_mm`` (in [0, slice_mm)), shifted back by one
    slice when the offset leaves voxel 0 uncovered."""
    length_mm = (n - 1) * voxel_mm
    first = offset_mm - slice_mm if offset_mm > 0 else 0.0
    n_slices = int(np.ceil((length_mm - first) / slice_mm - _TOL)) + 1
    return first + slice_mm * np.arange(n_slices)


INTERPOLATION_ORDER = {"linear": 1, "cubic": 3}


def interpolation_matrix(
    centres: np.ndarray, n: int, voxel_mm: float, order: int = 1
) -> np.ndarray:
    """(n, n_slices) interpolation from equally spaced slice ``centres`` (mm) to the ``n`` voxel
    centres, constant beyond the first and last centre: how every acquired input is brought
    onto the fine grid (training, evaluation and ``sr7t predict`` alike). ``order`` 1: linear;
    3: cubic B-spline (scipy's ``make_interp_spline``, not-a-knot ends)."""
    n_slices = len(centres)
    interp = np.zeros((n, n_slices))
    if n_slices == 1:
        interp[:, 0] = 1.0
        return interp
    pos = np.arange(n) * voxel_mm
    if order != 1:
        from scipy.interpolate import make_interp_spline

        k = min(int(order), n_slices - 1)
        clipped = np.clip(pos, centres[0], centres[-1])
        return make_interp_spline(centres, np.eye(n_slices), k=k, axis=0)(clipped)
    spacing = float(centres[1] - centres[0])
    k = np.clip(np.searchsorted(centres, pos, side="right") - 1, 0, n_slices - 2)
    frac = np.clip((pos - centres[k]) / spacing, 0.0, 1.0)
    interp[np.arange(n), k] = 1.0 - frac
    interp[np.arange(n), k + 1] += frac
    return interp


@lru_cache(maxsize=256)
def _slices_cached(n: int, voxel_mm: float, slice_mm: float, offset_mm: float):
    """Slice centres (mm from the first voxel centre) and the (n_slices, n) averaging weights."""
    if slice_mm < voxel_mm * (1 - _TOL):
        raise ValueError(
            f"slice spacing {slice_mm} mm is finer than the grid's voxel size {voxel_mm} mm: "
            "a thick-slice acquisition cannot be simulated on this grid"
        )
    centres = slice_centres(n, voxel_mm, slice_mm, offset_mm)
    vox_lo = (np.arange(n) - 0.5) * voxel_mm
    vox_hi = vox_lo + voxel_mm
    lo = centres[:, None] - slice_mm / 2
    hi = centres[:, None] + slice_mm / 2
    overlap = np.clip(np.minimum(hi, vox_hi[None]) - np.maximum(lo, vox_lo[None]), 0.0, None)
    # Slices hanging over the edge average only the tissue that exists; a slice centred wholly
    # outside the volume (possible with an offset) repeats the nearest edge voxel.
    empty = overlap.sum(axis=1) <= 0
    nearest = np.clip(np.round(centres / voxel_mm).astype(int), 0, n - 1)
    overlap[empty, nearest[empty]] = 1.0
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    centres.setflags(write=False)
    return centres, weights


@lru_cache(maxsize=256)
def _matrix_cached(
    n: int, voxel_mm: float, slice_mm: float, offset_mm: float, order: int = 1
) -> np.ndarray:
    centres, weights = _slices_cached(n, voxel_mm, slice_mm, offset_mm)
    matrix = interpolation_matrix(centres, n, voxel_mm, order) @ weights
    matrix.setflags(write=False)
    return matrix


def slice_spacing_matrix(
    n: int, voxel_mm: float, slice_mm: float, offset_mm: float = 0.0, order: int = 1
) -> np.ndarray:
    """The ``(n, n)`` float64 matrix ``M`` with ``degraded_line = M @ line``.

    ``n`` voxels of size ``voxel_mm`` along the axis; slices of thickness = spacing
    ``slice_mm`` whose first centre lies ``offset_mm`` (taken modulo ``slice_mm``) from the first
    voxel centre, interpolated back with spline ``order`` (1 or 3). Rows sum to 1. Raises
    ``ValueError`` if ``slice_mm < voxel_mm``.
    """
    key = _geometry_key(n, voxel_mm, slice_mm, offset_mm)
    return _matrix_cached(*key, int(order))


def slice_averaging(
    n: int, voxel_mm: float, slice_mm: float, offset_mm: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """``(centres, weights)`` of the same acquisition as :func:`slice_spacing_matrix`: the
    slice centres (mm from the first voxel centre) and the ``(n_slices, n)`` box-profile
    averaging weights (rows sum to 1; read-only)."""
    return _slices_cached(*_geometry_key(n, voxel_mm, slice_mm, offset_mm))


def _geometry_key(n: int, voxel_mm: float, slice_mm: float, offset_mm: float) -> tuple:
    """The checked geometry as the caches key it, the offset taken modulo ``slice_mm``."""
    if n < 1 or voxel_mm <= 0 or slice_mm <= 0:
        raise ValueError(f"bad geometry: n={n}, voxel_mm={voxel_mm}, slice_mm={slice_mm}")
    offset = float(offset_mm) % float(slice_mm)
    return int(n), float(voxel_mm), float(slice_mm), round(offset, 9)


def simulate_slice_spacing(
    volume: np.ndarray,
    voxel_z_mm: float,
    slice_mm: float,
    axis: int = 2,
    offset_mm: float = 0.0,
    order: int = 1,
) -> np.ndarray:
    """What ``volume`` looks like acquired with slices of thickness = spacing ``slice_mm``.

    ``volume``: array of any dimensionality; ``axis`` is the slice axis, whose voxel size is
    ``voxel_z_mm`` (mm). Returns an array of the same shape (float32 for float32 input, else
    float64), resampled back onto the original grid. ``slice_mm == voxel_z_mm`` is the identity;
    a constant volume stays constant; axes other than ``axis`` are untouched.
    ``order`` is the spline order of the interpolation back onto the grid: 1 (linear, the
    model's training degradation and the ``trilinear`` baseline) or 3 (cubic B-spline, the
    ``bspline`` baseline; constant beyond the first and last slice centres as well).
    """
    volume = np.asarray(volume)
    matrix = slice_spacing_matrix(volume.shape[axis], voxel_z_mm, slice_mm, offset_mm, order)
    dtype = np.float32 if volume.dtype == np.float32 else np.float64
    moved = np.moveaxis(volume, axis, -1).astype(np.float64, copy=False)
    out = moved @ matrix.T
    return np.moveaxis(out, -1, axis).astype(dtype, copy=False)


def simulate_slice_spacing_torch(
    volume: torch.Tensor, voxel_z_mm: float, slice_mm: float, axis: int = -1, offset_mm: float = 0.0
) -> torch.Tensor:
    """Torch version of :func:`simulate_slice_spacing` (same matrix, same semantics).

    Works on any tensor shape and device; computes in the tensor's dtype (float32 typical).
    """
    matrix = slice_spacing_matrix(volume.shape[axis], voxel_z_mm, slice_mm, offset_mm)
    m = torch.tensor(matrix, dtype=volume.dtype, device=volume.device)
    moved = torch.movedim(volume, axis, -1)
    return torch.movedim(moved @ m.T, -1, axis)
