"""Where across the box a model's gain over B-spline lies: PSNR gain per band of one axis.

A cell's PSNR is one number for its whole box; this splits the box into ``--bands`` equal
bands along ``--along`` (default: the cell's thick axis) and gives each model's gain over
B-spline in each band, from the predictions ``benchmarks/validate.py`` wrote (each after its
own isotonic map to the truth over the whole box, as the metrics; the error summed per band).

    .venv/bin/python benchmarks/gain_bands.py --results /tmp/inia/results --cell sim-x-6mm \\
        --bspline results/demo/validation_inia/bspline \\
        --run stud_s0=results/demo/validation_inia/stud_s0 --run regression=...

``--run NAME=DIR``: the predictions ``DIR/NAME/<subject>_<cell>.nii.gz`` of a validate.py run
with ``--out DIR`` (``--bspline DIR`` the same for ``bspline``). The validation subjects'
truth comes from the demo's raw folder under ``--results``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from sr7t import paths
from sr7t.data.slices import load_subject
from sr7t.evaluate.cells import Cell, cell_input, load_truth, roi
from sr7t.evaluate.metrics import fitted_pair

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import cohort_args, resolved_config, split_files  # noqa: E402

CELL = re.compile(r"^sim-([xyz])-([0-9.]+)mm$")
AXES = "xyz"


def band_errors(pred, reference, mask, along: int, bands: int) -> np.ndarray:
    """Mean squared error after the isotonic map, per band along ``along`` (inside ``mask``)."""
    fitted, ref = fitted_pair(pred, reference, mask, "isotonic")
    err = np.where(mask, (fitted - ref) ** 2, 0.0)
    other = tuple(a for a in range(3) if a != along)
    per_plane, count = err.sum(other), mask.sum(other)
    return np.array(
        [
            per_plane[b].sum() / max(count[b].sum(), 1)
            for b in np.array_split(np.arange(len(count)), bands)
        ]
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    cohort_args(ap)
    ap.add_argument("--cell", required=True, help="a main-protocol cell, e.g. sim-x-6mm")
    ap.add_argument("--bspline", required=True, help="the --out folder of bspline's validate run")
    ap.add_argument("--run", action="append", default=[], help="NAME=DIR (repeat)")
    ap.add_argument("--along", choices=list(AXES), default=None, help="default: thick axis")
    ap.add_argument("--bands", type=int, default=8)
    ap.add_argument("--split", default="val")
    a = ap.parse_args(argv)
    match = CELL.match(a.cell)
    if not match:
        ap.error(f"--cell {a.cell!r} is not a main-protocol cell like sim-x-6mm")
    thick = AXES.index(match.group(1))
    along = thick if a.along is None else AXES.index(a.along)
    cfg = resolved_config(a.config, a.set)["evaluate"]
    runs = {"bspline": Path(a.bspline)} | {
        name: Path(folder) for name, folder in (item.split("=", 1) for item in a.run)
    }
    truth_root = paths.path("demo_truth_root", a.results, cohort=a.cohort)
    print(f"{a.cell}: PSNR gain over bspline (dB) per band along {AXES[along]}")
    for file in split_files(a.results, a.cohort)[a.split]:
        subject = Path(file).name.removesuffix(".npz")
        arrays = load_subject(file)
        truth = load_truth(Path(truth_root) / subject, subject, arrays)
        inp = cell_input(
            Cell(subject, "sim", thick, float(match.group(2))), arrays, truth, cfg["noise"]
        )
        inner = roi(inp["mask"], arrays["spacing_mm"], cfg["roi_mm"])
        reference, mask = inp["reference"][inner], inp["mask"][inner]
        errors = {}
        for name, folder in runs.items():
            volume = folder / name / f"{subject}_{a.cell}.nii.gz"
            pred = np.asarray(nib.load(volume).get_fdata(), dtype=np.float32)
            errors[name] = band_errors(pred, reference, mask, along, a.bands)
        print(subject)
        for name, err in errors.items():
            if name != "bspline":
                gain = 10 * np.log10(errors["bspline"] / err)
                print(f"  {name:14s} " + " ".join(f"{g:+.2f}" for g in gain))
    return 0


if __name__ == "__main__":
    sys.exit(main())
