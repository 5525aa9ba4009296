"""Every workflow stage, declared once: its named inputs, outputs and config, and one function.

A rule names its files once (``input:``, ``output:``, ``log:``), passes the stage's config as
``params.cfg`` and runs ``workflow/scripts/stage.py``, which calls :func:`run_from_snakemake`.
Outside Snakemake, :func:`run` (or ``sr7t stage``) does the same with plain dicts. The runner
(:func:`run`), once for every stage: threads for torch and ITK, the job's output into its log,
the job's MLflow child run (:func:`sr7t.tracking.job_run`), and a user-facing error as one line
on the console (the traceback stays in the log).

A stage function ``fn(i, o, cfg, job)`` gets its inputs ``i`` and outputs ``o`` by name
(:data:`File`: one path; :data:`Files`: a list), its config ``cfg`` and the :class:`Job`
(wildcards, threads, tracker, params). It is a thin adapter to the package function doing the
work, reads only its declared inputs (or files inside a declared folder) and writes only its
declared outputs. One exception: training checkpoints (``params.checkpoints``), since
Snakemake deletes a failed job's outputs and a crashed training must resume from them.

``cfg`` is what the rule passes as ``params.cfg`` (so Snakemake reruns a stage when it changes):
the config sections the stage declares (:func:`stage_config`: one section is passed as itself,
several as a dict by their last key), or, for stages whose config is the cohort's own
(``config=()``: which raw files, which split), whatever the rule builds. Model stages also hand
the whole resolved config (``job.config``: Snakemake's, which the workflow resolved at start
and wrote to ``results/<cohort>/config.resolved.yaml``) to the trainer, which stores it in the
bundle. It is not a declared input file on purpose: a model rule with that file as input would
retrain on any config change, and marked ``ancient`` Snakemake skips checking the jobs below a
rerun ``resolved_config`` job, so a changed ``teacher.lr`` would not retrain the teacher.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sr7t import LOG_FORMAT, paths
from sr7t.parallel import THREAD_VARIABLES

log = logging.getLogger("sr7t")

File = str  # one path
Files = list[str]  # zero or more paths

# A user-facing error (sr7t.errors.USER_ERRORS): one line on the console and exit status 2.
# Anything else is a bug or an environment problem: exit status 1, the line points at the log.
EXIT_USER_ERROR = 2


@dataclass(frozen=True)
class Stage:
    """The declaration of one stage: the names a rule must pass, and what they hold."""

    name: str
    fn: Callable
    inputs: dict[str, type]
    outputs: dict[str, type]
    optional: frozenset[str] = frozenset()  # inputs a rule passes only for some jobs
    config: tuple[str, ...] = ()  # dotted config sections of params.cfg; "*": all of it
    params: tuple[str, ...] = ()  # other params the stage reads (e.g. checkpoints)


@dataclass
class Job:
    """What a stage knows about its job besides files and config."""

    wildcards: dict[str, str]
    threads: int | None = None
    tracker: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    config: dict | None = None  # the whole resolved config (the workflow's)

    @property
    def subject(self) -> str:
        return self.wildcards.get("subject", "?")


STAGES: dict[str, Stage] = {}


def stage(name: str, inputs=None, outputs=None, optional=(), config=(), params=()):
    """Register ``fn`` as stage ``name`` (the rule of the same name runs it)."""

    def register(fn: Callable) -> Callable:
        STAGES[name] = Stage(
            name, fn, dict(inputs or {}), dict(outputs or {}), frozenset(optional), config, params
        )
        return fn

    return register


def stage_config(name: str, config: dict) -> Any:
    """``params.cfg`` of stage ``name`` from the workflow's (resolved) config: its one declared
    section, or its sections by their last key; ``"*"``: the whole config."""
    sections = STAGES[name].config
    if sections == ("*",):
        return config
    picked = {}
    for dotted in sections:
        value = config
        for key in dotted.split("."):
            value = value[key]
        picked[dotted.rsplit(".", 1)[-1]] = value
    return next(iter(picked.values())) if len(picked) == 1 else picked


# ---------------------------------------------------------------------------------- the runner


def run(
    name: str,
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    cfg: Any = None,
    wildcards: dict[str, str] | None = None,
    threads: int | None = None,
    log_file: str | Path | None = None,
    params: dict[str, Any] | None = None,
    results_dir: str | Path = "results",
    device: str | None = None,
    config: dict | None = None,
) -> int:
    """Run stage ``name`` as a job; returns its exit status (0, 1, or 2 for a user error).

    ``inputs``/``outputs``: name -> path (or list of paths) as the stage declares them;
    ``wildcards`` tag the MLflow run (``cohort`` names its experiment; default ``adhoc``);
    ``log_file``: the job's stdout and stderr go there (None: left alone); ``results_dir``:
    where the default MLflow store lives when no workflow chose one; ``config``: the whole
    resolved config (model stages store it in their bundle).
    """
    from sr7t.errors import USER_ERRORS
    from sr7t.tracking import job_run

    spec = STAGES[name]
    wildcards = {str(k): str(v) for k, v in (wildcards or {}).items()}
    inputs, outputs = _checked(spec, inputs, outputs)
    set_threads(threads)
    with _output_to(log_file) as console:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format=LOG_FORMAT,
            force=True,
        )
        # SLURM ends a job at its time limit (or scancel) with SIGTERM: as KeyboardInterrupt,
        # job_run marks the MLflow run KILLED instead of leaving it RUNNING.
        previous = signal.signal(signal.SIGTERM, on_sigterm)
        cohort = wildcards.get("cohort", "adhoc")
        job = Job(wildcards, threads, None, dict(params or {}), device, config)
        try:
            with job_run(name, cohort, wildcards, results_dir=results_dir) as tracker:
                job.tracker = tracker
                if isinstance(cfg, dict) and spec.config and spec.config != ("*",):
                    tracker.log_params(cfg)
                spec.fn(inputs, outputs, cfg, job)
        except USER_ERRORS as exc:
            traceback.print_exc()
            print(f"sr7t {name}: {_one_line(exc)}", file=sys.stderr, flush=True)
            if console is not sys.stderr:
                print(f"sr7t {name}: {_one_line(exc)}", file=console, flush=True)
            return EXIT_USER_ERROR
        except Exception as exc:
            traceback.print_exc()
            where = f" (traceback in {log_file})" if log_file else ""
            print(f"sr7t {name}: {type(exc).__name__}: {_one_line(exc)}{where}", file=console)
            return 1
        finally:
            signal.signal(signal.SIGTERM, previous)
    return 0


def run_from_snakemake(smk) -> None:
    """The body of ``workflow/scripts/stage.py``: run the stage named like the job's rule."""
    spec = STAGES[smk.rule]
    params = dict(smk.params.items())
    cfg = params.pop("cfg", None)
    status = run(
        spec.name,
        _named(smk.input),
        _named(smk.output),
        cfg,
        dict(smk.wildcards.items()),
        threads=smk.threads,
        log_file=smk.log[0] if smk.log else None,
        params=params,
        results_dir=smk.config.get("results_dir", "results"),
        config=dict(smk.config),
    )
    if status:
        sys.exit(status)


