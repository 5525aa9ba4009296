"""The evaluation's cells: which input each model gets, and what it is scored against.

A *cell* is one subject x one input. Two kinds:

- ``sim``: the subject's undistorted 1.5T-contrast truth (demo cohorts keep it), with Rician
  noise, acquired with thick slices (box profile) along ``axis`` (0, 1 or 2) at ``slice_mm``
  — or left at the grid's resolution (``axis`` -1, ``slice_mm`` = the voxel size: the
  "no worse than the input" check). Reference: the undistorted 7T truth.
- ``pipeline``: the subject's real 1.5T as the workflow preprocessed it (registered onto the
  7T grid, thick along z as acquired), re-acquired at ``slice_mm`` along z. Reference: the
  undistorted 7T truth where the cohort has one, else the processed 7T.

A ``sim`` cell may also carry a named *stress* (:data:`STRESS`): the same truth acquired
otherwise than the main protocol's box-profile slices — another slice profile, a gap, shifted
slices, a coarse in-plane resolution, another contrast, a bias field, more noise, thicker
slices — some inside the training's randomisation, some beyond it. Its rows are the input kind
``stress-<name>`` (``evaluate.stress``), never pooled with ``sim``.

Every model and baseline of a cell sees the same input and is scored on the same grid, region
(:func:`roi`) and mask. The input is built once per cell as acquired slice samples; the
``trilinear`` baseline interpolates them linearly back onto the grid, ``bspline`` with a cubic
B-spline; a model gets the one its training used (``data.interpolation``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sr7t.data.dataset import robust_scale
from sr7t.data.resolution import simulate_slice_spacing
from sr7t.data.synth import Acquisition, acquire, rician
from sr7t.io import load_volume

TRUTH_FILES = {"truth_7T": "truth_7T.nii.gz", "truth_1p5T": "truth_1p5T.nii.gz"}
TRUTH_MASK = "brainmask_7T.nii.gz"
AXIS_NAMES = {-1: "iso", 0: "x", 1: "y", 2: "z"}
STRESS_PREFIX = "stress-"  # the input kind of a stress cell: stress-<name>


@dataclass(frozen=True)
class Stress:
    """One way of acquiring a ``sim`` cell's input otherwise than the main protocol (box
    profile as thick as the spacing, sharp in-plane, the truth's 1.5T contrast, no bias,
    ``evaluate.noise``). ``beyond_training``: outside the ranges the demo's randomised
    training draws from (``data.synth``: gap <= 0.3, gamma 0.6-1.7, |log bias| <= 0.25,
    noise <= 0.08, slices <= 7 mm)."""

    description: str
    beyond_training: bool = False
    slice_mm: float | None = None  # None: evaluate.stress_mm
    thickness: float = 1.0  # profile width over the spacing (< 1: a gap)
    profile: str = "box"
    offset: float = 0.0  # first slice centre, in spacings
    inplane_mm: float | None = None  # Gaussian FWHM in-plane; None: the grid's own
    gamma: float = 1.0  # intensities to this power (another T1w-like contrast)
    bias_log: float = 0.0  # peak |log| of a smooth multiplicative bias field
    noise: float | None = None  # Rician sigma; None: evaluate.noise


STRESS = {
    "gauss": Stress("Gaussian slice profile, FWHM = spacing", profile="gauss"),
    "offset": Stress("slice centres shifted by half a spacing", offset=0.5),
    "inplane": Stress("in-plane resolution 2.5 mm (Gaussian FWHM)", inplane_mm=2.5),
    "bias": Stress("an uncorrected smooth bias field, up to x1.28 (log 0.25)", bias_log=0.25),
    "gap": Stress("slices half as thick as their spacing", True, thickness=0.5),
    "contrast": Stress("another T1w-like contrast: intensities to the power 0.5", True, gamma=0.5),
    "noise": Stress("Rician noise 0.12", True, noise=0.12),
    "thick8": Stress("8 mm slices", True, slice_mm=8.0),
    "routine": Stress(
        "a routine 2-D scan: Gaussian profile, 20 % gap, 2.5 mm in-plane, bias 0.15, noise 0.05",
        profile="gauss",
        thickness=0.8,
        inplane_mm=2.5,
        bias_log=0.15,
        noise=0.05,
    ),
}


@dataclass(frozen=True)
class Cell:
    subject: str
    kind: str  # "sim" or "pipeline"
    axis: int  # thick axis; -1: none (isotropic input at the grid's resolution)
    slice_mm: float
    stress: str = ""  # a name of STRESS (sim cells only); "": the main protocol

    @property
    def input_kind(self) -> str:
        """The metrics' ``input`` column: ``sim``, ``iso``, ``pipeline`` or ``stress-<name>``."""
        if self.stress:
            return STRESS_PREFIX + self.stress
        return "iso" if self.axis < 0 else self.kind


