"""Synthetic paired 1.5T/7T demo cohort, built offline from three source anatomies.

Each subject is a 1 mm source brain (:mod:`sr7t.cohort.anatomy`) with its own head size,
smooth random deformation (a few mm) and tissue contrast. Subjects ``sub-NN`` derive from
the MNI152 2009 template and its GM/WM/brain maps (shipped inside nilearn); the held-out
test subject ``sub-colin27`` derives from Colin27, one real brain (Debian's
``mricron-data``), so evaluation can score an anatomy no training subject derives from.
The validation subject ``sub-inia19`` derives from the INIA19 macaque template scaled to
a human brain's size (the same package): an anatomy of another shape to check choices on.
Without that package the demo says so in one line and goes on without either.

Frames: the *head frame* is the 7T scanner's frame (mm, RAS+, gradient isocentre at the
origin; the template's origin, the anterior commissure, sits at the isocentre). In the
1.5T scanner the head has moved: a head point at ``h`` lies at ``pose @ h`` (a rigid
rotation of a few degrees and a translation of several mm). Each scanner distorts with its
own gradient nonlinearity (GNL) in its own frame.

Per scanner, the recorded value at voxel centre ``q`` is the anatomy at
``p = GNL^-1(q)`` (:func:`sr7t.preprocess.gnl.undistorted_positions_mm`) divided by the GNL
Jacobian there, times a smooth multiplicative bias, plus Rician noise. The 1.5T voxel is
the mean over sub-samples across its slice thickness (a box slice profile), in-plane and
7T voxels are anti-aliased with a Gaussian of the matching width.

The scanner -> template map is smooth, so it is evaluated exactly on a coarse grid (8 mm)
and brought to the voxel grid with a separable cubic spline (error << 0.01 mm; measured in
the tests through the truth pose), which keeps a 6-subject cohort at 2 mm to seconds.

GNL strength: gradunwarp's dummy coil displaces a brain centred at the isocentre by only
~0.3 mm at its edges, so by default the coefficient files are scaled (n >= 2 terms) to
give a maximum displacement over the template brain of ``gnl_max_mm_7t`` (3 mm) and
``gnl_max_mm_1p5t`` (1.5 mm); the scale factors are recorded in ``coeffs.json`` and each
subject's ``truth.json``. ``gnl_max_mm_*=None`` keeps a file's own strength.
"""

from __future__ import annotations

import functools
import math
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from nibabel.affines import voxel_sizes
from scipy import ndimage
from scipy.interpolate import CubicSpline

from sr7t import paths
from sr7t.cohort.anatomy import (
    COLIN27_SUBJECT,
    DESCRIPTIONS,
    INIA19_SUBJECT,
    installed_subjects,
    load_anatomy,
)
from sr7t.io import save_volume, write_json
from sr7t.preprocess import gnl

# Keyword "strengths" of make_demo_cohort with their defaults.
DEFAULT_STRENGTHS: dict[str, float | None] = {
    "deform_mm": 3.0,  # max |smooth deformation| over the brain, mm
    "head_scale_sd": 0.04,  # relative s.d. of the head size
    "rotation_deg": 4.0,  # 1.5T head pose: max |rotation| per axis, degrees
    "translation_mm": 8.0,  # 1.5T head pose: max |translation| per axis, mm
    "bias_7t": 0.35,  # max |log bias| over the brain: exp(±0.35) = 0.70..1.42
    "bias_1p5t": 0.12,  # exp(±0.12) = 0.89..1.13
    "noise_7t": 0.01,  # Rician sigma, relative to white matter (= 1)
    "noise_1p5t": 0.04,
    "contrast_jitter": 0.06,  # relative per-subject jitter of each tissue weight
    "gnl_max_mm_7t": 3.0,  # max GNL displacement over the template brain; None: unscaled
    "gnl_max_mm_1p5t": 1.5,
}
# Tissue weights on the channels (T1 template, GM, WM, CSF): WM ends near 1.
CONTRAST_7T = {"t1": 0.15, "gm": 0.42, "wm": 0.85, "csf": 0.08}
CONTRAST_1P5T = {"t1": 0.25, "gm": 0.55, "wm": 0.75, "csf": 0.22}
CHANNELS = ("t1", "gm", "wm", "csf")
FOV_MARGIN_MM = 10.0  # around the brain bounding box
COARSE_MM = 8.0  # spacing of the exactly evaluated scanner -> template map