def _named(files) -> dict[str, Any]:
    """Snakemake's named input or output as a plain dict (a list of files stays a list; one
    file of a list comes as a plain string, which :func:`_checked` wraps again)."""
    return {k: v if isinstance(v, str) else [str(f) for f in v] for k, v in files.items()}


def _checked(spec: Stage, inputs: dict, outputs: dict) -> tuple[dict, dict]:
    """Refuse names the stage does not declare and required names that are missing."""
    for what, given, declared, optional in (
        ("input", inputs, spec.inputs, spec.optional),
        ("output", outputs, spec.outputs, frozenset()),
    ):
        unknown = sorted(set(given) - set(declared))
        missing = sorted(set(declared) - set(given) - optional)
        if unknown or missing:
            raise TypeError(
                f"stage {spec.name}: {what}s {sorted(given)} do not match its declaration "
                f"{sorted(declared)} (unknown {unknown}, missing {missing})"
            )
    listed = {
        k: ([v] if isinstance(v, str | Path) else list(v)) if spec.inputs[k] is Files else v
        for k, v in inputs.items()
    }
    return {k: _str(v) for k, v in listed.items()}, {k: _str(v) for k, v in outputs.items()}


def _str(value):
    return [str(v) for v in value] if isinstance(value, list) else str(value)


def set_threads(n: int | None) -> None:
    """``n`` threads for ITK and torch: through their environment variables, read when they
    load, so a job that never uses torch does not pay its import (~2 s); torch as well if it
    is already loaded."""
    if not n:
        return
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


