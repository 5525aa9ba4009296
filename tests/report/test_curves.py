"""The training history each training stage records, and the curves figure drawn from it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from matplotlib.image import imread

from sr7t import paths, stages
from sr7t.report.curves import (
    TrainingHistory,
    draw_training_curves,
    loss_columns,
    save_training_curves,
)


class RecordingTracker:
    """Keeps what a stage logs; tracking is off (no run to describe)."""

    def __init__(self):
        self.metrics = []

    def log_metrics(self, metrics, step=None):
        self.metrics.append((dict(metrics), step))

    def __getattr__(self, name):
        return lambda *a, **k: None


def test_history_passes_every_record_on_and_keeps_one_row_per_step(tmp_path):
    seen = []
    history = TrainingHistory(then=lambda record, step: seen.append((record, step)))
    history({"loss": 0.5, "loss_v": 0.4, "lr": 1e-3, "examples_per_s": 10.0}, 25)
    history({"val_loss": 0.6}, 25)  # the validation loss of the same step: the same row
    history({"loss": 0.25, "loss_v": 0.2, "lr": 5e-4, "examples_per_s": 12.0, "tag": "x"}, 50)
    assert [s for _, s in seen] == [25, 25, 50]  # MLflow still gets every record unchanged
    assert seen[2][0]["tag"] == "x"
    out = history.write(tmp_path / "h" / "history.tsv")
    table = pd.read_csv(out, sep="\t")
    assert list(table.columns) == ["step", "loss", "loss_v", "lr", "examples_per_s", "val_loss"]
    assert list(table["step"]) == [25, 50]
    assert table.loc[0, "val_loss"] == 0.6 and np.isnan(table.loc[1, "val_loss"])
    assert loss_columns(table) == ["loss", "loss_v", "val_loss"]


def test_a_training_stage_writes_its_history_and_run_record(tmp_path):
    """The stage wraps the trainer's metrics callback: the TSV holds what MLflow got."""

    def fake_train(*args, metrics_cb=None, device=None, artifact_cb=None):
        for step in (10, 20, 30):
            metrics_cb({"loss": 1.0 / step, "loss_mse": 0.9 / step, "lr": 0.1}, step)
        metrics_cb({"val_psnr_4mm": 30.0}, 30)
        return {"steps": 30, "seconds": 1.5}

    o = {k: str(tmp_path / f"{k}.out") for k in ("model", "summary", "history", "run")}
    tracker = RecordingTracker()
    job = stages.Job({"cohort": "c"}, tracker=tracker, params={"checkpoints": str(tmp_path)})
    stages._trained(o, job, fake_train)
    history = pd.read_csv(o["history"], sep="\t")
    assert list(history["step"]) == [10, 20, 30]
    np.testing.assert_allclose(history["loss"], [0.1, 0.05, 1 / 30], rtol=1e-5)
    logged = [m for m, s in tracker.metrics if "loss" in m]
    assert len(logged) == 3  # MLflow logging is unchanged
    assert json.loads(open(o["run"]).read())["run_id"] is None  # tracking off: said so


def test_curves_have_one_log_scale_panel_per_model_in_chain_order(tmp_path):
    histories = {}
    for k, model in enumerate(["teacher", "student_stage1", "student_stage2", "regression"]):
        h = TrainingHistory()
        for step in range(10, 110, 10):
            h({"loss": (k + 1) / step, "loss_v": 0.5 / step, "lr": 1e-3}, step)
        h({"val_loss": 0.01}, 100)
        f = paths.path("model_history", tmp_path, cohort="c", model=model)
        histories[model] = h.write(f)
    empty = TrainingHistory()
    empty({"lr": 1e-3}, 1)
    histories["odd"] = empty.write(tmp_path / "odd.tsv")  # no loss: said on its panel
    fig = draw_training_curves(histories)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == [*histories]
    assert all(ax.get_yscale() == "log" for ax in panels[:4])
    assert [t.get_text() for t in panels[0].get_legend().get_texts()] == [
        "loss",
        "loss_v",
        "val_loss",
    ]
    assert panels[4].get_yscale() == "linear" and "no loss" in panels[4].texts[0].get_text()
    png = save_training_curves(histories, tmp_path / "curves.png")
    image = imread(png)
    assert image.shape[0] > 300 and image.shape[1] > 600  # 2 rows x 3 columns of panels
    assert len(np.unique(np.round(image[..., :3].mean(axis=2), 2))) > 10
