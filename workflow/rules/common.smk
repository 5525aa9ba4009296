# Shared helpers: config validation, cohorts, and every path (from sr7t.paths, one table).
import json
from pathlib import Path

from sr7t import paths as P
from sr7t.cohort.samples import load_cohort
from sr7t.config import check_models, load_schema, validate

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
config.update(validate(config, load_schema(SCHEMAS / "config.schema.yaml")))
check_models(config)
SAMPLES_SCHEMA = load_schema(SCHEMAS / "samples.schema.yaml")

RESULTS = config["results_dir"]
COHORTS = {
    name: load_cohort(name, ccfg, RESULTS, SAMPLES_SCHEMA)
    for name, ccfg in config["cohorts"].items()
}
RUN_COHORTS = config.get("run_cohorts") or list(COHORTS)
for _name in RUN_COHORTS:
    if _name not in COHORTS:
        raise ValueError(f"config: run_cohorts names unknown cohort {_name!r}")
N_STAGES = config["distill"]["stages"]
LEARNED_MODELS = ["teacher"] + [f"student_stage{k}" for k in range(1, N_STAGES + 1)]
LEARNED_MODELS += ["regression"] if config["evaluate"]["regression_baseline"] else []
EVAL_MODELS = config["evaluate"]["baselines"] + LEARNED_MODELS
GPU = 1 if config["use_gpu"] else 0
ENV = "../../envs/sr7t.yaml"


wildcard_constraints:
    cohort="|".join(COHORTS),
    subject=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    field="1p5T|7T",
    model="|".join(EVAL_MODELS),
    k=r"[1-9][0-9]*",


def out(name, **fields):
    """Output pattern ``name`` under the results root; wildcards stay ``{wildcard}``."""
    return P.pattern(name, RESULTS, **fields)


def log(rule, tag="{cohort}"):
    return P.LOG_TEMPLATE.format(cohort="{cohort}", rule=rule, tag=tag)


def subjects(cohort, split=None):
    """Sorted subjects of ``cohort`` in ``split``; None: every subject with a 7T scan (train,
    val, test). Split "infer" subjects (no 7T) are only ingested: they stay out of every rule
    that needs a 7T."""
    c = COHORTS[cohort]
    if split is None:
        return sorted(s for s in c.subjects if not inferring(c.subjects[s]))
    return sorted(c.in_split(split))


def inferring(sub):
    """A subject without a 7T scan (split "infer"): ingest its 1.5T, nothing downstream."""
    return sub.split == "infer" or not sub.has_7t


def subject_record(wildcards):
    return COHORTS[wildcards.cohort].subjects[wildcards.subject]


def per_subject(name, split=None, **fields):
    """Input function: ``name`` for every subject (of ``split``) of the job's cohort."""

    def inputs(wildcards):
        return [
            P.pattern(name, RESULTS, cohort=wildcards.cohort, subject=s, **fields)
            for s in subjects(wildcards.cohort, split)
        ]

    return inputs


# Shell suffix for a command that writes to its log; when the command fails, the log's
# last line (the job's one-line error, e.g. "subject s: 7T scan file ... does not exist") goes
# to the console too, where Snakemake's own error block says only "message: None".
SHOW_ERROR = " || {{ rc=$?; tail -n 1 {log:q} >&2; exit $rc; }}"


def track(rule):
    """Param function: CLI flags that tag the job's MLflow child run (rule, cohort, wildcards)."""

    def flags(wildcards):
        out = [f"--rule {rule}", f"--cohort {wildcards.cohort}", f"--results-dir {RESULTS!r}"]
        return " ".join(out + [f"--wildcard {k}={v}" for k, v in wildcards.items()])

    return flags


def as_json(obj):
    return json.dumps(obj, sort_keys=True)


def final_outputs():
    targets = []
    for c in RUN_COHORTS:
        targets += [
            P.pattern("preprocess_qc", RESULTS, cohort=c),
            P.pattern("metrics", RESULTS, cohort=c),
            P.pattern("report", RESULTS, cohort=c),
        ]
    return targets


def start_tracking():
    from sr7t.tracking import start_workflow

    start_workflow(RUN_COHORTS, config, list(workflow.configfiles), RESULTS)


def end_tracking(status):
    from sr7t.tracking import end_workflow

    end_workflow(status)


# ---- input and param functions of the stage rules


def ingest_inputs(wildcards):
    """The raw files a subject's ingest reads that exist (the demo's raw folder for demo
    cohorts). A missing one is left out so that it fails its own subject's ingest job, which
    names it (every raw path goes to the job as params), not the whole DAG."""
    if COHORTS[wildcards.cohort].source == "demo":
        return {"raw": out("demo_raw_dir", cohort=wildcards.cohort)}
    sub = subject_record(wildcards)
    keys = ("scan_1p5T", "coef_1p5T") if inferring(sub) else RAW_KEYS
    return {k: v for k in keys if (v := getattr(sub, k)) and Path(v).is_file()}


RAW_KEYS = ("scan_1p5T", "scan_7T", "coef_1p5T", "coef_7T")


def ingest_rows(wildcards):
    """Input function of the manifest: every subject's ingest rows (1.5T-only ones apart)."""
    c = COHORTS[wildcards.cohort]
    return [
        out(
            "ingest_infer_row" if inferring(sub) else "ingest_row",
            cohort=wildcards.cohort,
            subject=s,
        )
        for s, sub in sorted(c.subjects.items())
    ]


def raw(key):
    """Param function: the subject's raw path ``key`` from its cohort ('' when absent)."""
    return lambda w: getattr(subject_record(w), key) or ""


def demo_flags(wildcards):
    from sr7t.cohort.anatomy import COLIN27_SUBJECT

    d = config["cohorts"][wildcards.cohort]["demo"]
    # sub-colin27 was decided at parse time (load_cohort): the job must make the same cohort.
    colin27 = "yes" if COLIN27_SUBJECT in COHORTS[wildcards.cohort].subjects else "no"
    return (
        f"--n-subjects {d['n_subjects']} --colin27 {colin27} --seed {d['seed']} "
        f"--voxel-mm-7t {d['voxel_mm_7t']} "
        f"--voxel-mm-1p5t {' '.join(str(v) for v in d['voxel_mm_1p5t'])}"
    )


def n4_input(wildcards):
    if wildcards.field == "7T":
        return out("gnl_7T_unwarped", cohort=wildcards.cohort, subject=wildcards.subject)
    return out("ingest_scan", cohort=wildcards.cohort, subject=wildcards.subject, field="1p5T")


def parent_model(wildcards):
    k = int(wildcards.k)
    parent = "teacher" if k == 1 else f"student_stage{k - 1}"
    return out("model", cohort=wildcards.cohort, model=parent)


def eval_model_input(wildcards):
    inputs = {}
    if wildcards.model in LEARNED_MODELS:
        inputs["model"] = out("model", cohort=wildcards.cohort, model=wildcards.model)
    if COHORTS[wildcards.cohort].source == "demo":
        inputs["raw"] = out("demo_raw_dir", cohort=wildcards.cohort)
    return inputs


def truth_root(wildcards):
    """Param function: the demo's truth folder (inside its declared raw folder), or ''."""
    if COHORTS[wildcards.cohort].source != "demo":
        return ""
    return out("demo_truth_root", cohort=wildcards.cohort)
