"""``sr7t``: one subcommand per stage; each is a thin shell around a package function.

Every subcommand runs inside an MLflow child run (:func:`sr7t.tracking.job_run`) tagged
with ``--rule``, ``--cohort`` and ``--wildcard`` (the workflow passes them; by hand they
default to the subcommand's name and cohort ``adhoc``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

log = logging.getLogger("sr7t")


def _opt_path(value: str | None) -> str | None:
    """The workflow passes '' for an absent optional file."""
    return value if value else None


def _threads(n: int | None) -> None:
    if not n:
        return
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(n)
    import torch

    torch.set_num_threads(n)


# ---------------------------------------------------------------- stages


def cmd_demo(a, tracker):
    from sr7t import paths
    from sr7t.cohort import anatomy
    from sr7t.cohort.demo import make_demo_cohort
    from sr7t.cohort.samples import demo_subject_ids

    expected = paths.path("demo_raw_dir", a.results_dir, cohort=a.cohort)
    if a.out and Path(a.out).resolve() != expected.resolve():
        raise SystemExit(f"--out {a.out} must be {expected} (the demo writes the standard layout)")
    colin27 = a.colin27 != "no" and anatomy.colin27_available()
    if a.colin27 == "yes" and not colin27:
        # The workflow decided at parse time that the cohort has sub-colin27.
        raise SystemExit(
            f"demo: --colin27 yes but {anatomy.COLIN27_BRAIN} is missing: install the Debian "
            f"package {anatomy.COLIN27_PACKAGE} here, or set the cohort's demo.colin27: false"
        )
    if a.colin27 == "auto" and not colin27:
        print(anatomy.COLIN27_MISSING, file=sys.stderr)
    t0 = time.perf_counter()
    samples = make_demo_cohort(
        Path(a.results_dir),
        a.cohort,
        demo_subject_ids(a.n_subjects, colin27),
        a.seed,
        a.voxel_mm_7t,
        tuple(a.voxel_mm_1p5t),
    )
    tracker.log_params(
        {
            "n_subjects": a.n_subjects,
            "colin27": colin27,
            "seed": a.seed,
            "voxel_mm_7t": a.voxel_mm_7t,
            "voxel_mm_1p5t": a.voxel_mm_1p5t,
        }
    )
    tracker.log_metrics({"demo_seconds": time.perf_counter() - t0})
    tracker.log_artifact(samples)


def cmd_ingest(a, tracker):
    from sr7t.cohort.ingest import ingest_subject

    outputs = {"1p5T": a.out_1p5t} | ({"7T": a.out_7t} if a.out_7t else {})
    table = ingest_subject(
        a.subject,
        {"1p5T": _opt_path(a.scan_1p5t), "7T": None if a.no_7t else _opt_path(a.scan_7t)},
        {"1p5T": _opt_path(a.coef_1p5t), "7T": _opt_path(a.coef_7t)},
        outputs,
        a.rows,
        require_7t=not a.no_7t,
    )
    tracker.log_artifact(a.rows)
    tracker.log_metrics({"scans": len(table)})


def cmd_manifest(a, tracker):
    from sr7t.cohort.ingest import build_manifest

    table = build_manifest(a.rows, json.loads(a.splits), a.out)
    tracker.log_artifact(a.out)
    counts = table.drop_duplicates("subject")["split"].value_counts().to_dict()
    tracker.log_metrics({f"subjects_{k}": v for k, v in counts.items()})


def cmd_gradunwarp(a, tracker):
    from sr7t.io import read_json
    from sr7t.preprocess.gnl import run_gradunwarp_stage

    run_gradunwarp_stage(
        a.scan_7t,
        _opt_path(a.coef_7t),
        a.scan_1p5t,
        _opt_path(a.coef_1p5t),
        a.out_7t_unwarped,
        a.out_jacobian,
        a.out_dispmag,
        a.out_qc,
        subject=a.subject,
    )
    tracker.log_metrics(_numbers(read_json(a.out_qc)))
    tracker.log_artifact(a.out_qc)


def cmd_n4(a, tracker):
    from sr7t.io import read_json
    from sr7t.preprocess.n4 import run_n4_stage

    cfg = json.loads(a.cfg) | {"threads": a.threads}
    tracker.log_params(cfg)
    run_n4_stage(a.scan, a.out_corrected, a.out_bias, a.out_mask, a.out_qc, cfg, subject=a.subject)
    tracker.log_metrics(_numbers(read_json(a.out_qc)))


def cmd_register(a, tracker):
    from sr7t.io import read_json
    from sr7t.preprocess.register import run_register_stage

    cfg = json.loads(a.cfg) | {"threads": a.threads}
    tracker.log_params(cfg)
    maps = {name: (src, dst) for name, src, dst in a.map}
    try:
        run_register_stage(
            a.moving,
            a.fixed,
            a.fixed_mask,
            maps,
            a.out_moving,
            a.out_transform,
            a.out_qc,
            a.out_qc_png,
            cfg,
            subject=a.subject,
        )
    finally:
        if Path(a.out_qc).exists():
            tracker.log_metrics(_numbers(read_json(a.out_qc)))
    tracker.log_figure(a.out_qc_png)


def cmd_preprocess_qc(a, tracker):
    from sr7t.preprocess.qc import preprocess_qc_table

    table = preprocess_qc_table(a.results_root, a.cohort, a.subjects, _opt_path(a.demo_raw), a.out)
    tracker.log_artifact(a.out)
    tracker.log_metrics(
        {f"mean_{k}": float(v) for k, v in table.select_dtypes("number").mean().items()}
    )


def cmd_dataset(a, tracker):
    from sr7t.data.dataset import build_subject_arrays, save_guidance_figure

    summary = build_subject_arrays(
        a.reg_1p5t,
        a.reg_bias,
        a.reg_jacobian,
        a.reg_dispmag,
        a.gnl_qc,
        a.native_1p5t,
        a.mask,
        _opt_path(a.target),
        a.out,
        subject=a.subject,
    )
    tracker.log_params(summary)
    tracker.log_figure(save_guidance_figure(a.out, a.out_png, a.subject))


def cmd_train_teacher(a, tracker):
    from sr7t.io import write_json
    from sr7t.train.teacher import train_teacher

    cfg = json.loads(a.cfg)
    tracker.log_params(cfg)
    summary = train_teacher(
        a.train,
        a.val,
        cfg,
        a.out,
        a.checkpoints,
        metrics_cb=tracker.log_metrics,
        device=a.device,
        artifact_cb=tracker.log_figure,
    )
    write_json(a.summary, summary)
    tracker.log_metrics(_numbers(summary))
    tracker.log_artifact(a.summary)


def cmd_train_regression(a, tracker):
    from sr7t.io import write_json
    from sr7t.train.regression import train_regression

    cfg = json.loads(a.cfg)
    tracker.log_params(cfg)
    summary = train_regression(
        a.train,
        a.val,
        cfg,
        a.out,
        a.checkpoints,
        metrics_cb=tracker.log_metrics,
        device=a.device,
        artifact_cb=tracker.log_figure,
    )
    write_json(a.summary, summary)
    tracker.log_metrics(_numbers(summary))
    tracker.log_artifact(a.summary)


def cmd_distill(a, tracker):
    from sr7t.distill.stage import distill_stage
    from sr7t.io import write_json

    cfg = json.loads(a.cfg)
    tracker.log_params(cfg | {"stage": a.stage})
    summary = distill_stage(
        a.parent,
        a.train,
        a.val,
        cfg,
        a.stage,
        a.out,
        a.checkpoints,
        metrics_cb=tracker.log_metrics,
        device=a.device,
        artifact_cb=tracker.log_figure,
    )
    write_json(a.summary, summary)
    tracker.log_metrics(_numbers(summary))
    tracker.log_artifact(a.summary)


def cmd_evaluate(a, tracker):
    from sr7t.evaluate.run import evaluate_model

    cfg = json.loads(a.cfg)
    tracker.log_params(cfg)
    table = evaluate_model(
        a.model,
        _opt_path(a.model_file),
        a.test,
        cfg,
        a.pred_pattern,
        a.out,
        truth_root=_opt_path(a.truth_root),
        device=a.device,
    )
    tracker.log_artifact(a.out)
    for (kind, res), group in table.groupby(["input", "resolution_mm"]):
        tracker.log_metrics(
            {
                f"{kind}_{k}_{res:g}mm": float(group[k].mean())
                for k in ("psnr", "ssim", "hfen", "seconds")
            }
        )


def cmd_metrics(a, tracker):
    from sr7t.evaluate.run import combine_metrics

    combine_metrics(a.tables, a.out, a.figure, a.summary)
    tracker.log_artifact(a.out)
    tracker.log_artifact(a.summary)
    tracker.log_figure(a.figure)


def cmd_report(a, tracker):
    from sr7t.report.html import write_report

    write_report(a.results_root, a.cohort, a.out)
    tracker.log_artifact(a.out)


def cmd_predict(a, tracker):
    from sr7t.models.bundle import BundleError
    from sr7t.predict import predict_scan

    try:
        info = predict_scan(
            a.input,
            a.output,
            a.model,
            coef=_opt_path(a.coef),
            steps=a.steps,
            device=a.device,
            batch_size=a.batch_size,
            brain_mask=a.brain_mask,
        )
    except BundleError as exc:
        # one line naming the file, exit status 2 (bad input), no traceback
        print(f"sr7t predict: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    tracker.log_params({"input": a.input, "model": a.model})
    tracker.log_metrics(_numbers(info))


def _numbers(d: dict) -> dict[str, float]:
    return {
        k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("tracking")
    g.add_argument("--rule", help="workflow rule name (MLflow tag); default: the subcommand")
    g.add_argument("--cohort", default="adhoc", help="cohort name (MLflow experiment)")
    g.add_argument(
        "--wildcard",
        action="append",
        default=[],
        metavar="K=V",
        help="workflow wildcard, tagged on the MLflow run (repeatable)",
    )
    g.add_argument("--results-dir", default="results", help="results root (default: results)")
    common.add_argument("--threads", type=int, default=None, help="CPU threads for this job")
    common.add_argument("--device", default=None, help="cuda | cpu (default: cuda if present)")
    common.add_argument("-v", "--verbose", action="store_true")

    p = argparse.ArgumentParser(
        prog="sr7t", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, fn, help_):
        sp = sub.add_parser(name, parents=[common], help=help_)
        sp.set_defaults(fn=fn)
        return sp

    s = add("demo", cmd_demo, "synthesise the paired 1.5T/7T demo cohort (offline)")
    s.add_argument("--n-subjects", type=int, default=6, help="MNI152-derived subjects")
    s.add_argument(
        "--colin27",
        choices=["auto", "yes", "no"],
        default="auto",
        help="add the real-anatomy test subject sub-colin27 (Debian mricron-data): auto = "
        "when installed (one line when not), yes = required",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--voxel-mm-7t", type=float, default=2.0)
    s.add_argument("--voxel-mm-1p5t", type=float, nargs=3, default=[2.4, 2.4, 3.0])
    s.add_argument("--out", help="the raw folder the workflow expects (checked)")

    s = add("ingest", cmd_ingest, "validate and copy one subject's scans (RAS+)")
    s.add_argument("--subject", required=True)
    for fld in ("1p5t", "7t"):
        s.add_argument(f"--scan-{fld}", default="")
        s.add_argument(f"--coef-{fld}", default="")
    s.add_argument("--out-1p5t", required=True)
    s.add_argument("--out-7t", default="", help="the 7T copy (not with --no-7t)")
    s.add_argument(
        "--no-7t", action="store_true", help="an inference-only subject: no 7T partner needed"
    )
    s.add_argument("--rows", required=True)

    s = add("manifest", cmd_manifest, "combine per-subject ingest rows into manifest.tsv")
    s.add_argument("rows", nargs="+")
    s.add_argument("--splits", required=True, help="JSON: subject -> split")
    s.add_argument("--out", required=True)

    s = add("gradunwarp", cmd_gradunwarp, "GNL field, 7T unwarping, 1.5T guidance maps")
    s.add_argument("--subject", required=True)
    for name in (
        "scan-7t",
        "scan-1p5t",
        "out-7t-unwarped",
        "out-jacobian",
        "out-dispmag",
        "out-qc",
    ):
        s.add_argument(f"--{name}", required=True)
    s.add_argument("--coef-7t", default="")
    s.add_argument("--coef-1p5t", default="")

    s = add("n4", cmd_n4, "N4 bias-field correction of one scan")
    s.add_argument("--subject", required=True)
    s.add_argument("--cfg", default="{}", help="JSON: the config's preprocess.n4 section")
    for name in ("scan", "out-corrected", "out-bias", "out-mask", "out-qc"):
        s.add_argument(f"--{name}", required=True)

    s = add("register", cmd_register, "register 1.5T to 7T, resample maps onto the 7T grid")
    s.add_argument("--subject", required=True)
    s.add_argument("--cfg", default="{}", help="JSON: the config's preprocess.register section")
    for name in (
        "moving",
        "fixed",
        "fixed-mask",
        "out-moving",
        "out-transform",
        "out-qc",
        "out-qc-png",
    ):
        s.add_argument(f"--{name}", required=True)
    s.add_argument(
        "--map",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "IN_1P5T_GRID", "OUT_7T_GRID"),
    )

    s = add("preprocess-qc", cmd_preprocess_qc, "collect preprocessing QC into one table")
    s.add_argument("--results-root", required=True)
    s.add_argument("--subjects", nargs="+", required=True)
    s.add_argument("--demo-raw", default="", help="demo raw folder: adds errors vs truth")
    s.add_argument("--out", required=True)

    s = add("dataset", cmd_dataset, "assemble one subject's model arrays (.npz)")
    s.add_argument("--subject", required=True)
    for name in (
        "reg-1p5t",
        "reg-bias",
        "reg-jacobian",
        "reg-dispmag",
        "gnl-qc",
        "native-1p5t",
        "mask",
        "out",
        "out-png",
    ):
        s.add_argument(f"--{name}", required=True)
    s.add_argument("--target", default="")

    for name, fn, help_ in (
        ("train-teacher", cmd_train_teacher, "train the diffusion teacher"),
        ("distill", cmd_distill, "one progressive-distillation stage"),
        ("train-regression", cmd_train_regression, "the regression UNet baseline"),
    ):
        s = add(name, fn, help_)
        s.add_argument("--cfg", required=True, help="JSON: model section + data section")
        s.add_argument("--train", nargs="+", required=True)
        s.add_argument("--val", nargs="*", default=[])
        s.add_argument("--checkpoints", required=True)
        s.add_argument("--out", required=True)
        s.add_argument("--summary", required=True)
        if name == "distill":
            s.add_argument("--stage", type=int, required=True)
            s.add_argument("--parent", required=True)

    s = add("evaluate", cmd_evaluate, "one model x resolutions x held-out subjects")
    s.add_argument("test", nargs="+", help="held-out subjects' .npz")
    s.add_argument(
        "--model", required=True, help="teacher | student_stage<k> | trilinear | bspline"
    )
    s.add_argument("--model-file", default="")
    s.add_argument("--cfg", required=True, help="JSON: the evaluate config section")
    s.add_argument("--truth-root", default="", help="the demo's truth folder (none: no truth)")
    s.add_argument("--pred-pattern", required=True)
    s.add_argument("--out", required=True)

    s = add("metrics", cmd_metrics, "combine per-model metrics into metrics.tsv + figure")
    s.add_argument("tables", nargs="+")
    s.add_argument("--out", required=True)
    s.add_argument("--figure", required=True)
    s.add_argument("--summary", required=True)

    s = add("report", cmd_report, "write the cohort's self-contained HTML report")
    s.add_argument("--results-root", required=True)
    s.add_argument("--out", required=True)

    s = add("predict", cmd_predict, "super-resolve one 1.5T scan, no workflow needed")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--model", required=True, help="a model.pt (teacher or student)")
    s.add_argument("--coef", default="", help="the 1.5T scanner's gradient coefficient file")
    s.add_argument("--steps", type=int, default=None, help="sampling steps (default: model's)")
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument(
        "--brain-mask",
        default="auto",
        help="auto (whole heads get the Colin27 template's brain mask, skull-stripped scans "
        "their head mask), head (head mask only) or a NIfTI mask on the input's grid",
    )
    return p


def _on_sigterm(signum, frame):
    print("sr7t: SIGTERM (SLURM time limit or scancel): stopping", file=sys.stderr)
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    _threads(args.threads)
    from sr7t.errors import ScanError
    from sr7t.tracking import job_run

    # SLURM ends a job at its time limit (or scancel) with SIGTERM: turn it into
    # KeyboardInterrupt so job_run marks the MLflow run KILLED instead of leaving it RUNNING.
    signal.signal(signal.SIGTERM, _on_sigterm)
    wildcards = dict(w.split("=", 1) for w in args.wildcard)
    rule = args.rule or args.command
    try:
        with job_run(rule, args.cohort, wildcards, results_dir=args.results_dir) as tracker:
            args.fn(args, tracker)
    except ScanError as exc:
        log.error("%s", exc)
        print(f"sr7t {args.command}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