def dummy_coefficient_file() -> Path:
    """gradunwarp's shipped dummy Siemens ``.grad`` file."""
    import gradunwarp

    return Path(gradunwarp.__file__).parent / "core" / "tests" / "data" / "gradunwarp_coeffs.grad"


def subject_anatomy(subject: str) -> str:
    """The source anatomy (:data:`sr7t.cohort.anatomy.ANATOMIES`) of demo subject ``subject``."""
    return {COLIN27_SUBJECT: "colin27", INIA19_SUBJECT: "inia19"}.get(subject, "mni152")


@functools.lru_cache(maxsize=4)
def _blurred_channels(anatomy: str, sigma_mm: tuple[float, float, float]) -> np.ndarray:
    """Source channels anti-aliased for a target voxel (source voxels are 1 mm)."""
    channels = load_anatomy(anatomy).channels
    if max(sigma_mm) <= 0.05:
        return channels
    return np.stack([ndimage.gaussian_filter(c, sigma_mm, mode="constant") for c in channels])


def _antialias_sigma(voxel_mm: float) -> float:
    # Box PSF of the target voxel minus the 1 mm box the template already has (variance w^2/12).
    return math.sqrt(max(voxel_mm**2 - 1.0, 0.0) / 12.0)


def _rng(seed: int, subject: str) -> np.random.Generator:
    # Same subject + seed -> same subject, whatever else is in the cohort.
    return np.random.default_rng([seed, zlib.crc32(subject.encode())])


