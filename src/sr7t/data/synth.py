"""Randomised 1.5T-like acquisitions, so the model learns super-resolution, not one simulator.

The lesson of SynthSR: a network trained on widely randomised inputs holds up on real scans of
any contrast and resolution. Every training example gets its own, deterministic per seed:

- anatomy: a random affine (rotation, per-axis scale, shear, flips), a smooth random
  displacement of the sampling grid (up to ``deform_mm``) and a ventricle size (a radial warp
  about the brain's centre, ``ventricle_scale``), so no two examples share a shape;
- appearance: a random monotone intensity map (gamma, then a random piecewise-linear curve:
  any T1w-like contrast keeps CSF < GM < WM), a smooth multiplicative bias and Rician noise;
- acquisition: thick slices along a random axis, spacing drawn from ``slice_mm``, slice profile
  box or Gaussian, with or without a gap; in-plane resolution drawn from ``inplane_mm``.

The target's contrast: see :mod:`sr7t.data.randomised`. Every resolution loss is one linear
operator per axis (:func:`acquisition_matrix`): the tissue is integrated over each slice's
profile at its centre, then interpolated back onto the fine grid (``data.interpolation``:
linear or cubic B-spline; constant beyond the first and last centre). ``sr7t predict`` and the
evaluation bring a scan onto the fine grid with the same interpolation, so what the model sees
in training and inference agrees.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

from sr7t.data.resolution import interpolation_matrix, slice_centres, slice_spacing_matrix

PROFILES = ("box", "gauss")


@dataclass(frozen=True)
class Acquisition:
    """How an input was acquired, in the model's frame (thick axis = the plane's last axis).

    ``slice_mm``: slice spacing; ``thickness_mm``: profile width (box width or Gaussian FWHM;
    ``< slice_mm`` means a gap); ``profile``: ``box`` or ``gauss``; ``offset_mm``: first slice
    centre from the first voxel centre; ``inplane_mm``: in-plane resolution (Gaussian FWHM and
    sampling step).
    """

    slice_mm: float
    thickness_mm: float
    profile: str
    offset_mm: float
    inplane_mm: float

    def as_dict(self) -> dict:
        return asdict(self)


def acquisition_matrix(
    n: int,
    voxel_mm: float,
    spacing_mm: float,
    width_mm: float | None = None,
    profile: str = "box",
    offset_mm: float = 0.0,
    order: int = 1,
) -> np.ndarray:
    """The ``(n, n)`` float64 matrix ``M`` with ``acquired_line = M @ line`` along one axis.

    Samples every ``spacing_mm`` (first centre ``offset_mm`` from the first voxel centre,
    taken modulo the spacing) through a profile of width ``width_mm`` (default: the spacing),
    then interpolates back to the ``n`` voxel centres with spline ``order`` (1 linear, 3
    cubic). A box profile with width equal
    to the spacing is exactly :func:`sr7t.data.resolution.slice_spacing_matrix`. Rows sum to 1;
    ``spacing_mm <= voxel_mm`` with ``width_mm <= voxel_mm`` is the identity.
    """
    width = float(spacing_mm if width_mm is None else width_mm)
    if profile not in PROFILES:
        raise ValueError(f"slice profile must be one of {PROFILES}, got {profile!r}")
    spacing = max(float(spacing_mm), float(voxel_mm))
    if profile == "box" and abs(width - spacing) < 1e-9:
        return slice_spacing_matrix(n, voxel_mm, spacing, offset_mm, order)
    offset = round(offset_mm % spacing, 6)
    return _matrix(int(n), float(voxel_mm), spacing, width, profile, offset, int(order))


@lru_cache(maxsize=512)
def _matrix(n, voxel_mm, spacing, width, profile, offset, order):
    centres = slice_centres(n, voxel_mm, spacing, offset)
    # Integrate the profile over each voxel's extent with 8 sub-samples per voxel.
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    pos = (np.arange(n)[:, None] + sub[None]) * voxel_mm  # (n, 8)
    d = pos[None] - centres[:, None, None]  # (S, n, 8)
    if profile == "box":
        w = (np.abs(d) <= max(width, voxel_mm * 1e-3) / 2).astype(np.float64)
    else:
        sigma = max(width, 1e-3) / (2 * math.sqrt(2 * math.log(2)))
        w = np.exp(-0.5 * (d / sigma) ** 2)
    weights = w.sum(-1)  # (S, n)
    empty = weights.sum(1) <= 0
    nearest = np.clip(np.round(centres / voxel_mm).astype(int), 0, n - 1)
    weights[empty, nearest[empty]] = 1.0
    weights /= weights.sum(1, keepdims=True)
    matrix = interpolation_matrix(centres, n, voxel_mm, order) @ weights
    matrix.setflags(write=False)
    return matrix


def apply_along(volume: np.ndarray, matrix: np.ndarray, axis: int) -> np.ndarray:
    """``matrix`` (n, n) applied to every line of ``volume`` along ``axis`` (float32 out)."""
    moved = np.moveaxis(volume, axis, -1).astype(np.float64, copy=False)
    return np.moveaxis(moved @ matrix.T, -1, axis).astype(np.float32)


def acquire(
    volume: np.ndarray,
    voxel_mm: float,
    acq: Acquisition,
    thick_axis: int,
    inplane_axes,
    order: int = 1,
):
    """``volume`` (fine grid, isotropic ``voxel_mm``) as acquired by ``acq``: thick slices along
    ``thick_axis``, in-plane resolution along each of ``inplane_axes``, brought back onto the
    grid with spline ``order``. Same shape, float32."""
    n = volume.shape[thick_axis]
    thick = acquisition_matrix(
        n, voxel_mm, acq.slice_mm, acq.thickness_mm, acq.profile, acq.offset_mm, order
    )
    out = apply_along(volume, thick, thick_axis)
    if acq.inplane_mm > voxel_mm * 1.01:
        for ax in inplane_axes:
            m = acquisition_matrix(
                out.shape[ax], voxel_mm, acq.inplane_mm, acq.inplane_mm, "gauss", order=order
            )
            out = apply_along(out, m, ax)
    return out


def draw_thick_axis(rng: np.random.Generator, real_fraction: float, balanced: bool) -> int:
    """The thick axis (0, 1, 2 = x, y, z) of a simulated example. Real examples are thick
    along z as acquired (a share ``real_fraction`` of all examples); ``balanced`` draws the
    simulated ones so that every axis is thick in a third of *all* examples (z only as often
    as the real share leaves room for), instead of uniformly, which gives z half of them at a
    real share of 0.25."""
    if not balanced:
        return int(rng.integers(3))
    r = float(real_fraction)
    p_z = max(0.0, (1.0 / 3.0 - r) / (1.0 - r)) if r < 1.0 else 0.0  # r = 1: never drawn
    p_xy = (1.0 - p_z) / 2.0
    return int(rng.choice(3, p=[p_xy, p_xy, p_z]))


def draw_spacing(rng: np.random.Generator, lo: float, hi: float, power: float = 0.0) -> float:
    """A slice spacing in ``[lo, hi]`` with density proportional to ``spacing ** power``: 0
    uniform, 1 twice as many examples at 6 mm as at 3 mm (inverse transform of one uniform
    draw, so the random stream is the same for every power)."""
    if hi <= lo:
        return lo
    u = float(rng.uniform(0.0, 1.0))
    k = power + 1.0  # at power 0: lo + u (hi - lo), numpy's uniform draw to the bit
    return float((lo**k + u * (hi**k - lo**k)) ** (1.0 / k))


def draw_acquisition(
    rng: np.random.Generator, slice_range_mm, inplane_range_mm, voxel_mm: float, cfg: dict
) -> Acquisition:
    """A random acquisition: spacing in ``slice_range_mm`` (never finer than the grid;
    uniform, or weighted towards thick slices by ``cfg["slice_power"]``: :func:`draw_spacing`),
    in-plane resolution uniform in ``inplane_range_mm`` (never coarser than the slice
    spacing) or, for a fraction ``cfg["fine_inplane_fraction"]`` of examples, the grid's own
    (no in-plane blur, like a routine 2-D scan's 1 mm in-plane), profile box or Gaussian,
    and for one example in three a gap. A fraction ``cfg["fine_fraction"]`` of examples is
    acquired at the grid's own resolution (only noise, contrast and bias: the model must
    learn to leave a fine input alone)."""
    fine = float(cfg["fine_fraction"])
    if fine > 0 and rng.random() < fine:  # no draw at 0: earlier examples stay as they were
        return Acquisition(voxel_mm, voxel_mm, "box", 0.0, voxel_mm)
    lo, hi = (max(float(v), voxel_mm) for v in slice_range_mm)
    slice_mm = draw_spacing(rng, lo, hi, float(cfg.get("slice_power", 0.0)))
    ilo, ihi = (max(float(v), voxel_mm) for v in inplane_range_mm)
    ihi = min(ihi, max(slice_mm, ilo))
    inplane = float(rng.uniform(ilo, ihi)) if ihi > ilo else ilo
    fine_inplane = float(cfg.get("fine_inplane_fraction", 0.0))
    if fine_inplane > 0 and rng.random() < fine_inplane:  # no draw at 0, as above
        inplane = voxel_mm  # a 2-D acquisition's in-plane resolution is often the grid's
    gap = float(rng.uniform(*cfg["gap_fraction"])) if rng.random() < 1 / 3 else 0.0
    profile = PROFILES[int(rng.integers(len(PROFILES)))]
    return Acquisition(
        slice_mm=slice_mm,
        thickness_mm=max(slice_mm * (1.0 - gap), voxel_mm),
        profile=profile,
        offset_mm=float(rng.uniform(0.0, slice_mm)),
        inplane_mm=inplane,
    )


def random_contrast(rng: np.random.Generator, x: np.ndarray, gamma_range) -> np.ndarray:
    """A random monotone increasing intensity map of ``x`` (normalised: 1 = the 99th
    percentile), with the map's value at 1 scaled back to 1: gamma, then a random
    piecewise-linear curve blended with the identity. Any T1w-like contrast, tissue order kept."""
    g = float(np.exp(rng.uniform(np.log(gamma_range[0]), np.log(gamma_range[1]))))
    knots_x = np.linspace(0.0, 1.5, 7)
    steps = rng.dirichlet(np.full(len(knots_x) - 1, 2.0))
    knots_y = np.concatenate([[0.0], np.cumsum(steps)]) * 1.5
    blend = float(rng.uniform(0.0, 1.0))

    def lut(v):
        v = np.clip(v, 0.0, None) ** g
        curve = np.interp(v, knots_x, knots_y, right=None)
        beyond = v > knots_x[-1]  # extend the last segment linearly
        if np.any(beyond):
            slope = (knots_y[-1] - knots_y[-2]) / (knots_x[-1] - knots_x[-2])
            curve = np.where(beyond, knots_y[-1] + slope * (v - knots_x[-1]), curve)
        return (1 - blend) * v + blend * curve

    return (lut(x) / max(float(lut(np.array(1.0))), 1e-6)).astype(np.float32)


def smooth_log_bias(rng: np.random.Generator, shape, max_log: float) -> np.ndarray:
    """A smooth random log bias over a block: a random quadratic with max |value| drawn in
    ``[0, max_log]``. float32, ``shape``."""
    xi = [np.linspace(-1, 1, n) for n in shape]
    grids = np.meshgrid(*xi, indexing="ij", sparse=True)
    x, y, z = grids
    terms = [x, y, z, x * y, x * z, y * z, x * x, y * y, z * z]
    field = sum(rng.normal() * t for t in terms)
    field = field - np.mean(field)
    peak = float(np.abs(field).max()) or 1.0
    return (field * (rng.uniform(0.0, max_log) / peak)).astype(np.float32)


def rician(rng: np.random.Generator, x: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of ``x`` plus complex Gaussian noise of standard deviation ``sigma``."""
    if sigma <= 0:
        return x.astype(np.float32)
    re = x + sigma * rng.standard_normal(x.shape).astype(np.float32)
    im = sigma * rng.standard_normal(x.shape).astype(np.float32)
    return np.sqrt(re * re + im * im).astype(np.float32)


