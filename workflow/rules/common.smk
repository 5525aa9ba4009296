# Shared helpers: config validation, cohorts, and every path (from sr7t.paths, one table).
import json
import os
from pathlib import Path

from sr7t import paths as P
from sr7t.cohort.samples import load_cohort
from sr7t.config import config_hash, load_schema, validate
from sr7t.tracking import resolve_tracking_uri

SCHEMAS = Path(workflow.basedir) / "workflow" / "schemas"
config.update(validate(config, load_schema(SCHEMAS / "config.schema.yaml")))
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
EVAL_MODELS = config["evaluate"]["baselines"] + LEARNED_MODELS
GPU = 1 if config["use_gpu"] else 0
ENV = "../../envs/sr7t.yaml"
# Job processes (local or SLURM) inherit the environment: they tag their MLflow runs with it.
os.environ.setdefault("SR7T_CONFIG_HASH", config_hash(config))
# One tracking URI for every job: MLFLOW_TRACKING_URI if set, else the config's, else the
# embedded SQLite store under the results root.
os.environ["MLFLOW_TRACKING_URI"] = resolve_tracking_uri(config["tracking"]["uri"], RESULTS)


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
    c = COHORTS[cohort]
    return sorted(c.subjects) if split is None else sorted(c.in_split(split))


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


def track(wildcards):
    """CLI flags that tag the job's MLflow child run with its cohort and wildcards."""
    flags = [f"--results-dir {RESULTS!r}"]
    flags += [f"--wildcard {k}={v}" for k, v in wildcards.items()]
    return " ".join(flags)


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
