"""Training loader speed: ms per randomised example, this checkout against another revision.

Run after the demo (it reads the cohort's training subjects):

    .venv/bin/python benchmarks/loader.py [--against 3828b15~2] [--examples 400] [--repeats 3]

Builds ``RandomisedSliceDataset`` on the training subjects with the config's ``data`` section,
once from this checkout and, with ``--against REV``, once from ``src/sr7t/data/randomised.py``
of git revision ``REV`` (the rest of the package is this checkout's); checks that both give
the same examples (the largest difference per field) and times them in turns in one process
(one torch thread), after a warm-up that builds each subject's derived volumes.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from distill import load_config, split_files  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def module_at(rev: str):
    """``sr7t.data.randomised`` as it was at git revision ``rev``."""
    text = subprocess.run(
        ["git", "show", f"{rev}:src/sr7t/data/randomised.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "randomised_at_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("randomised_at_rev", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--cohort", default="demo")
    ap.add_argument("--configfile", nargs="+", default=["config/config.yaml"])
    ap.add_argument("--against", default=None, help="a git revision to compare with")
    ap.add_argument("--examples", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from sr7t.data import randomised
    from sr7t.data.slices import load_subject

    cfg = load_config(a.configfile)
    files = split_files(Path(a.results), a.cohort)["train"]
    modules = {"this checkout": randomised}
    if a.against:
        modules[a.against] = module_at(a.against)
    sets = {
        name: m.RandomisedSliceDataset([load_subject(f) for f in files], cfg["data"], True, seed=0)
        for name, m in modules.items()
    }
    for ds in sets.values():
        for i in range(100):  # warm-up: each subject's targets and spline coefficients
            ds[i]
    if a.against:
        mine, theirs = sets.values()
        worst: dict[str, float] = {}
        for i in range(200, 400):
            x, y = mine[i], theirs[i]
            for k in x:
                diff = float((x[k].double() - y[k].double()).abs().max())
                worst[k] = max(worst.get(k, 0.0), diff)
        print("largest difference per field:", {k: f"{v:.1e}" for k, v in worst.items()})
    start = 10_000
    for rep in range(a.repeats):
        for name, ds in sets.items():
            t = time.perf_counter()
            for i in range(start, start + a.examples):
                ds[i]
            ms = (time.perf_counter() - t) / a.examples * 1e3
            print(f"repeat {rep}: {name}: {ms:.2f} ms/example", flush=True)
        start += a.examples


if __name__ == "__main__":
    main()