@contextmanager
def _output_to(log_file: str | Path | None):
    """Send this process's output to ``log_file``: ``sys.stdout``/``sys.stderr`` and file
    descriptors 1 and 2 (so ITK's and tqdm's output too). Yields a stream to the original
    stderr, the console."""
    if log_file is None:
        yield sys.stderr
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    streams = sys.stdout, sys.stderr
    log_stream = open(log_file, "w", buffering=1)  # closed below, after the descriptors
    for fd in (1, 2):
        os.dup2(log_stream.fileno(), fd)
    sys.stdout = sys.stderr = log_stream
    console = os.fdopen(os.dup(saved[2]), "w")
    try:
        yield console
    finally:
        log_stream.flush()
        sys.stdout, sys.stderr = streams
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        root = logging.getLogger()
        for handler in [h for h in root.handlers if getattr(h, "stream", None) is log_stream]:
            root.removeHandler(handler)
        log_stream.close()
        console.close()


def on_sigterm(signum, frame):
    print("sr7t: SIGTERM (SLURM time limit or scancel): stopping", file=sys.stderr)
    raise KeyboardInterrupt


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def numbers_only(d: dict) -> dict[str, float]:
    return {
        k: float(v) for k, v in d.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }


def by_subject(i: dict, per_subject: dict[str, tuple[str, dict]]) -> dict[str, dict[str, str]]:
    """Per-subject input lists (``per_subject``: input name -> :mod:`sr7t.paths` template and
    fields, e.g. :data:`QC_INPUTS`) regrouped: subject -> input name -> file."""
    grouped: dict[str, dict[str, str]] = {}
    for key, (template, _) in per_subject.items():
        for f in i[key]:
            grouped.setdefault(paths.match(template, f)["subject"], {})[key] = f
    return dict(sorted(grouped.items()))


def whole_config(name: str, job: Job, cfg: dict) -> dict:
    """The whole resolved config that model stage ``name`` hands its trainer (the bundle
    carries it), checked to hold the sections the stage was given."""
    if job.config is None:
        raise ValueError(f"stage {name} needs the whole resolved config (sr7t stage: --config)")
    if json.dumps(stage_config(name, job.config), sort_keys=True) != json.dumps(
        cfg, sort_keys=True
    ):
        raise ValueError(f"stage {name}: its config differs from the whole config's sections")
    return job.config


# ------------------------------------------------------------------------------------ stages


@stage("resolved_config", outputs={"config": File}, config=("*",))
def resolved_config_stage(i, o, cfg, job):
    """The whole resolved config, beside the cohort's results (as nnU-Net writes its plans)."""
    from sr7t.config import resolve, write_resolved

    write_resolved(resolve(cfg), o["config"])
    job.tracker.log_artifact(o["config"])


@stage("demo_cohort", outputs={"raw": File})
def demo_cohort(i, o, cfg, job):
    """``cfg``: the cohort's ``demo`` section, ``colin27`` and ``inia19`` as decided when the
    workflow started (it must make the same cohort the workflow planned)."""
    from sr7t.cohort import anatomy
    from sr7t.cohort.demo import make_demo_cohort
    from sr7t.cohort.samples import demo_subject_ids

    if cfg["colin27"] and not anatomy.colin27_available():
        raise ValueError(
            f"demo: colin27 asked for but {anatomy.COLIN27_BRAIN} is missing: install the "
            f"Debian package {anatomy.COLIN27_PACKAGE} here, or set the cohort's demo.colin27: "
            "false"
        )
    if cfg["inia19"] and not anatomy.inia19_available():
        raise ValueError(
            f"demo: inia19 asked for but {anatomy.INIA19_BRAIN} is missing: install the "
            f"Debian package {anatomy.COLIN27_PACKAGE} here, or set the cohort's demo.inia19: "
            "false"
        )
    samples = make_demo_cohort(
        o["raw"],
        demo_subject_ids(cfg["n_subjects"], cfg["colin27"], cfg["inia19"]),
        cfg["seed"],
        cfg["voxel_mm_7t"],
        tuple(cfg["voxel_mm_1p5t"]),
        workers=job.threads or 1,
    )
    job.tracker.log_params(cfg)
    job.tracker.log_artifact(samples)


# A subject's raw files that exist (a missing one fails its own job, not the DAG), or the demo's
# raw folder that holds them.
RAW_COEFS = dict.fromkeys(("raw", "coef_1p5T", "coef_7T"), File)
RAW_INPUTS = {**RAW_COEFS, "scan_1p5T": File, "scan_7T": File}


