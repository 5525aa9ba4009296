"""Bad input in a samples-sheet cohort stays with its subject: a raw file that does not exist
fails only that subject's ingest job (the others go on with --keep-going), and a subject
without a 7T scan (split "infer") is ingested for inference and kept out of every rule that
needs a 7T. Snakemake on tiny NIfTI files: a dry run of the whole workflow, then two ingest
jobs for real (seconds)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from sr7t import paths
from sr7t.io import save_volume
from tests.conftest import REPO
from tests.workflow.dryrun import planned, snakemake

pytestmark = pytest.mark.workflow
COHORT = "sheet"
SEVEN_T_RULES = {"gradunwarp", "n4", "register", "dataset"}


def _sheet_cohort(root: Path) -> Path:
    """Subjects a, d (test), e: complete; b: its 7T file is missing; c: no 7T (infer)."""
    rng = np.random.default_rng(0)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    raw = root / "raw"
    for s in "abcde":
        save_volume(raw / f"{s}_1p5T.nii.gz", rng.random((12, 12, 10), np.float32) + 0.1, aff)
        if s not in "bc":
            save_volume(raw / f"{s}_7T.nii.gz", rng.random((12, 12, 10), np.float32) + 0.1, aff)
    rows = [("subject", "scan_1p5T", "scan_7T")]
    rows += [(s, f"raw/{s}_1p5T.nii.gz", "" if s == "c" else f"raw/{s}_7T.nii.gz") for s in "abcde"]
    sheet = root / "samples.tsv"
    sheet.write_text("".join("\t".join(r) + "\n" for r in rows))
    cfg = {
        "cohorts": {COHORT: {"source": "samples", "samples": str(sheet), "split": {"test": ["d"]}}},
        "run_cohorts": [COHORT],
    }
    (root / "sheet.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copytree(REPO / "config", root / "config")
    return root


def _snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake(work, "sheet.yaml", *args)


def _planned(stdout: str) -> dict[str, set[str]]:
    return planned(stdout, "subject")


def test_missing_raw_file_and_subject_without_7t_plan_the_whole_workflow(tmp_path):
    work = _sheet_cohort(tmp_path)
    proc = _snakemake(work, "-n")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _planned(proc.stdout)
    assert jobs["ingest"] == {"a", "b", "d", "e"}  # b's missing 7T does not stop the DAG
    assert jobs["ingest_infer"] == {"c"}  # c has no 7T: its 1.5T only
    for rule in SEVEN_T_RULES:
        assert jobs[rule] == {"a", "b", "d", "e"}, rule
    for rule in ("manifest", "preprocess_qc", "teacher", "distill_stage", "evaluate_model"):
        assert rule in jobs


def test_missing_raw_file_fails_only_its_subjects_ingest(tmp_path):
    work = _sheet_cohort(tmp_path)
    rows = {s: paths.path("ingest_row", "results", cohort=COHORT, subject=s) for s in "ab"}
    proc = _snakemake(work, "--cores", "2", "--keep-going", *map(str, rows.values()))
    assert proc.returncode != 0
    assert (work / rows["a"]).exists()
    assert not (work / rows["b"]).exists()
    # the job's one-line error reaches the console, not only its log
    line = f"subject b: 7T scan file {work / 'raw/b_7T.nii.gz'} does not exist"
    assert f"sr7t ingest: {line}" in proc.stderr.splitlines(), proc.stderr[-3000:]
    # the log keeps the traceback for whoever debugs, and ends with the same line
    log = (work / "logs" / COHORT / "ingest" / "b.log").read_text().strip().splitlines()
    assert log[-1] == f"sr7t ingest: {line}"
