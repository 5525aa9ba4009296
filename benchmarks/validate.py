"""Score models on the VALIDATION subjects, with the evaluation's own cells and metrics.

Every design and hyper-parameter is chosen here; the workflow's ``eval/`` scores the test
subjects once. Run after the workflow has built the models (or point ``--model-file`` at other
bundles, e.g. a variant trained with another config):

    .venv/bin/python benchmarks/validate.py --cohort demo \
        --models bspline teacher student_stage1 regression [--model-file NAME=PATH ...]

Writes ``results/<cohort>/validation/metrics.tsv`` and ``summary.tsv`` and prints each
model's PSNR/SSIM gain over B-spline per input kind with a 95 % bootstrap CI.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from sr7t import paths
from sr7t.cli import at_least_one
from sr7t.evaluate.run import BASELINE_ORDER, MAPPED_BASELINES, evaluate_model, summary_table
from sr7t.models.fusion import FUSIONS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import cohort_args, resolved_config, split_files  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cohort_args(ap)  # --set key.path=value, e.g. evaluate.axes=[] evaluate.pipeline=false
    ap.add_argument("--models", nargs="+", default=["bspline", "teacher"])
    ap.add_argument("--model-file", action="append", default=[], help="NAME=PATH (a bundle)")
    ap.add_argument("--out", default=None, help="folder (default results/<cohort>/validation)")
    ap.add_argument(
        "--split",
        default="val",
        help="subjects to score (default val; test only to measure, never to choose: "
        "benchmarks/seed_spread.py)",
    )
    ap.add_argument(
        "--flips",
        type=int,
        choices=[1, 2, 4],
        default=None,
        help="test-time plane flips for every model (default: each model's own)",
    )
    ap.add_argument(
        "--tile",
        type=int,
        default=None,
        help="inference tile (pixels) for every model, 0 for whole planes (default: each "
        "model's own)",
    )
    ap.add_argument(
        "--fusion",
        choices=FUSIONS,
        default=None,
        help="orthogonal-plane fusion for every model (default: each model's own; "
        "sr7t.models.fusion)",
    )
    ap.add_argument(
        "--fusion-power", type=float, default=None, help="its power (default: the mode's)"
    )
    ap.add_argument(
        "--rotations",
        type=at_least_one,
        default=None,
        help="test-time rotations about the thick axis for every model (default: each model's own)",
    )
    ap.add_argument(
        "--consistency",
        type=float,
        default=None,
        help="slice consistency for every learned model, 0 to 1 (default: each model's own; "
        "sr7t.models.consistency)",
    )
    ap.add_argument(
        "--steps",
        type=at_least_one,
        default=None,
        help="inference steps for every learned model (default: each model's own: a teacher's "
        "inference_steps, else its sampling_steps)",
    )
    a = ap.parse_args(argv)

    eval_cfg = resolved_config(a.config, a.set)["evaluate"]
    root = Path(a.results)
    split = split_files(root, a.cohort)
    files = split.get(a.split, [])
    if not files:
        print(f"cohort {a.cohort} has no {a.split} subjects", file=sys.stderr)
        return 2
    val = [Path(f).stem for f in files]
    truth = paths.path("demo_truth_root", root, cohort=a.cohort)
    truth_root = truth if truth.exists() else None
    explicit = dict(item.split("=", 1) for item in a.model_file)
    out = Path(a.out or root / a.cohort / "validation")
    out.mkdir(parents=True, exist_ok=True)
    tables = []
    for name in a.models:
        model_file = None
        if name not in BASELINE_ORDER:
            model_file = explicit.get(name) or str(
                paths.path("model", root, cohort=a.cohort, model=name)
            )
        pattern = str(out / name / "{subject}_{cell}.nii.gz")
        tables.append(
            evaluate_model(
                name,
                model_file,
                files,
                eval_cfg,
                pattern,
                out / name / "metrics.tsv",
                truth_root,
                train_files=split["train"] if name in MAPPED_BASELINES else None,
                flips=a.flips,
                tile=a.tile,
                fusion=a.fusion,
                fusion_power=a.fusion_power,
                rotations=a.rotations,
                steps=a.steps,
                consistency=a.consistency,
            )
        )
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(out / "metrics.tsv", sep="\t", index=False, float_format="%.6g")
    summary = summary_table(table)
    summary.to_csv(out / "summary.tsv", sep="\t", index=False, float_format="%.6g")
    gains = summary[(summary["kind"] == "gain") & (summary["resolution_mm"] < 0)]
    print(f"{a.split} subjects {val}; gain over bspline, mean [95 % CI] over units:")
    for _, r in gains.iterrows():
        print(
            f"  {r['input']:9s} {r['metric']:5s} {r['model']:16s} "
            f"{r['mean']:+.3f} [{r['ci_lo']:+.3f}, {r['ci_hi']:+.3f}] (n={int(r['n'])})"
        )
    print(json.dumps({"metrics": str(out / "metrics.tsv"), "summary": str(out / "summary.tsv")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
