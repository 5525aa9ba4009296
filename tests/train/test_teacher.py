import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_phantom import tiny_config, write_phantom_npz  # noqa: E402

from sr7t.models.bundle import load_bundle  # noqa: E402
from sr7t.train.teacher import train_teacher  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_phantom_npz(tmp_path_factory.mktemp("npz"), 3)


def test_loss_decreases_on_tiny_problem(files, tmp_path):
    cfg = tiny_config(
        teacher={"train_steps": 80, "checkpoint_every": 1000, "log_every": 20, "val_every": 40}
    )
    logged, images = [], []
    summary = train_teacher(
        files[:2],
        files[2:],
        cfg,
        tmp_path / "m.pt",
        tmp_path / "ck",
        metrics_cb=lambda rec, step: logged.append((step, rec)),
        artifact_cb=images.append,
    )
    losses = [r["loss"] for _, r in logged if "loss" in r]
    vals = [r["val_loss"] for _, r in logged if "val_loss" in r]
    assert len(losses) == 4 and len(vals) == 2
    assert losses[-1] < 0.8 * losses[0], losses
    assert summary["val_loss"] == vals[-1] and summary["steps"] == 80
    assert {"lr", "examples_per_s"} <= set(logged[0][1])
    assert summary["examples_per_s"] > 0 and summary["param_count"] > 0
    model, meta = load_bundle(tmp_path / "m.pt", device="cpu")
    assert meta["kind"] == "teacher" and meta["sampling_steps"] == 4
    assert meta["channels"][0] == "t1_1p5T" and meta["slice_axis"] == [1]
    assert meta["trained_slice_mm"] == [4.0, 8.0] and meta["residual_scale"] > 0
    assert meta["architecture"]["n_condition"] == 3 + 4
    # a validation sample image every val_every steps and at the end
    assert [p.name for p in images] == [f"teacher_step_{k:08d}.png" for k in (40, 80)]
    assert all(p.stat().st_size > 1000 for p in images)
    # final whole-volume scores at both ends of the training range, logged and summarised
    for r in ("4", "8"):
        assert 5 < summary[f"val_psnr_{r}mm"] < 60 and 0 < summary[f"val_ssim_{r}mm"] <= 1
        assert summary[f"seconds_per_volume_{r}mm"] > 0
    assert any("val_psnr_4mm" in rec for _, rec in logged)
    # inference cost travels with the model
    assert meta["evaluations_per_slice"] == 4
    assert meta["macs_per_slice"] == 4 * meta["macs_per_evaluation"] > 0


class Crash(RuntimeError):
    pass


def _crash_at(step_to_crash):
    def cb(rec, step):
        if step == step_to_crash:
            raise Crash

    return cb


def test_resume_is_bit_identical(files, tmp_path):
    cfg = tiny_config()  # 6 steps, checkpoint every 3
    train_teacher(files[:2], [], cfg, tmp_path / "a.pt", tmp_path / "ck_a")
    with pytest.raises(Crash):
        train_teacher(files[:2], [], cfg, tmp_path / "b.pt", tmp_path / "ck_b", _crash_at(4))
    assert sorted(p.name for p in (tmp_path / "ck_b").iterdir()) == ["step_00000003.pt"]
    summary = train_teacher(files[:2], [], cfg, tmp_path / "b.pt", tmp_path / "ck_b")
    assert summary["resumed_from_step"] == 3 and summary["steps"] == 6
    a = torch.load(tmp_path / "ck_a" / "step_00000006.pt", weights_only=True)
    b = torch.load(tmp_path / "ck_b" / "step_00000006.pt", weights_only=True)
    for part in ("model", "ema"):
        sa, sb = a[part], b[part]
        for k in sa:
            assert torch.equal(sa[k], sb[k]), (part, k)
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    ma, _ = load_bundle(tmp_path / "a.pt", "cpu")
    mb, _ = load_bundle(tmp_path / "b.pt", "cpu")
    assert all(torch.equal(x, y) for x, y in zip(ma.parameters(), mb.parameters(), strict=True))


