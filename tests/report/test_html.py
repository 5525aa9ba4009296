"""The report: assembled from one declarative list of its declared inputs, self-contained."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sr7t import paths
from sr7t.evaluate.run import METRIC_COLUMNS, summary_table
from sr7t.report import html as report_html
from sr7t.report.html import REPORT_SPEC, ReportContext, Reportlet, assemble, write_report
from sr7t.report.runs import DEFAULT_UI_URL, ui_base

COHORT = "c"
LEARNED = ["teacher", "student_stage1"]
MODELS = ["trilinear", "bspline", *LEARNED]
SUBJECTS = ["sub-01", "sub-02", "sub-03"]
PSNR = {"trilinear": 24.0, "bspline": 25.0, "teacher": 27.0, "student_stage1": 26.5}


def _png(path: Path, seed: int = 0) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.random.default_rng(seed).random((12, 16)), cmap="gray")
    return str(path)


def _run_record(path: Path, run_id: str | None, name: str = "") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"run_id": None, "reason": "tracking disabled"}
    if run_id:
        record = {
            "tracking_uri": "sqlite:////x/mlflow.db",
            "experiment_id": "3",
            "experiment": f"sr7t/{COHORT}",
            "run_id": run_id,
            "run_name": name,
            "parent_run_id": "p0",
        }
    path.write_text(json.dumps(record))
    return str(path)


@pytest.fixture
def inputs(tmp_path) -> dict:
    """Every input the report stage declares, small and synthetic, named as the workflow's."""
    root = tmp_path / "results"

    def p(name, **f):
        out = paths.path(name, root, cohort=COHORT, **f)
        out.parent.mkdir(parents=True, exist_ok=True)
        return out

    rng = np.random.default_rng(1)
    rows = []
    for model in MODELS:
        for subject in SUBJECTS:
            for res in (2.5, 4.0):
                row = dict.fromkeys(METRIC_COLUMNS, np.nan)
                psnr = PSNR[model] - res + rng.normal(0, 0.05)
                row |= {"model": model, "resolution_mm": res, "subject": subject}
                row |= {"input": "sim", "axis": "z", "psnr": psnr, "ssim": 0.9, "nmse": 0.01}
                row |= {"hfen": 0.3, "striping": 1.0, "seconds": 0.1 if "linear" in model else 2}
                row |= {"sampling_steps": 0, "params": 0, "macs_per_slice": 0, "warning": ""}
                if model in LEARNED:
                    row |= {"sampling_steps": 8 if model == "teacher" else 4, "params": 1000}
                row["reference"] = "truth"
                rows.append(row)
    metrics = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    metrics.loc[0, "warning"] = "slice spacing 9 mm outside the trained 1-7 mm"
    metrics.to_csv(p("metrics"), sep="\t", index=False)
    summary_table(metrics).to_csv(p("eval_summary"), sep="\t", index=False)
    qc = pd.DataFrame(
        {"subject": SUBJECTS, "qc_failed": [False, True, False]}
        | {"similarity_before": [0.5] * 3, "similarity_after": [0.8] * 3}
    )
    qc.to_csv(p("preprocess_qc"), sep="\t", index=False)
    pd.DataFrame({"subject": SUBJECTS, "split": ["train", "val", "test"]}).to_csv(
        p("manifest"), sep="\t", index=False
    )
    config = p("resolved_config")
    config.write_text("tracking:\n  uri: null\nteacher:\n  lr: 0.0005  # <script>\n")
    for m in LEARNED:
        p("model_summary", model=m).write_text(json.dumps({"steps": 10, "seconds": 1.5}))
    return {
        "metrics": str(p("metrics")),
        "figure": _png(p("eval_figure")),
        "summary": str(p("eval_summary")),
        "preprocess_qc": str(p("preprocess_qc")),
        "manifest": str(p("manifest")),
        "reg_png": [_png(p("reg_qc_png", subject=s), 2) for s in SUBJECTS],
        "guidance_png": [_png(p("dataset_qc_png", subject=s), 3) for s in SUBJECTS],
        "summaries": [str(p("model_summary", model=m)) for m in LEARNED],
        "examples": [_png(p("eval_example_png", model=m), 4) for m in MODELS],
        "montage": _png(p("eval_montage"), 5),
        "training_curves": _png(p("training_curves"), 6),
        "runs": [
            _run_record(p("model_run", model="teacher"), "r-teacher", "teacher"),
            _run_record(p("model_run", model="student_stage1"), "r-s1", "distill_stage 1"),
            *[_run_record(p("eval_run", model=m), f"r-eval-{m}", m) for m in MODELS],
        ],
        "config": str(config),
    }


def _sections(html: str) -> list[str]:
    return re.findall(r"<h2>(.*?)</h2>", html)


