# Shared helpers: the config (resolved once), cohorts, and every path (sr7t.paths, one table).
# Each stage rule names its files, params.cfg and log, and runs the one generic script
# (STAGE), which calls the sr7t stage of the rule's name (sr7t.stages).
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from sr7t import paths as P
from sr7t.cohort.ingest import preflight
from sr7t.cohort.samples import load_cohort, usable_after
from sr7t.config import resolve_workflow_config
from sr7t.infer import bids as BIDS
from sr7t.infer.source import final_model, model_source
from sr7t.io import read_json
from sr7t.stages import QC_INPUTS, SUBJECT_FIGURES, stage_config

config.update(resolve_workflow_config(config))

RESULTS = config["results_dir"]
COHORTS = {
    name: load_cohort(name, ccfg, P.pattern("demo_raw_dir", RESULTS, cohort=name))
    for name, ccfg in config["cohorts"].items()
}
RUN_COHORTS = config.get("run_cohorts") or list(COHORTS)
for _name in RUN_COHORTS:
    if _name not in COHORTS:
        raise ValueError(f"config: run_cohorts names unknown cohort {_name!r}")
# Bad raw input (a missing file or 7T partner, a coefficient file that does not parse:
# sr7t.cohort.ingest.preflight): the subject is left out of the manifest and everything
# downstream, its ingest job still runs and fails with the same line, the reports list it.
LEFT_OUT = {c: preflight(COHORTS[c]) for c in COHORTS}
for _name in RUN_COHORTS:
    for _line in LEFT_OUT[_name].values():
        print(f"sr7t: cohort {_name}: left out, {_line}", file=sys.stderr)
    usable_after(COHORTS[_name], LEFT_OUT[_name])
N_STAGES = config["distill"]["stages"]
LEARNED_MODELS = ["teacher"] + [f"student_stage{k}" for k in range(1, N_STAGES + 1)]
LEARNED_MODELS += ["regression"] if config["evaluate"]["regression_baseline"] else []
EVAL_MODELS = config["evaluate"]["baselines"] + LEARNED_MODELS
GPU = 1 if config["use_gpu"] else 0
# Threads of a torch job (training, evaluation, inference) and of N4. On a machine with fewer
# than 4 cores one each, so that two jobs run side by side: a second thread speeds the
# teacher's training up only 1.16x and a distillation stage's 1.36x (README § Benchmarks),
# and the teacher and the regression baseline, or a stage and the previous model's
# evaluation, are independent. Two otherwise; profiles/slurm sets two (set-threads: a
# cluster executor's local --cores says nothing of its nodes).
try:
    JOB_THREADS = 1 if workflow.cores < 4 else 2
except WorkflowError:  # no --cores (a cluster executor's jobs)
    JOB_THREADS = 2
ENV = "../../envs/sr7t.yaml"
STAGE = "../scripts/stage.py"


wildcard_constraints:
    cohort="|".join(COHORTS),
    bids_dir=r"sub-[A-Za-z0-9]+(/ses-[A-Za-z0-9]+)?",
    bids_prefix=r"sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?",
    res=r"[0-9]+(p[0-9]+)?",
    subject=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    field="1p5T|7T",
    model="|".join(EVAL_MODELS),
    k=r"[1-9][0-9]*",


def out(name, **fields):
    """Output pattern ``name`` under the results root; wildcards stay ``{wildcard}``."""
    return P.pattern(name, RESULTS, **fields)


def log(rule, tag="{cohort}"):
    return P.LOG_TEMPLATE.format(cohort="{cohort}", rule=rule, tag=tag)


def cfg(stage):
    """``params.cfg`` of a stage: the config sections it declares (sr7t.stages)."""
    return stage_config(stage, config)


def subjects(cohort, split=None):
    """Sorted subjects of ``cohort`` in ``split``; None: every subject with a 7T scan (train,
    val, test). Split "infer" subjects (no 7T) are only ingested: they stay out of every rule
    that needs a 7T."""
    c = COHORTS[cohort]
    if split is None:
        found = [s for s in c.subjects if not c.subjects[s].inferring]
    else:
        found = c.in_split(split)
    return sorted(s for s in found if s not in LEFT_OUT[cohort])


# Inference (sr7t.infer): each cohort's subjects without a 7T, whether it trains, where its
# model comes from (checked here, at start) and its subjects' BIDS entities.
INFER_SUBJECTS = {
    c: sorted(
        s for s, sub in COHORTS[c].subjects.items() if sub.inferring and s not in LEFT_OUT[c]
    )
    for c in COHORTS
}
TRAINS = {c: any(s.split == "train" for s in COHORTS[c].subjects.values()) for c in COHORTS}
MODEL_SOURCES = {
    c: model_source(c, config["cohorts"][c], config, TRAINS, not TRAINS[c])
    for c in COHORTS
    if INFER_SUBJECTS[c]
}
BIDS_ROOTS = {c: (config["cohorts"][c].get("bids") or {}).get("root") for c in COHORTS}
ENTITIES = {
    c: BIDS.entities(
        {
            s: BIDS.session_of(COHORTS[c].subjects[s].scan_1p5T) if BIDS_ROOTS[c] else None
            for s in INFER_SUBJECTS[c]
        },
        c,
    )
    for c in MODEL_SOURCES
}
BY_PREFIX = {c: {e["prefix"]: s for s, e in ents.items()} for c, ents in ENTITIES.items()}


