"""What the benchmarks share: the cohort arguments, the config with ``--set`` overrides, and
each split's dataset files from the cohort's manifest (the workflow's own results)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from sr7t import paths
from sr7t.config import resolve

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "val", "test")


def cohort_args(ap: argparse.ArgumentParser, config: bool = True) -> None:
    """``--results`` and ``--cohort``; with ``config``, also ``--config`` and ``--set``."""
    ap.add_argument("--results", default="results")
    ap.add_argument("--cohort", default="demo")
    if config:
        ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
        ap.add_argument("--set", action="append", default=[], help="key.path=YAML value")


def override(cfg: dict, assignment: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to ``cfg`` in place."""
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    node = cfg
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = yaml.safe_load(value)


def resolved_config(config: str | Path, sets: list[str] = ()) -> dict:
    """The config file with each ``key.path=value`` of ``sets`` applied, resolved."""
    raw = yaml.safe_load(Path(config).read_text())
    for item in sets:
        override(raw, item)
    return resolve(raw)


def final_model_name(config: str | Path = REPO / "config" / "config.yaml") -> str:
    """The workflow's final model under ``config`` (``student_stage<distill.stages>``)."""
    from sr7t.infer.source import final_model

    return final_model(resolved_config(config))


def split_files(results: str | Path, cohort: str) -> dict[str, list[str]]:
    """Dataset files per split (train, val, test), subjects sorted, from the manifest."""
    manifest = pd.read_csv(paths.path("manifest", results, cohort=cohort), sep="\t")
    subjects = manifest.drop_duplicates("subject")
    return {
        split: [
            str(paths.path("dataset_subject", results, cohort=cohort, subject=s))
            for s in sorted(subjects.loc[subjects["split"] == split, "subject"])
        ]
        for split in SPLITS
    }
