"""Bad input in a samples-sheet cohort stays with its subject: a raw file that does not exist,
a coefficient file that does not parse, a held-out subject without its 7T partner -- each is
named on the console at start, left out of the manifest and everything downstream, and its
own ingest job still runs and fails with the same line (with --keep-going the others go on).
A subject without a 7T scan (split "infer") is ingested for inference and kept out of every
rule that needs a 7T. Snakemake on tiny NIfTI files: a dry run of the whole workflow, then the
ingest jobs and the manifest for real (seconds)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sr7t import paths
from sr7t.io import save_volume
from tests.conftest import REPO
from tests.workflow.dryrun import planned, snakemake

pytestmark = pytest.mark.workflow
COHORT = "sheet"
SEVEN_T_RULES = {"gradunwarp", "n4", "register", "dataset"}


GOOD = {"a", "d", "e"}
LEFT_OUT = {"b", "f", "g"}


def _sheet_cohort(root: Path) -> Path:
    """Subjects a, d (test), e: complete; b: its 7T file is missing; c: no 7T (infer);
    f: its 7T coefficient file does not parse; g: held out for validation, but no 7T."""
    rng = np.random.default_rng(0)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    raw = root / "raw"
    (raw / "junk.grad").parent.mkdir(parents=True)
    (raw / "junk.grad").write_text("not a Siemens gradient file\n")
    for s in "abcdefg":
        save_volume(raw / f"{s}_1p5T.nii.gz", rng.random((12, 12, 10), np.float32) + 0.1, aff)
        if s not in "bcg":
            save_volume(raw / f"{s}_7T.nii.gz", rng.random((12, 12, 10), np.float32) + 0.1, aff)
    rows = [("subject", "scan_1p5T", "scan_7T", "coef_7T")]
    rows += [
        (
            s,
            f"raw/{s}_1p5T.nii.gz",
            "" if s in "cg" else f"raw/{s}_7T.nii.gz",
            "raw/junk.grad" if s == "f" else "",
        )
        for s in "abcdefg"
    ]
    sheet = root / "samples.tsv"
    sheet.write_text("".join("\t".join(r) + "\n" for r in rows))
    split = {"test": ["d"], "val": ["g"]}
    cfg = {
        "cohorts": {COHORT: {"source": "samples", "samples": str(sheet), "split": split}},
        "run_cohorts": [COHORT],
    }
    (root / "sheet.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copytree(REPO / "config", root / "config")
    return root


def _snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake(work, "sheet.yaml", *args)


def _planned(stdout: str) -> dict[str, set[str]]:
    return planned(stdout, "subject")


def _lines(work: Path) -> dict[str, str]:
    """The one-line error of each bad subject (as sr7t.cohort.ingest words it)."""
    grad = work / "raw/junk.grad"
    return {
        "b": f"subject b: 7T scan file {work / 'raw/b_7T.nii.gz'} does not exist",
        "f": f"subject f: 7T gradient coefficient file {grad} ",
        "g": f"subject g: {work / 'raw/g_1p5T.nii.gz'}: has no 7T partner, which its split "
        "(val) needs",
    }


def test_bad_input_is_named_at_start_and_left_out_of_everything_downstream(tmp_path):
    work = _sheet_cohort(tmp_path)
    proc = _snakemake(work, "-n")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _planned(proc.stdout)
    # the bad subjects' ingest jobs run (to fail, saying why); nothing else of theirs does
    assert jobs["ingest"] == GOOD | LEFT_OUT
    assert jobs["ingest_infer"] == {"c"}  # c has no 7T: its 1.5T only
    for rule in SEVEN_T_RULES:
        assert jobs[rule] == GOOD, rule
    for rule in ("manifest", "preprocess_qc", "teacher", "distill_stage", "evaluate_model"):
        assert rule in jobs
    console = proc.stderr.splitlines()
    for s, line in _lines(work).items():
        assert any(x.startswith(f"sr7t: cohort {COHORT}: left out, {line}") for x in console), s


def test_bad_subjects_fail_their_own_ingest_and_the_manifest_is_built_from_the_others(tmp_path):
    work = _sheet_cohort(tmp_path)
    manifest = paths.path("manifest", "results", cohort=COHORT)
    rows = [paths.path("ingest_row", "results", cohort=COHORT, subject=s) for s in LEFT_OUT]
    proc = _snakemake(work, "--cores", "2", "--keep-going", str(manifest), *map(str, rows))
    assert proc.returncode != 0  # the bad subjects' jobs failed
    table = pd.read_csv(work / manifest, sep="\t")
    assert set(table["subject"]) == GOOD | {"c"}
    assert not any((work / r).exists() for r in rows)
    # each job's one-line error reaches the console, not only its log
    console = proc.stderr.splitlines()
    for s, line in _lines(work).items():
        assert any(x.startswith(f"sr7t ingest: {line}") for x in console), (s, proc.stderr[-3000:])
    # the log keeps the traceback for whoever debugs, and ends with the same line
    log = (work / "logs" / COHORT / "ingest" / "b.log").read_text().strip().splitlines()
    assert log[-1] == f"sr7t ingest: {_lines(work)['b']}"


def test_a_cohort_whose_only_test_subject_is_bad_stops_at_start(tmp_path):
    work = _sheet_cohort(tmp_path)
    (work / "raw/d_7T.nii.gz").unlink()
    proc = _snakemake(work, "-n")
    assert proc.returncode != 0
    said = proc.stdout + proc.stderr
    assert f"cohort {COHORT}: no test subject has usable input (subject d: 7T scan" in said


def test_the_teachers_subjects_are_preprocessed_first(tmp_path):
    # a and e train, d is the test subject: its preprocessing may wait for the teacher's;
    # theirs goes longest-chain-first (CHAIN_RANK: ingest, gradunwarp, the 7T's N4, ...)
    work = _sheet_cohort(tmp_path)
    proc = _snakemake(work, "-n")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    priority: dict[tuple[str, str], int] = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", proc.stdout):
        rule = re.match(r"(?:local)?rule (\w+):", block.strip())
        who = re.search(r"wildcards: .*subject=([^,\s]+)", block)
        if rule and who and rule.group(1) in SEVEN_T_RULES | {"ingest"}:
            field = re.search(r"wildcards: .*field=(\w+)", block)
            step = rule.group(1) + (f"_{field.group(1)}" if field else "")
            level = re.search(r"priority: (\d+)", block)
            priority[step, who.group(1)] = int(level.group(1)) if level else 0
    chain = ["ingest", "gradunwarp", "n4_7T", "n4_1p5T", "register", "dataset"]
    assert {step for step, _ in priority} == set(chain)
    for step in chain:
        assert priority[step, "a"] == priority[step, "e"] > 0, step
        assert priority[step, "d"] == 0, step
    ranks = [priority[step, "a"] for step in chain]
    assert ranks == sorted(ranks, reverse=True) and len(set(ranks)) == len(ranks)