def eval_cells(subject: str, has_truth: bool, cfg: dict, native_slice_mm: float) -> list[Cell]:
    """The cells of one subject for evaluation config ``cfg`` (keys ``resolutions_mm``,
    ``axes``, ``isotropic``, ``pipeline``, and ``stress``/``stress_mm``: each named stress
    along each of ``axes``, at its own spacing or ``stress_mm``)."""
    cells = []
    if has_truth:
        for axis in cfg["axes"]:
            cells += [Cell(subject, "sim", int(axis), float(r)) for r in cfg["resolutions_mm"]]
        if cfg["isotropic"]:
            cells.append(Cell(subject, "sim", -1, 0.0))
        for name in cfg.get("stress") or []:
            if name not in STRESS:
                raise ValueError(f"evaluate.stress: unknown {name!r}, known: {sorted(STRESS)}")
            spacing = STRESS[name].slice_mm or float(cfg["stress_mm"])
            cells += [Cell(subject, "sim", int(axis), spacing, name) for axis in cfg["axes"]]
    if cfg["pipeline"] or not has_truth:
        # never finer than acquired; spacings below it collapse onto one cell
        spacings = sorted({max(float(r), native_slice_mm) for r in cfg["resolutions_mm"]})
        cells += [Cell(subject, "pipeline", 2, r) for r in spacings]
    return cells


def load_truth(truth_dir: str | Path, subject: str, arrays: dict) -> dict:
    """The demo truth of ``subject`` (7T, 1.5T contrast, brain mask) checked to lie on the
    dataset's grid. Raises ``ValueError`` naming the file when it does not."""
    truth_dir = Path(truth_dir)
    out = {}
    for key, name in {**TRUTH_FILES, "mask": TRUTH_MASK}.items():
        data, affine = load_volume(truth_dir / name, subject)
        if data.shape != arrays["mask"].shape or not np.allclose(
            affine, arrays["affine"], atol=1e-3
        ):
            raise ValueError(
                f"subject {subject}: {truth_dir / name} is not on the dataset's grid "
                f"({data.shape} vs {arrays['mask'].shape})"
            )
        out[key] = data
    out["mask"] = out["mask"] > 0.5
    return out


def roi(mask: np.ndarray, spacing_mm: np.ndarray, roi_mm: float | None, margin=0):
    """A box (tuple of slices) of side ``roi_mm`` centred on the brain's bounding-box centre
    (the whole volume when ``roi_mm`` is None), grown by ``margin`` voxels (one number, or
    one per axis) where possible."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    if roi_mm is None:
        lo, hi = np.zeros(3, int), np.array(mask.shape)
    else:
        centre = (lo + hi) // 2
        half = np.ceil(float(roi_mm) / np.asarray(spacing_mm) / 2).astype(int)
        lo, hi = centre - half, centre + half
    lo = np.maximum(lo - margin, 0)
    hi = np.minimum(hi + margin, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))


def context_voxels(cfg: dict, spacing_mm) -> np.ndarray:
    """Voxels of real image around the scored box that a model sees, per axis:
    ``cfg["context_mm"]`` (the ``evaluate`` config) on a grid of ``spacing_mm``; None: the
    whole volume (as a whole-volume ``sr7t predict`` would)."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    if cfg.get("context_mm") is None:
        return np.full(3, 1 << 20)
    return np.ceil(float(cfg["context_mm"]) / spacing).astype(int)


