"""The stress cells' table for README, from a ``metrics.tsv`` that has them.

    .venv/bin/python benchmarks/validate.py --split val \\
        --models bspline student_stage1 regression teacher \\
        --set 'evaluate.stress=[gauss,offset,inplane,bias,gap,contrast,noise,thick8,routine]' \\
        --set evaluate.resolutions_mm=[4.0] --set evaluate.isotropic=false \\
        --set evaluate.pipeline=false --out results/demo/validation/stress
    .venv/bin/python benchmarks/stress_table.py results/demo/validation/stress/metrics.tsv

Prints one markdown row per stress (``sr7t.evaluate.cells.STRESS``: what it changes, whether
it lies beyond the training's randomisation) with each learned model's PSNR gain over
B-spline and its 95 % bootstrap CI paired over subject x axis, its SSIM gain, and the final
model's (``--final``, default the first learned model listed) gain per thick axis; the main
protocol's ``sim`` cells at the stress spacing come first, as the reference the stresses are
read against. Nothing is run.
"""

from __future__ import annotations

import argparse

import pandas as pd

from sr7t.evaluate.cells import STRESS, STRESS_PREFIX
from sr7t.evaluate.run import BASELINE_ORDER
from sr7t.evaluate.stats import paired_diff_ci

UNITS = ["subject", "axis", "resolution_mm"]


def gain(part: pd.DataFrame, model: str, metric: str) -> dict:
    return paired_diff_ci(part, model, "bspline", metric, unit_cols=UNITS)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("metrics", help="a metrics.tsv with stress-<name> inputs")
    ap.add_argument("--final", default=None, help="the model whose per-axis gains are shown")
    a = ap.parse_args()

    table = pd.read_csv(a.metrics, sep="\t")
    learned = [m for m in dict.fromkeys(table["model"]) if m not in BASELINE_ORDER]
    final = a.final or learned[0]
    stressed = [k for k in dict.fromkeys(table["input"]) if k.startswith(STRESS_PREFIX)]
    if not stressed:
        raise SystemExit(f"{a.metrics}: no stress cells (evaluate.stress was empty)")
    spacings = table[table["input"].isin(stressed)]["resolution_mm"].unique()
    main_cells = table[(table["input"] == "sim") & table["resolution_mm"].isin(spacings)]
    parts = ([("sim (the main protocol)", main_cells)] if len(main_cells) else []) + [
        (k.removeprefix(STRESS_PREFIX), table[table["input"] == k]) for k in stressed
    ]
    subjects = sorted(table["subject"].unique())
    print(f"{a.metrics}: subjects {subjects}; gain over B-spline, dB [95 % CI], SSIM gain\n")
    heads = " | ".join(learned)
    print(f"| input | spacing | beyond training | {heads} | {final} per axis x / y / z |")
    print("|---|---|---|" + "---|" * len(learned) + "---|")
    for name, part in parts:
        stress = STRESS.get(name)
        what = f"`{name}`: {stress.description}" if stress else name
        beyond = "–" if stress is None else ("yes" if stress.beyond_training else "no")
        cells = []
        for m in learned:
            p, s = gain(part, m, "psnr"), gain(part, m, "ssim")
            cells.append(f"{p['mean']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}], {s['mean']:+.3f}")
        wide = part.pivot_table(index=UNITS, columns="model", values="psnr")
        per_axis = (wide[final] - wide["bspline"]).groupby(level="axis").mean()
        axes = " / ".join(f"{per_axis.get(x, float('nan')):+.2f}" for x in "xyz")
        spacing = "/".join(f"{r:g}" for r in sorted(part["resolution_mm"].unique()))
        print(f"| {what} | {spacing} mm | {beyond} | " + " | ".join(cells) + f" | {axes} |")


if __name__ == "__main__":
    main()
