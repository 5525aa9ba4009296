"""Memory and speed of one training step at the full-size GPU config (config/gpu.yaml).

    .venv/bin/python benchmarks/scale.py [--device cpu|cuda|cuda:N] [--batch B] [--patch P]
        [--steps N] [--files results/<cohort>/dataset/*.npz]

The teacher (18.5 M parameters) and a stage-1 distillation step (the 4.6 M student learning
from the full teacher: two teacher passes and a student pass per step) at config/gpu.yaml
merged onto config/config.yaml, built by the trainers' own builders and stepped the way the
trainer steps (loss, backward, gradient clipping, AdamW, EMA). Each measurement runs in a
fresh process:

- CPU: peak resident memory above the set-up (model, EMA, data loaded; the kernel's
  high-water mark is reset after set-up through /proc/self/clear_refs) and in total;
  float32 (autocast is CUDA only). Defaults: batch 2, patch 128, 1 + 1 steps (~3 min).
- CUDA: ``torch.cuda.max_memory_allocated`` above the set-up and in total, for bf16
  autocast and float32, and torch.compile off and on (bf16). Defaults: the config's
  batch 32, patch 128, 5 + 20 steps.

Also the training data: examples/s of one data-loader worker making randomised examples at
the patch size (``data.num_workers`` of them feed the GPU). Without ``--files`` the subjects
are synthetic phantoms (tests/model_phantom.py, 96 x 112 x 96 at 2 mm): fine for the model
step, indicative only for the data. Prints a markdown table naming the device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def gpu_config() -> dict:
    """config/gpu.yaml on config/config.yaml as Snakemake merges --configfile, validated."""
    import yaml
    from snakemake.utils import update_config

    from sr7t.config import resolve

    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config/gpu.yaml").read_text()))
    return resolve(cfg)


# ----- memory ----------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{key}:\s+(\d+)", text).group(1))


def _reset_cpu_peak() -> int:
    """Reset the peak-RSS high-water mark; return the current RSS (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _cpu_peak() -> int:
    return _status_kib("VmHWM") * 1024


# ----- one measurement (in a child process) -----------------------------------------------


def child(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from sr7t.distill.stage import DistillTrainer
    from sr7t.models.diffusion import param_count
    from sr7t.train.loop import EMA, BatchShard, parse_device
    from sr7t.train.teacher import TeacherTrainer

    device = parse_device(spec["device"])
    cuda = device.type == "cuda"
    cfg = gpu_config()
    cfg["data"].update(patch_size=spec["patch"], num_workers=0)
    for section in ("teacher", "distill"):
        cfg[section].update(batch_size=spec["batch"], amp=spec["amp"])
    files, b, n_steps = spec["files"], spec["batch"], spec["warmup"] + spec["steps"]
    with tempfile.TemporaryDirectory() as tmp:
        teacher_trainer = TeacherTrainer(files, [], cfg, Path(tmp) / "ck", device=device)
    ds = teacher_trainer.make_dataset(teacher_trainer.train_subjects, 0, 10**9)

    if spec["kind"] == "data":
        ds[0]
        t0 = time.perf_counter()
        n = spec["steps"]
        for i in range(1, n + 1):
            ds[i]
        return {"examples_per_s": n / (time.perf_counter() - t0)}

    torch.manual_seed(0)
    teacher = teacher_trainer.build_trainable(ds.n_condition)
    if spec["kind"] == "teacher":
        trainer, trainable = teacher_trainer, teacher
    else:
        meta = {
            **teacher_trainer.meta(),
            "architecture": teacher.arch,
            "param_count": param_count(teacher),
        }
        with tempfile.TemporaryDirectory() as tmp:
            trainer = DistillTrainer((teacher, meta), 1, files, [], cfg, Path(tmp), device=device)
        trainable = trainer.build_trainable(ds.n_condition)
    trainable = trainable.to(device).train()
    params = [p for p in trainable.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ema = EMA(trainable, 0.9995)
    scaler = torch.amp.GradScaler("cuda", enabled=trainer.amp_dtype == torch.float16)
    module = torch.compile(trainable) if spec["compile"] else trainable
    collate = torch.utils.data.default_collate
    batches = [collate([ds[s * b + j] for j in range(b)]) for s in range(n_steps)]

    if cuda:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    else:
        base = _reset_cpu_peak()
    t0 = None
    for s, batch in enumerate(batches):
        if s == spec["warmup"]:
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
        loss, _ = trainer.loss(module, batch, BatchShard(0, s))
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(opt)
        scaler.update()
        ema.update(trainable)
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if cuda else _cpu_peak()
    return {
        "params": param_count(trainer.denoiser(trainable)),
        "s_per_step": seconds / spec["steps"],
        "examples_per_s": spec["steps"] * b / seconds,
        "peak_above_setup": peak - base,
        "peak_total": peak,
        "loss": float(loss.detach()),
    }


def measure(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode or not lines:
        err = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": err[:120]}
    return json.loads(lines[-1])


# ----- the table ----------------------------------------------------------------------------


def device_name(device: str | None) -> str:
    import torch

    from sr7t.train.loop import parse_device

    dev = parse_device(device)
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        return f"{dev}: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
    cpu = platform.processor() or "CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return f"cpu: {cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def _gib(x) -> str:
    return "—" if x is None else f"{x / 2**30:.2f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--batch", type=int, default=None, help="default: 2 on CPU, 32 on CUDA")
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (1 CPU, 20 CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (1 CPU, 5 CUDA)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--files", nargs="*", default=None, help="dataset npz files (training)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per measurement")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if a.child:
        print(json.dumps(child(json.loads(a.child))), flush=True)
        return

    import torch

    torch.set_num_threads(a.threads)
    from sr7t.train.loop import parse_device

    cuda = parse_device(a.device).type == "cuda"
    batch = a.batch or (32 if cuda else 2)
    steps = a.steps or (20 if cuda else 1)
    warmup = a.warmup if a.warmup is not None else (5 if cuda else 1)
    with tempfile.TemporaryDirectory() as tmp:
        files = a.files
        if not files:
            sys.path.insert(0, str(REPO / "tests"))
            from model_phantom import write_phantom_npz

            files = [str(p) for p in write_phantom_npz(Path(tmp), 2, shape=(96, 112, 96))]
        base = {
            "device": a.device,
            "batch": batch,
            "patch": a.patch,
            "steps": steps,
            "warmup": warmup,
            "threads": a.threads,
            "files": files,
            "compile": False,
        }
        variants = [("bf16", False), ("off", False), ("bf16", True)] if cuda else [("off", False)]
        rows = []
        for kind in ("teacher", "distill"):
            for amp, compiled in variants:
                spec = {**base, "kind": kind, "amp": amp, "compile": compiled}
                t0 = time.perf_counter()
                r = measure(spec, a.timeout)
                rows.append((kind, amp, compiled, r))
                print(
                    f"# {kind} amp={amp} compile={compiled}: {r} "
                    f"({time.perf_counter() - t0:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
        data = measure({**base, "kind": "data", "amp": "off", "steps": 4 * batch}, a.timeout)

    print(
        f"\nDevice: {device_name(a.device)}. config/gpu.yaml at batch {batch}, patch "
        f"{a.patch}, {warmup} warm-up + {steps} timed steps; memory is "
        f"{'torch.cuda.max_memory_allocated' if cuda else 'peak RSS (VmHWM)'}.\n"
    )
    print(
        "| step | params | amp | compile | s/step | examples/s | peak above set-up | peak total |"
    )
    print("|---|---|---|---|---|---|---|---|")
    names = {"teacher": "teacher", "distill": "distill stage 1 (+ teacher passes)"}
    for kind, amp, compiled, r in rows:
        amp_name = "float32" if amp == "off" or not cuda else amp
        if "error" in r:
            print(f"| {names[kind]} | | {amp_name} | {compiled} | {r['error']} | | | |")
            continue
        print(
            f"| {names[kind]} | {r['params'] / 1e6:.1f} M | {amp_name} | "
            f"{'on' if compiled else 'off'} | {r['s_per_step']:.2f} | "
            f"{r['examples_per_s']:.2f} | {_gib(r['peak_above_setup'])} | "
            f"{_gib(r['peak_total'])} |"
        )
    rate = data.get("examples_per_s")
    rate = f"{rate:.1f}" if rate else data.get("error")
    print(f"\nData: one worker makes {rate} randomised examples/s at patch {a.patch}.")


if __name__ == "__main__":
    main()