def _ingest(o: dict, cfg: dict, job: Job, require_7t: bool) -> None:
    from sr7t.cohort.ingest import ingest_subject

    outputs = {fld: o[f"scan_{fld}"] for fld in paths.FIELDS if f"scan_{fld}" in o}
    table = ingest_subject(
        job.subject,
        {fld: cfg.get(f"scan_{fld}") or None for fld in outputs},
        {fld: cfg.get(f"coef_{fld}") or None for fld in paths.FIELDS},
        outputs,
        o["rows"],
        require_7t=require_7t,
        split=cfg.get("split") or "train",
    )
    job.tracker.log_artifact(o["rows"])
    job.tracker.log_metrics({"scans": len(table)})


@stage(
    "ingest",
    inputs=RAW_INPUTS,
    optional=RAW_INPUTS,
    outputs={"scan_1p5T": File, "scan_7T": File, "rows": File},
)
def ingest(i, o, cfg, job):
    """``cfg``: the subject's raw files (``scan_1p5T``, ``scan_7T``, ``coef_1p5T``,
    ``coef_7T``; None when absent) and its ``split``. The inputs are those that exist (the
    demo's raw folder for a demo cohort): a missing one fails this subject's job, naming the
    file, not the DAG."""
    _ingest(o, cfg, job, require_7t=True)


@stage(
    "ingest_infer",
    inputs=RAW_INPUTS,
    optional=RAW_INPUTS,
    outputs={"scan_1p5T": File, "rows": File},
)
def ingest_infer(i, o, cfg, job):
    """A subject without a 7T scan: its 1.5T only. ``cfg`` as for :func:`ingest`."""
    _ingest(o, cfg, job, require_7t=False)


@stage("manifest", inputs={"rows": Files}, outputs={"manifest": File})
def manifest(i, o, cfg, job):
    """``cfg``: subject -> split."""
    from sr7t.cohort.ingest import build_manifest

    table = build_manifest(i["rows"], cfg, o["manifest"])
    job.tracker.log_artifact(o["manifest"])
    counts = table.drop_duplicates("subject")["split"].value_counts().to_dict()
    job.tracker.log_metrics({f"subjects_{k}": v for k, v in counts.items()})


@stage(
    "gradunwarp",
    inputs={"scan_7T": File, "scan_1p5T": File, **RAW_COEFS},
    optional=RAW_COEFS,
    outputs={"unwarped_7T": File, "jacobian": File, "dispmag": File, "qc": File},
)
def gradunwarp(i, o, cfg, job):
    """``cfg``: the subject's coefficient files (``coef_1p5T``, ``coef_7T``; None: none)."""
    from sr7t.io import read_json
    from sr7t.preprocess.gnl import run_gradunwarp_stage

    run_gradunwarp_stage(
        i["scan_7T"],
        cfg.get("coef_7T") or None,
        i["scan_1p5T"],
        cfg.get("coef_1p5T") or None,
        o["unwarped_7T"],
        o["jacobian"],
        o["dispmag"],
        o["qc"],
        subject=job.subject,
    )
    job.tracker.log_metrics(numbers_only(read_json(o["qc"])))
    job.tracker.log_artifact(o["qc"])


@stage(
    "n4",
    inputs={"scan": File},
    outputs={"corrected": File, "bias": File, "mask": File, "qc": File},
    config=("preprocess.n4",),
)
def n4(i, o, cfg, job):
    from sr7t.preprocess.n4 import run_n4_stage

    qc = run_n4_stage(
        i["scan"], o["corrected"], o["bias"], o["mask"], o["qc"], cfg, job.threads, job.subject
    )
    job.tracker.log_metrics(numbers_only(qc))


REGISTERED_MAPS = ("bias", "jacobian", "dispmag")  # resampled with the 1.5T onto the 7T grid


@stage(
    "register",
    inputs={
        "moving": File,
        "fixed": File,
        "fixed_mask": File,
        **dict.fromkeys(REGISTERED_MAPS, File),
    },
    outputs={
        "moving": File,
        **dict.fromkeys(REGISTERED_MAPS, File),
        "transform": File,
        "qc": File,
        "qc_png": File,
    },
    config=("preprocess.register",),
)
def register(i, o, cfg, job):
    from sr7t.io import read_json
    from sr7t.preprocess.register import run_register_stage

    try:
        run_register_stage(
            i["moving"],
            i["fixed"],
            i["fixed_mask"],
            {name: (i[name], o[name]) for name in REGISTERED_MAPS},
            o["moving"],
            o["transform"],
            o["qc"],
            o["qc_png"],
            cfg,
            threads=job.threads,
            subject=job.subject,
        )
    finally:  # a diverged registration still logs its numbers
        if Path(o["qc"]).exists():
            job.tracker.log_metrics(numbers_only(read_json(o["qc"])))
    job.tracker.log_figure(o["qc_png"])


