"""``sr7t``: the user-facing commands.

- ``sr7t predict IN OUT --model M``: super-resolve one 1.5T scan, no workflow needed.
- ``sr7t stage NAME --input K=PATH ... --output K=PATH ... --config RESOLVED.yaml``: run one
  workflow stage by hand, exactly as its rule runs it (:mod:`sr7t.stages`).

Both run inside an MLflow run (:func:`sr7t.tracking.job_run`; cohort ``adhoc`` unless
``--cohort`` or a ``cohort`` wildcard says otherwise).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

from sr7t import LOG_FORMAT

log = logging.getLogger("sr7t")


def cmd_predict(a) -> int:
    from sr7t.errors import ScanError
    from sr7t.models.bundle import BundleError
    from sr7t.predict import predict_scan
    from sr7t.stages import numbers_only, on_sigterm, set_threads
    from sr7t.tracking import job_run

    set_threads(a.threads)
    signal.signal(signal.SIGTERM, on_sigterm)
    wildcards = dict(w.split("=", 1) for w in a.wildcard)
    try:
        with job_run(a.rule or "predict", a.cohort, wildcards, results_dir=a.results_dir) as t:
            try:
                info = predict_scan(
                    a.input,
                    a.output,
                    a.model,
                    coef=a.coef or None,
                    steps=a.steps,
                    device=a.device,
                    batch_size=a.batch_size,
                    brain_mask=a.brain_mask,
                    flips=a.flips,
                    rotations=a.rotations,
                )
            except BundleError as exc:
                # one line naming the file, exit status 2 (bad input), no traceback
                print(f"sr7t predict: {exc}", file=sys.stderr)
                raise SystemExit(2) from None
            t.log_params({"input": a.input, "model": a.model})
            t.log_metrics(numbers_only(info))
    except ScanError as exc:
        log.error("%s", exc)
        print(f"sr7t predict: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_stage(a) -> int:
    from sr7t.config import read_resolved
    from sr7t.stages import STAGES, Files, run, stage_config

    spec = STAGES[a.name]

    def named(pairs: list[str], declared: dict) -> dict:
        out: dict = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if declared.get(key) is Files:
                out.setdefault(key, []).append(value)
            else:
                out[key] = value
        return out

    whole = read_resolved(a.config) if a.config else None
    if a.cfg is not None:
        cfg = json.loads(a.cfg)
    elif whole and spec.config:
        cfg = stage_config(a.name, whole)
    elif spec.config:
        raise SystemExit(f"sr7t stage {a.name}: give --config (a resolved config) or --cfg")
    else:
        cfg = None
    wildcards = {"cohort": a.cohort, **dict(w.split("=", 1) for w in a.wildcard)}
    return run(
        a.name,
        named(a.input, spec.inputs),
        named(a.output, spec.outputs),
        cfg,
        wildcards,
        threads=a.threads,
        log_file=a.log,
        params=dict(p.split("=", 1) for p in a.param),
        results_dir=a.results_dir,
        device=a.device,
        config=whole,
    )


def at_least_one(text: str) -> int:
    """An argparse type: an integer >= 1 (argparse names the option and the value otherwise;
    also used by benchmarks/validate.py)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("tracking")
    g.add_argument("--rule", help="MLflow tag rule (default: the command)")
    g.add_argument("--cohort", default="adhoc", help="cohort name (MLflow experiment)")
    g.add_argument(
        "--wildcard",
        action="append",
        default=[],
        metavar="K=V",
        help="a workflow wildcard (subject, field, model, k...), tagged on the run (repeatable)",
    )
    g.add_argument("--results-dir", default="results", help="where the default MLflow store is")
    common.add_argument("--threads", type=int, default=None, help="CPU threads for this job")
    common.add_argument("--device", default=None, help="cuda | cpu (default: cuda if present)")
    common.add_argument("-v", "--verbose", action="store_true")

    p = argparse.ArgumentParser(
        prog="sr7t", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("predict", parents=[common], help="super-resolve one 1.5T scan")
    s.set_defaults(fn=cmd_predict)
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--model", required=True, help="a model.pt (teacher or student)")
    s.add_argument("--coef", default="", help="the 1.5T scanner's gradient coefficient file")
    s.add_argument("--steps", type=int, default=None, help="sampling steps (default: model's)")
    s.add_argument(
        "--flips",
        type=int,
        choices=[1, 2, 4],
        default=None,
        help="test-time plane flips averaged (default: the model's; each is one more pass)",
    )
    s.add_argument(
        "--rotations",
        type=at_least_one,
        default=None,
        help="predictions averaged on the input rotated about its thick axis (default: the "
        "model's; each is one more prediction)",
    )
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument(
        "--brain-mask",
        default="auto",
        help="auto (whole heads get the Colin27 template's brain mask, skull-stripped scans "
        "their head mask), head (head mask only) or a NIfTI mask on the input's grid",
    )

    from sr7t.stages import STAGES

    s = sub.add_parser("stage", parents=[common], help="run one workflow stage by hand")
    s.set_defaults(fn=cmd_stage)
    s.add_argument("name", choices=sorted(STAGES))
    s.add_argument("--input", action="append", default=[], metavar="K=PATH", help="repeatable")
    s.add_argument("--output", action="append", default=[], metavar="K=PATH", help="repeatable")
    s.add_argument("--config", help="a resolved config (results/<cohort>/config.resolved.yaml)")
    s.add_argument("--cfg", help="the stage's config as JSON (instead of --config)")
    s.add_argument("--param", action="append", default=[], metavar="K=V", help="e.g. checkpoints")
    s.add_argument("--log", help="send the job's output to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format=LOG_FORMAT,
    )
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
