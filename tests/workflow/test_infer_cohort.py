"""An inference-only cohort, run for real: two 1.5T scans without 7T partners, a tiny model
bundle trained in seconds, Snakemake from ingest to the BIDS derivatives and their report.
Then, on the finished run, a dry run after adding one subject plans only that subject's jobs
and what depends on it; and a cohort without a model fails at start naming the key."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from sr7t import paths
from sr7t.io import save_volume
from tests.conftest import REPO
from tests.workflow.dryrun import planned, snakemake

sys.path.insert(0, str(REPO / "tests"))
from model_phantom import tiny_config, write_phantom_npz  # noqa: E402

pytestmark = pytest.mark.workflow
COHORT = "routine"
BIDS_NAME = re.compile(r"^sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?_res-[0-9]+(p[0-9]+)?_desc-sr7t_T1w")
INFER_RULES = {"ingest_infer", "infer_n4", "infer_guidance", "infer"}


def _head(shape, spacing, seed):
    """A smooth skull-stripped head-like blob (x, y, z) with a few bright structures."""
    rng = np.random.default_rng(seed)
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing, strict=True)]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    r2 = (x / 28) ** 2 + (y / 34) ** 2 + (z / 26) ** 2
    vol = np.where(r2 < 1, 0.6 + 0.2 * np.cos(x / 6) * np.sin(y / 7), 0.0)
    for _ in range(4):
        c = rng.uniform(-12, 12, 3)
        vol += 0.5 * np.exp(-((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / 40) * (r2 < 1)
    return (vol * 400 + rng.normal(0, 4, vol.shape) * (r2 < 1)).clip(0).astype(np.float32)


# Scan geometries: a: thick along z, axis-aligned; b: LPS-like and oblique, thick along x;
# c (added later): thick along y.
def _affine(spacing, oblique=False):
    a = np.diag([*spacing, 1.0])
    if oblique:
        t = np.deg2rad(12)
        rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
        a[:3, :3] = np.diag([-1.0, 1.0, 1.0]) @ rot @ np.diag(spacing)
    a[:3, 3] = [-30.0, -36.0, -28.0]
    return a


SCANS = {
    "a": ((20, 24, 10), (3.0, 3.0, 6.0), False),
    "b": ((10, 24, 20), (6.0, 3.0, 3.0), True),
    "c": ((20, 12, 20), (3.0, 6.0, 3.0), False),
}


def _write_scan(work: Path, subject: str) -> Path:
    shape, spacing, oblique = SCANS[subject]
    path = work / "raw" / f"{subject}_1p5T.nii.gz"
    save_volume(path, _head(shape, spacing, ord(subject)), _affine(spacing, oblique))
    return path


def _sheet(work: Path, subjects: str) -> None:
    rows = ["subject\tscan_1p5T"] + [f"{s}\traw/{s}_1p5T.nii.gz" for s in subjects]
    (work / "samples.tsv").write_text("\n".join(rows) + "\n")


def _snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake(work, "infer.yaml", *args)


def _planned(stdout: str) -> dict[str, set[str]]:
    return planned(stdout, "subject|bids_prefix")


def _config(work: Path, model: dict | None, cohort_extra: dict | None = None) -> None:
    cohort = {"source": "samples", "samples": "samples.tsv", "brain_mask": "head"}
    if model is not None:
        cohort["model"] = model
    cfg = {"cohorts": {COHORT: {**cohort, **(cohort_extra or {})}}, "run_cohorts": [COHORT]}
    (work / "infer.yaml").write_text(yaml.safe_dump(cfg))
    (work / "config").mkdir(exist_ok=True)
    (work / "config" / "config.yaml").write_text("cohorts: {}\n")


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real teacher bundle, trained for a few steps on the tests' phantom (2 mm voxels,
    slice spacing 4-8 mm)."""
    import torch

    from sr7t.train.teacher import train_teacher

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bundle")
    files = write_phantom_npz(root / "npz", 2)
    cfg = tiny_config(teacher={"train_steps": 4, "val_every": 1000, "checkpoint_every": 1000})
    train_teacher(files[:1], files[1:], cfg, root / "model.pt", root / "ck")
    return root / "model.pt"


