"""How much room the evaluation leaves a resolution model, and what the training targets hold.

Run after the demo, on the validation subject (nothing here trains or chooses anything):

    .venv/bin/python benchmarks/headroom.py [--subject sub-05] [--examples 64]

1. On the subject's scored box (the evaluation's ``roi_mm``, its isotonic contrast fit against
   the undistorted 7T truth): the noise-free 1.5T-contrast truth (a perfect resolution-only
   model), the noisy fine input, and for sim cells thick along x and z the B-spline input as
   is and after Gaussian smoothing (σ 0.5 and 0.8 voxel: what denoising alone gives).
2. The sharpness of randomised training targets (mean absolute second difference along the
   plane's first axis) resampled linearly and with cubic B-splines
   (``data.synth.resample_order``), over the same example indices of the training subjects.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import cohort_args, resolved_config, split_files  # noqa: E402

from sr7t import paths  # noqa: E402
from sr7t.data.dataset import robust_scale  # noqa: E402
from sr7t.data.synth import rician  # noqa: E402
from sr7t.evaluate.cells import Cell, cell_input, load_truth, roi  # noqa: E402
from sr7t.evaluate.metrics import contrast_neutral_metrics  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cohort_args(ap)
    ap.add_argument("--subject", default="sub-05")
    ap.add_argument("--examples", type=int, default=64)
    a = ap.parse_args(argv)
    cfg = resolved_config(a.config, a.set)
    ev = cfg["evaluate"]
    s = a.subject
    arrays = dict(np.load(paths.path("dataset_subject", a.results, cohort=a.cohort, subject=s)))
    truth_dir = paths.path("demo_truth_dir", a.results, cohort=a.cohort, subject=s)
    truth = load_truth(truth_dir, s, arrays)
    mask, ref = truth["mask"], truth["truth_7T"]
    box = roi(mask, np.asarray(arrays["spacing_mm"]), ev["roi_mm"])

    def score(volume):
        return contrast_neutral_metrics(volume[box], ref[box], mask[box])["psnr"]

    clean = truth["truth_1p5T"] / robust_scale(truth["truth_1p5T"], mask)
    noisy = rician(np.random.default_rng(0), clean.astype(np.float32), ev["noise"])
    print(f"{s}: noise-free 1.5T truth {score(clean):.2f} dB, noisy fine input {score(noisy):.2f}")
    for axis in (0, 2):
        for r in ev["resolutions_mm"]:
            c = cell_input(Cell(s, "sim", axis, float(r)), arrays, truth, ev["noise"])
            row = [score(c["bspline"])]
            row += [score(ndimage.gaussian_filter(c["bspline"], g)) for g in (0.5, 0.8)]
            print(
                f"  {'xyz'[axis]} {r} mm: B-spline {row[0]:.2f}, "
                f"smoothed σ 0.5 {row[1]:.2f}, σ 0.8 {row[2]:.2f} dB"
            )

    from sr7t.data.randomised import RandomisedSliceDataset
    from sr7t.data.slices import load_subject

    subjects = [load_subject(f) for f in split_files(a.results, a.cohort)["train"]]
    for order in (1, 3):
        data = {**cfg["data"], "synth": {**cfg["data"]["synth"], "resample_order": order}}
        ds = RandomisedSliceDataset(subjects, data, seed=0)
        d2 = [
            np.abs(np.diff(ds[i]["target"][0].numpy(), 2, axis=0)).mean() for i in range(a.examples)
        ]
        print(f"training targets, resample_order {order}: mean |2nd difference| {np.mean(d2):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
