"""DDP rehearsal on CPU: two processes under torchrun (gloo) against one process.

Same global batch (one process at batch B, two at B/2 each): rank r trains on rows
``r*B/2 .. (r+1)*B/2 - 1`` of the single run's batch, with the same noise and times, so the
averaged gradient is the single run's up to float summation order. What that leaves, after
a few AdamW steps, is bounded below (``LOSS_RTOL``, ``WEIGHT_ATOL``). Then a kill -9 of a
worker after a checkpoint, and a relaunch: it resumes and ends bit-identical to the
uninterrupted DDP run. Also the device parsing and the out-of-memory message.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_phantom import tiny_config, write_phantom_npz  # noqa: E402

from sr7t.distill.stage import distill_stage  # noqa: E402
from sr7t.models.bundle import load_bundle  # noqa: E402
from sr7t.train import loop  # noqa: E402
from sr7t.train.loop import TrainingOOM, resolve_device  # noqa: E402
from sr7t.train.teacher import TeacherTrainer, train_teacher  # noqa: E402

torch.set_num_threads(1)

# Float summation order only (measured: loss 1e-7 relative, weights 2e-6 absolute after
# 6 teacher + 4 distillation steps at lr 1e-3); a different example or noise draw on one
# rank moves the loss by ~1e-2 and the weights by ~1e-3.
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 5e-5

RUNNER = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from sr7t.distill.stage import distill_stage
    from sr7t.train.teacher import train_teacher

    a = json.load(open(sys.argv[1]))
    rank = int(os.environ["RANK"])

    def cb(record, step):  # rank 0 only
        if step == a.get("kill_at"):
            os.kill(os.getpid(), signal.SIGKILL)  # torchrun then tears down rank 1

    root = a["root"]
    t = train_teacher(a["train"], [], a["cfg"], root + "/t.pt", root + "/ck_t", cb, device="cpu")
    s = distill_stage(root + "/t.pt", a["train"], [], a["cfg"], 1, root + "/s1.pt",
                      root + "/ck_s1", device="cpu")
    if rank == 0:
        json.dump({"teacher": t, "student": s}, open(root + "/summary.json", "w"), default=str)
    """
)


def _configs(global_batch: int, world: int) -> dict:
    b = global_batch // world
    return tiny_config(
        teacher={"train_steps": 6, "checkpoint_every": 3, "log_every": 1, "batch_size": b},
        distill={"steps_per_stage": 4, "checkpoint_every": 2, "log_every": 1, "batch_size": b},
    )


