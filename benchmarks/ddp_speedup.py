"""DDP speed-up on CPU: the teacher's training throughput with one process against two
(`torchrun --nproc_per_node 2`, gloo), at the same global batch, side by side.

    .venv/bin/python benchmarks/ddp_speedup.py [--steps 40] [--global-batch 16]

Each process uses one thread, so two processes use two cores; one process with two threads
is shown as well (what a single job gets from the same cores). The data are the tests'
phantom subjects; the point on 2 cores is correctness plus the order of magnitude.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RUNNER = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(int(sys.argv[2]))
    from sr7t.train.teacher import train_teacher
    a = json.load(open(sys.argv[1]))
    s = train_teacher(a["train"], [], a["cfg"], a["out"] + "/t.pt", a["out"] + "/ck", None, "cpu")
    import os
    if int(os.environ.get("RANK", 0)) == 0:
        json.dump(s, open(a["out"] + "/summary.json", "w"), default=str)
    """
)


def main(argv=None) -> int:
    from tests.model_phantom import tiny_config, write_phantom_npz

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--patch", type=int, default=32)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="ddp_speedup_"))
    files = [str(f) for f in write_phantom_npz(tmp / "data", 2)]
    script = tmp / "runner.py"
    script.write_text(RUNNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    rows = []
    for label, world, threads in (
        ("1 process, 1 thread", 1, 1),
        ("1 process, 2 threads", 1, 2),
        ("2 processes (DDP, gloo), 1 thread each", 2, 1),
    ):
        out = tmp / label.split(",")[0].replace(" ", "_") / str(threads)
        out.mkdir(parents=True)
        cfg = tiny_config(
            data={"patch_size": a.patch},
            teacher={
                "train_steps": a.steps,
                "batch_size": a.global_batch // world,
                "checkpoint_every": 10**6,
                "log_every": 10**6,
                "val_every": 10**6,
            },
        )
        args = tmp / f"args_{world}_{threads}.json"
        args.write_text(json.dumps({"train": files, "cfg": cfg, "out": str(out)}))
        cmd = [sys.executable]
        if world > 1:
            cmd += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(world)]
        t0 = time.perf_counter()
        subprocess.run(
            [*cmd, str(script), str(args), str(threads)], env=env, check=True, capture_output=True
        )
        wall = time.perf_counter() - t0
        summary = json.loads((out / "summary.json").read_text())
        rows.append((label, float(summary["examples_per_s"]), wall))
    base = rows[0][1]
    print(f"teacher, phantom, patch {a.patch}, global batch {a.global_batch}, {a.steps} steps")
    print("| run | examples/s | vs 1 process, 1 thread | wall s (with start-up) |")
    print("|---|---|---|---|")
    for label, eps, wall in rows:
        print(f"| {label} | {eps:.1f} | {eps / base:.2f}x | {wall:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
