"""DDP rehearsal on CPU: two processes under torchrun (gloo) against one process.

Same global batch (one process at batch B, two at B/2 each): rank r trains on rows
``r*B/2 .. (r+1)*B/2 - 1`` of the single run's batch, with the same noise and times, so the
averaged gradient is the single run's up to float summation order. What that leaves, after
a few AdamW steps, is bounded below (``LOSS_RTOL``, ``WEIGHT_RTOL``, ``OUTPUT_RTOL``). Then a
kill -9 of a worker after a checkpoint, and a relaunch: it resumes and ends bit-identical to
the uninterrupted DDP run. Also the device parsing and the out-of-memory message.
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

# What float summation order leaves after 6 teacher steps, and after 4 distillation steps
# from the same parent (AdamW, lr 1e-3). Measured: loss 1e-7 relative; weights 5e-5 / 9e-6
# relative L2; v on a fixed input 6e-6 / 2e-7 relative. A different noise draw (what DDP did
# before each rank drew its rows of the global batch) gives 1e-2 and 0.1-0.3. Not a max-abs
# weight bound: AdamW's first updates are ~lr * sign(g) per element, so an element whose
# gradient is ~0 can flip with summation order and move by ~lr (6e-4 here, in 0.06 % of the
# teacher's weights).
LOSS_RTOL = 1e-5
WEIGHT_RTOL = 5e-4
OUTPUT_RTOL = 1e-4

RUNNER = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from sr7t.distill.stage import distill_stage
    from sr7t.train.teacher import train_teacher

    a = json.load(open(sys.argv[1]))
    rank = int(os.environ["RANK"])
    for run in a["runs"]:  # teacher then stage 1, in each folder; one process group for all
        root, kill_at = run["root"], run.get("kill_at")

        def cb(record, step):  # rank 0 only
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # torchrun then tears down rank 1

        t = train_teacher(a["train"], [], a["cfg"], f"{root}/t.pt", f"{root}/ck_t", cb, "cpu")
        s = distill_stage(
            f"{root}/t.pt", a["train"], [], a["cfg"], 1, f"{root}/s1.pt", f"{root}/ck_s1",
            device="cpu",
        )
        if rank == 0:
            with open(f"{root}/summary.json", "w") as f:
                json.dump({"teacher": t, "student": s}, f, default=str)
    """
)


def _configs(global_batch: int, world: int) -> dict:
    b = global_batch // world
    return tiny_config(
        teacher={"train_steps": 6, "checkpoint_every": 3, "log_every": 1, "batch_size": b},
        distill={"steps_per_stage": 4, "checkpoint_every": 2, "log_every": 1, "batch_size": b},
    )


def _torchrun(tmp: Path, name: str, files, cfg, runs: list[dict]) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node 2`` on :data:`RUNNER`."""
    script = tmp / "ddp_runner.py"
    script.write_text(RUNNER)
    for run in runs:
        Path(run["root"]).mkdir(parents=True, exist_ok=True)
    args = tmp / f"{name}.json"
    args.write_text(json.dumps({"runs": runs, "train": [str(f) for f in files], "cfg": cfg}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*cmd, str(script), str(args)], env=env, capture_output=True, text=True, timeout=300
    )


def _max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(
        float((x - y).detach().abs().max())
        for x, y in zip(a.parameters(), b.parameters(), strict=True)
    )


def _weight_rel(a: torch.nn.Module, b: torch.nn.Module) -> float:
    """||w_a - w_b|| / ||w_a|| over all parameters."""
    wa = torch.cat([p.detach().flatten() for p in a.parameters()])
    wb = torch.cat([p.detach().flatten() for p in b.parameters()])
    return float((wa - wb).norm() / wa.norm())


def _output_rel(a, b) -> float:
    """Relative difference of the two models' v on a fixed random input."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 16, 16, generator=g)
    cond = torch.randn(2, a.arch["n_condition"], 16, 16, generator=g)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        va, vb = a(x, cond, t), b(x, cond, t)
    return float((va - vb).norm() / va.norm())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    files = write_phantom_npz(root / "npz", 2)
    single = root / "single"
    cfg1, cfg2 = _configs(4, 1), _configs(4, 2)
    t1 = train_teacher(files, [], cfg1, single / "t.pt", single / "ck_t", device="cpu")
    # Two launches (each costs seconds of imports): the first is killed at step 4 (after the
    # step-3 checkpoint); the second resumes it, then makes an uninterrupted run beside it.
    killed = _torchrun(root, "a", files, cfg2, [{"root": str(root / "killed"), "kill_at": 4}])
    left = sorted(p.name for p in (root / "killed").rglob("*.pt"))
    resumed = _torchrun(
        root, "b", files, cfg2, [{"root": str(root / "killed")}, {"root": str(root / "ddp")}]
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The single-process stage distils the DDP teacher, so that the stage is compared on its
    # own: the two teachers differ by summation order, which a stage of 4 steps amplifies.
    s1 = distill_stage(
        root / "ddp" / "t.pt", files, [], cfg1, 1, single / "s1.pt", single / "ck_s1", device="cpu"
    )
    single_runs = {"teacher": t1, "student": s1}
    return {"root": root, "single": single_runs, "killed": killed, "left_by_kill": left}


def test_ddp_matches_single_process_with_the_same_global_batch(runs):
    root = runs["root"]
    ddp = json.loads((root / "ddp" / "summary.json").read_text())
    for part, name in (("teacher", "t.pt"), ("student", "s1.pt")):
        one, two = runs["single"][part], ddp[part]
        assert (one["world_size"], two["world_size"]) == (1, 2)
        assert one["steps"] == two["steps"] > 0
        # the logged loss is the mean over both ranks, i.e. over the global batch
        for k, v in one["final_losses"].items():
            assert two["final_losses"][k] == pytest.approx(v, rel=LOSS_RTOL), (part, k)
        m1, _ = load_bundle(root / "single" / name, "cpu")
        m2, _ = load_bundle(root / "ddp" / name, "cpu")
        assert _weight_rel(m1, m2) < WEIGHT_RTOL, part
        assert _output_rel(m1, m2) < OUTPUT_RTOL, part


def test_ddp_resumes_after_a_worker_is_killed(runs):
    root = runs["root"]
    killed = runs["killed"]
    assert killed.returncode != 0, "the kill -9 at step 4 should have failed the launch"
    assert runs["left_by_kill"] == ["step_00000003.pt"], runs["left_by_kill"]
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
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
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
