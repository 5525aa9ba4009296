"""SLURM for real: the tiny workflow through ``--profile profiles/slurm`` on a one-node SLURM
started on this machine by ``scripts/slurm-localhost.sh`` (root; installs slurm-wlm + munge).

What is checked comes from SLURM's own records (``scontrol -o show job``, polled while the
workflow runs, since finished jobs leave slurmctld after MinJobAge) and from the MLflow store,
never from Snakemake's word alone: GPU rules ask SLURM for a GPU and CPU rules do not, every
SLURM job logged exactly one FINISHED MLflow child run tagged with its SLURM job id, and a
teacher killed at its SLURM time limit resumes from its checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sr7t import paths
from tests.conftest import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]
COHORT = "tiny"
GPU_RULES = {"teacher", "distill_stage", "evaluate_model"}
SCRIPT = REPO / "scripts" / "slurm-localhost.sh"
# fast status polling for a tiny workflow (the plugin's default waits 40 s before the first)
FAST_STATUS = ["--slurm-init-seconds-before-status-checks", "2"]


def _have_root_and_apt() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


@pytest.fixture(scope="module")
def slurm_up():
    """A running one-node SLURM (installed and started by scripts/slurm-localhost.sh)."""
    if shutil.which("sbatch") is None and not _have_root_and_apt():
        pytest.skip(
            "no SLURM: sbatch is absent and scripts/slurm-localhost.sh cannot install it "
            "here (it needs root and apt-get on Debian)"
        )
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"scripts/slurm-localhost.sh failed:\n{proc.stdout}\n{proc.stderr}")
    node = subprocess.run(
        ["scontrol", "-o", "show", "node", "localhost"], capture_output=True, text=True
    ).stdout
    return {
        "cpus": int(_field(node, "CPUTot") or 1),
        "mem_mb": int(_field(node, "RealMemory") or 0),
    }


def _field(line: str, key: str) -> str | None:
    m = re.search(rf"(?:^|\s){key}=(\S*)", line)
    return m.group(1) if m else None


def _rule_of(comment: str | None) -> str | None:
    """The rule name from the plugin's job comment ``rule_<name>[_wildcards_<...>]``."""
    m = re.match(r"rule_(.+?)(?:_wildcards_.*)?$", comment or "")
    return m.group(1) if m else None