def subject_record(wildcards):
    return COHORTS[wildcards.cohort].subjects[wildcards.subject]


# Each preprocessing job of a training or validation subject by the longest chain left from it
# to the subject's dataset file (seconds in the 1.2 mm demo: ingest 3, gradunwarp 9, N4 of
# the 7T 26 and of the 1.5T 6, register 14, dataset 10): when a core frees, the job heading
# the longest chain goes first, so that no subject's chain is left to run alone at the end
# while the teacher waits (critical-path list scheduling).
CHAIN_RANK = {"ingest": 6, "gradunwarp": 5, "n4_7T": 4, "n4_1p5T": 3, "register": 2, "dataset": 1}


def teacher_subjects_first(step):
    """Priority function of preprocessing step ``step``: the training and validation
    subjects' jobs go first (:data:`CHAIN_RANK`), so the teacher (the longest chain's head)
    starts before the test subjects are ready; theirs (0) runs beside it."""

    def priority(wildcards):
        if subject_record(wildcards).split not in ("train", "val"):
            return 0
        return CHAIN_RANK[f"n4_{wildcards.field}" if step == "n4" else step]

    return priority


def per_subject(name, split=None, **fields):
    """Input function: ``name`` for every subject (of ``split``) of the job's cohort."""

    def inputs(wildcards):
        return [
            P.pattern(name, RESULTS, cohort=wildcards.cohort, subject=s, **fields)
            for s in subjects(wildcards.cohort, split)
        ]

    return inputs


def each_subject(spec):
    """Input function for unpack(): each input of ``spec`` (name -> (sr7t.paths template,
    fields), declared by the stage) for every subject with a 7T."""
    return lambda w: {k: per_subject(t, **f)(w) for k, (t, f) in spec.items()}


def per_model(name, models):
    return expand(out(name, model="{model}"), model=models, allow_missing=True)


def final_outputs():
    """Targets of `all`: per cohort its resolved config; the training branch
    (QC, metrics, report) when it trains; the inference branch (BIDS derivatives and their
    report) when it has subjects without a 7T. The derivatives come in as the report's inputs:
    their names wait for the infer_model checkpoint, and only the report's job waits with
    them, so a dry run still lists every other job."""
    targets = []
    for c in RUN_COHORTS:
        targets.append(P.pattern("resolved_config", RESULTS, cohort=c))
        if TRAINS[c]:
            targets += [out(n, cohort=c) for n in ("preprocess_qc", "metrics", "report")]
        if INFER_SUBJECTS[c]:
            targets += [out("derivatives_description", cohort=c), out("infer_report", cohort=c)]
        targets += [ingest_row(c, s) for s in LEFT_OUT[c]]  # fails, and says why
    return targets


def start_tracking():
    from sr7t.tracking import start_workflow

    start_workflow(RUN_COHORTS, config, list(workflow.configfiles), RESULTS)


def end_tracking(status):
    from sr7t.tracking import end_workflow

    end_workflow(status)


# ---- input and param functions of the stage rules


def evaluate_threads(wildcards):
    """Threads of a model's evaluation: twice a job's for the final model's, which ends the
    longest chain with nothing left to run beside it (its subjects are scored side by side,
    sr7t.evaluate.run), a job's for the others, which run beside training."""
    return 2 * JOB_THREADS if wildcards.model == final_model(config) else JOB_THREADS


def demo_raw(wildcards):
    """The demo's raw folder (its truth inside) for a demo cohort; nothing otherwise."""
    if COHORTS[wildcards.cohort].source != "demo":
        return {}
    return {"raw": out("demo_raw_dir", cohort=wildcards.cohort)}


RAW_KEYS = ("scan_1p5T", "scan_7T", "coef_1p5T", "coef_7T")


def raw_inputs(*keys):
    """Input function: the raw files ``keys`` of the job's subject that exist (the demo's raw
    folder for demo cohorts). A missing one is left out so that it fails its own subject's job,
    which names it (every raw path goes to the job in params.cfg), not the whole DAG."""

    def inputs(wildcards):
        if COHORTS[wildcards.cohort].source == "demo":
            return demo_raw(wildcards)
        sub = subject_record(wildcards)
        wanted = [k for k in keys if not sub.inferring or k.endswith("1p5T")]
        return {k: v for k in wanted if (v := getattr(sub, k)) and Path(v).is_file()}

    return inputs


def raw_files(wildcards):
    """Param function: the subject's raw paths (None when absent) and its split."""
    sub = subject_record(wildcards)
    return {k: getattr(sub, k) for k in RAW_KEYS} | {"split": sub.split}


def ingest_row(cohort, subject):
    sub = COHORTS[cohort].subjects[subject]
    return out(
        "ingest_infer_row" if sub.inferring else "ingest_row", cohort=cohort, subject=subject
    )


