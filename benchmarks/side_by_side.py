"""The two jobs that split their work over processes (sr7t.parallel), with 1 and 2 of them.

- ``demo_cohort``: the demo's synthetic cohort (its config's subjects, seed and voxels)
  written by ``make_demo_cohort(workers=1)`` and ``workers=2``, each in a fresh process (as
  in the workflow: the anatomies and Colin27's segmentation are loaded cold); the files are
  compared byte for byte.
- ``evaluate_model`` of the config's final model on the test subjects in one process with
  one torch thread (the job before), in one with two, and with ``cores=2`` (two one-thread
  processes, the workflow's job now); the tables are compared (not the Atropos tissue
  columns, which move by about 1e-4 from run to run, nor the per-cell seconds).

Runs in turns (A B C C B A) on one machine, one thread per process unless said; wall
seconds and their means. Reads the
workflow's results for the evaluation (dataset files, the final model, the demo's truth).

    .venv/bin/python benchmarks/side_by_side.py [--only synth|evaluate]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import cohort_args, resolved_config, split_files  # noqa: E402

from sr7t import paths  # noqa: E402
from sr7t.parallel import THREAD_VARIABLES  # noqa: E402

ONE_THREAD = dict.fromkeys(THREAD_VARIABLES, "1")
ORDER = (1, 2, 2, 1)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(f.relative_to(root)): hashlib.md5(f.read_bytes()).hexdigest()
        for f in sorted(root.rglob("*"))
        if f.is_file()
    }


def synth(cfg: dict, cohort: str) -> list[dict]:
    demo = cfg["cohorts"][cohort]["demo"]
    rows, digests = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, workers in enumerate(ORDER):
            out = Path(tmp) / f"run{k}"
            code = (
                "from sr7t.cohort.demo import make_demo_cohort;"
                "from sr7t.cohort.samples import demo_subject_ids;"
                f"make_demo_cohort({str(out)!r}, demo_subject_ids({demo['n_subjects']}, "
                f"{bool(demo['colin27'])}, {bool(demo['inia19'])}), {demo['seed']}, "
                f"{demo['voxel_mm_7t']}, "
                f"{tuple(demo['voxel_mm_1p5t'])}, workers={workers})"
            )
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True, env=os.environ | ONE_THREAD)
            row = {"job": "demo_cohort", "processes": workers, "threads": 1}
            rows.append(row | {"wall_s": _seconds(t0)})
            print(rows[-1], flush=True)
            digests.setdefault(workers, _digest(out))
    same = digests[1] == digests[2]
    print(f"demo_cohort: {len(digests[1])} files, {'identical' if same else 'DIFFERENT'}")
    return rows if same else []


def evaluate(cfg: dict, results: Path, cohort: str) -> list[dict]:
    import torch

    from sr7t.evaluate.run import TISSUE_COLUMNS, evaluate_model
    from sr7t.infer.source import final_model

    model = final_model(cfg)
    bundle = str(paths.path("model", results, cohort=cohort, model=model))
    truth = paths.path("demo_truth_root", results, cohort=cohort)
    test = split_files(results, cohort)["test"]
    # (processes, torch threads of this process): the job before (one thread), the same job
    # given two threads, and two one-thread processes (the workflow's now)
    variants = [(1, 1), (1, 2), (2, 1)]
    rows, tables = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, (cores, threads) in enumerate(variants + variants[::-1]):
            torch.set_num_threads(threads)
            out = Path(tmp) / f"run{k}"
            t0 = time.perf_counter()
            table = evaluate_model(
                model,
                bundle,
                test,
                cfg["evaluate"],
                f"{out}/{{subject}}_{{cell}}.nii.gz",
                out / "metrics.tsv",
                truth if truth.exists() else None,
                cores=cores,
            )
            rows.append(
                {
                    "job": f"evaluate_model {model}",
                    "processes": cores,
                    "threads": threads,
                    "wall_s": _seconds(t0),
                }
            )
            print(rows[-1], flush=True)
            tables.setdefault(cores, table.drop(columns=["seconds", *TISSUE_COLUMNS]))
    try:
        pd.testing.assert_frame_equal(tables[1], tables[2])
    except AssertionError as err:
        print(f"evaluate_model: tables DIFFER: {err}")
        return []
    print(f"evaluate_model: {len(tables[1])} rows, identical")
    return rows


def _seconds(t0: float) -> float:
    return round(time.perf_counter() - t0, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cohort_args(ap)
    ap.add_argument("--only", choices=("synth", "evaluate"))
    a = ap.parse_args(argv)
    cfg = resolved_config(a.config, a.set)
    rows = []
    if a.only in (None, "synth"):
        rows += synth(cfg, a.cohort) or [None]
    if a.only in (None, "evaluate"):
        rows += evaluate(cfg, Path(a.results), a.cohort) or [None]
    if None in rows:
        return 1
    table = pd.DataFrame(rows)
    mean = table.groupby(["job", "processes", "threads"], sort=False)["wall_s"].mean()
    print(mean.to_frame("mean wall_s").to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
