"""Inference seconds per whole-brain 1 mm volume, teacher against final student, side by side.

The input is the 1 mm MNI152 template (nilearn, offline) cropped to its brain's bounding box,
acquired with 4 mm slices along z, in normalised units, with neutral guidance maps. Each model
super-resolves the whole volume (both plane orientations, as the evaluation does) in one
process, one after the other, so their ratio is meaningful on a shared machine.

    .venv/bin/python benchmarks/inference.py [--models teacher student_stage1] [--device cpu]

Models are read from ``results/<cohort>/models/<name>/model.pt`` unless given as NAME=PATH.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import final_model_name  # noqa: E402


def whole_brain_input(slice_mm: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    """(t1 on the 1 mm grid acquired at ``slice_mm`` along z, brain mask), cropped to the brain."""
    from nilearn import datasets

    from sr7t.data.resolution import simulate_slice_spacing

    t1 = np.asarray(datasets.load_mni152_template(resolution=1).dataobj, np.float32)
    mask = np.asarray(datasets.load_mni152_brain_mask(resolution=1).dataobj) > 0
    idx = np.argwhere(mask)
    box = tuple(slice(a, b + 1) for a, b in zip(idx.min(0), idx.max(0), strict=True))
    t1, mask = t1[box], mask[box]
    t1 = t1 / np.percentile(t1[mask], 99)
    return simulate_slice_spacing(t1, 1.0, slice_mm, axis=2), mask


def condition_for(meta: dict, t1: np.ndarray) -> np.ndarray:
    """The model's condition channels with neutral guidance (no bias, no GNL)."""
    channels = list(meta["channels"])
    cond = np.zeros((len(channels), *t1.shape), np.float32)
    cond[channels.index("t1_1p5T")] = t1
    return cond


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--cohort", default="demo")
    ap.add_argument("--models", nargs="+", default=None, help="default: teacher, the final model")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--slab",
        type=int,
        default=0,
        help="keep only this many central coronal planes (0: the whole brain); for slow models",
    )
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from sr7t import paths
    from sr7t.models.bundle import load_bundle
    from sr7t.models.predict import predict_volume

    t1, _ = whole_brain_input()
    if a.slab:
        mid = t1.shape[1] // 2
        t1 = t1[:, mid - a.slab // 2 : mid - a.slab // 2 + a.slab]
    what = f"a {a.slab}-plane coronal slab of the" if a.slab else "the"
    print(f"input: {what} 1 mm whole brain {t1.shape}, 4 mm slices along z, device {a.device}")
    print("| model | params | sampling steps | seconds per volume |")
    print("|---|---|---|---|")
    times = {}
    for item in a.models or ["teacher", final_model_name()]:
        name, _, path = item.partition("=")
        path = path or paths.path("model", Path(a.results), cohort=a.cohort, model=name)
        model, meta = load_bundle(path, device=a.device)
        cond = condition_for(meta, t1)
        t0 = time.perf_counter()
        predict_volume(
            model,
            meta,
            cond,
            batch_size=a.batch_size,
            device=a.device,
            progress=False,
            thick_axis=2,
            slice_mm=4.0,
            inplane_mm=1.0,
        )
        times[name] = time.perf_counter() - t0
        print(f"| {name} | {meta['param_count']} | {meta['sampling_steps']} | {times[name]:.1f} |")
    if len(times) >= 2:
        fast, slow = min(times, key=times.get), max(times, key=times.get)
        print(f"{fast} is {times[slow] / times[fast]:.1f}x faster than {slow}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