def ingest_rows(wildcards):
    """Input function of the manifest: the ingest rows of every subject not left out."""
    c = wildcards.cohort
    return [ingest_row(c, s) for s in sorted(COHORTS[c].subjects) if s not in LEFT_OUT[c]]


def splits(wildcards):
    c = wildcards.cohort
    return {s: r.split for s, r in COHORTS[c].subjects.items() if s not in LEFT_OUT[c]}


def left_out(wildcards):
    """Param function of the reports: the subjects left out for bad input, with the line."""
    return LEFT_OUT[wildcards.cohort]


def demo_config(wildcards):
    """Param function: the cohort's demo section, sub-colin27 and sub-inia19 as decided at
    parse time (load_cohort), so that the job makes the cohort the DAG was planned for."""
    from sr7t.cohort.anatomy import COLIN27_SUBJECT, INIA19_SUBJECT

    subjects = COHORTS[wildcards.cohort].subjects
    return {
        **config["cohorts"][wildcards.cohort]["demo"],
        "colin27": COLIN27_SUBJECT in subjects,
        "inia19": INIA19_SUBJECT in subjects,
    }


def n4_input(wildcards):
    if wildcards.field == "7T":
        return out("gnl_7T_unwarped", cohort=wildcards.cohort, subject=wildcards.subject)
    return out("ingest_scan", cohort=wildcards.cohort, subject=wildcards.subject, field="1p5T")


def parent_model(wildcards):
    k = int(wildcards.k)
    parent = "teacher" if k == 1 else f"student_stage{k - 1}"
    return out("model", cohort=wildcards.cohort, model=parent)


def eval_inputs(wildcards):
    """The model's bundle (learned models), the training subjects (a baseline that maps
    contrast, sr7t.evaluate.run.MAPPED_BASELINES) and the demo's raw folder (its truth)."""
    from sr7t.evaluate.run import MAPPED_BASELINES

    inputs = demo_raw(wildcards)
    if wildcards.model in LEARNED_MODELS:
        inputs["model"] = out("model", cohort=wildcards.cohort, model=wildcards.model)
    if wildcards.model in MAPPED_BASELINES:
        inputs["train"] = per_subject("dataset_subject", "train")(wildcards)
    return inputs


# ---- inference of subjects without a 7T (workflow/rules/infer.smk)


def infer_model_input(wildcards):
    """The model file the cohort's model comes from (none for an MLflow registered model)."""
    spec = MODEL_SOURCES[wildcards.cohort]
    if spec["source"] == "cohort":
        return {"bundle": out("model", cohort=spec["cohort"], model=spec["model"])}
    return {"bundle": spec["path"]} if spec["source"] == "bundle" else {}


def model_spec(wildcards):
    return MODEL_SOURCES[wildcards.cohort]


def infer_brain_mask(wildcards):
    return {"brain_mask": config["cohorts"][wildcards.cohort]["brain_mask"]}


def res_label(cohort):
    """The output's resolution label: the model's (its description, a checkpoint output)."""
    return read_json(checkpoints.infer_model.get(cohort=cohort).output.info)["res_label"]


def derivatives(name, cohort):
    """Every inference subject's derivative file ``name`` (sr7t.paths) of ``cohort``."""
    res = res_label(cohort)
    return [
        out(name, cohort=cohort, bids_dir=e["dir"], bids_prefix=e["prefix"], res=res)
        for _, e in sorted(ENTITIES[cohort].items())
    ]


def infer_subject(wildcards):
    return BY_PREFIX[wildcards.cohort][wildcards.bids_prefix]


def infer_inputs(wildcards):
    s = dict(cohort=wildcards.cohort, subject=infer_subject(wildcards))
    return {
        "scan": out("ingest_infer_scan", **s),
        "corrected": out("infer_n4_corrected", **s),
        "bias": out("infer_n4_bias", **s),
        "mask": out("infer_n4_mask", **s),
        "n4_qc": out("infer_n4_qc", **s),
        "jacobian": out("infer_jacobian", **s),
        "dispmag": out("infer_dispmag", **s),
        "model": out("infer_model", cohort=wildcards.cohort),
        "model_info": out("infer_model_info", cohort=wildcards.cohort),
    }


def infer_params(wildcards):
    subject = infer_subject(wildcards)
    sub = COHORTS[wildcards.cohort].subjects[subject]
    source = BIDS.source_uri(sub.scan_1p5T, BIDS_ROOTS[wildcards.cohort])
    return {"subject": subject, "source": source, "gnl": bool(sub.coef_1p5T)}


def derivatives_params(wildcards):
    name = f"sr7t super-resolution of cohort {wildcards.cohort}"
    return {"name": name, "bids_root": BIDS_ROOTS[wildcards.cohort]}


def infer_report_inputs(wildcards):
    c = wildcards.cohort
    return {
        "model_info": out("infer_model_info", cohort=c),
        "t1w": derivatives("derivative_t1w", c),
        "sidecars": derivatives("derivative_sidecar", c),
        "figures": derivatives("derivative_figure", c),
    }


def infer_report_params(wildcards):
    return {"subjects": INFER_SUBJECTS[wildcards.cohort]}