def cell_input(cell: Cell, arrays: dict, truth: dict | None, noise: float) -> dict:
    """The cell's input: ``t1`` (linear back onto the grid, normalised), ``bspline`` (cubic),
    ``thick_axis``, ``slice_mm``, ``inplane_mm``, ``slice_offset_mm`` (the first slice's
    centre from the first voxel centre) and the ``reference``/``mask`` to score on.

    ``arrays``: the subject's dataset npz as a dict; ``truth``: :func:`load_truth` or None.
    """
    voxel = np.asarray(arrays["spacing_mm"], dtype=np.float64)
    offset_mm = 0.0  # the first slice centred on the first voxel (a stress: its own)
    if cell.stress:
        t1, bspline, inplane, offset_mm = _stressed(cell, truth, voxel, noise)
        thick, slice_mm = cell.axis, float(cell.slice_mm)
        reference, mask = truth["truth_7T"], truth["mask"]
    elif cell.kind == "sim":
        seed = [zlib.crc32(cell.subject.encode()), cell.axis + 1, int(cell.slice_mm * 100)]
        rng = np.random.default_rng(seed)
        clean = truth["truth_1p5T"] / robust_scale(truth["truth_1p5T"], truth["mask"])
        noisy = rician(rng, clean.astype(np.float32), noise)
        if cell.axis < 0:
            t1 = bspline = noisy
            thick, slice_mm = 2, float(voxel[2])
        else:
            thick, slice_mm = cell.axis, float(cell.slice_mm)
            t1, bspline = (
                simulate_slice_spacing(noisy, float(voxel[thick]), slice_mm, axis=thick, order=o)
                for o in (1, 3)
            )
        inplane = float(voxel[[a for a in range(3) if a != thick]].max())
        reference, mask = truth["truth_7T"], truth["mask"]
    else:
        native = np.asarray(arrays["native_spacing_mm"], float)
        t1_native = arrays["condition"][0]
        thick, slice_mm = 2, float(cell.slice_mm)
        t1, bspline = (
            simulate_slice_spacing(t1_native, float(voxel[2]), slice_mm, axis=2, order=o)
            for o in (1, 3)
        )
        inplane = float(native[:2].max())
        if truth is not None:
            reference, mask = truth["truth_7T"], truth["mask"]
        else:
            reference, mask = arrays["target"], arrays["mask"] > 0
    scale = robust_scale(t1, mask)
    return {
        "t1": (t1 / scale).astype(np.float32),
        "bspline": (bspline / scale).astype(np.float32),
        "thick_axis": int(thick),
        "slice_mm": slice_mm,
        "inplane_mm": inplane,
        "slice_offset_mm": offset_mm,
        "reference": reference.astype(np.float32),
        "mask": np.asarray(mask, dtype=bool),
    }


def _stressed(cell: Cell, truth: dict, voxel: np.ndarray, noise: float):
    """A stress cell's input (linear and cubic back onto the grid), its in-plane resolution and
    its first slice's offset (mm): the truth's 1.5T contrast, to the stress's power, times its
    bias field, with its Rician noise (its own seed per subject, stress and axis), acquired as
    it says."""
    if len(set(np.round(voxel, 6))) != 1:
        raise ValueError(f"stress cells need an isotropic grid, got voxels {voxel} mm")
    stress = STRESS[cell.stress]
    seed = [zlib.crc32(cell.subject.encode()), zlib.crc32(cell.stress.encode()), cell.axis + 1]
    rng = np.random.default_rng(seed)
    clean = truth["truth_1p5T"] / robust_scale(truth["truth_1p5T"], truth["mask"])
    clean = np.clip(clean, 0.0, None) ** stress.gamma
    if stress.bias_log:
        clean = clean * np.exp(bias_field(clean.shape, stress.bias_log))
    sigma = noise if stress.noise is None else stress.noise
    noisy = rician(rng, clean.astype(np.float32), sigma)
    thick, spacing = cell.axis, float(cell.slice_mm)
    fine_inplane = float(voxel[[a for a in range(3) if a != thick]].max())
    acq = Acquisition(
        slice_mm=spacing,
        thickness_mm=spacing * stress.thickness,
        profile=stress.profile,
        offset_mm=spacing * stress.offset,
        inplane_mm=stress.inplane_mm or fine_inplane,
    )
    inplane_axes = [a for a in range(3) if a != thick]
    t1, bspline = (
        acquire(noisy, float(voxel[0]), acq, thick, inplane_axes, order=o) for o in (1, 3)
    )
    return t1, bspline, max(fine_inplane, acq.inplane_mm), acq.offset_mm


def bias_field(shape, peak_log: float) -> np.ndarray:
    """A fixed smooth log bias over a volume (a tilt along x and y and a bowl along z, the
    shape of a receive coil's falloff), scaled so its largest |value| is ``peak_log``."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij", sparse=True)
    field = 0.6 * x - 0.4 * y + 0.5 * z * z + 0.3 * x * y
    field = field - field.mean()
    return (field * (peak_log / np.abs(field).max())).astype(np.float32)