def test_a_resumed_run_reports_the_whole_history(files, tmp_path):
    """A job resumed from its checkpoint gives its metrics callback (history.tsv, MLflow) the
    records of the steps before the resume too, the same as an uninterrupted run's."""
    from sr7t.report.curves import TrainingHistory

    cfg = tiny_config()  # 6 steps, a record every step, checkpoint every 3
    whole = TrainingHistory()
    train_teacher(files[:2], [], cfg, tmp_path / "a.pt", tmp_path / "ck_a", whole)
    with pytest.raises(Crash):
        train_teacher(files[:2], [], cfg, tmp_path / "b.pt", tmp_path / "ck_b", _crash_at(5))
    resumed = TrainingHistory()
    summary = train_teacher(files[:2], [], cfg, tmp_path / "b.pt", tmp_path / "ck_b", resumed)
    assert summary["resumed_from_step"] == 3
    a, b = whole.table(), resumed.table()
    assert list(b["step"]) == [1, 2, 3, 4, 5, 6]
    cols = ["step", "loss", "lr"]  # examples_per_s is a timing
    assert a[cols].equals(b[cols]), (a[cols], b[cols])


def test_resume_upgrades_a_checkpoint_from_before_torch_ema(files, tmp_path, capsys):
    """A checkpoint of the hand-written EMA and LambdaLR era resumes to the same weights as an
    uninterrupted run: the EMA carries over exactly, the schedule is replayed."""
    cfg = tiny_config()  # 6 steps, checkpoint every 3
    train_teacher(files[:2], [], cfg, tmp_path / "a.pt", tmp_path / "ck_a")
    with pytest.raises(Crash):
        train_teacher(files[:2], [], cfg, tmp_path / "b.pt", tmp_path / "ck_b", _crash_at(4))
    path = tmp_path / "ck_b" / "step_00000003.pt"
    state = torch.load(path, weights_only=True)
    ema = state["ema"]
    state["ema"] = {
        "module": {k.removeprefix("module."): v for k, v in ema.items() if k != "n_averaged"},
        "updates": int(ema["n_averaged"]),
    }
    state["scheduler"] = {"base_lrs": [1e-3], "last_epoch": 3, "lr_lambdas": [None]}
    torch.save(state, path)
    summary = train_teacher(files[:2], [], cfg, tmp_path / "b.pt", tmp_path / "ck_b")
    assert summary["resumed_from_step"] == 3
    assert "upgraded an older checkpoint" in capsys.readouterr().err
    ma, _ = load_bundle(tmp_path / "a.pt", "cpu")
    mb, _ = load_bundle(tmp_path / "b.pt", "cpu")
    assert all(torch.equal(x, y) for x, y in zip(ma.parameters(), mb.parameters(), strict=True))


def test_checkpoints_of_another_config_are_not_resumed(files, tmp_path, capsys):
    """A rerun with another config (here the data section) starts from step 0 and replaces the
    stale checkpoints: resuming them would give weights that do not match the bundle's meta."""
    cfg = tiny_config(teacher={"train_steps": 3})
    train_teacher(files[:1], [], cfg, tmp_path / "a.pt", tmp_path / "ck")
    other = tiny_config(teacher={"train_steps": 3}, data={"train_slice_mm": [4.0, 6.0]})
    assert other["data"]["patch_size"] == cfg["data"]["patch_size"]  # only the range differs
    summary = train_teacher(files[:1], [], other, tmp_path / "b.pt", tmp_path / "ck")
    assert summary["resumed_from_step"] == 0 and summary["steps"] == 3
    assert "made with another config" in capsys.readouterr().err
    longer = tiny_config(teacher={"train_steps": 6}, data={"train_slice_mm": [4.0, 6.0]})
    again = train_teacher(files[:1], [], longer, tmp_path / "c.pt", tmp_path / "ck")
    assert again["resumed_from_step"] == 3  # its own checkpoints resume, with a longer budget


