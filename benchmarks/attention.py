"""The teacher's attention: MONAI's einsum + softmax against torch's fused attention.

    .venv/bin/python benchmarks/attention.py [--configfile config/config.yaml ...]
        [--threads 1] [--planes 16] [--size 80] [--repeats 3]

Builds the config's teacher (random weights: speed and agreement do not need a trained one)
with the attention blocks switched between the two implementations, and times, side by side
in one run, a DDIM step on ``--planes`` planes of ``--size`` pixels (the evaluation's batch
and plane size) and a training step (forward and backward) on a batch of the config's patches.
Prints milliseconds for each, their ratio and the largest difference between the two outputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill import load_config  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--planes", type=int, default=16)
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import torch

    from sr7t.models.diffusion import Denoiser, ddim_step, einsum_attention

    torch.set_num_threads(a.threads)
    cfg = load_config(a.configfile)
    t = cfg["teacher"]
    n_cond = 5  # the demo's 1.5T channel and four guidance maps
    model = Denoiser(
        n_cond,
        {k: t[k] for k in ("channels", "attention_levels", "num_res_blocks", "norm_num_groups")},
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # MONAI zero-initialises the output layer: give every weight a value
        for w in model.parameters():
            w.copy_(torch.randn(w.shape, generator=gen) * 0.1)
    cond = torch.randn(a.planes, n_cond, a.size, a.size, generator=gen)
    x = torch.randn(a.planes, 1, a.size, a.size, generator=gen)
    p = int(cfg["data"]["patch_size"])
    bx = torch.randn(int(t["batch_size"]), 1, p, p, generator=gen)
    bc = torch.randn(int(t["batch_size"]), n_cond, p, p, generator=gen)
    bt = torch.rand(int(t["batch_size"]), generator=gen)

    def infer():
        with torch.no_grad():
            return ddim_step(model.eval(), x, cond, 1.0, 0.5)

    def train():
        model.train().zero_grad()
        model(bx, bc, bt).square().mean().backward()

    def clock(fn) -> float:
        fn()  # warm-up
        start = time.perf_counter()
        for _ in range(a.repeats):
            fn()
        return (time.perf_counter() - start) / a.repeats * 1000

    rows, outs = {}, {}
    with einsum_attention(model):
        outs[False] = infer()
        rows[False] = (clock(infer), clock(train))
    outs[True] = infer()
    rows[True] = (clock(infer), clock(train))
    diff = float((outs[True] - outs[False]).abs().max())
    print(f"teacher {t['channels']} attention {t['attention_levels']}, {a.threads} thread(s)")
    print(f"{'':10s} {'einsum ms':>10s} {'fused ms':>9s} {'ratio':>6s}")
    for i, what in enumerate((f"DDIM step, {a.planes} x {a.size}^2", "train step")):
        e, f = rows[False][i], rows[True][i]
        print(f"{what:30s} {e:10.0f} {f:9.0f} {e / f:6.2f}")
    print(f"largest output difference: {diff:.1e}")


if __name__ == "__main__":
    main()
