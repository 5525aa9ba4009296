"""The evaluation's side-by-side reportlet: every model on one cell, with error and zoom.

One figure (``eval/montage.png``) for the first held-out subject, at the cell the example
slices and the tissue agreement use (:func:`sr7t.evaluate.run.tissue_cell`: thick along z at
the middle spacing, when the evaluation has one). Columns: the 1.5T input as every model gets
it (linear interpolation of the acquired slices, which is also the ``trilinear`` baseline),
each other model's prediction as the evaluation wrote it, the truth. Second row: each
column's absolute error after the same per-method isotonic intensity map to the scaled truth
that the metrics use (:mod:`sr7t.evaluate.metrics`), on one colour scale. Third row, when a
model wrote one (``evaluate.n_samples`` > 1): the per-voxel standard deviation over its
samples. Every panel carries a zoomed inset (about 2.5x) of the same square, chosen where the
truth has the most edge inside the brain (cortex, usually).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion, uniform_filter

from sr7t.data.dataset import robust_scale

# the metrics' own fit (prediction mapped onto the scaled truth): one definition of "error"
from sr7t.evaluate.metrics import fitted_pair, scale_reference

INPUT_NAME = "1.5T input"
INSET_FRACTION = 0.45  # the inset's side, as a fraction of its panel's
INSET_SIDE_FRACTION = 1 / 6  # the zoomed square's side, as a fraction of the slice's shorter side
MIN_INSET_SIDE = 6  # voxels


@dataclass
class Panel:
    """One column: its title, the displayed slice (scaled to its in-brain 99th percentile),
    its absolute error after the intensity fit (None for the truth) and its samples'
    standard deviation relative to its 99th percentile (None when not written)."""

    title: str
    image: np.ndarray
    error: np.ndarray | None = None
    uncertainty: np.ndarray | None = None


@dataclass
class Montage:
    title: str
    panels: list[Panel]
    mask: np.ndarray
    inset: tuple[int, int, int]  # (row, col, side) of the zoomed square, display coordinates
    notes: list[str] = field(default_factory=list)


def display_slice(volume: np.ndarray, index: int) -> np.ndarray:
    """The coronal plane ``index`` (axis 1) of ``volume``, as shown: superior up."""
    return np.rot90(volume[:, index, :])


def montage_panels(
    inputs: np.ndarray,
    predictions: dict[str, np.ndarray],
    reference: np.ndarray,
    mask: np.ndarray,
    uncertainties: dict[str, np.ndarray] | None = None,
    index: int | None = None,
    title: str = "",
) -> Montage:
    """The panels of one montage from volumes on one grid.

    ``inputs``: the 1.5T input as the models get it; ``predictions``: model -> its output
    (any intensity units, zero outside the mask is fine); ``reference``: the truth;
    ``mask``: the brain mask the metrics use; ``uncertainties``: model -> the standard
    deviation over its samples (same units as its prediction); ``index``: the coronal plane
    (default: the middle one). Errors are ``|fit(pred) - scaled truth|`` with the metrics'
    isotonic fit over the whole box, shown on that plane.
    """
    mask = np.asarray(mask) > 0
    uncertainties = uncertainties or {}
    index = mask.shape[1] // 2 if index is None else int(index)
    ref_scaled = scale_reference(reference, mask)

    def error(volume: np.ndarray) -> np.ndarray:
        fitted, ref = fitted_pair(volume, reference, mask, "isotonic")
        return display_slice(np.where(mask, np.abs(fitted - ref), 0.0), index)

    def shown(volume: np.ndarray) -> np.ndarray:
        return display_slice(np.where(mask, volume, 0.0) / robust_scale(volume, mask), index)

    panels = [Panel(INPUT_NAME, shown(inputs), error(inputs))]
    for name, pred in predictions.items():
        spread = uncertainties.get(name)
        if spread is not None:  # relative to the prediction's own scale, as its image
            spread = display_slice(np.where(mask, spread, 0.0) / robust_scale(pred, mask), index)
        panels.append(Panel(name, shown(pred), error(pred), spread))
    panels.append(Panel("truth", shown(ref_scaled)))
    mask2d = display_slice(mask, index)
    return Montage(title, panels, mask2d, inset_square(panels[-1].image, mask2d))


def inset_square(image: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    """``(row, col, side)`` of the square to magnify: the one with the most edge (gradient
    magnitude of ``image`` inside the eroded ``mask``) among squares mostly in the brain;
    the centre square when none is."""
    h, w = image.shape
    side = max(MIN_INSET_SIDE, int(round(min(h, w) * INSET_SIDE_FRACTION)))
    side = min(side, h, w)
    inner = binary_erosion(mask, iterations=1)
    gy, gx = np.gradient(image.astype(np.float64))
    edge = np.where(inner, np.hypot(gy, gx), 0.0)
    energy = uniform_filter(edge, side, mode="constant")
    coverage = uniform_filter(mask.astype(np.float64), side, mode="constant")
    # uniform_filter centres its window at (i, j): the square's corner is i - side // 2
    lo, hi_r, hi_c = side // 2, h - (side - side // 2), w - (side - side // 2)
    valid = np.zeros_like(coverage, dtype=bool)
    valid[lo : hi_r + 1, lo : hi_c + 1] = True
    valid &= coverage >= 0.6
    if not valid.any():
        return (h - side) // 2, (w - side) // 2, side
    i, j = np.unravel_index(np.argmax(np.where(valid, energy, -1.0)), energy.shape)
    return int(i) - side // 2, int(j) - side // 2, side


def draw_montage(montage: Montage):
    """The figure of ``montage`` (a matplotlib Figure; the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = montage.panels
    with_spread = any(p.uncertainty is not None for p in panels)
    n_rows, n_cols = 3 if with_spread else 2, len(panels)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.3 * n_cols, 2.5 * n_rows), dpi=90, squeeze=False
    )
    errors = [p.error[montage.mask] for p in panels if p.error is not None]
    err_max = max(float(np.percentile(np.concatenate(errors), 99.5)), 1e-6) if errors else 1.0
    spreads = [p.uncertainty[montage.mask] for p in panels if p.uncertainty is not None]
    spread_max = max(float(np.percentile(np.concatenate(spreads), 99.5)), 1e-6) if spreads else 1
    err_image = spread_image = None
    for col, panel in enumerate(panels):
        _show(axes[0, col], panel.image, montage.inset, "gray", 0.0, 1.1, panel.title)
        if panel.error is not None:
            err_image = _show(axes[1, col], panel.error, montage.inset, "inferno", 0.0, err_max)
        else:
            axes[1, col].axis("off")
        if with_spread:
            if panel.uncertainty is not None:
                spread_image = _show(
                    axes[2, col], panel.uncertainty, montage.inset, "viridis", 0.0, spread_max
                )
            else:
                axes[2, col].axis("off")
    axes[1, 0].set_ylabel("|error| after fit", fontsize=8)
    axes[1, 0].axis("on")
    axes[1, 0].set_xticks([])
    axes[1, 0].set_yticks([])
    if err_image is not None:
        fig.colorbar(err_image, ax=axes[1, -1], fraction=0.8, label="|error| (truth's p99 = 1)")
    if spread_image is not None:
        fig.colorbar(spread_image, ax=axes[2, -1], fraction=0.8, label="sample std / p99")
    fig.suptitle(montage.title, fontsize=10)
    fig.tight_layout()
    return fig