class JobRecorder:
    """Polls ``scontrol -o show job`` and keeps every job whose WorkDir is ``workdir``.

    ``jobs``: SLURM job id -> dict(rule, state, tres_per_job, tres_per_node, exit_code).
    Polling matters: a finished job leaves slurmctld MinJobAge (300 s) after it ends.
    """

    def __init__(self, workdir: Path, every_s: float = 2.0):
        self.workdir = str(workdir.resolve())
        self.every_s = every_s
        self.jobs: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def poll(self) -> None:
        out = subprocess.run(
            ["scontrol", "-o", "show", "job"], capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            workdir = _field(line, "WorkDir")
            if not workdir or str(Path(workdir).resolve()) != self.workdir:
                continue
            self.jobs[_field(line, "JobId")] = {
                "rule": _rule_of(_field(line, "Comment")),
                "state": _field(line, "JobState"),
                "tres_per_job": _field(line, "TresPerJob"),
                "tres_per_node": _field(line, "TresPerNode"),
                "exit_code": _field(line, "ExitCode"),
            }

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            self.poll()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.poll()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def _snakemake(work: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [
        *(sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")),
        *("--directory", str(work), "--profile", str(REPO / "profiles" / "slurm")),
        *FAST_STATUS,
        *args,
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=_env())
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def _fit_to_node(node: dict) -> list[str]:
    """Cap the workflow profile's memory asks at the node's RealMemory (small CI machines).

    A command-line ``--set-resources`` replaces the workflow profile's whole list, so every
    entry is repeated here, with mem_mb capped; no rule asks for more than 2 threads.
    """
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    per_rule = profile.get("set-resources") or {}
    cap = node["mem_mb"]
    if cap <= 0 or all(r.get("mem_mb", 0) <= cap for r in per_rule.values()):
        return []
    asks = [
        f"{rule}:{name}={min(value, cap) if name == 'mem_mb' else value}"
        for rule, res in per_rule.items()
        for name, value in res.items()
    ]
    return ["--set-resources", *asks]


@pytest.fixture(scope="module")
def slurm_run(slurm_up, tmp_path_factory):
    """The whole tiny workflow through SLURM with ``use_gpu=true``, recorded from SLURM."""
    work = tmp_path_factory.mktemp("tiny_slurm")
    shutil.copytree(REPO / "config", work / "config")
    t0 = time.perf_counter()
    with JobRecorder(work) as rec:
        proc = _snakemake(
            work,
            "--configfile",
            "config/tiny.yaml",
            "--config",
            "use_gpu=True",
            *_fit_to_node(slurm_up),
        )
    seconds = time.perf_counter() - t0
    print(f"tiny workflow through SLURM: {seconds:.0f} s, {len(rec.jobs)} SLURM jobs")
    return work, proc, rec.jobs, seconds


def test_outputs_are_complete_and_the_models_load(slurm_run):
    from sr7t.models.bundle import load_bundle

    work, _, _, _ = slurm_run
    root = work / "results"
    metrics = pd.read_csv(paths.path("metrics", root, cohort=COHORT), sep="\t")
    assert set(metrics["model"]) == {"trilinear", "bspline", "teacher", "student_stage1"}
    assert len(metrics) == 4 * 2 * 1  # models x resolutions x test subjects
    assert metrics["psnr"].between(5, 60).all() and metrics["ssim"].between(0, 1).all()
    for model in ("teacher", "student_stage1"):
        net, meta = load_bundle(paths.path("model", root, cohort=COHORT, model=model), "cpu")
        assert meta["param_count"] == sum(p.numel() for p in net.parameters()) > 0
    assert "student_stage1" in paths.path("report", root, cohort=COHORT).read_text()


def test_gpu_rules_ask_slurm_for_a_gpu_and_cpu_rules_do_not(slurm_run):
    _, _, jobs, _ = slurm_run
    rules = {j["rule"] for j in jobs.values()}
    assert GPU_RULES | {"demo_cohort", "ingest", "n4", "register", "report"} <= rules, rules
    assert all(j["state"] == "COMPLETED" for j in jobs.values()), jobs
    for job_id, j in jobs.items():
        asks = f"{j['tres_per_job']} {j['tres_per_node']}"
        if j["rule"] in GPU_RULES:
            assert "gres:gpu:1" in asks, (job_id, j)
        else:
            assert "gpu" not in asks, (job_id, j)


def test_every_slurm_job_logged_one_finished_mlflow_child_run(slurm_run):
    import mlflow

    work, proc, jobs, _ = slurm_run
    mlflow.set_tracking_uri(f"sqlite:///{work / 'results' / 'mlflow' / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name(f"sr7t/{COHORT}")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert all(c.info.status == "FINISHED" for c in children)
    # one child per SLURM job, matched by the job id each child tagged itself with
    by_job = {c.data.tags.get("slurm_job_id"): c.data.tags["rule"] for c in children}
    assert len(by_job) == len(children) == len(jobs)
    assert by_job == {job_id: j["rule"] for job_id, j in jobs.items()}
    # and every Snakemake job but `all` was a SLURM job
    steps = int(re.search(r"(\d+) of \1 steps \(100%\) done", proc.stderr).group(1))
    assert len(jobs) == steps - 1


def test_teacher_killed_at_its_time_limit_resumes_from_its_checkpoint(slurm_run, tmp_path):
    """SLURM kills the teacher at a 1-minute limit; the rerun resumes from the checkpoint."""
    src, _, _, _ = slurm_run
    work = tmp_path / "work"
    shutil.copytree(src, work, symlinks=True, ignore=shutil.ignore_patterns("mlflow", "models"))
    model = paths.path("model", work / "results", cohort=COHORT, model="teacher")
    summary = paths.path("model_summary", work / "results", cohort=COHORT, model="teacher")
    ckpts = model.parent / "checkpoints"
    target = str(model.relative_to(work))
    long = {"teacher": {"train_steps": 100000, "checkpoint_every": 5, "val_every": 100000}}
    (work / "config" / "long.yaml").write_text(yaml.safe_dump(long))

    with JobRecorder(work) as rec:
        killed = _snakemake(
            work,
            *("--configfile", "config/tiny.yaml", "config/long.yaml"),
            *("--set-resources", "teacher:runtime=1", "--", target),
            check=False,
        )
    assert killed.returncode != 0
    assert "TIMEOUT" in killed.stderr, killed.stderr[-4000:]
    assert [j["state"] for j in rec.jobs.values()] == ["TIMEOUT"], rec.jobs
    assert not model.exists()
    steps_done = sorted(int(re.sub(r"\D", "", p.stem)) for p in ckpts.glob("step_*.pt"))
    assert steps_done and steps_done[-1] > 0, f"no checkpoint in {ckpts}"

    more = {"teacher": {"train_steps": steps_done[-1] + 5, "checkpoint_every": 5}}
    (work / "config" / "more.yaml").write_text(yaml.safe_dump(more))
    _snakemake(work, "--configfile", "config/tiny.yaml", "config/more.yaml", "--", target)
    info = json.loads(summary.read_text())
    assert info["resumed_from_step"] == steps_done[-1] > 0
    assert info["steps"] == steps_done[-1] + 5