def test_the_whole_report_from_its_declared_inputs(tmp_path, inputs):
    out = write_report(COHORT, tmp_path / "index.html", inputs, ui_url=None)
    html = out.read_text()
    assert _sections(html) == [
        "Summary",
        "How to read this report",
        "Results on held-out subjects",
        "Training and distillation",
        "Preprocessing QC",
        "MLflow runs",
        "Provenance",
        "Warnings and errors",
    ]
    # the top says in plain words what the best learned model gains over B-spline, with a CI
    summary = html[html.index("<h2>Summary</h2>") : html.index("<h2>How to read")]
    assert "<code>teacher</code>, is better than B-spline interpolation" in summary
    assert "the stronger interpolation baseline" in summary
    gain = re.search(r"([+-]\d\.\d\d) dB PSNR \(95 % CI ([+-]\d\.\d\d) to ([+-]\d\.\d\d)", summary)
    mean, lo, hi = (float(g) for g in gain.groups())
    assert lo <= mean <= hi and abs(mean - 2.0) < 0.1  # teacher 27 dB, B-spline 25 dB
    # every figure is embedded: the montage, the curves, one example per model, QC per subject
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 1 + 1 + 1 + 1 + len(MODELS) + 2 * len(SUBJECTS)
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r'src="(?!data:)', html)
    # examples in model order: baselines, teacher, students
    examples = re.findall(r"<figcaption>(\w+): one held-out subject", html)
    assert examples == MODELS
    # each run links to the MLflow UI; the report's own run is none here (untracked job)
    url = f"{DEFAULT_UI_URL}/#/experiments/3/runs/r-teacher"
    assert f'<a href="{url}"><code>r-teacher</code></a>' in html
    assert "teacher (training)" in html and "student_stage1 (evaluation)" in html
    # the config that produced it, escaped; the flagged subject and the warning
    assert "lr: 0.0005  # &lt;script&gt;" in html
    assert "outside the trained 1-7 mm" in html and "sub-02" in html
    assert "Not available" not in html


def test_a_missing_optional_figure_is_a_note_not_a_crash(tmp_path, inputs):
    for key in ("montage", "training_curves", "runs", "config"):
        inputs.pop(key)
    html = write_report(COHORT, tmp_path / "index.html", inputs).read_text()
    notes = re.findall(r'<p class="note">(.*?)</p>', html)
    assert len(notes) == 4
    assert any("Slice montage" in n and "<code>montage</code>" in n for n in notes)
    assert any("<code>training_curves</code>" in n for n in notes)
    assert "<h2>MLflow runs</h2>" in html  # the section says why it is empty
    # a declared file that is not there (a job that wrote nothing) is a note too
    inputs["montage"] = str(tmp_path / "gone.png")
    html = write_report(COHORT, tmp_path / "index.html", inputs).read_text()
    assert "Slice montage (the report's input <code>montage</code> was not given)" in html


def test_untracked_runs_say_so_in_one_line(tmp_path, inputs):
    inputs["runs"] = [_run_record(Path(f), None) for f in inputs["runs"]]
    html = write_report(COHORT, tmp_path / "index.html", inputs).read_text()
    runs = html[html.index("<h2>MLflow runs</h2>") : html.index("<h2>Provenance</h2>")]
    assert "MLflow tracking was off or unreachable: tracking disabled." in runs
    assert "<table" not in runs


def test_the_report_jobs_own_runs_and_a_configured_ui(tmp_path, inputs):
    own = json.loads(Path(inputs["runs"][0]).read_text()) | {"run_id": "r-report"}
    html = write_report(
        COHORT,
        tmp_path / "index.html",
        inputs,
        ui_url="https://mlflow.example.org/",
        own_runs={"report (this job)": own},
    ).read_text()
    assert 'href="https://mlflow.example.org/#/experiments/3/runs/r-report"' in html
    assert ui_base(None, "http://host:5000/") == "http://host:5000"
    assert ui_base(None, "sqlite:////x.db") == DEFAULT_UI_URL
    assert ui_base("http://ui:8080", "http://host:5000") == "http://ui:8080"


def test_adding_a_figure_is_one_entry_and_one_input(tmp_path, inputs):
    extra = Reportlet("Results on held-out subjects", "Extra", ("extra_png",), "image", "An extra.")
    spec = (*REPORT_SPEC, extra)
    ctx = ReportContext(COHORT)
    sections = assemble(spec, inputs | {"extra_png": _png(tmp_path / "extra.png")}, ctx)
    results = next(s for s in sections if s["title"] == "Results on held-out subjects")
    assert results["items"][-1]["title"] == "Extra" and results["items"][-1]["content"]
    # the section keeps its place: entries go under their section, sections in first order
    assert [s["title"] for s in sections][:3] == [
        "Summary",
        "How to read this report",
        "Results on held-out subjects",
    ]
    with pytest.raises(ValueError, match="kind"):
        assemble((Reportlet("S", "", (), "movie"),), inputs, ctx)


def test_every_spec_input_is_one_the_report_stage_declares():
    from sr7t import stages

    declared = set(stages.STAGES["report"].inputs)
    used = {k for entry in REPORT_SPEC for k in entry.sources}
    assert used <= declared, used - declared
    assert all(e.kind in report_html.KINDS for e in REPORT_SPEC)


def test_subjects_left_out_for_bad_input_are_listed_with_their_error(tmp_path, inputs):
    line = "subject sub-09: 7T scan file /data/sub-09_7T.nii.gz does not exist"
    html = write_report(
        COHORT, tmp_path / "index.html", inputs, left_out={"sub-09": line}
    ).read_text()
    warnings = html[html.index("<h2>Warnings and errors</h2>") :]
    assert "Subjects left out for bad input" in warnings
    assert "<td>sub-09</td>" in warnings and line in warnings
    assert "1 left out for bad input" in html[: html.index("<h2>Summary</h2>")]
    clean = write_report(COHORT, tmp_path / "clean.html", inputs).read_text()
    assert "Every subject passed the raw-input check." in clean and "sub-09" not in clean
