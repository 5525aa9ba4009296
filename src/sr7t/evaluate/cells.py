"""The evaluation's cells: which input each model gets, and what it is scored against.

A *cell* is one subject x one input. Two kinds:

- ``sim``: the subject's undistorted 1.5T-contrast truth (demo cohorts keep it), with Rician
  noise, acquired with thick slices (box profile) along ``axis`` (0, 1 or 2) at ``slice_mm``
  — or left at the grid's resolution (``axis`` -1, ``slice_mm`` = the voxel size: the
  "no worse than the input" check). Reference: the undistorted 7T truth.
- ``pipeline``: the subject's real 1.5T as the workflow preprocessed it (registered onto the
  7T grid, thick along z as acquired), re-acquired at ``slice_mm`` along z. Reference: the
  undistorted 7T truth where the cohort has one, else the processed 7T.

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
from sr7t.data.synth import rician
from sr7t.io import load_volume

TRUTH_FILES = {"truth_7T": "truth_7T.nii.gz", "truth_1p5T": "truth_1p5T.nii.gz"}
TRUTH_MASK = "brainmask_7T.nii.gz"
AXIS_NAMES = {-1: "iso", 0: "x", 1: "y", 2: "z"}


@dataclass(frozen=True)
class Cell:
    subject: str
    kind: str  # "sim" or "pipeline"
    axis: int  # thick axis; -1: none (isotropic input at the grid's resolution)
    slice_mm: float


def eval_cells(subject: str, has_truth: bool, cfg: dict, native_slice_mm: float) -> list[Cell]:
    """The cells of one subject for evaluation config ``cfg`` (keys ``resolutions_mm``,
    ``axes``, ``isotropic``, ``pipeline``)."""
    cells = []
    if has_truth:
        for axis in cfg["axes"]:
            cells += [Cell(subject, "sim", int(axis), float(r)) for r in cfg["resolutions_mm"]]
        if cfg["isotropic"]:
            cells.append(Cell(subject, "sim", -1, 0.0))
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
    ``thick_axis``, ``slice_mm``, ``inplane_mm`` and the ``reference``/``mask`` to score on.

    ``arrays``: the subject's dataset npz as a dict; ``truth``: :func:`load_truth` or None.
    """
    voxel = np.asarray(arrays["spacing_mm"], dtype=np.float64)
    if cell.kind == "sim":
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
        "reference": reference.astype(np.float32),
        "mask": np.asarray(mask, dtype=bool),
    }