def random_linear(rng: np.random.Generator, cfg: dict) -> np.ndarray:
    """A random 3x3 map: rotation about a random axis, per-axis scale, shear and flips."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.deg2rad(rng.uniform(-1, 1) * cfg["rotation_deg"])
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * (k @ k)
    scale = np.diag(rng.uniform(*cfg["scale"], size=3) * rng.choice([-1.0, 1.0], size=3))
    shear = np.eye(3) + np.triu(rng.uniform(-1, 1, (3, 3)) * cfg["shear"], 1)
    return rot @ shear @ scale


def smooth_displacement(
    rng: np.random.Generator, shape, max_vox: float, control: int = 4
) -> np.ndarray:
    """A smooth random displacement (3, *shape) in voxels: Gaussian control values on a
    ``control``-point grid per axis, cubic-spline upsampled; max norm drawn in [0, max_vox]."""
    if max_vox <= 0:
        return np.zeros((3, *shape), np.float32)
    coarse = rng.normal(size=(3, control, control, control))
    # Separable spline matrices: ~50x faster than map_coordinates(order=3) on a patch block.
    mx, my, mz = (_upsample_matrix(int(n), control) for n in shape)
    field = np.einsum("cabd,ia,jb,kd->cijk", coarse, mx, my, mz, optimize=True)
    peak = float(np.linalg.norm(field, axis=0).max()) or 1.0
    return (field * (rng.uniform(0.0, max_vox) / peak)).astype(np.float32)


@lru_cache(maxsize=64)
def _upsample_matrix(n: int, control: int) -> np.ndarray:
    """(n, control) cubic-spline interpolation from ``control`` points spanning ``n`` voxels."""
    from scipy.interpolate import CubicSpline

    if n == 1:
        return np.full((1, control), 1.0 / control)
    knots = np.linspace(0.0, n - 1.0, control)
    m = CubicSpline(knots, np.eye(control), axis=0)(np.arange(n, dtype=np.float64))
    m.setflags(write=False)
    return m


# Width (Gaussian sigma, mm) of the radial warp that changes the ventricles' size: the lateral
# ventricles and the deep grey matter around them lie within about 25 mm of the brain's centre.
VENTRICLE_SIGMA_MM = 20.0


def ventricle_warp(
    coords: np.ndarray, brain_centre_vox, scale: float, voxel_mm: float
) -> np.ndarray:
    """``coords`` (3, ...) pulled towards (``scale`` > 1) or pushed away from (< 1) the
    brain's centre by a radial Gaussian warp: the anatomy sampled there appears ``scale`` times
    larger at the centre (ventricle size) and unchanged far from it. Invertible for scale in
    (0.5, inf)."""
    a = 1.0 - 1.0 / float(scale)
    if a == 0.0:
        return coords
    c = np.asarray(brain_centre_vox, dtype=np.float64).reshape(3, *([1] * (coords.ndim - 1)))
    d = coords - c
    r2 = (d * d).sum(axis=0) * float(voxel_mm) ** 2
    return coords - a * d * np.exp(-r2 / (2.0 * VENTRICLE_SIGMA_MM**2))


def sampling_coords(
    rng: np.random.Generator,
    centre_vox: np.ndarray,
    block_shape,
    frame_axes,
    voxel_mm: float,
    cfg: dict,
    warp: bool = True,
    brain_centre_vox=None,
) -> np.ndarray:
    """Voxel coordinates (3, *block_shape) in the source volume of a block whose axes are the
    source axes ``frame_axes`` (a permutation of 0, 1, 2), centred on ``centre_vox``, with a
    random affine and smooth displacement when ``warp``, and (given ``brain_centre_vox``) a
    ventricle size drawn from ``cfg["ventricle_scale"]`` (:func:`ventricle_warp`)."""
    offsets = np.stack(
        np.meshgrid(*[np.arange(s) - (s - 1) / 2 for s in block_shape], indexing="ij")
    ).reshape(3, -1)
    perm = np.zeros((3, 3))
    for block_ax, src_ax in enumerate(frame_axes):
        perm[src_ax, block_ax] = 1.0
    lin = perm
    disp = 0.0
    if warp:
        lin = random_linear(rng, cfg) @ perm
        disp = smooth_displacement(rng, tuple(block_shape), cfg["deform_mm"] / voxel_mm)
        disp = (perm @ disp.reshape(3, -1)).reshape(3, -1)
    coords = lin @ offsets + disp + np.asarray(centre_vox, dtype=np.float64)[:, None]
    if warp and brain_centre_vox is not None:
        scale = rng.uniform(*cfg.get("ventricle_scale", (1.0, 1.0)))
        coords = ventricle_warp(coords, brain_centre_vox, scale, voxel_mm)
    return coords.reshape(3, *block_shape)


def axis_aligned(cfg: dict) -> dict:
    """``cfg`` without rotation and shear: :func:`sampling_coords` then warps by per-axis
    scale and flips, the smooth displacement and the ventricle size only, so a scan's slices
    stay along the block's axes (the real 1.5T's, with ``warp_real``)."""
    return {**cfg, "rotation_deg": 0.0, "shear": 0.0}


def spacing_in_block(spacing_mm, coords: np.ndarray, frame_axes) -> np.ndarray:
    """The source's voxel size ``spacing_mm`` (x, y, z) as a block of :func:`sampling_coords`
    (``coords`` (3, *block), source axes ``frame_axes`` along its axes) sees it: along each
    block axis the source spacing over the median step, in source voxels, that the block
    takes along that source axis. Unwarped: ``spacing_mm`` permuted to the block's axes."""
    out = []
    for j, src in enumerate(frame_axes):
        step = float(np.median(np.abs(np.diff(coords[src], axis=j))))
        out.append(float(spacing_mm[src]) / max(step, 1e-6))
    return np.array(out)


