"""Two configs compared on the validation subjects, paired over seed and cell.

Each ``--run LABEL SEED MODEL METRICS`` names one trained model (``MODEL`` rows of the
metrics table ``METRICS``, written by ``benchmarks/validate.py``) as seed ``SEED`` of the
config ``LABEL``; the ``bspline`` rows of ``--bspline METRICS`` (default: the first table
that has them) are every seed's baseline. Prints, per input kind, each label's gain over
B-spline and ``--compare A B``'s difference A - B, each with its 95 % bootstrap CI over the
paired units (seed, subject, thick axis, spacing), for PSNR after each method's isotonic map
to the truth, after a linear map, and SSIM (:func:`sr7t.evaluate.stats.paired_diff_ci`):

    .venv/bin/python benchmarks/variant_diff.py \\
        --run default 0 student_stage1 results/demo/validation/inpl_base/metrics.tsv \\
        --run default 1 base_s1 results/demo/validation/base_s1/metrics.tsv \\
        --run rot2 0 rot2f2 results/demo/validation/rot2f2/metrics.tsv \\
        --run rot2 1 rot2f2_s1 results/demo/validation/rot2f2_s1/metrics.tsv \\
        --compare rot2 default
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from sr7t.evaluate.stats import paired_diff_ci

UNITS = ["seed", "subject", "axis", "resolution_mm"]
METRICS = ("psnr", "psnr_linear", "ssim")
BASELINE = "bspline"


def paired_table(runs: list[tuple[str, int, str, str]], bspline: str | None = None):
    """One long table: each run's rows as model ``LABEL`` with its seed, and the B-spline
    rows (of the table ``bspline``, or the first run's table that has them) once per seed as
    model ``bspline``. Raises ``ValueError`` when a run's table has no rows of its model or
    no table has B-spline rows."""
    tables = {path: pd.read_csv(path, sep="\t") for _, _, _, path in runs}
    if bspline is not None:
        tables = {bspline: pd.read_csv(bspline, sep="\t"), **tables}
    base = next(
        (t[t["model"] == BASELINE] for t in tables.values() if (t["model"] == BASELINE).any()), None
    )
    if base is None:
        raise ValueError(f"no table has {BASELINE} rows")
    parts = []
    for label, seed, model, path in runs:
        rows = tables[path][tables[path]["model"] == model]
        if rows.empty:
            raise ValueError(f"{path} has no rows of model {model!r}")
        parts.append(rows.assign(model=label, seed=int(seed)))
    for seed in sorted({int(s) for _, s, _, _ in runs}):
        parts.append(base.assign(seed=seed))
    return pd.concat(parts, ignore_index=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--run",
        nargs=4,
        action="append",
        required=True,
        metavar=("LABEL", "SEED", "MODEL", "METRICS"),
    )
    ap.add_argument("--compare", nargs=2, metavar=("A", "B"), default=None)
    ap.add_argument("--bspline", default=None, metavar="METRICS", help="the baseline's table")
    ap.add_argument(
        "--subject",
        action="append",
        default=None,
        help="only this validation subject's rows (repeat for several; default: all)",
    )
    a = ap.parse_args(argv)
    table = paired_table([tuple(r) for r in a.run], a.bspline)
    if a.subject:
        missing = sorted(set(a.subject) - set(table["subject"]))
        if missing:
            ap.error(
                f"no rows of subject(s) {missing}; the tables have {sorted(set(table['subject']))}"
            )
        table = table[table["subject"].isin(a.subject)]
    labels = list(dict.fromkeys(r[0] for r in a.run))
    pairs = [(label, BASELINE) for label in labels] + ([tuple(a.compare)] if a.compare else [])
    for kind in sorted(set(table["input"]) - {"iso"}):
        rows = table[table["input"] == kind]
        print(kind)
        for model, baseline in pairs:
            cells = []
            for metric in METRICS:
                r = paired_diff_ci(rows, model, baseline, metric, UNITS)
                cells.append(f"{metric} {r['mean']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}]")
            print(f"  {model} - {baseline} (n={r['n']}): " + "; ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
