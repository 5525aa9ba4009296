"""Distillation ablation: the same teacher distilled K stages under several variants.

Run after the demo (it reads the cohort's teacher and dataset files):

    .venv/bin/python benchmarks/distill.py [--results results --cohort demo]
        [--variants default no_feature] [--resolutions-mm 3 4.5 6 7.5]

Each variant distils every stage of the cohort's config (``distill`` section, with the
variant's overrides) from the workflow's teacher, into ``<results>/<cohort>/bench/distill/
<variant>/``. Each stage is one MLflow run (rule ``bench_distill``, experiment
``sr7t/<cohort>``, wildcards variant and stage) with its training metrics and the held-out
subjects' PSNR/SSIM at every resolution, scored exactly as ``eval/metrics.tsv`` is. Prints
one markdown table: variant, stage, steps, params, PSNR per resolution, seconds per volume.
Variants run one after another on the same machine, so their numbers compare side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import split_files  # noqa: E402

VARIANTS: dict[str, dict] = {
    "default": {},
    # feature guidance off: does matching the parent's decoder features help?
    "no_feature": {"feature_weight": 0.0},
}


def load_config(config_files: list[str]) -> dict:
    """The workflow's config (schema defaults applied), as Snakemake would see it."""
    import yaml

    from sr7t.config import resolve

    cfg: dict = {}
    for f in config_files:
        cfg = _merge(cfg, yaml.safe_load(Path(f).read_text()) or {})
    return resolve(cfg)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def score(model_file: Path, test_files: list[str], resolutions: list[float]) -> dict:
    """The held-out subjects' ``test_psnr_<r>mm``, ``test_ssim_<r>mm`` and
    ``seconds_per_volume_<r>mm``, scored as the training jobs score their validation subjects,
    plus the model's cost."""
    from sr7t.data.slices import load_subject
    from sr7t.models.bundle import load_bundle
    from sr7t.train.monitor import volume_scores

    model, meta = load_bundle(model_file, device="cpu")
    subjects = [load_subject(f) for f in test_files]
    out = volume_scores(model, meta, subjects, resolutions, split="test")
    out["params"] = int(meta["param_count"])
    out["sampling_steps"] = int(meta["sampling_steps"])
    out["macs_per_slice"] = int(meta.get("macs_per_slice", 0))
    return out


def markdown(table: pd.DataFrame) -> str:
    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--cohort", default="demo")
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="an extra variant: distill overrides as JSON, e.g. long='{\"steps_per_stage\": 400}'",
    )
    ap.add_argument("--resolutions-mm", nargs="+", type=float, default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from sr7t import paths
    from sr7t.distill.stage import distill_stage
    from sr7t.tracking import job_run

    results = Path(a.results)
    cfg = load_config(a.configfile)
    resolutions = a.resolutions_mm or cfg["evaluate"]["resolutions_mm"]
    files = split_files(results, a.cohort)
    variants = {v: VARIANTS[v] for v in a.variants}
    for extra in a.variant:
        name, _, overrides = extra.partition("=")
        variants[name] = json.loads(overrides)
    teacher = paths.path("model", results, cohort=a.cohort, model="teacher")
    rows = [{"variant": "-", "stage": 0, **score(teacher, files["test"], resolutions)}]
    for variant, overrides in variants.items():
        distill_cfg = {**cfg["distill"], **overrides}
        run_cfg = {**cfg, "distill": distill_cfg}
        parent = teacher
        out_dir = results / a.cohort / "bench" / "distill" / variant
        for k in range(1, int(distill_cfg["stages"]) + 1):
            wildcards = {"variant": variant, "stage": str(k)}
            logged = {"data": cfg["data"], "distill": distill_cfg}
            with job_run("bench_distill", a.cohort, wildcards, logged, results) as tracker:
                model_file = out_dir / f"student_stage{k}.pt"
                summary = distill_stage(
                    parent,
                    files["train"],
                    files["val"],
                    run_cfg,
                    k,
                    model_file,
                    out_dir / f"checkpoints_stage{k}",
                    metrics_cb=tracker.log_metrics,
                    artifact_cb=tracker.log_figure,
                )
                scores = score(model_file, files["test"], resolutions)
                tracker.log_metrics(scores)
            rows.append({"variant": variant, "stage": k, **scores, "train_s": summary["seconds"]})
            print(json.dumps(rows[-1]), flush=True)
            parent = model_file
    table = pd.DataFrame(rows)
    out_tsv = results / a.cohort / "bench" / "distill" / "summary.tsv"
    table.to_csv(out_tsv, sep="\t", index=False, float_format="%.4g")
    cols = ["variant", "stage", "sampling_steps", "params"]
    cols += [f"test_psnr_{r:g}mm" for r in resolutions]
    cols += [f"seconds_per_volume_{resolutions[0]:g}mm"]
    print(markdown(table[cols]))
    print(f"(also in {out_tsv}; {os.cpu_count()} CPUs on this machine)")


if __name__ == "__main__":
    main()
