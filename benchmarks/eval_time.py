"""Time of the evaluation and the report, and how they grow with subjects x spacings x models.

The evaluation runs one job per model (``evaluate_model``); each job scores every cell of every
held-out subject (:mod:`sr7t.evaluate.cells`: thick along each axis at each spacing, the
isotropic input, the real 1.5T at each spacing). This script times that job for the models
named, with 1 and 2 subjects and with 1 and all of ``evaluate.resolutions_mm``, all in one
process one after the other, and fits ``seconds = fixed + per_cell x cells`` per model (least
squares over the four runs) on the process's CPU seconds (``time.process_time``: on a shared
machine wall time moves with the other jobs' load, CPU time much less; wall time is kept
beside). It also times the report (``write_report`` from the workflow's own declared inputs
when they exist).

    .venv/bin/python benchmarks/eval_time.py [--models bspline student_stage1] [--split test]

Writes ``results/<cohort>/eval_time/runs.tsv`` (one row per timed run) and ``fit.tsv`` (per
model: fixed seconds, seconds per cell, and the predicted time of the demo's full evaluation).
Reads the workflow's results (dataset files, models, truth); trains nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sr7t import paths
from sr7t.evaluate.cells import eval_cells
from sr7t.evaluate.run import BASELINE_ORDER, MAPPED_BASELINES, evaluate_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import cohort_args, resolved_config, split_files  # noqa: E402

from sr7t.infer.source import final_model  # noqa: E402


def n_cells(files: list[str], cfg: dict, has_truth: bool) -> int:
    """Cells scored over ``files`` under evaluation config ``cfg``."""
    from sr7t.data.slices import load_subject

    total = 0
    for f in files:
        native = float(load_subject(f)["native_slice_mm"])
        total += len(eval_cells(Path(f).stem, has_truth, cfg, native))
    return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cohort_args(ap)
    ap.add_argument("--models", nargs="+", default=None, help="default: bspline, the final model")
    ap.add_argument("--split", default="test")
    a = ap.parse_args(argv)

    cfg = resolved_config(a.config, a.set)
    full = cfg["evaluate"]
    models = a.models or ["bspline", final_model(cfg)]
    root = Path(a.results)
    files = split_files(root, a.cohort)
    subjects, train = files.get(a.split, []), files["train"]
    if len(subjects) < 2:
        print(f"need two {a.split} subjects, found {len(subjects)}", file=sys.stderr)
        return 2
    truth = paths.path("demo_truth_root", root, cohort=a.cohort)
    truth_root = truth if truth.exists() else None
    out = root / a.cohort / "eval_time"
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            bundle = None
            if model not in BASELINE_ORDER:
                bundle = str(paths.path("model", root, cohort=a.cohort, model=model))
            for n_subj in (1, 2):
                for spacings in (full["resolutions_mm"][:1], full["resolutions_mm"]):
                    ecfg = dict(full, resolutions_mm=list(spacings))
                    files = subjects[:n_subj]
                    cells = n_cells(files, ecfg, truth_root is not None)
                    t0, c0 = time.perf_counter(), time.process_time()
                    evaluate_model(
                        model,
                        bundle,
                        files,
                        ecfg,
                        f"{tmp}/{model}/{{subject}}_{{cell}}.nii.gz",
                        f"{tmp}/{model}/metrics.tsv",
                        truth_root,
                        train_files=train if model in MAPPED_BASELINES else None,
                    )
                    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                    rows.append(
                        dict(
                            model=model,
                            subjects=n_subj,
                            spacings=len(spacings),
                            cells=cells,
                            cpu_s=round(cpu, 2),
                            wall_s=round(wall, 2),
                        )
                    )
                    print(rows[-1], flush=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.tsv", sep="\t", index=False)
    demo_cells = n_cells(subjects, full, truth_root is not None)
    fits = []
    for model, part in runs.groupby("model", sort=False):
        per_cell, fixed = np.polyfit(part["cells"], part["cpu_s"], 1)
        fits.append(
            dict(
                model=model,
                fixed_cpu_s=round(fixed, 2),
                per_cell_cpu_s=round(per_cell, 2),
                demo_cells=demo_cells,
                demo_predicted_cpu_s=round(fixed + per_cell * demo_cells, 1),
            )
        )
    report_s = time_report(root, a.cohort)
    fit = pd.DataFrame(fits)
    fit.to_csv(out / "fit.tsv", sep="\t", index=False)
    print(fit.to_string(index=False))
    print(f"report: {report_s if report_s is not None else 'not timed (no workflow report)'} s")
    return 0


def time_report(root: Path, cohort: str) -> float | None:
    """Seconds to write the cohort's report from the workflow's declared inputs (None when the
    workflow has not built them)."""
    from sr7t.report.html import write_report

    inputs = report_inputs(root, cohort)
    if inputs is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_report(cohort, Path(tmp) / "index.html", inputs)
        return round(time.perf_counter() - t0, 2)


def report_inputs(root: Path, cohort: str) -> dict | None:
    """The report stage's inputs as the workflow declares them, from ``root`` (None when its
    tables are missing)."""
    from sr7t.stages import SUBJECT_FIGURES

    def p(name, **f):
        return str(paths.path(name, root, cohort=cohort, **f))

    if not Path(p("metrics")).exists():
        return None
    models = sorted(d.name for d in Path(p("metrics")).parent.iterdir() if d.is_dir())
    learned = [m for m in models if m not in BASELINE_ORDER]
    subjects = sorted(pd.read_csv(p("manifest"), sep="\t")["subject"].unique())
    inputs = {
        "metrics": p("metrics"),
        "figure": p("eval_figure"),
        "summary": p("eval_summary"),
        "preprocess_qc": p("preprocess_qc"),
        "manifest": p("manifest"),
        "summaries": [p("model_summary", model=m) for m in learned],
        "examples": [p("eval_example_png", model=m) for m in models],
        "montage": p("eval_montage"),
        "training_curves": p("training_curves"),
        "runs": [p("model_run", model=m) for m in learned]
        + [p("eval_run", model=m) for m in models],
        "config": p("resolved_config"),
    }
    for key, (template, fields) in SUBJECT_FIGURES.items():
        found = [p(template, subject=s, **fields) for s in subjects]
        inputs[key] = [f for f in found if Path(f).exists()]
    return inputs


if __name__ == "__main__":
    sys.exit(main())