def _torchrun(root: Path, files, cfg, kill_at=None) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    script = root.parent / "ddp_runner.py"
    script.write_text(RUNNER)
    args = root / "args.json"
    payload = {"root": str(root), "train": [str(f) for f in files], "cfg": cfg}
    args.write_text(json.dumps({**payload, "kill_at": kill_at}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*cmd, str(script), str(args)], env=env, capture_output=True, text=True, timeout=300
    )


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(
        float((x - y).abs().max()) for x, y in zip(a.parameters(), b.parameters(), strict=True)
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    files = write_phantom_npz(root / "npz", 2)
    single = root / "single"
    cfg1 = _configs(4, 1)
    t1 = train_teacher(files, [], cfg1, single / "t.pt", single / "ck_t", device="cpu")
    s1 = distill_stage(
        single / "t.pt", files, [], cfg1, 1, single / "s1.pt", single / "ck_s1", device="cpu"
    )
    cfg2 = _configs(4, 2)
    full = _torchrun(root / "ddp", files, cfg2)
    assert full.returncode == 0, full.stderr[-3000:]
    killed = _torchrun(root / "killed", files, cfg2, kill_at=4)
    resumed = _torchrun(root / "killed", files, cfg2)
    return {
        "root": root,
        "single": {"teacher": t1, "student": s1},
        "killed": killed,
        "resumed": resumed,
    }


def test_ddp_matches_single_process_with_the_same_global_batch(runs):
    root = runs["root"]
    ddp = json.loads((root / "ddp" / "summary.json").read_text())
    for part, name in (("teacher", "t.pt"), ("student", "s1.pt")):
        one, two = runs["single"][part], ddp[part]
        assert (one["world_size"], two["world_size"]) == (1, 2)
        assert one["steps"] == two["steps"] > 0
        # the logged loss is the mean over both ranks, i.e. over the global batch
        for k, v in one["final_losses"].items():
            assert two["final_losses"][k] == pytest.approx(v, rel=LOSS_RTOL, abs=1e-8), (part, k)
        m1, _ = load_bundle(root / "single" / name, "cpu")
        m2, _ = load_bundle(root / "ddp" / name, "cpu")
        assert _max_diff(m1, m2) < WEIGHT_ATOL, part


def test_ddp_resumes_after_a_worker_is_killed(runs):
    root = runs["root"]
    killed, resumed = runs["killed"], runs["resumed"]
    assert killed.returncode != 0, "the kill -9 at step 4 should have failed the launch"
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "step_00000003.pt at step 3" in resumed.stderr
    summary = json.loads((root / "killed" / "summary.json").read_text())
    assert summary["teacher"]["resumed_from_step"] == 3 and summary["teacher"]["steps"] == 6
    # gloo sums two ranks in a fixed order: the resumed run is the uninterrupted one, exactly
    for name in ("t.pt", "s1.pt"):
        a, _ = load_bundle(root / "ddp" / name, "cpu")
        b, _ = load_bundle(root / "killed" / name, "cpu")
        assert _max_diff(a, b) == 0.0, name
    a = torch.load(root / "ddp" / "ck_t" / "step_00000006.pt", weights_only=True)
    b = torch.load(root / "killed" / "ck_t" / "step_00000006.pt", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


# ----- device selection ---------------------------------------------------------------------


def test_resolve_device_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for asked in (None, "auto", "cpu", "CPU"):
        assert resolve_device(asked) == (torch.device("cpu"), 0, 1, False)


@pytest.mark.parametrize(
    ("asked", "message"),
    [
        ("cuda", "CUDA is not available"),
        ("cuda:0", "CUDA is not available"),
        ("gpu", "device must be one of auto, cpu, cuda, cuda:N"),
        ("cuda:x", "device must be one of auto, cpu, cuda, cuda:N"),
        ("mps", "device must be one of auto, cpu, cuda, cuda:N"),
    ],
)
def test_resolve_device_errors_without_cuda(monkeypatch, asked, message):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=message) as err:
        resolve_device(asked)
    assert "\n" not in str(err.value)


def test_resolve_device_cuda_index(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: None)
    assert resolve_device("cuda") == (torch.device("cuda", 0), 0, 1, False)
    assert resolve_device(None) == (torch.device("cuda", 0), 0, 1, False)
    assert resolve_device("cuda:1") == (torch.device("cuda", 1), 0, 1, False)
    assert resolve_device(" cuda:1 ")[0] == torch.device("cuda", 1)
    assert resolve_device("cpu")[0] == torch.device("cpu")
    with pytest.raises(ValueError, match=r"cuda:2 .*2 CUDA devices .*cuda:0\.\.cuda:1"):
        resolve_device("cuda:2")


# ----- out of memory --------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    return write_phantom_npz(tmp_path_factory.mktemp("oom"), 1)


@pytest.mark.parametrize(
    "exc",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
        RuntimeError("CUDA error: out of memory"),
    ],
)
def test_out_of_memory_names_the_batch_size_to_try(monkeypatch, one_file, tmp_path, exc):
    def oom(self, module, batch, gen):
        raise exc

    monkeypatch.setattr(TeacherTrainer, "loss", oom)
    cfg = tiny_config(teacher={"batch_size": 6})
    with pytest.raises(TrainingOOM) as err:
        train_teacher(one_file, [], cfg, tmp_path / "m.pt", tmp_path / "ck", device="cpu")
    msg = str(err.value)
    assert msg.startswith("out of GPU memory at batch_size 6 (patch 16, model ")
    assert "set teacher.batch_size to 3 (and double teacher.train_steps)" in msg
    assert err.value.__cause__ is exc


def test_other_errors_pass_through(monkeypatch, one_file, tmp_path):
    def broken(self, module, batch, gen):
        raise RuntimeError("shapes do not match")

    monkeypatch.setattr(TeacherTrainer, "loss", broken)
    with pytest.raises(RuntimeError, match="shapes do not match") as err:
        train_teacher(one_file, [], tiny_config(), tmp_path / "m.pt", tmp_path / "ck", device="cpu")
    assert not isinstance(err.value, TrainingOOM)


def test_oom_advice_for_distillation_and_batch_one():
    assert "distill.batch_size to 16 (and double distill.steps_per_stage)" in loop.oom_advice(
        "distill", 32, 128, 4_600_000
    )
    assert "batch_size is already 1" in loop.oom_advice("teacher", 1, 128, 18_500_000)