def _show(ax, image, inset, cmap, vmin, vmax, title=None):
    """``image`` on ``ax`` with the zoomed square ``inset`` (row, col, side) as an inset in
    the corner across from it."""
    shown = ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    if title:
        ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    row, col, side = inset
    h, w = image.shape
    # in the corner across from the square, so the inset never hides what it magnifies
    left = 0.0 if col + side / 2 > w / 2 else 1 - INSET_FRACTION
    bottom = 1 - INSET_FRACTION if row + side / 2 > h / 2 else 0.0
    zoom = ax.inset_axes([left, bottom, INSET_FRACTION, INSET_FRACTION])
    zoom.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    zoom.set_xlim(col - 0.5, col + side - 0.5)
    zoom.set_ylim(row + side - 0.5, row - 0.5)
    zoom.set_xticks([])
    zoom.set_yticks([])
    for spine in zoom.spines.values():
        spine.set_edgecolor("gold")
    ax.indicate_inset_zoom(zoom, edgecolor="gold", alpha=0.9)
    return shown


def save_montage_figure(
    test_file: str | Path,
    truth_dir: str | Path | None,
    cfg: dict,
    predictions: dict[str, str | Path],
    pred_name: str,
    std_name: str,
    out_png: str | Path,
) -> Path:
    """The montage of the first held-out subject (``test_file``: its dataset npz;
    ``truth_dir``: its demo truth folder or None) at the example cell, from each model's
    predictions folder (``predictions``: model -> folder, in column order) as the evaluation
    wrote it: file names ``pred_name`` and ``std_name`` (``{subject}``, ``{cell}`` fields;
    a missing std file means the model wrote none). ``cfg``: the ``evaluate`` config."""
    from sr7t.data.slices import load_subject
    from sr7t.evaluate.cells import cell_input, eval_cells, load_truth, roi
    from sr7t.evaluate.run import cell_label, tissue_cell
    from sr7t.io import load_volume

    arrays = load_subject(test_file)
    subject = arrays.name
    truth = load_truth(truth_dir, subject, arrays) if truth_dir else None
    cells = eval_cells(subject, truth is not None, cfg, arrays.native_slice_mm)
    cell = tissue_cell(cells) or cells[0]
    label = cell_label(cell)
    inp = cell_input(cell, arrays, truth, float(cfg["noise"]))
    inner = roi(inp["mask"], arrays.spacing_mm, cfg["roi_mm"])
    preds, spreads = {}, {}
    for model, folder in predictions.items():
        if model == "trilinear":  # the input column: the same volume
            continue
        folder = Path(folder)
        preds[model], _ = load_volume(folder / pred_name.format(subject=subject, cell=label))
        std_file = folder / std_name.format(subject=subject, cell=label)
        if std_file.is_file():
            spreads[model], _ = load_volume(std_file)
    reference = "7T truth" if truth is not None else "processed 7T"
    montage = montage_panels(
        inp["t1"][inner],
        preds,
        inp["reference"][inner],
        inp["mask"][inner],
        spreads,
        title=f"{subject}, {label} (coronal; reference: {reference})",
    )
    montage.panels[-1].title = reference
    fig = draw_montage(montage)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out_png
