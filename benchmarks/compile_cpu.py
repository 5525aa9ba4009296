"""Training-step time of the teacher's and the student's denoisers, eager against
``torch.compile`` (inductor), on the CPU with one thread.

    .venv/bin/python benchmarks/compile_cpu.py [--amp bf16 off] [--steps 30]

Each case runs in a fresh process (compilation caches and thread pools apart), on random
inputs shaped as the demo's (batch 8, 64 x 64, 9 condition channels) with the demo's widths,
forward + backward + AdamW, autocast to bf16 or not, and prints ms per step after two
warm-up steps (whose time, the compilation, is printed too).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

ARCHS = {
    "teacher": {"channels": [16, 32, 32], "attention_levels": [False, False, True]},
    "student": {"channels": [8, 16, 16], "attention_levels": [False, False, False]},
}


def one(kind: str, mode: str, amp: str, steps: int) -> dict:
    import torch

    from sr7t.models.diffusion import Denoiser

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = Denoiser(9, {**ARCHS[kind], "num_res_blocks": 1, "norm_num_groups": 8})
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    net = torch.compile(model) if mode == "compile" else model
    x, cond = torch.randn(8, 1, 64, 64), torch.randn(8, 9, 64, 64)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp == "bf16"):
            out = net(x, cond, torch.rand(8))
        loss = (out.float() ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()
    step()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    ms = 1000 * (time.perf_counter() - t0) / steps
    return {
        "kind": kind,
        "mode": mode,
        "amp": amp,
        "ms_per_step": round(ms, 1),
        "first_two_s": round(warm, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--amp", nargs="+", choices=["bf16", "off"], default=["bf16", "off"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--one", nargs=3, metavar=("KIND", "MODE", "AMP"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(*a.one, a.steps)))
        return
    for amp in a.amp:
        for kind in ARCHS:
            for mode in ("eager", "compile"):
                cmd = [sys.executable, __file__, "--one", kind, mode, amp, "--steps", str(a.steps)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
                print(out.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
