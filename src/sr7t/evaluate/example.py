"""The evaluation's reportlet: one model's example slice beside its input and the truth.

Each ``evaluate_model`` job writes one (``eval/<model>/example.png``) so that the report only
assembles declared files. Every model shows the same cell of the first held-out subject
(:func:`sr7t.evaluate.run.tissue_cell`: thick along z at the middle spacing, when the evaluation
has one), so the reportlets line up.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sr7t.data.dataset import robust_scale
from sr7t.io import load_volume


def save_example_figure(
    model_name: str,
    test_file: str | Path,
    truth_dir: str | Path | None,
    cfg: dict,
    pred_pattern: str,
    out_png: str | Path,
) -> Path:
    """A coronal slice of the example cell: the input (trilinear), ``model_name``'s output
    (read back from ``pred_pattern``, as the evaluation wrote it) and the reference (the 7T
    truth, or the processed 7T without one), each scaled to its in-brain 99th percentile.

    ``test_file``: the subject's dataset npz; ``truth_dir``: its demo truth folder or None;
    ``cfg``: the ``evaluate`` config the evaluation ran with.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sr7t.data.slices import load_subject
    from sr7t.evaluate.cells import cell_input, eval_cells, load_truth, roi
    from sr7t.evaluate.run import cell_label, tissue_cell

    arrays = load_subject(test_file)
    subject = arrays.name
    truth = load_truth(truth_dir, subject, arrays) if truth_dir else None
    cells = eval_cells(subject, truth is not None, cfg, arrays.native_slice_mm)
    cell = tissue_cell(cells) or cells[0]
    inp = cell_input(cell, arrays, truth, float(cfg["noise"]))
    inner = roi(inp["mask"], arrays.spacing_mm, cfg["roi_mm"])
    output, _ = load_volume(pred_pattern.format(subject=subject, cell=cell_label(cell)), subject)
    mask = inp["mask"][inner]
    panels = [
        ("input (trilinear)", inp["t1"][inner]),
        (model_name, output),
        ("7T truth" if truth is not None else "processed 7T", inp["reference"][inner]),
    ]
    y = mask.shape[1] // 2
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3.3), dpi=90)
    for ax, (title, vol) in zip(axes, panels, strict=True):
        shown = np.where(mask, vol, 0.0) / robust_scale(vol, mask)
        ax.imshow(np.rot90(shown[:, y, :]), cmap="gray", vmin=0, vmax=1.1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{subject}, {cell_label(cell)}: {model_name}", fontsize=10)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)