# Per-subject inputs: input name -> (sr7t.paths template, its fixed fields); the rule asks for
# each of them for every subject with a 7T (common.smk: each_subject), the stage regroups them
# by subject (:func:`by_subject`).
QC_INPUTS = {
    "gnl": ("gnl_qc", {}),
    "n4_1p5T": ("n4_qc", {"field": "1p5T"}),
    "n4_7T": ("n4_qc", {"field": "7T"}),
    "reg": ("reg_qc", {}),
    "reg_transform": ("reg_transform", {}),
    "n4_bias_7T": ("n4_bias", {"field": "7T"}),
    "unwarped_7T": ("gnl_7T_unwarped", {}),
    "scan_7T": ("ingest_scan", {"field": "7T"}),
}
SUBJECT_FIGURES = {"reg_png": ("reg_qc_png", {}), "guidance_png": ("dataset_qc_png", {})}


@stage(
    "preprocess_qc",
    inputs={**dict.fromkeys(QC_INPUTS, Files), "raw": File},
    optional={"raw"},
    outputs={"table": File},
)
def preprocess_qc(i, o, cfg, job):
    """One QC row per subject; ``raw`` (demo cohorts): errors against the known truth."""
    from sr7t.preprocess.qc import preprocess_qc_table

    subjects = by_subject(i, QC_INPUTS)
    truth = None
    if "raw" in i:
        truth = {s: paths.inside(i["raw"], "demo_truth_dir", subject=s) for s in subjects}
    table = preprocess_qc_table(subjects, truth, o["table"])
    job.tracker.log_artifact(o["table"])
    job.tracker.log_metrics(
        {f"mean_{k}": float(v) for k, v in table.select_dtypes("number").mean().items()}
    )


@stage(
    "dataset",
    inputs=dict.fromkeys(
        (
            "reg_1p5T",
            "reg_bias",
            "reg_jacobian",
            "reg_dispmag",
            "gnl_qc",
            "native_1p5T",
            "mask",
            "target",
        ),
        File,
    ),
    outputs={"npz": File, "png": File},
)
def dataset(i, o, cfg, job):
    from sr7t.data.dataset import build_subject_arrays, save_guidance_figure

    summary = build_subject_arrays(
        i["reg_1p5T"],
        i["reg_bias"],
        i["reg_jacobian"],
        i["reg_dispmag"],
        i["gnl_qc"],
        i["native_1p5T"],
        i["mask"],
        i["target"],
        o["npz"],
        subject=job.subject,
    )
    job.tracker.log_params(summary)
    job.tracker.log_figure(save_guidance_figure(o["npz"], o["png"], job.subject))


# history: every record of the trainer's metrics callback, one row per step (the report's
# training curves); run: where the job's MLflow run lives (the report's links)
MODEL_OUTPUTS = {"model": File, "summary": File, "history": File, "run": File}


def _trained(o: dict, job: Job, train: Callable, *args) -> None:
    """Run a trainer with the job's callbacks; write and log its summary, its history of
    metrics (:class:`sr7t.report.curves.TrainingHistory`: what MLflow gets, kept) and where
    its MLflow run lives."""
    from sr7t.io import write_json
    from sr7t.report.curves import TrainingHistory
    from sr7t.report.runs import write_run_record

    history = TrainingHistory(then=job.tracker.log_metrics)
    summary = train(
        *args,
        o["model"],
        job.params["checkpoints"],
        metrics_cb=history,
        device=job.device,
        artifact_cb=job.tracker.log_figure,
    )
    write_json(o["summary"], summary)
    job.tracker.log_metrics(numbers_only(summary))
    kept = ("device", "processor", "autocast", "loader_workers")
    job.tracker.log_params({k: summary[k] for k in kept if k in summary})
    job.tracker.log_artifact(o["summary"])
    # under torchrun only rank 0 gets the metrics: the other ranks must not overwrite its files
    if os.environ.get("RANK", "0") == "0":
        history.write(o["history"])
        job.tracker.log_artifact(o["history"])
        write_run_record(job.tracker, o["run"])


