"""Train one model variant on a cohort's training subjects, outside the workflow, for a choice
made on the validation subjects (score it with benchmarks/validate.py --model-file). With
``--kind chain`` the teacher and every distillation stage (``--teacher PATH``: distil that
teacher instead of training one); ``model.pt`` is the final model.

    .venv/bin/python benchmarks/train_variant.py --name reg_mild --kind regression \
        --set data.synth.gamma=[0.8,1.25] --set distill.steps_per_stage=[900,0]
    .venv/bin/python benchmarks/validate.py --models bspline reg_mild \
        --model-file reg_mild=results/demo/variants/reg_mild/model.pt

Each variant is an MLflow run of rule ``train_variant`` (experiment ``sr7t/<cohort>``).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import cohort_args, resolved_config, split_files  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument(
        "--kind",
        choices=["regression", "teacher", "chain"],
        default="regression",
        help="chain: the teacher, then every distillation stage from its parent",
    )
    cohort_args(ap)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--teacher",
        default=None,
        help="with --kind chain: distil this teacher bundle (e.g. the workflow's "
        "results/demo/models/teacher/model.pt) instead of training one",
    )
    ap.add_argument(
        "--init",
        default=None,
        help="with --kind chain: the last stage's student starts from this bundle's weights "
        "(e.g. a regression UNet trained on the same subjects: benchmarks only, no config key)",
    )
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    cfg = resolved_config(a.config, a.set)
    root = Path(a.results)
    files = split_files(root, a.cohort)
    out = root / a.cohort / "variants" / a.name
    from sr7t.tracking import job_run

    with job_run("train_variant", a.cohort, {"name": a.name}, results_dir=str(root)) as tracker:
        tracker.log_params({"kind": a.kind, "overrides": " ".join(a.set)})
        args = (files["train"], files["val"], copy.deepcopy(cfg))
        log = tracker.log_metrics
        if (a.teacher or a.init) and a.kind != "chain":
            ap.error("--teacher and --init go with --kind chain")
        if a.kind == "regression":
            from sr7t.train.regression import train_regression

            summary = train_regression(*args, out / "model.pt", out / "checkpoints", log)
        elif a.teacher:
            teacher = Path(a.teacher)
        else:
            from sr7t.train.teacher import train_teacher

            teacher = out / ("model.pt" if a.kind == "teacher" else "teacher.pt")
            summary = train_teacher(*args, teacher, out / "checkpoints", log)
        if a.kind == "chain":
            from sr7t.distill.stage import distill_stage

            parent, k_last = teacher, int(cfg["distill"]["stages"])
            for k in range(1, k_last + 1):
                model = out / ("model.pt" if k == k_last else f"student_stage{k}.pt")
                ckpt = out / f"checkpoints_stage{k}"
                init = a.init if k == k_last else None
                summary = distill_stage(parent, *args, k, model, ckpt, log, init_model=init)
                parent = model
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(json.dumps({"model": str(out / "model.pt"), "seconds": summary.get("seconds")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
