"""SLURM for real: the tiny workflow through ``--profile profiles/slurm`` on a one-node SLURM
started on this machine by ``scripts/slurm-localhost.sh`` (root; installs slurm-wlm + munge).

The module runs config/tiny.yaml (``use_gpu=True``) up to the first student stage, in two
invocations, as a user whose job hit its SLURM time limit would: the first gives the teacher a
long schedule and a 1-minute limit, so SLURM kills it (TIMEOUT) after it checkpointed; the
second gives it enough steps and time, and it resumes from its checkpoint, then distils.

What is checked comes from SLURM's own records (``scontrol -o show job``, polled while the
workflow runs, since finished jobs leave slurmctld MinJobAge after they end) and from the
MLflow store, never from Snakemake's word alone: GPU rules ask SLURM for a GPU and CPU rules
do not; every completed SLURM job logged exactly one FINISHED MLflow child run, tagged with its
SLURM job id, under its invocation's parent run.

Runtime on 2 cores: ~7 min (25 SLURM jobs). The whole workflow through SLURM takes ~8.5 min
there (35 jobs), so rules after the first student stage are left out; evaluate_model asks for
its GPU through the same `resources: gpu` as the teacher.
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

import pytest
import yaml

from sr7t import paths
from tests.conftest import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]
COHORT = "tiny"
GPU_RULES = {"teacher", "distill_stage", "regression", "evaluate_model"}
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
                "num_cpus": _field(line, "NumCPUs"),
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


def _set_resources(node: dict, **runtime: int) -> list[str]:
    """``--set-resources`` for the workflow profile's asks, capped at the node's memory.

    A command-line ``--set-resources`` replaces the workflow profile's whole list, so every
    entry is repeated here (mem_mb capped at the node's RealMemory, for small CI machines),
    plus ``runtime`` overrides in minutes per rule. Empty when nothing needs changing.
    """
    profile = yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())
    per_rule = {r: dict(res) for r, res in (profile.get("set-resources") or {}).items()}
    cap = node["mem_mb"]
    capped = cap > 0 and any(res.get("mem_mb", 0) > cap for res in per_rule.values())
    if not capped and not runtime:
        return []
    for rule, minutes in runtime.items():
        per_rule.setdefault(rule, {})["runtime"] = minutes
    asks = [
        f"{rule}:{name}={min(value, cap) if name == 'mem_mb' and cap > 0 else value}"
        for rule, res in per_rule.items()
        for name, value in res.items()
    ]
    return ["--set-resources", *asks]


def _steps(ckpt_dir: Path) -> list[int]:
    return sorted(int(re.sub(r"\D", "", p.stem)) for p in ckpt_dir.glob("step_*.pt"))


@pytest.fixture(scope="module")
def slurm_run(slurm_up, tmp_path_factory):
    """Both invocations (killed teacher, then resumed), with SLURM's records of each."""
    work = tmp_path_factory.mktemp("tiny_slurm")
    shutil.copytree(REPO / "config", work / "config")
    root = work / "results"
    target = str(paths.path("model", Path("results"), cohort=COHORT, model="student_stage1"))
    ckpts = paths.path("model_checkpoints", root, cohort=COHORT, model="teacher")
    common = ["--config", "use_gpu=True"]
    long = {"teacher": {"train_steps": 100000, "checkpoint_every": 5, "val_every": 100000}}
    (work / "config" / "long.yaml").write_text(yaml.safe_dump(long))

    t0 = time.perf_counter()
    with JobRecorder(work) as rec1:
        first = _snakemake(
            work,
            *("--configfile", "config/tiny.yaml", "config/long.yaml", *common),
            *_set_resources(slurm_up, teacher=1),
            *("--", target),
            check=False,
        )
    t1 = time.perf_counter()
    killed_at = _steps(ckpts)
    model_after_kill = paths.path("model", root, cohort=COHORT, model="teacher").exists()
    jobs1 = dict(rec1.jobs)

    resume = {"teacher": {"train_steps": (killed_at or [0])[-1] + 5, "checkpoint_every": 5}}
    (work / "config" / "resume.yaml").write_text(yaml.safe_dump(resume))
    with JobRecorder(work) as rec2:
        second = _snakemake(
            work,
            *("--configfile", "config/tiny.yaml", "config/resume.yaml", *common),
            *_set_resources(slurm_up),
            *("--", target),
            check=False,
        )
    t2 = time.perf_counter()
    jobs2 = {k: v for k, v in rec2.jobs.items() if k not in jobs1}
    print(
        f"through SLURM: killed run {t1 - t0:.0f} s ({len(jobs1)} jobs), "
        f"resumed run {t2 - t1:.0f} s ({len(jobs2)} jobs)"
    )
    return {
        "work": work,
        "runs": [(first, jobs1), (second, jobs2)],
        "killed_at": killed_at,
        "model_after_kill": model_after_kill,
    }


def _by_rule(jobs: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for j in jobs.values():
        out.setdefault(j["rule"], []).append(j)
    return out


def test_slurm_killed_the_teacher_at_its_time_limit(slurm_run):
    (first, jobs1), _ = slurm_run["runs"]
    assert first.returncode != 0
    assert "TIMEOUT" in first.stderr, first.stderr[-4000:]
    rules = _by_rule(jobs1)
    assert [j["state"] for j in rules["teacher"]] == ["TIMEOUT"], rules["teacher"]
    others = [j for r, js in rules.items() if r != "teacher" for j in js]
    assert others and all(j["state"] == "COMPLETED" for j in others), rules
    assert "distill_stage" not in rules  # nothing ran after the failure
    # the teacher checkpointed before it was killed, and left no model behind it
    assert slurm_run["killed_at"] and slurm_run["killed_at"][-1] > 0
    assert not slurm_run["model_after_kill"]


def test_the_rerun_resumed_the_teacher_and_its_models_load(slurm_run):
    from sr7t.models.bundle import load_bundle

    _, (second, jobs2) = slurm_run["runs"]
    assert second.returncode == 0, second.stderr[-8000:]
    assert {j["rule"] for j in jobs2.values()} == {"teacher", "distill_stage"}
    assert all(j["state"] == "COMPLETED" for j in jobs2.values())
    root = slurm_run["work"] / "results"
    info = json.loads(paths.path("model_summary", root, cohort=COHORT, model="teacher").read_text())
    killed_at = slurm_run["killed_at"][-1]
    assert info["resumed_from_step"] == killed_at > 0
    assert info["steps"] == killed_at + 5
    for model in ("teacher", "student_stage1"):
        net, meta = load_bundle(paths.path("model", root, cohort=COHORT, model=model), "cpu")
        assert meta["param_count"] == sum(p.numel() for p in net.parameters()) > 0
    student = json.loads(
        paths.path("model_summary", root, cohort=COHORT, model="student_stage1").read_text()
    )
    assert student["sampling_steps"] * 2 == info["sampling_steps"]


def test_gpu_rules_ask_slurm_for_a_gpu_and_cpu_rules_do_not(slurm_run):
    jobs = {k: v for _, js in slurm_run["runs"] for k, v in js.items()}
    rules = set(_by_rule(jobs))
    # (the models read no manifest and no resolved config file, so neither is built here)
    cpu_rules = {"demo_cohort", "ingest", "gradunwarp", "n4", "register", "dataset"}
    assert rules == cpu_rules | {"teacher", "distill_stage"}, rules
    for job_id, j in jobs.items():
        asks = f"{j['tres_per_job']} {j['tres_per_node']}"
        if j["rule"] in GPU_RULES:
            assert "gres:gpu:1" in asks, (job_id, j)
        else:
            assert "gpu" not in asks, (job_id, j)


def test_torch_and_n4_jobs_ask_slurm_for_two_cpus(slurm_up, slurm_run):
    # profiles/slurm's set-threads: the workflow's own choice (one thread below 4 local
    # cores) must not shrink cluster jobs, whose local --cores says nothing of the nodes
    if slurm_up["cpus"] < 2:
        pytest.skip("the SLURM node has one CPU")
    jobs = {k: v for _, js in slurm_run["runs"] for k, v in js.items()}
    cpus = {(j["rule"], j["num_cpus"]) for j in jobs.values()}
    for rule in ("n4", "teacher", "distill_stage"):
        assert {c for r, c in cpus if r == rule} == {"2"}, (rule, cpus)
    assert {c for r, c in cpus if r == "register"} == {"1"}, cpus


def test_every_completed_slurm_job_logged_one_finished_mlflow_child_run(slurm_run):
    import mlflow

    work = slurm_run["work"]
    mlflow.set_tracking_uri(f"sqlite:///{work / 'results' / 'mlflow' / 'mlflow.db'}")
    exp = mlflow.get_experiment_by_name(f"sr7t/{COHORT}")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list", order_by=["start_time"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [p.info.status for p in parents] == ["FAILED", "FINISHED"]  # one per invocation
    for parent, (_, jobs) in zip(parents, slurm_run["runs"], strict=True):
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        finished = {
            c.data.tags.get("slurm_job_id"): c.data.tags["rule"]
            for c in children
            if c.info.status == "FINISHED"
        }
        completed = {k: j["rule"] for k, j in jobs.items() if j["state"] == "COMPLETED"}
        assert finished == completed  # one child per job, none lost to parallel writers
        assert sum(c.info.status == "FINISHED" for c in children) == len(completed)
        # the killed teacher's run, if it got one, is not FINISHED
        killed = {k for k, j in jobs.items() if j["state"] != "COMPLETED"}
        assert not killed & set(finished)