def _register_if_final(model: str, name: str, job: Job) -> None:
    """Register the final model of the chain (:func:`sr7t.infer.source.final_model`) as an
    MLflow registered model named by config ``tracking.register_model`` (``{cohort}``
    replaced; null: not registered), so an inference cohort can load it by name."""
    from sr7t.infer.source import final_model

    whole = job.config or {}
    template = (whole.get("tracking") or {}).get("register_model")
    if not template or not whole.get("distill") or name != final_model(whole):
        return
    cohort = job.wildcards.get("cohort", "adhoc")
    registered = template.format(cohort=cohort)
    version = job.tracker.register_model(model, registered, {"cohort": cohort, "model": name})
    if version:
        log.info("registered %s as MLflow model %s version %s", model, registered, version)


@stage(
    "teacher",
    inputs={"train": Files, "val": Files},
    outputs=MODEL_OUTPUTS,
    config=("teacher", "data"),
    params=("checkpoints",),
)
def teacher(i, o, cfg, job):
    from sr7t.train.teacher import train_teacher

    _trained(o, job, train_teacher, i["train"], i["val"], whole_config("teacher", job, cfg))
    _register_if_final(o["model"], "teacher", job)


@stage(
    "distill_stage",
    inputs={"parent": File, "train": Files, "val": Files},
    outputs=MODEL_OUTPUTS,
    config=("distill", "data"),
    params=("checkpoints",),
)
def distill_stage(i, o, cfg, job):
    """Stage ``k`` (wildcard) from its parent (the teacher, or stage k-1)."""
    from sr7t.distill.stage import distill_stage as distill

    k = int(job.wildcards["k"])
    job.tracker.log_params({"stage": k})
    whole = whole_config("distill_stage", job, cfg)
    _trained(o, job, distill, i["parent"], i["train"], i["val"], whole, k)
    _register_if_final(o["model"], f"student_stage{k}", job)


@stage(
    "regression",
    inputs={"train": Files, "val": Files},
    outputs=MODEL_OUTPUTS,
    # the final student's budget; the teacher's blocks, groups and guidance (as every student's)
    config=(
        "distill",
        "data",
        "teacher.num_res_blocks",
        "teacher.norm_num_groups",
        "teacher.use_guidance",
    ),
    params=("checkpoints",),
)
def regression(i, o, cfg, job):
    from sr7t.train.regression import train_regression

    whole = whole_config("regression", job, cfg)
    _trained(o, job, train_regression, i["train"], i["val"], whole)


@stage(
    "evaluate_model",
    inputs={"model": File, "raw": File, "test": Files, "train": Files},
    optional={"model", "raw", "train"},
    outputs={"metrics": File, "predictions": File, "example": File, "run": File},
    config=("evaluate",),
)
def evaluate_model(i, o, cfg, job):
    """Model ``model`` (wildcard; ``model`` input: its bundle, absent for the interpolation
    baselines) on every cell of every held-out subject; ``raw`` (demo cohorts): the truth.
    The ``predictions`` folder holds each cell's prediction and, for a model that drew
    several samples, their per-voxel standard deviation (``*_std.nii.gz``). Also its
    example-slice reportlet (:func:`sr7t.evaluate.example.save_example_figure`) and where its
    MLflow run lives (``run``)."""
    from sr7t.evaluate.example import save_example_figure
    from sr7t.evaluate.run import evaluate_model as evaluate
    from sr7t.report.runs import write_run_record

    name = job.wildcards["model"]
    truth = paths.inside(i["raw"], "demo_truth_root") if "raw" in i else None
    predictions = Path(o["predictions"])
    pattern = str(predictions / Path(paths.TEMPLATES["eval_prediction"]).name)
    std_pattern = str(predictions / Path(paths.TEMPLATES["eval_uncertainty"]).name)
    predictions.mkdir(parents=True, exist_ok=True)
    table = evaluate(
        name,
        i.get("model"),
        i["test"],
        cfg,
        pattern,
        o["metrics"],
        truth,
        job.device,
        std_pattern=std_pattern,
        train_files=i.get("train"),
        cores=job.threads or 1,
    )
    job.tracker.log_artifact(o["metrics"])
    for (kind, res), group in table.groupby(["input", "resolution_mm"]):
        job.tracker.log_metrics(
            {
                f"{kind}_{k}_{res:g}mm": float(group[k].mean())
                for k in ("psnr", "ssim", "hfen", "seconds")
            }
        )
    first = paths.match("dataset_subject", i["test"][0])["subject"]
    truth_dir = paths.inside(i["raw"], "demo_truth_dir", subject=first) if "raw" in i else None
    save_example_figure(name, i["test"][0], truth_dir, cfg, pattern, o["example"])
    job.tracker.log_figure(o["example"])
    write_run_record(job.tracker, o["run"])


