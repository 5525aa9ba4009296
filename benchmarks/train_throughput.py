"""Training throughput (examples/s) of the teacher, a distillation stage and the regression UNet.

Run after the demo (it reads the cohort's dataset files and teacher):

    .venv/bin/python benchmarks/train_throughput.py [--results results --cohort demo]
        [--configfile config/config.yaml ...] [--steps 60] [--device cuda]
        [--kinds teacher student_stage1 regression] [--num-workers 0 1]
        [--amp-cpu off bf16] [--threads 2]

Trains each (``regression``: the regression UNet baseline) for ``--steps`` steps in a scratch
folder (nothing of the workflow's is touched) with the config's model sizes and batch size, on
CUDA when present (bf16 autocast as configured) else on CPU, and prints examples/s with the
first ``--warmup`` steps left out, and the dtype it trained in; once per ``--num-workers``
value (``data.num_workers``: data-loader processes) and ``--amp-cpu`` value
(``teacher.amp_cpu`` and ``distill.amp_cpu``: the autocast dtype of training on CPU), side by
side.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill import load_config, split_files  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--cohort", default="demo")
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--kinds",
        nargs="+",
        choices=["teacher", "student_stage1", "regression"],
        default=["teacher", "student_stage1"],
    )
    ap.add_argument("--num-workers", type=int, nargs="+", default=[None])
    ap.add_argument("--amp-cpu", nargs="+", choices=["off", "bf16", "auto"], default=[None])
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from sr7t import paths
    from sr7t.distill.stage import distill_stage
    from sr7t.train.regression import train_regression
    from sr7t.train.teacher import train_teacher

    results = Path(a.results)
    cfg = load_config(a.configfile)
    files = split_files(results, a.cohort)
    teacher = paths.path("model", results, cohort=a.cohort, model="teacher")
    quiet = {"val_every": 10**9, "sample_every": 10**9, "checkpoint_every": 10**9}
    runs = [(k, w, b) for k in a.kinds for w in a.num_workers for b in a.amp_cpu]
    for kind, workers, amp_cpu in runs:
        section = "teacher" if kind == "teacher" else "distill"
        times: dict[int, float] = {}

        def clock(record, step, times=times):
            times[step] = time.perf_counter()

        run_cfg = {**cfg, section: {**cfg[section], **quiet, "log_every": 1}}
        if amp_cpu is not None:
            run_cfg[section]["amp_cpu"] = amp_cpu
        if workers is not None:
            run_cfg["data"] = {**cfg["data"], "num_workers": workers}
        run_cfg[section]["train_steps" if kind == "teacher" else "steps_per_stage"] = a.steps
        with tempfile.TemporaryDirectory() as tmp:
            out, ck = Path(tmp) / "m.pt", Path(tmp) / "ck"
            if kind == "teacher":
                s = train_teacher(files["train"], [], run_cfg, out, ck, clock, a.device)
            elif kind == "regression":
                s = train_regression(files["train"], [], run_cfg, out, ck, clock, a.device)
            else:
                s = distill_stage(teacher, files["train"], [], run_cfg, 1, out, ck, clock, a.device)
        timed = a.steps - a.warmup
        seconds = times[a.steps] - times[a.warmup]
        batch = int(run_cfg[section]["batch_size"])
        print(
            f"{kind}: {timed * batch / seconds:.1f} examples/s "
            f"({seconds / timed:.3f} s/step, batch {batch}, device {s['device']}, "
            f"{s['param_count']} params, {run_cfg['data']['num_workers']} loader workers, "
            f"autocast {s['autocast']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
