"""N4's shrink factor on the demo's 1.2 mm 7T: time and accuracy against the known bias field.

Run after the demo (it reads the GNL-unwarped 7T and the truth of each subject given):

    .venv/bin/python benchmarks/n4_shrink.py [--subjects sub-01 sub-05] [--shrink 2 3 4]

For each subject and shrink factor: the CPU seconds of :func:`sr7t.preprocess.n4.n4_correct`
(one ITK thread, the config's other N4 settings), the correlation of the estimated log bias
with the true one inside the true brain mask, and the white-matter CoV after correction.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import cohort_args, resolved_config  # noqa: E402

from sr7t import paths  # noqa: E402
from sr7t.io import load_volume  # noqa: E402
from sr7t.preprocess.masks import head_mask  # noqa: E402
from sr7t.preprocess.n4 import (  # noqa: E402
    bias_field_correlation,
    coefficient_of_variation,
    n4_correct,
    white_matter_proxy,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cohort_args(ap)
    ap.add_argument("--subjects", nargs="+", default=["sub-01", "sub-05"])
    ap.add_argument("--shrink", type=int, nargs="+", default=[2, 3, 4])
    a = ap.parse_args(argv)
    n4 = resolved_config(a.config, a.set)["preprocess"]["n4"]
    for s in a.subjects:
        image, affine = load_volume(
            paths.path("gnl_7T_unwarped", a.results, cohort=a.cohort, subject=s), s
        )
        truth = paths.path("demo_truth_dir", a.results, cohort=a.cohort, subject=s)
        true_bias, _ = load_volume(truth / "bias_7T.nii.gz", s)
        brain, _ = load_volume(truth / "brainmask_7T.nii.gz", s)
        mask = head_mask(image, affine)
        for shrink in a.shrink:
            t0 = time.process_time()
            corrected, bias = n4_correct(
                image,
                affine,
                mask,
                shrink_factor=shrink,
                iterations=n4["iterations"],
                spline_distance_mm=n4["spline_distance_mm"],
                threads=1,
            )
            cpu = time.process_time() - t0
            wm = white_matter_proxy(corrected, mask)
            print(
                f"{s} shrink {shrink}: {cpu:.1f} CPU s, bias corr with truth "
                f"{bias_field_correlation(bias, true_bias, brain > 0.5):.4f}, "
                f"WM CoV {coefficient_of_variation(corrected, wm):.4f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