@stage(
    "montage",
    inputs={"predictions": Files, "test": Files, "raw": File},
    optional={"raw"},
    outputs={"figure": File},
    config=("evaluate",),
)
def montage(i, o, cfg, job):
    """Every model's prediction folder (in column order) on the first held-out subject's
    example cell, with error maps, uncertainty and zoomed insets
    (:func:`sr7t.evaluate.montage.save_montage_figure`); ``raw`` (demo cohorts): the truth."""
    from sr7t.evaluate.montage import save_montage_figure

    folders = {paths.match("eval_predictions", f)["model"]: f for f in i["predictions"]}
    first = paths.match("dataset_subject", i["test"][0])["subject"]
    truth_dir = paths.inside(i["raw"], "demo_truth_dir", subject=first) if "raw" in i else None
    save_montage_figure(
        i["test"][0],
        truth_dir,
        cfg,
        folders,
        Path(paths.TEMPLATES["eval_prediction"]).name,
        Path(paths.TEMPLATES["eval_uncertainty"]).name,
        o["figure"],
    )
    job.tracker.log_figure(o["figure"])


@stage("training_curves", inputs={"histories": Files}, outputs={"figure": File})
def training_curves(i, o, cfg, job):
    """One loss panel per trained model, in the order the rule lists their histories (the
    teacher, the distillation chain, the rest)."""
    from sr7t.report.curves import save_training_curves

    histories = {paths.match("model_history", f)["model"]: f for f in i["histories"]}
    save_training_curves(histories, o["figure"])
    job.tracker.log_figure(o["figure"])


@stage(
    "metrics", inputs={"tables": Files}, outputs={"table": File, "figure": File, "summary": File}
)
def metrics(i, o, cfg, job):
    from sr7t.evaluate.run import combine_metrics

    combine_metrics(i["tables"], o["table"], o["figure"], o["summary"])
    job.tracker.log_artifact(o["table"])
    job.tracker.log_artifact(o["summary"])
    job.tracker.log_figure(o["figure"])


@stage(
    "report",
    inputs={
        "metrics": File,
        "figure": File,
        "summary": File,
        "preprocess_qc": File,
        "manifest": File,
        **dict.fromkeys(SUBJECT_FIGURES, Files),
        "summaries": Files,
        "examples": Files,
        "montage": File,
        "training_curves": File,
        "runs": Files,
        "config": File,
    },
    optional={"montage", "training_curves", "runs", "config"},
    outputs={"report": File},
    config=("tracking.ui_url",),
    params=("left_out",),
)
def report(i, o, cfg, job):
    """The cohort's HTML report, assembled from the declared tables and reportlets only, as
    :data:`sr7t.report.html.REPORT_SPEC` lists them (an absent optional input: one note).
    ``runs``: the ``mlflow_run.json`` of the training and evaluation jobs; ``cfg``: config
    ``tracking.ui_url`` (the MLflow UI the links open in); ``params.left_out``: the subjects
    left out for bad input, with their error. The report's own run and its workflow's parent
    run come from this job's tracker."""
    from sr7t.report.html import write_report

    own = job.tracker.describe() if hasattr(job.tracker, "describe") else None
    own_runs = {}
    if isinstance(own, dict) and own.get("run_id"):
        own_runs["report (this job)"] = own
        if own.get("parent_run_id"):
            own_runs["workflow (parent run)"] = own | {
                "run_id": own["parent_run_id"],
                "run_name": "workflow",
            }
    write_report(
        job.wildcards.get("cohort", "adhoc"),
        o["report"],
        i,
        ui_url=cfg,
        own_runs=own_runs,
        left_out=job.params.get("left_out"),
    )
    job.tracker.log_artifact(o["report"])


# ------------------------------------------------------- inference of subjects without a 7T


