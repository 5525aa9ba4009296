"""Training curves: what each training stage records (``models/<name>/history.tsv``) and the
report figure drawn from those files (``models/training_curves.png``).

A training loop hands its metrics to a callback (``metrics_cb(record, step)``: the loss and
its parts, ``lr`` and ``examples_per_s`` every ``log_every`` steps, ``val_loss`` every
``val_every``, the final whole-volume scores once). :class:`TrainingHistory` is that callback:
it passes each record on (to MLflow) unchanged and keeps a copy, written as one TSV row per
step when training returns. So the report draws the curves from declared files, never from
the tracking store. A training resumed from a checkpoint records the steps after the resume
(the crashed job's MLflow run holds the earlier ones).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Columns of a history that are not losses (plotted on the loss panel they would flatten it).
NOT_LOSSES = ("step", "lr", "examples_per_s")


class TrainingHistory:
    """A ``metrics_cb(record, step)`` that keeps every record and passes it on to ``then``.

    Records of the same step are merged into one row (the training record and the validation
    loss of a step share it). Values that are not numbers are skipped, as MLflow skips them.
    """

    def __init__(self, then: Callable[..., Any] | None = None):
        self.then = then
        self.rows: dict[int, dict[str, float]] = {}

    def __call__(self, record: Mapping[str, Any], step: int | None = None) -> None:
        row = self.rows.setdefault(int(step or 0), {})
        for key, value in record.items():
            try:
                row[str(key)] = float(value)
            except (TypeError, ValueError):
                continue
        if self.then is not None:
            self.then(record, step)

    def table(self) -> pd.DataFrame:
        """One row per step (ascending), a ``step`` column first, then the metrics as first
        seen; NaN where a step did not log a metric."""
        columns: dict[str, None] = {}
        for row in self.rows.values():
            columns.update(dict.fromkeys(row))
        rows = [{"step": s, **self.rows[s]} for s in sorted(self.rows)]
        return pd.DataFrame(rows, columns=["step", *columns])

    def write(self, out_tsv: str | Path) -> Path:
        """The history as a TSV (``step`` then every metric; empty where not logged)."""
        out_tsv = Path(out_tsv)
        out_tsv.parent.mkdir(parents=True, exist_ok=True)
        self.table().to_csv(out_tsv, sep="\t", index=False, float_format="%.6g")
        return out_tsv


def read_history(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t")


def loss_columns(history: pd.DataFrame) -> list[str]:
    """The columns to draw on a loss panel: ``loss`` first, its parts, then ``val_loss``.
    The final whole-volume scores (logged once at the end) are left out: one point each."""
    names = [c for c in history.columns if c not in NOT_LOSSES and "loss" in c]
    names.sort(key=lambda c: (c != "loss", c == "val_loss", c))
    return names


def save_training_curves(histories: Mapping[str, str | Path], out_png: str | Path) -> Path:
    """:func:`draw_training_curves` of ``histories``, saved as a PNG."""
    import matplotlib.pyplot as plt

    fig = draw_training_curves(histories)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def draw_training_curves(histories: Mapping[str, str | Path]):
    """One panel per model (``histories``: model -> history TSV, drawn in the given order:
    the teacher, the distillation stages of the chain, then the rest): its losses against
    the training step, log-scale y. A model whose history holds no loss says so on its panel.
    Returns the matplotlib Figure (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(histories)
    n = max(len(models), 1)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=90, squeeze=False)
    for ax in axes.ravel()[len(models) :]:
        ax.axis("off")
    for ax, model in zip(axes.ravel(), models, strict=False):
        history = read_history(histories[model])
        drawn = False
        for col in loss_columns(history):
            part = history[["step", col]].dropna()
            part = part[part[col] > 0]  # a log axis shows positive values only
            if part.empty:
                continue
            style = {"marker": "o", "linestyle": "--"} if col == "val_loss" else {}
            width = 1.8 if col == "loss" else 1.0
            ax.plot(part["step"], part[col], label=col, linewidth=width, markersize=3, **style)
            drawn = True
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("training step")
        if drawn:
            ax.set_yscale("log")
            ax.set_ylabel("loss (log scale)")
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no loss logged", ha="center", va="center", transform=ax.transAxes)
        ax.grid(alpha=0.3, which="both")
    fig.suptitle("Training and distillation curves (each stage starts from its parent)")
    fig.tight_layout()
    return fig