def _ddp_worker(rank, port, files, out_dir):
    os.environ.update(
        WORLD_SIZE="2",
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    cfg = tiny_config(teacher={"train_steps": 3, "checkpoint_every": 3})
    s = train_teacher(files, [], cfg, out_dir / "m.pt", out_dir / "ck", device="cpu")
    torch.save(s["world_size"], out_dir / f"world{rank}.pt")


def test_ddp_two_cpu_processes_gloo(files, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # fork: the workers inherit the imported modules (spawn would re-import torch and MONAI)
    mp.start_processes(
        _ddp_worker, args=(port, files[:2], tmp_path), nprocs=2, join=True, start_method="fork"
    )
    assert [torch.load(tmp_path / f"world{r}.pt", weights_only=True) for r in (0, 1)] == [2, 2]
    ck = torch.load(tmp_path / "ck" / "step_00000003.pt", weights_only=True)
    assert ck["step"] == 3
    model, meta = load_bundle(tmp_path / "m.pt", "cpu")
    assert meta["kind"] == "teacher"


class _Recorder(torch.nn.Module):
    """v = 0 everywhere; keeps the inputs it was last given and counts the calls' rows."""

    rows = 0

    def forward(self, x_t, cond, t):
        self.x_t, self.t = x_t, t
        self.rows += x_t.shape[0]
        return torch.zeros_like(x_t)


def _teacher_loss(fraction: float, b: int = 64, **cfg):
    from contextlib import nullcontext
    from types import SimpleNamespace

    from sr7t.train.loop import BatchShard, DiffusionTrainer

    x0 = torch.randn(b, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    trainer = SimpleNamespace(
        x0_cond=lambda batch: (x0, torch.zeros(b, 2, 4, 4)),
        device=torch.device("cpu"),
        cfg={"zero_start_fraction": fraction, **cfg},
        autocast=nullcontext,
        sampling_steps=int(cfg.get("sampling_steps", 1)),
        sampling_start="zero",
    )
    rec = _Recorder()
    loss, _ = DiffusionTrainer.loss(trainer, rec, {}, BatchShard(0, 3))
    return x0, rec, loss


def test_zero_start_fraction_gives_the_samplers_first_input_from_zeros():
    from sr7t.models.diffusion import q_sample

    x0, plain, _ = _teacher_loss(0.0)
    assert (plain.t < 1).all() and plain.x_t.abs().amax(dim=(1, 2, 3)).min() > 0
    # every example at the first step from zeros: t = 1, x_t = 0, target v = -x0
    x0, every, loss = _teacher_loss(1.0)
    assert (every.t == 1).all() and (every.x_t == 0).all()
    torch.testing.assert_close(loss, torch.mean(x0**2))
    # a share of them; the others keep the draws of plain training exactly
    x0, some, _ = _teacher_loss(0.5)
    first = some.t == 1
    assert 10 < int(first.sum()) < 54
    assert (some.x_t[first] == 0).all()
    torch.testing.assert_close(some.t[~first], plain.t[~first])
    torch.testing.assert_close(some.x_t[~first], plain.x_t[~first])
    noise_free = q_sample(x0, plain.t, torch.zeros_like(x0))
    assert not torch.allclose(some.x_t[~first], noise_free[~first])


def test_on_path_fraction_gives_later_steps_the_samplers_own_inputs():
    """On-path examples sit at t = i / n (i < n) with the input the sampler's own steps from
    zeros reach (with v = 0 everywhere: zeros again), their target the v whose x0 is the 7T
    there (-x0 / sigma_t); the path's steps are extra passes of the model on those rows only."""
    from sr7t.models.diffusion import alpha_sigma

    x0, plain, _ = _teacher_loss(0.0, sampling_steps=4)
    assert plain.rows == 64  # off: one pass
    x0, every, loss = _teacher_loss(0.0, on_path_fraction=1.0, sampling_steps=4)
    assert set(torch.round(every.t * 4).int().tolist()) == {1, 2, 3}
    assert (every.x_t == 0).all()
    sigma = alpha_sigma(every.t)[1][:, None, None, None]
    torch.testing.assert_close(loss, torch.mean((x0 / sigma) ** 2))
    # the path: step 4/4 -> 3/4 for every row, 3/4 -> 2/4 for those with i < 3, ...
    i = torch.round(every.t * 4).int()
    assert every.rows == 64 + sum(int((i < k).sum()) for k in (4, 3, 2))
    # a share of them; the others keep plain training's draws
    x0, some, _ = _teacher_loss(0.0, on_path_fraction=0.5, sampling_steps=4)
    moved = some.t != plain.t
    assert 10 < int(moved.sum()) < 54
    torch.testing.assert_close(some.x_t[~moved], plain.x_t[~moved])


@pytest.mark.parametrize(
    "device, cfg, dtype",
    [
        ("cpu", {"amp": "bf16"}, None),  # amp is CUDA's: CPU stays float32 by default
        ("cpu", {"amp": "off", "amp_cpu": "bf16"}, torch.bfloat16),
        ("cpu", {"amp": "bf16", "amp_cpu": "off"}, None),
        ("cuda", {"amp": "fp16", "amp_cpu": "bf16"}, torch.float16),
        ("cuda", {"amp": "off", "amp_cpu": "bf16"}, None),
        ("cpu", {"amp_cpu": "auto"}, "native"),
    ],
)
def test_autocast_dtype_follows_amp_on_cuda_and_amp_cpu_on_cpu(device, cfg, dtype, monkeypatch):
    from types import SimpleNamespace

    from sr7t.train import loop

    trainer = SimpleNamespace(device=torch.device(device), cfg=cfg)
    if dtype != "native":
        assert loop.DiffusionTrainer.amp_dtype.fget(trainer) == dtype
        return
    for native, expected in ((True, torch.bfloat16), (False, None)):
        monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda native=native: native)
        assert loop.DiffusionTrainer.amp_dtype.fget(trainer) == expected


def test_bf16_training_on_cpu_runs_its_convolutions_in_bf16(files, tmp_path, monkeypatch):
    seen = set()
    conv = torch.nn.Conv2d.forward

    def recording(self, x):
        out = conv(self, x)
        seen.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Conv2d, "forward", recording)
    cfg = tiny_config(teacher={"train_steps": 6, "checkpoint_every": 1000, "amp_cpu": "bf16"})
    summary = train_teacher(files[:2], files[2:], cfg, tmp_path / "m.pt", tmp_path / "ck")
    assert torch.bfloat16 in seen
    model, _ = load_bundle(tmp_path / "m.pt")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    assert summary["steps"] == 6 and summary["autocast"] == "bfloat16"


def test_auto_gives_the_longest_chain_one_loader_process_and_the_regression_none():
    from sr7t.train.loop import loader_workers

    assert [loader_workers("auto", k) for k in ("teacher", "student_stage2", "regression")] == [
        1,
        1,
        0,
    ]
    assert loader_workers(3, "regression") == 3 and loader_workers(0, "teacher") == 0


def test_a_loader_process_gives_the_same_model(files, tmp_path):
    """The teacher trained with its examples made in a loader process is the one trained with
    them made in its own process, bit for bit: each example is drawn from its index."""
    models = []
    for workers in (0, 1):
        cfg = tiny_config(data={"num_workers": workers}, teacher={"checkpoint_every": 1000})
        out = tmp_path / f"w{workers}.pt"
        summary = train_teacher(files[:2], [], cfg, out, tmp_path / f"ck{workers}")
        assert summary["loader_workers"] == workers and summary["processor"]
        models.append(load_bundle(out, "cpu")[0])
    a, b = models
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_ema_decay_is_named_when_the_warmup_never_reaches_it(files, tmp_path, capsys):
    """The EMA's warm-up (1 + k) / (10 + k) stays below 0.995 until update 1790: in shorter
    runs (the demo's) ema_decay changes nothing, and the log says so."""
    from sr7t.train.loop import ema_decay_note, ema_warmup_decay

    assert ema_warmup_decay(1789) < 0.995 <= ema_warmup_decay(1790)
    assert "never reached in 1350 steps" in ema_decay_note(0.995, 1350)
    assert ema_decay_note(0.995, 2000) is None and ema_decay_note(0.99, 1350) is None
    # 3 steps: the warm-up ends at 4 / 13 = 0.31, above 0.2 and below 0.9
    cfg = tiny_config(teacher={"train_steps": 3, "ema_decay": 0.2})
    train_teacher(files[:1], [], cfg, tmp_path / "reached.pt", tmp_path / "ck1")
    assert "EMA:" not in capsys.readouterr().err
    cfg = tiny_config(teacher={"train_steps": 3, "ema_decay": 0.9})
    train_teacher(files[:1], [], cfg, tmp_path / "never.pt", tmp_path / "ck2")
    assert "EMA: ema_decay 0.9 is never reached in 3 steps" in capsys.readouterr().err
