"""The workflow, run for real: snakemake on config/tiny.yaml in a scratch folder."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from nibabel.affines import voxel_sizes

from sr7t import paths
from sr7t.models.bundle import load_bundle
from tests.conftest import REPO

pytestmark = pytest.mark.workflow
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
COHORT = "tiny"


def snakemake(workdir: Path, *args: str, env=None, check=True) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The whole tiny workflow, once for this module (a few minutes on 2 cores)."""
    work = tmp_path_factory.mktemp("tiny")
    shutil.copytree(REPO / "config", work / "config")
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI",)}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = snakemake(work, "--cores", "2", "--configfile", "config/tiny.yaml", env=env)
    return work, proc


def test_dry_run_of_the_default_config(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    proc = snakemake(tmp_path, "-n", "--quiet", "rules")
    assert "teacher" in proc.stdout and "distill_stage" in proc.stdout
    assert re.search(r"report\s+1", proc.stdout)


def test_lint_is_clean(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    proc = snakemake(tmp_path, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_stable_output_exists_with_its_columns(tiny_run):
    work, _ = tiny_run
    root = work / "results"
    metrics = pd.read_csv(paths.path("metrics", root, cohort=COHORT), sep="\t")
    for col in ("model", "resolution_mm", "subject", "psnr", "ssim", "nmse", "seconds"):
        assert col in metrics.columns
    models = {"trilinear", "bspline", "bspline_map", "teacher", "student_stage1", "regression"}
    assert set(metrics["model"]) == models
    # one row per model x cell x held-out subject (tiny: 1 test subject; simulated inputs
    # thick along x, y, z at 2 spacings + 1 isotropic; the preprocessed 1.5T at 2 spacings;
    # the Gaussian-profile stress along x, y, z)
    assert len(metrics) == len(models) * (3 * 2 + 1 + 2 + 3) * 1
    assert set(metrics["axis"]) == {"x", "y", "z", "iso"}
    assert set(metrics["input"]) == {"sim", "iso", "pipeline", "stress-gauss"}
    assert (metrics["reference"] == "truth").all()
    assert metrics["psnr"].between(5, 60).all() and metrics["ssim"].between(0, 1).all()
    assert (metrics["psnr"] >= metrics["psnr_linear"] - 1e-6).all()  # isotonic fits best
    # tiny: n_samples 2, so diffusion models report whether their spread tracks their error
    # (not on the fine input, which every model passes through unchanged: no spread)
    diffusion = metrics["model"].isin(["teacher", "student_stage1"])
    iso = metrics["input"] == "iso"
    assert metrics.loc[diffusion & ~iso, "uncertainty_error_corr"].between(-1, 1).all()
    assert metrics.loc[~diffusion | iso, "uncertainty_error_corr"].isna().all()
    iso_psnr = metrics[iso].set_index("model")["psnr"]
    assert np.allclose(iso_psnr, iso_psnr["bspline"], atol=0.01), iso_psnr
    tissue = metrics.dropna(subset=["dice_gm"])
    assert len(tissue) == len(models) and tissue["dice_gm"].between(0, 1).all()
    summary = pd.read_csv(paths.path("eval_summary", root, cohort=COHORT), sep="\t")
    gains = summary[(summary["kind"] == "gain") & (summary["model"] == "teacher")]
    assert not gains.empty and (gains["ci_lo"] <= gains["mean"]).all()
    students = metrics[metrics.model == "student_stage1"]
    teacher = metrics[metrics.model == "teacher"]
    _, meta = load_bundle(paths.path("model", root, cohort=COHORT, model="teacher"), "cpu")
    # the student halves the teacher's sampling steps (tiny: 4 -> 2); the teacher is scored
    # in its own inference steps (config.yaml's 1, which tiny.yaml inherits)
    assert (meta["sampling_steps"], meta["inference_steps"]) == (4, 1)
    assert (students["sampling_steps"] == 2).all() and (teacher["sampling_steps"] == 1).all()

    qc = pd.read_csv(paths.path("preprocess_qc", root, cohort=COHORT), sep="\t")
    assert sorted(qc["subject"]) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert (qc["similarity_after"] > qc["similarity_before"]).all()

    manifest = pd.read_csv(paths.path("manifest", root, cohort=COHORT), sep="\t")
    assert len(manifest) == 8 and set(manifest["split"]) == {"train", "val", "test"}


def test_predictions_are_on_the_7t_grid(tiny_run):
    from sr7t.io import load_volume

    work, _ = tiny_run
    root = work / "results"
    target, aff7 = load_volume(
        paths.path("n4_corrected", root, cohort=COHORT, subject="sub-04", field="7T")
    )
    pred, aff = load_volume(
        paths.path(
            "eval_prediction",
            root,
            cohort=COHORT,
            model="teacher",
            subject="sub-04",
            cell="sim-x-6mm",
        )
    )
    # the scored box (evaluate.roi_mm) of the 7T grid: same voxels, shifted by whole voxels
    assert all(p <= t for p, t in zip(pred.shape, target.shape, strict=True))
    assert abs(aff[:3, :3] - aff7[:3, :3]).max() < 1e-4
    offset = np.linalg.solve(aff7[:3, :3], aff[:3, 3] - aff7[:3, 3])
    assert abs(offset - np.round(offset)).max() < 1e-3 and (offset > -1e-3).all()


def test_report_is_self_contained_with_figures_and_table(tiny_run):
    work, _ = tiny_run
    html = paths.path("report", work / "results", cohort=COHORT).read_text()
    assert "student_stage1" in html and "How to read this report" in html
    assert "stress-gauss inputs" in html  # the stress kind has its own headline line
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) >= 3
    assert all(base64.b64decode(img)[:8] == b"\x89PNG\r\n\x1a\n" for img in images)
    assert not re.search(r'src="(?!data:)', html)  # nothing loaded from elsewhere


def test_mlflow_has_one_parent_and_a_child_per_job(tiny_run):
    import mlflow

    work, proc = tiny_run
    mlflow.set_tracking_uri(f"sqlite:///{work / 'results' / 'mlflow' / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name(f"sr7t/{COHORT}")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    # every job but `all` logged a finished child run
    jobs = int(re.search(r"(\d+) of \1 steps \(100%\) done", proc.stderr).group(1))
    assert len(children) == jobs - 1
    assert all(c.info.status == "FINISHED" for c in children)
    rules = {c.data.tags["rule"] for c in children}
    assert {
        "demo_cohort",
        "ingest",
        "n4",
        "register",
        "gradunwarp",
        "teacher",
        "distill_stage",
        "evaluate_model",
        "report",
    } <= rules


def test_logs_are_written_per_job(tiny_run):
    work, _ = tiny_run
    logs = list((work / "logs" / COHORT).rglob("*.log"))
    assert any("teacher" in str(p) for p in logs) and len(logs) > 10


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def test_report_renders_in_a_real_browser(tiny_run, tmp_path):
    """Headless Chromium opens the report offline; the screenshot shows text and figures."""
    import numpy as np
    from matplotlib.image import imread

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    work, _ = tiny_run
    report = paths.path("report", work / "results", cohort=COHORT).resolve()
    shot = tmp_path / "report.png"
    base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1100,2400", report.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    dom = subprocess.run(
        [*base, "--dump-dom", report.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count("<img") >= 3 and "student_stage1" in dom
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (2400, 1100)
    # a rendered page, not a blank or error page: plenty of both ink and paper, and the
    # grey-scale MRI panels give many distinct grey levels
    grey = pixels.mean(axis=2)
    assert 0.02 < (grey < 0.5).mean() < 0.6
    assert len(np.unique(np.round(grey, 2))) > 50


def test_predict_one_scan_without_the_workflow(tiny_run, tmp_path):
    """`sr7t predict` on a raw 1.5T scan: 7T-spaced output covering the scan, finite."""
    from sr7t.io import load_volume

    work, _ = tiny_run
    root = work / "results"
    scan = paths.path("demo_scan", root, cohort=COHORT, subject="sub-04", field="1p5T")
    coef = paths.path("demo_coeffs_dir", root, cohort=COHORT) / "scanner_1p5T.grad"
    model = paths.path("model", root, cohort=COHORT, model="student_stage1")
    out = tmp_path / "sr.nii.gz"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sr7t.cli",
            "predict",
            str(scan),
            str(out),
            "--model",
            str(model),
            "--coef",
            str(coef),
            "--flips",
            "2",  # the tiny final student's own plan is 4
            "--threads",
            "2",
            "--results-dir",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pred, affine = load_volume(out)
    raw, raw_affine = load_volume(scan)
    # the scan's own grid subdivided to about the model's voxel (tiny: 4 mm)
    np.testing.assert_allclose(voxel_sizes(affine), 4.0, rtol=0.05)
    fov = voxel_sizes(raw_affine) * (np.array(raw.shape) - 1)
    assert np.all(voxel_sizes(affine) * (np.array(pred.shape) - 1) <= fov + 4.0)
    assert np.isfinite(pred).all() and 0.3 < np.percentile(pred[pred > 0], 99) < 3


def test_a_bad_scan_fails_only_its_subject_with_a_clear_message(tiny_run, tmp_path):
    """A NaN-filled scan: its ingest job fails naming subject and file; the others go on."""
    from sr7t.io import load_volume, save_volume

    work, _ = tiny_run
    raw = paths.path("demo_raw_dir", work / "results", cohort=COHORT)
    rows = ["subject\tscan_1p5T\tscan_7T"]
    for sub in ("sub-01", "sub-02"):
        rows.append(f"{sub}\t{raw}/{sub}/{sub}_1p5T.nii.gz\t{raw}/{sub}/{sub}_7T.nii.gz")
    data, affine = load_volume(raw / "sub-03" / "sub-03_1p5T.nii.gz")
    data[data > np.percentile(data, 90)] = np.nan
    bad = save_volume(tmp_path / "bad_1p5T.nii.gz", data, affine)
    before = bad.read_bytes()
    rows.append(f"sub-03\t{bad}\t{raw}/sub-03/sub-03_7T.nii.gz")
    (tmp_path / "samples.tsv").write_text("\n".join(rows) + "\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(
        "cohorts:\n  mine:\n    source: samples\n    samples: samples.tsv\n"
        "    split: {test: [sub-02]}\n"
    )
    targets = [
        str(paths.path("ingest_row", "results", cohort="mine", subject=s))
        for s in ("sub-01", "sub-02", "sub-03")
    ]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = snakemake(tmp_path, "--cores", "2", "--keep-going", *targets, env=env, check=False)
    assert proc.returncode != 0
    assert (tmp_path / targets[0]).exists() and (tmp_path / targets[1]).exists()
    assert not (tmp_path / targets[2]).exists()
    log = (tmp_path / "logs/mine/ingest/sub-03.log").read_text()
    assert re.search(r"subject sub-03: .*bad_1p5T\.nii\.gz: contains \d+ NaN/inf voxels", log)
    assert bad.read_bytes() == before  # raw input untouched