@stage(
    "infer_model",
    inputs={"bundle": File},
    optional={"bundle"},
    outputs={"model": File, "info": File},
)
def infer_model(i, o, cfg, job):
    """``cfg``: the cohort's model spec (:func:`sr7t.infer.source.model_source`); ``bundle``:
    the model file (another cohort's model or a bundle path), absent for an MLflow model,
    which comes from the workflow's tracking store."""
    from sr7t.infer.run import resolve_model
    from sr7t.tracking import ENV_URI, resolve_tracking_uri

    whole = job.config or {}
    uri = os.environ.get(ENV_URI) or resolve_tracking_uri(
        (whole.get("tracking") or {}).get("uri"), whole.get("results_dir", "results")
    )
    info = resolve_model(cfg, i.get("bundle"), o["model"], o["info"], uri)
    job.tracker.log_params({"model": info["description"], "sha256": info["sha256"]})
    job.tracker.log_artifact(o["info"])


@stage(
    "infer_n4",
    inputs={"scan": File, "model": File},
    outputs={"corrected": File, "bias": File, "mask": File, "qc": File},
)
def infer_n4(i, o, cfg, job):
    """``cfg``: ``brain_mask`` (auto or head). N4 with the model's own N4 config."""
    from sr7t.infer.run import n4

    qc = n4(
        i["scan"],
        i["model"],
        o["corrected"],
        o["bias"],
        o["mask"],
        o["qc"],
        cfg["brain_mask"],
        job.subject,
        job.threads,
    )
    job.tracker.log_metrics(numbers_only(qc))


@stage(
    "infer_guidance",
    inputs={"scan": File, "model": File, "coef_1p5T": File, "raw": File},
    optional={"coef_1p5T", "raw"},
    outputs={"jacobian": File, "dispmag": File},
)
def infer_guidance(i, o, cfg, job):
    """``cfg``: the subject's raw files; its ``coef_1p5T`` (None: no GNL correction)."""
    from sr7t.infer.run import guidance

    coef = cfg.get("coef_1p5T") or None
    info = guidance(i["scan"], i["model"], coef, o["jacobian"], o["dispmag"], job.subject)
    job.tracker.log_metrics(numbers_only(info))


@stage(
    "infer",
    inputs=dict.fromkeys(
        ("scan", "corrected", "bias", "mask", "n4_qc", "jacobian", "dispmag", "model"), File
    )
    | {"model_info": File},
    outputs={"t1w": File, "sidecar": File, "figure": File},
)
def infer(i, o, cfg, job):
    """``cfg``: ``subject``, ``source`` (the input's BIDS or file URI), ``gnl`` (a coefficient
    file was given). Wildcard ``res``: the output's resolution label (the model's)."""
    from sr7t.infer.run import super_resolve_subject

    summary = super_resolve_subject(
        i,
        o["t1w"],
        o["sidecar"],
        o["figure"],
        cfg["source"],
        job.wildcards["res"],
        bool(cfg["gnl"]),
        subject=cfg["subject"],
        device=job.device,
    )
    job.tracker.log_metrics(numbers_only(summary))
    job.tracker.log_figure(o["figure"])


@stage("derivatives_description", outputs={"description": File})
def derivatives_description(i, o, cfg, job):
    """``cfg``: ``name`` (the dataset's) and ``bids_root`` (the BIDS input, or None)."""
    from sr7t import __version__
    from sr7t.infer.bids import dataset_description
    from sr7t.io import write_json

    write_json(o["description"], dataset_description(cfg["name"], __version__, cfg["bids_root"]))


@stage(
    "infer_report",
    inputs={"model_info": File, "t1w": Files, "sidecars": Files, "figures": Files},
    outputs={"report": File},
    params=("left_out",),
)
def infer_report(i, o, cfg, job):
    """``cfg``: the subjects, in the order of the ``t1w``, ``sidecars`` and ``figures`` lists;
    ``params.left_out``: the subjects left out for bad input, with their error."""
    from sr7t.report.inference import write_inference_report

    files = zip(i["t1w"], i["sidecars"], i["figures"], strict=True)
    subjects = {
        s: {"t1w": t, "sidecar": j, "figure": f}
        for s, (t, j, f) in zip(cfg["subjects"], files, strict=True)
    }
    write_inference_report(
        job.wildcards.get("cohort", "adhoc"),
        o["report"],
        model_info=i["model_info"],
        subjects=subjects,
        left_out=job.params.get("left_out"),
    )
    job.tracker.log_artifact(o["report"])