def _rotation(angles_deg: np.ndarray) -> np.ndarray:
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Deformation:
    """Smooth random displacement (mm) of the head frame: a few random Fourier modes with
    wavelengths 50-120 mm, scaled so its max norm over the brain box is ``max_mm``."""

    def __init__(self, rng: np.random.Generator, max_mm: float, bbox_mm: np.ndarray):
        n_modes = 6
        wavelength = rng.uniform(50.0, 120.0, n_modes)
        direction = rng.normal(size=(n_modes, 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        self.k = direction * (2 * np.pi / wavelength)[:, None]  # (modes, 3) rad/mm
        self.phase = rng.uniform(0, 2 * np.pi, n_modes)
        self.amp = rng.normal(size=(3, n_modes))
        grid = np.stack(
            np.meshgrid(*[np.linspace(bbox_mm[0, i], bbox_mm[1, i], 9) for i in range(3)])
        ).reshape(3, -1)
        peak = np.linalg.norm(self(grid), axis=0).max()
        self.amp *= max_mm / peak if peak > 0 else 0.0

    def __call__(self, h: np.ndarray) -> np.ndarray:
        waves = np.sin(self.k @ h + self.phase[:, None])  # (modes, N)
        return self.amp @ waves


def _spline_matrix(coarse: np.ndarray, fine: np.ndarray) -> np.ndarray:
    """(len(fine), len(coarse)) matrix of 1-D cubic-spline interpolation."""
    return CubicSpline(coarse, np.eye(len(coarse)), axis=0)(fine)


def _coarse_axis(fine: np.ndarray, step: float) -> np.ndarray:
    lo, hi = fine.min() - 1.0, fine.max() + 1.0
    n = max(int(math.ceil((hi - lo) / step)) + 1, 4)
    return lo + step * np.arange(n)


def _smooth_map(fn, affine: np.ndarray, axes: list[np.ndarray]) -> np.ndarray:
    """Evaluate ``fn(world points (3, N)) -> (C, N)`` on a coarse grid and interpolate it by a
    separable cubic spline to the (possibly sub-voxel) voxel coordinates ``axes`` (3 arrays).

    Returns (C, len(axes[0]), len(axes[1]), len(axes[2])).
    """
    spacing = voxel_sizes(affine)
    coarse = [_coarse_axis(a, max(COARSE_MM / s, 1.0)) for a, s in zip(axes, spacing, strict=True)]
    vox = np.stack(np.meshgrid(*coarse, indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ vox + affine[:3, 3:4]
    vals = fn(world)
    vals = vals.reshape((vals.shape[0], *[len(c) for c in coarse]))
    # Contracting axis 1 three times cycles (C, a, b, c) -> (C, b, c, X) -> ... -> (C, X, Y, Z).
    for ax in range(3):
        mat = _spline_matrix(coarse[ax], axes[ax]).astype(np.float32)
        vals = np.tensordot(vals.astype(np.float32), mat, axes=([1], [1]))
    return vals


def _bias_field(
    rng: np.random.Generator,
    shape: tuple[int, ...],
    region: np.ndarray,
    log_amplitude: float,
    central: float,
) -> np.ndarray:
    """Smooth multiplicative bias (X, Y, Z): exp of a random quadratic polynomial (plus a
    central bump of relative weight ``central``, B1-like), scaled so that max |log bias| over
    ``region`` is ``log_amplitude`` and its mean there is 0."""
    xi = [np.linspace(-1, 1, n) for n in shape]
    x, y, z = np.meshgrid(*xi, indexing="ij", sparse=True)
    terms = [x, y, z, x * y, x * z, y * z, x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3]
    coef = rng.normal(size=len(terms)) * np.array([1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    log_b = sum(c * t for c, t in zip(coef, terms, strict=True))
    bump = np.exp(-(x * x + y * y + z * z) / (2 * 0.45**2))
    spread = np.ptp(log_b[region]) if np.any(region) else 1.0
    log_b = log_b / max(spread, 1e-6) + central * bump / max(np.ptp(bump[region]), 1e-6)
    log_b = log_b - log_b[region].mean()
    log_b = log_b * (log_amplitude / max(np.abs(log_b[region]).max(), 1e-6))
    return np.exp(log_b).astype(np.float32)


def _rician(clean: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    real = clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    imag = sigma * rng.standard_normal(clean.shape, dtype=np.float32)
    return np.sqrt(real * real + imag * imag).astype(np.float32)


def _grid(lo_mm: np.ndarray, hi_mm: np.ndarray, voxel_mm) -> tuple[tuple[int, ...], np.ndarray]:
    """Axis-aligned (scanner axes) grid covering [lo, hi] mm, centred on the box."""
    voxel = np.broadcast_to(np.asarray(voxel_mm, dtype=np.float64), (3,))
    shape = np.ceil((hi_mm - lo_mm) / voxel).astype(int) + 1
    centre = (lo_mm + hi_mm) / 2
    affine = np.diag([*voxel, 1.0])
    affine[:3, 3] = centre - voxel * (shape - 1) / 2
    return tuple(int(s) for s in shape), affine


def _gnl_scale(coeffs: gnl.GradientCoefficients, target_mm: float | None, brain_pts: np.ndarray):
    if target_mm is None:
        return 1.0, None
    disp, _ = gnl.displacement_at_mm(coeffs, brain_pts)
    peak = float(np.linalg.norm(disp, axis=0).max())
    if peak <= 0:
        return 1.0, 0.0
    return target_mm / peak, peak


def make_demo_cohort(
    raw_dir: str | Path,
    subjects: list[str],
    seed: int,
    voxel_mm_7t: float,
    voxel_mm_1p5t: tuple[float, float, float],
    coef_file: str | None = None,
    workers: int = 1,
    **strengths,
) -> Path:
    """Write a synthetic paired 1.5T/7T cohort into ``raw_dir`` (its raw folder).

    Files (names from :data:`sr7t.paths.DEMO_RAW`, inside ``raw_dir``): ``demo_samples``
    (TSV: subject, scan_1p5T, scan_7T, coef_1p5T, coef_7T, paths relative to the TSV's folder),
    ``demo_scan`` per subject and field, ``scanner_7T.grad``/``scanner_1p5T.grad`` and
    ``coeffs.json`` in ``demo_coeffs_dir``, and per subject in ``demo_truth_dir``:
    ``truth_7T`` (undistorted, unbiased, noise-free, 7T contrast, 7T grid), ``brainmask_7T``,
    ``wm_7T``, ``bias_7T`` (7T grid), ``bias_1p5T`` (1.5T grid), ``truth.json`` (pose 7T
    scanner mm -> 1.5T scanner mm and inverse, contrasts, noise, GNL scales, seed, source
    anatomy), and ``truth_1p5T``: the same undistorted, unbiased, noise-free anatomy as
    ``truth_7T`` but in the subject's own 1.5T contrast (``contrast_1p5T`` in truth.json),
    on the 7T grid in the 7T head frame (voxel-for-voxel aligned with ``truth_7T``) and
    anti-aliased for the 7T voxel like it: the source from which an evaluation simulates
    thick-slice 1.5T-like inputs along any axis, with no pose, GNL, bias or noise.

    ``subjects``: IDs; :data:`sr7t.cohort.anatomy.COLIN27_SUBJECT` derives from Colin27,
    :data:`~sr7t.cohort.anatomy.INIA19_SUBJECT` from INIA19, every other ID from the MNI152
    template (:func:`subject_anatomy`). When Colin27 or INIA19 is not installed that subject
    is left out with one line on stderr.

    ``coef_file``: source ``.grad`` for both scanners (default: gradunwarp's dummy), scaled
    per scanner (see module doc). ``workers``: processes writing subjects side by side (the
    files are the same for any number). ``strengths``: keys of :data:`DEFAULT_STRENGTHS`.
    Deterministic for a seed; returns the samples TSV path.
    """
    unknown = sorted(set(strengths) - set(DEFAULT_STRENGTHS))
    if unknown:
        raise TypeError(
            f"make_demo_cohort: unknown strength(s) {unknown}; known: {sorted(DEFAULT_STRENGTHS)}"
        )
    st = {**DEFAULT_STRENGTHS, **strengths}
    voxel_1p5t = np.asarray(voxel_mm_1p5t, dtype=np.float64)
    if voxel_1p5t.shape != (3,) or np.any(voxel_1p5t <= 0) or voxel_mm_7t <= 0:
        raise ValueError(f"bad voxel sizes: 7T {voxel_mm_7t}, 1.5T {voxel_mm_1p5t}")
    raw_dir = Path(raw_dir)
    subjects = installed_subjects(subjects)
    # The coefficient files are scaled over the MNI brain whatever the cohort's subjects are,
    # so a subject's scans do not depend on which other subjects the cohort holds.
    mni = load_anatomy("mni152")

    # Coefficient files: one per scanner, from one source, each scaled to its strength.
    source = Path(coef_file) if coef_file else dummy_coefficient_file()
    if source.suffix.lower() != ".grad":
        raise gnl.CoefficientFileError(source, "the demo needs a Siemens .grad source file")
    src_coeffs = gnl.read_coefficients(source)
    brain_idx = np.argwhere(mni.mask[::4, ::4, ::4] > 0).T * 4.0
    brain_pts = mni.affine[:3, :3] @ brain_idx + mni.affine[:3, 3:4]
    coeff_dir = paths.inside(raw_dir, "demo_coeffs_dir")
    coeff_dir.mkdir(parents=True, exist_ok=True)
    coef_paths, gnl_info = {}, {"source": str(source)}
    for fld, key in (("7T", "gnl_max_mm_7t"), ("1p5T", "gnl_max_mm_1p5t")):
        scale, unscaled = _gnl_scale(src_coeffs, st[key], brain_pts)
        dst = coeff_dir / f"scanner_{fld}.grad"
        gnl.write_scaled_coefficients(source, dst, scale)
        coef_paths[fld] = dst
        gnl_info[f"scale_{fld}"] = scale
        gnl_info[f"target_max_disp_mm_{fld}"] = st[key]
        gnl_info["unscaled_max_disp_mm"] = unscaled
    gnl_info["note"] = (
        "max displacement over the template brain at the isocentre; the source's own "
        "(unscaled) displacement is unscaled_max_disp_mm"
    )
    write_json(coeff_dir / "coeffs.json", gnl_info)

    tsv = paths.inside(raw_dir, "demo_samples")
    plan = {
        "raw_dir": raw_dir,
        "seed": seed,
        "voxel_mm_7t": voxel_mm_7t,
        "voxel_1p5t": voxel_1p5t,
        "strengths": st,
        "coef_paths": coef_paths,
        "gnl_info": gnl_info,
    }
    rows = _each_subject(plan, subjects, workers)
    tsv.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(tsv, sep="\t", index=False)
    return tsv


# Relative cost of writing a subject in a fresh process: Colin27's includes its Atropos
# segmentation (8.5 s, against about 3 s per subject at the demo's 1.2 mm; 2026-12-06),
# INIA19's its resampling and a 4-class Atropos (13 s to load).
SUBJECT_COST = {"colin27": 4.0, "inia19": 5.0, "mni152": 1.0}


def _each_subject(plan: dict, subjects: list[str], workers: int) -> list[dict]:
    """:func:`_write_subject` for every subject, the subjects dealt to up to ``workers``
    processes by their :data:`SUBJECT_COST` (each process loads an anatomy once); the rows
    in ``subjects``' order. Each subject draws from its own generator, so the files do not
    depend on ``workers``."""
    from sr7t.parallel import call_in_processes

    hands: list[list[str]] = [[] for _ in range(max(min(int(workers), len(subjects)), 1))]
    load = [0.0] * len(hands)
    for subject in sorted(subjects, key=lambda s: -SUBJECT_COST[subject_anatomy(s)]):
        k = load.index(min(load))
        hands[k].append(subject)
        load[k] += SUBJECT_COST[subject_anatomy(subject)]
    dealt = call_in_processes(_write_subjects, [(plan, hand) for hand in hands], len(hands))
    by_subject = {row["subject"]: row for rows in dealt for row in rows}
    return [by_subject[s] for s in subjects]


def _write_subjects(plan: dict, subjects: list[str]) -> list[dict]:
    return [_write_subject(plan, s) for s in subjects]


def _write_subject(plan: dict, subject: str) -> dict:
    """Simulate and write one demo subject (:func:`make_demo_cohort`'s plan); its samples row."""
    raw_dir, seed, st = plan["raw_dir"], plan["seed"], plan["strengths"]
    voxel_mm_7t, voxel_1p5t = plan["voxel_mm_7t"], plan["voxel_1p5t"]
    coef_paths, gnl_info = plan["coef_paths"], plan["gnl_info"]
    scanner_coeffs = {fld: gnl.read_coefficients(f) for fld, f in coef_paths.items()}
    tsv = paths.inside(raw_dir, "demo_samples")
    sigma7 = _antialias_sigma(voxel_mm_7t)
    n_sub = max(3, int(math.ceil(voxel_1p5t[2] / 0.75)))
    sub_thick = voxel_1p5t[2] / n_sub
    sig15 = (
        _antialias_sigma(voxel_1p5t[0]),
        _antialias_sigma(voxel_1p5t[1]),
        _antialias_sigma(sub_thick),
    )
    anatomy = subject_anatomy(subject)
    channels, mask, tmpl_affine, bbox_mm = load_anatomy(anatomy)
    ch7 = _blurred_channels(anatomy, (sigma7,) * 3)
    ch15 = _blurred_channels(anatomy, sig15)
    inv_tmpl = np.linalg.inv(tmpl_affine)
    rng = _rng(seed, subject)
    head_scale = float(np.exp(rng.normal() * st["head_scale_sd"]))
    deform = _Deformation(rng, st["deform_mm"], bbox_mm)
    contrasts = {}
    for fld, base in (("7T", CONTRAST_7T), ("1p5T", CONTRAST_1P5T)):
        jitter = 1 + rng.uniform(-1, 1, len(CHANNELS)) * st["contrast_jitter"]
        contrasts[fld] = {c: float(base[c] * j) for c, j in zip(CHANNELS, jitter, strict=True)}
    angles = rng.uniform(-1, 1, 3) * st["rotation_deg"]
    shift = rng.uniform(-1, 1, 3) * st["translation_mm"]
    pose = np.eye(4)
    pose[:3, :3] = _rotation(angles)
    pose[:3, 3] = shift
    pose_inv = np.linalg.inv(pose)

    def to_template(h, deform=deform, head_scale=head_scale, inv_tmpl=inv_tmpl):
        # head frame (mm) -> template voxel indices; t = h / s + u(h) keeps s = head size
        t = h / head_scale + deform(h)
        return inv_tmpl[:3, :3] @ t + inv_tmpl[:3, 3:4]

    # Subject brain box in the head frame (deformation <= deform_mm) -> scan FOVs.
    lo = bbox_mm[0] * head_scale - st["deform_mm"] - FOV_MARGIN_MM
    hi = bbox_mm[1] * head_scale + st["deform_mm"] + FOV_MARGIN_MM
    shape7, aff7 = _grid(lo, hi, voxel_mm_7t)
    corners = np.stack(np.meshgrid(*zip(lo, hi, strict=True), indexing="ij")).reshape(3, -1)
    moved = pose[:3, :3] @ corners + pose[:3, 3:4]
    shape15, aff15 = _grid(moved.min(1), moved.max(1), voxel_1p5t)

    # 7T: truth (no GNL) and recorded (GNL) from the same template, one interpolation each.
    axes7 = [np.arange(n, dtype=np.float64) for n in shape7]
    c7 = scanner_coeffs["7T"]

    def map7(q, c7=c7, to_template=to_template):
        p, jac = gnl.undistorted_positions_mm(c7, q)
        return np.concatenate([to_template(q), to_template(p), 1.0 / jac[None]])

    m7 = _smooth_map(map7, aff7, axes7)
    w7 = np.array([contrasts["7T"][c] for c in CHANNELS], dtype=np.float32)
    w15 = np.array([contrasts["1p5T"][c] for c in CHANNELS], dtype=np.float32)
    img7 = np.tensordot(w7, ch7, axes=1)
    truth7 = ndimage.map_coordinates(img7, m7[:3].reshape(3, -1), order=1).reshape(shape7)
    # The 1.5T contrast through the same map and 7T anti-aliasing: aligned with truth7.
    truth15 = ndimage.map_coordinates(
        np.tensordot(w15, ch7, axes=1), m7[:3].reshape(3, -1), order=1
    ).reshape(shape7)
    rec7 = ndimage.map_coordinates(img7, m7[3:6].reshape(3, -1), order=1).reshape(shape7)
    rec7 *= m7[6]
    brain7 = ndimage.map_coordinates(mask, m7[:3].reshape(3, -1), order=1).reshape(shape7)
    wm7 = ndimage.map_coordinates(channels[2], m7[:3].reshape(3, -1), order=1)
    brain7, wm7 = brain7 > 0.5, wm7.reshape(shape7) > 0.5
    region7 = rec7 > 0.1 * np.percentile(rec7, 99)
    bias7 = _bias_field(rng, shape7, region7, st["bias_7t"], central=0.8)
    scan7 = _rician(bias7 * rec7, st["noise_7t"], rng)

    # 1.5T: box slice profile = mean of n_sub sub-slices across each thick slice.
    offsets = (np.arange(n_sub) + 0.5) / n_sub - 0.5
    zsub = (np.arange(shape15[2])[:, None] + offsets[None]).reshape(-1)
    axes15 = [np.arange(shape15[0], dtype=np.float64), np.arange(shape15[1], dtype=float), zsub]
    c15 = scanner_coeffs["1p5T"]

    def map15(q, c15=c15, to_template=to_template, pose_inv=pose_inv):
        p, jac = gnl.undistorted_positions_mm(c15, q)
        h = pose_inv[:3, :3] @ p + pose_inv[:3, 3:4]
        return np.concatenate([to_template(h), 1.0 / jac[None]])

    m15 = _smooth_map(map15, aff15, axes15)
    img15 = np.tensordot(w15, ch15, axes=1)
    sub = ndimage.map_coordinates(img15, m15[:3].reshape(3, -1), order=1)
    sub = sub.reshape(m15.shape[1:]) * m15[3]
    rec15 = sub.reshape(*shape15, n_sub).mean(axis=3).astype(np.float32)
    region15 = rec15 > 0.1 * np.percentile(rec15, 99)
    bias15 = _bias_field(rng, shape15, region15, st["bias_1p5t"], central=0.2)
    scan15 = _rician(bias15 * rec15, st["noise_1p5t"], rng)

    # Files.
    scan_paths = {}
    for fld, data, aff in (("7T", scan7, aff7), ("1p5T", scan15, aff15)):
        scan_paths[fld] = paths.inside(raw_dir, "demo_scan", subject=subject, field=fld)
        save_volume(scan_paths[fld], data, aff)
    tdir = paths.inside(raw_dir, "demo_truth_dir", subject=subject)
    save_volume(tdir / "truth_7T.nii.gz", truth7, aff7)
    save_volume(tdir / "truth_1p5T.nii.gz", truth15, aff7)
    save_volume(tdir / "brainmask_7T.nii.gz", brain7.astype(np.float32), aff7)
    save_volume(tdir / "wm_7T.nii.gz", wm7.astype(np.float32), aff7)
    save_volume(tdir / "bias_7T.nii.gz", bias7, aff7)
    save_volume(tdir / "bias_1p5T.nii.gz", bias15, aff15)
    d7, _ = gnl.displacement_at_mm(c7, gnl.voxel_centres_mm(shape7, aff7)[:, brain7])
    write_json(
        tdir / "truth.json",
        {
            "subject": subject,
            "seed": seed,
            "pose_7T_to_1p5T": pose,
            "pose_1p5T_to_7T": pose_inv,
            "pose_note": "world-to-world, mm: a head point at 7T scanner x lies at "
            "pose_7T_to_1p5T @ x in the 1.5T scanner",
            "rotation_deg_xyz": angles,
            "translation_mm": shift,
            "head_scale": head_scale,
            "deform_max_mm": st["deform_mm"],
            "contrast_7T": contrasts["7T"],
            "contrast_1p5T": contrasts["1p5T"],
            "contrast_channels": "t1 = source T1 intensity (0..1), gm/wm/csf = "
            "probability maps; white matter is about 1 at 7T",
            "anatomy": anatomy,
            "anatomy_source": DESCRIPTIONS[anatomy],
            "truth_1p5T": "truth_7T's anatomy and grid in contrast_1p5T (no pose, GNL, "
            "bias, noise; 7T anti-aliasing)",
            "noise": "rician",
            "noise_sigma_7T": st["noise_7t"],
            "noise_sigma_1p5T": st["noise_1p5t"],
            "bias_log_amplitude_7T": st["bias_7t"],
            "bias_log_amplitude_1p5T": st["bias_1p5t"],
            "bias_range_7T": [float(bias7[region7].min()), float(bias7[region7].max())],
            "bias_range_1p5T": [float(bias15[region15].min()), float(bias15[region15].max())],
            "voxel_mm_7T": [float(voxel_mm_7t)] * 3,
            "voxel_mm_1p5T": voxel_1p5t,
            "slice_profile_1p5T": f"box, mean of {n_sub} sub-slices",
            "gnl": {
                **gnl_info,
                "max_disp_mm_7T_in_brain": float(np.linalg.norm(d7, axis=0).max()),
            },
        },
    )
    rel = tsv.parent
    return {
        "subject": subject,
        "scan_1p5T": str(scan_paths["1p5T"].relative_to(rel)),
        "scan_7T": str(scan_paths["7T"].relative_to(rel)),
        "coef_1p5T": str(coef_paths["1p5T"].relative_to(rel)),
        "coef_7T": str(coef_paths["7T"].relative_to(rel)),
    }
