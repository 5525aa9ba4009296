"""The README's test table and the figures beside it, from an evaluation's ``metrics.tsv``.

    .venv/bin/python benchmarks/test_table.py [--results results --cohort demo]
        [--metrics path/to/metrics.tsv] [--final MODEL]

Reads what the workflow's ``metrics`` rule gathered (``results/<cohort>/eval/metrics.tsv``:
every model x held-out subject x input cell, contrast-neutral scores) and prints, with no
model run:

- one markdown row per model: mean PSNR on the simulated (``sim``), real-1.5T (``pipeline``)
  and fine (``iso``) inputs, each with the gain over B-spline and its 95 % bootstrap CI
  paired over subject x axis x spacing units, as the workflow's ``summary.tsv`` has them
  (``sr7t.evaluate.run.summary_table``), the SSIM gains and the linear-fit PSNR;
- the PSNR gain over B-spline per sim cell (thick axis x spacing, mean of the subjects) and
  per subject, the SSIM gain range over cells, how many cells reach issue 10's +1.5 dB;
- the linear-fit gain over ``bspline_map`` (the learned models' own intensity map), grey-
  matter Dice on the tissue cell and the mean striping ratio over the sim rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from sr7t import paths
from sr7t.evaluate.run import summary_table
from sr7t.evaluate.stats import paired_diff_ci

UNITS = ["subject", "axis", "resolution_mm"]
TARGET_DB = 1.5  # issue 10: >= +1.5 dB over B-spline in every cell


def gain(table: pd.DataFrame, model: str, metric: str, baseline: str = "bspline") -> dict:
    return paired_diff_ci(table, model, baseline, metric, unit_cols=UNITS)


def model_row(table: pd.DataFrame, summary: pd.DataFrame, model: str) -> str:
    """One markdown row: the means and the gains with their CIs as the workflow's summary
    (:func:`sr7t.evaluate.run.summary_table`) gives them, pooled over spacings."""
    pooled = summary[(summary["model"] == model) & (summary["resolution_mm"] < 0)]

    def row(kind: str, inp: str, metric: str) -> pd.Series:
        hit = pooled[(pooled["kind"] == kind) & (pooled["input"] == inp)]
        return hit[hit["metric"] == metric].iloc[0]

    cells = []
    for inp in ("sim", "pipeline", "iso"):
        mean = row("score", inp, "psnr")["mean"]
        if model == "bspline":
            cells.append(f"{mean:.2f}")
            continue
        g = row("gain", inp, "psnr")
        cells.append(f"{mean:.2f} ({g['mean']:+.2f} [{g['ci_lo']:+.2f}, {g['ci_hi']:+.2f}])")
    ssim = "–"
    if model != "bspline":
        ssim = " / ".join(f"{row('gain', k, 'ssim')['mean']:+.3f}" for k in ("sim", "pipeline"))
    linear = " / ".join(
        f"{table[(table['input'] == k) & (table['model'] == model)]['psnr_linear'].mean():.2f}"
        for k in ("sim", "pipeline")
    )
    return f"| {model} | " + " | ".join(cells) + f" | {ssim} | {linear} |"


def per_cell(sim: pd.DataFrame, model: str, metric: str = "psnr") -> pd.Series:
    """Gain over B-spline per (axis, spacing), mean over subjects."""
    wide = sim.pivot_table(index=UNITS, columns="model", values=metric)
    return (wide[model] - wide["bspline"]).groupby(level=["axis", "resolution_mm"]).mean()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--cohort", default="demo")
    ap.add_argument("--metrics", default=None, help="a metrics.tsv (default: the cohort's)")
    ap.add_argument("--final", default=None, help="the final model (default: the last stage)")
    a = ap.parse_args()

    path = Path(a.metrics or paths.path("metrics", a.results, cohort=a.cohort))
    table = pd.read_csv(path, sep="\t")
    models = list(dict.fromkeys(table["model"]))
    baselines = [m for m in ("bspline", "bspline_map", "trilinear") if m in models]
    learned = [m for m in models if m not in baselines]
    order = baselines + learned
    sim = table[table["input"] == "sim"]
    stages = sorted(
        (m for m in learned if m.startswith("student_stage")),
        key=lambda m: int(m.removeprefix("student_stage")),
    )
    final_model = a.final or (stages[-1] if stages else learned[-1])
    print(f"{path}: {len(table)} rows, subjects {sorted(table['subject'].unique())}\n")
    print(
        "| model | sim | pipeline | iso | SSIM gain, sim / pipeline | linear fit, sim / pipeline |"
    )
    print("|---|---|---|---|---|---|")
    summary = summary_table(table)
    for m in order:
        print(model_row(table, summary, m))

    print("\nPSNR gain over B-spline per sim cell (mean of subjects), axis x spacing:")
    cells = pd.DataFrame({m: per_cell(sim, m) for m in learned})
    print(cells.round(2).to_string())
    ssim_cells = per_cell(sim, final_model, "ssim")
    final = cells[final_model]
    print(
        f"{final_model}: {int((final >= TARGET_DB).sum())} of {len(final)} cells "
        f">= +{TARGET_DB} dB; "
        f"SSIM gain per cell {ssim_cells.min():+.3f} to {ssim_cells.max():+.3f}, "
        f"{int((ssim_cells > 0).sum())} of {len(ssim_cells)} above 0"
    )

    print("\nPSNR gain over B-spline on sim, per subject:")
    for m in learned:
        per = {
            s: gain(sim[sim["subject"] == s], m, "psnr")["mean"]
            for s in sorted(sim["subject"].unique())
        }
        print(f"  {m}: " + ", ".join(f"{s} {v:+.2f}" for s, v in per.items()))

    if "bspline_map" in models:
        print("\nlinear-fit PSNR gain over bspline_map, sim / pipeline:")
        for m in learned:
            g = [
                gain(table[table["input"] == k], m, "psnr_linear", "bspline_map")["mean"]
                for k in ("sim", "pipeline")
            ]
            print(f"  {m}: {g[0]:+.2f} / {g[1]:+.2f}")

    tissue = table.dropna(subset=["dice_gm"])
    if not tissue.empty:
        dice = tissue.groupby("model")["dice_gm"].mean().sort_values(ascending=False)
        cell = tissue.iloc[0]
        print(
            f"\nGM Dice on the tissue cell ({cell['input']}, axis {cell['axis']}, "
            f"{cell['resolution_mm']:g} mm; mean of subjects): "
            + ", ".join(f"{m} {v:.3f}" for m, v in dice.items())
        )
    stripes = sim.groupby("model")["striping"].mean().reindex(order)
    print(
        "striping ratio (1 = truth-like), mean over sim rows: "
        + ", ".join(f"{m} {v:.2f}" for m, v in stripes.items())
    )


if __name__ == "__main__":
    main()