def sample(volume: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    """``volume`` at voxel coordinates ``coords`` (3, ...); zero outside. float32."""
    return ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=0.0).astype(
        np.float32
    )


def spline_coefficients(volume: np.ndarray) -> np.ndarray:
    """Cubic B-spline coefficients of ``volume`` (float32), for :func:`sample_cubic`: made once
    per volume, so that each example's resampling costs no whole-volume filter."""
    return ndimage.spline_filter(
        np.asarray(volume, dtype=np.float32), order=3, output=np.float32, mode="nearest"
    )


def sample_cubic(coefficients: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """The volume of :func:`spline_coefficients` at voxel coordinates ``coords`` (3, ...) by
    cubic B-spline interpolation (edge values beyond the grid). Unlike linear interpolation it
    does not blur what it resamples off the grid. float32."""
    return ndimage.map_coordinates(
        coefficients, coords, order=3, mode="nearest", prefilter=False
    ).astype(np.float32)


def sample_on_grid(volume: np.ndarray, coefficients: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """What :func:`sample_cubic` returns at whole-voxel ``coords`` (3, ...): inside the grid
    the volume itself (a cubic B-spline passes through its samples), without the 64-tap
    interpolation; beyond it (where the spline extends its coefficients, not the values)
    :func:`sample_cubic` of ``coefficients``. float32."""
    idx = np.rint(coords).astype(np.intp)
    top = np.asarray(volume.shape, dtype=np.intp).reshape(3, *([1] * (idx.ndim - 1))) - 1
    if (idx < 0).any() or (idx > top).any():
        return sample_cubic(coefficients, coords)
    return np.asarray(volume[idx[0], idx[1], idx[2]], dtype=np.float32)