@pytest.fixture(scope="module")
def infer_run(tmp_path_factory, tiny_bundle):
    work = tmp_path_factory.mktemp("infer")
    for s in "ab":
        _write_scan(work, s)
    _sheet(work, "ab")
    _config(work, {"bundle": str(tiny_bundle)})
    proc = _snakemake(work, "--cores", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return work, proc


def _edges(shape, affine):
    """World positions of a grid's 8 outer voxel corners, sorted (any voxel order)."""
    corners = [
        [i, j, k]
        for i in (-0.5, shape[0] - 0.5)
        for j in (-0.5, shape[1] - 0.5)
        for k in (-0.5, shape[2] - 0.5)
    ]
    world = np.round(nib.affines.apply_affine(affine, np.array(corners)), 3)
    return world[np.lexsort(world.T[::-1])]


def test_inference_only_cohort_writes_bids_derivatives(infer_run, tiny_bundle):
    work, proc = infer_run
    deriv = work / "results" / COHORT / "derivatives" / "sr7t"
    desc = json.loads((deriv / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"] == "1.9.0"
    assert desc["Name"] and desc["GeneratedBy"][0]["Name"] == "sr7t"
    assert desc["GeneratedBy"][0]["Version"]
    assert "SourceDatasets" not in desc  # a sample sheet is no BIDS dataset

    outputs = sorted(deriv.rglob("*_T1w.nii.gz"))
    assert [p.relative_to(deriv).as_posix() for p in outputs] == [
        "sub-a/anat/sub-a_res-2_desc-sr7t_T1w.nii.gz",
        "sub-b/anat/sub-b_res-2_desc-sr7t_T1w.nii.gz",
    ]
    for subject, out in zip("ab", outputs, strict=True):
        assert BIDS_NAME.match(out.name)
        side = json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())
        for key in ("Resolution", "Sources", "Model", "OutOfRangeWarnings", "SkullStripped"):
            assert key in side, key
        assert side["Resolution"].startswith("res-2: voxels of 2 x 2 x 2 mm")
        raw = work / "raw" / f"{subject}_1p5T.nii.gz"
        assert side["Sources"] == [raw.absolute().as_uri()]
        assert side["Model"]["Kind"] == "teacher" and side["Model"]["TrainedSliceSpacingMM"]
        assert side["Model"]["File"] == str(tiny_bundle)
        assert side["SoftwareVersions"]["sr7t"]
        # in-plane 3 mm lies outside the phantom model's in-plane range: warned, by axis
        thick = "zx"["ab".index(subject)]
        assert side["InputGeometry"]["ThickAxis"] == thick
        assert any(f"axes other than {thick}" in w for w in side["OutOfRangeWarnings"])
        # the output covers the scan's field of view, voxel edge to voxel edge, in its world
        # space (the oblique LPS-like scan b too), on a grid of the model's 2 mm voxel; its
        # voxel axes are the raw scan's, in RAS+ order as ingest stores every scan
        img, src = nib.load(out), nib.load(raw)
        np.testing.assert_allclose(nib.affines.voxel_sizes(img.affine), 2.0, rtol=1e-4)
        np.testing.assert_allclose(
            _edges(img.shape, img.affine), _edges(src.shape, src.affine), atol=1e-3
        )
        direction = img.affine[:3, :3] / nib.affines.voxel_sizes(img.affine)
        src_dir = src.affine[:3, :3] / nib.affines.voxel_sizes(src.affine)
        np.testing.assert_allclose(np.abs(direction.T @ src_dir).max(axis=1), 1.0, atol=1e-6)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        data = np.asarray(img.dataobj)
        assert np.isfinite(data).all() and 0.3 < np.percentile(data[data > 0], 99) < 3
        figure = deriv / f"sub-{subject}" / "figures" / out.name.replace(".nii.gz", ".png")
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = paths.path("infer_report", work / "results", cohort=COHORT).read_text()
    assert len(re.findall(r'src="data:image/png;base64,', report)) == 2
    assert "bundle " + str(tiny_bundle) in report and "outside" in report
    assert "psnr" not in report.lower()
    # nothing of the training branch ran
    log = proc.stdout + proc.stderr
    done = set(re.findall(r"^(?:localrule|rule|localcheckpoint|checkpoint) (\w+):", log, re.M))
    assert done >= INFER_RULES | {"infer_model", "derivatives_description", "infer_report"}
    assert not done & {"ingest", "gradunwarp", "n4", "register", "teacher", "evaluate_model"}


def test_adding_a_subject_plans_only_its_jobs(infer_run):
    work, _ = infer_run
    before = _snakemake(work, "-n")
    assert before.returncode == 0 and "Nothing to be done" in before.stdout + before.stderr
    _write_scan(work, "c")
    _sheet(work, "abc")
    try:
        proc = _snakemake(work, "-n")
    finally:
        _sheet(work, "ab")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = _planned(proc.stdout)
    assert jobs.pop("infer") == {"sub-c"}
    for rule in INFER_RULES - {"infer"}:
        assert jobs.pop(rule) == {"c"}, rule
    # what depends on it: the report (and `all`); not the model, nor the description
    assert set(jobs) == {"infer_report", "all"}, jobs


def test_inference_only_cohort_without_model_fails_at_start(tmp_path):
    _write_scan(tmp_path, "a")
    _sheet(tmp_path, "a")
    _config(tmp_path, None)
    proc = _snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    assert f"cohorts.{COHORT}.model: required for an inference-only cohort" in proc.stdout
    _config(tmp_path, {"from_cohort": "nowhere"})
    proc = _snakemake(tmp_path, "-n")
    assert proc.returncode != 0
    assert f"cohorts.{COHORT}.model.from_cohort: unknown cohort 'nowhere'" in proc.stdout
