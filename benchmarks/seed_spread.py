"""Run-to-run spread: the same config trained with other seeds, each scored once.

    .venv/bin/python benchmarks/seed_spread.py --kind chain --seeds 1 2 [--split test]
        [--threads 1]

Trains ``<kind>_seed<s>`` with ``teacher.seed`` and ``distill.seed`` set to ``s``
(benchmarks/train_variant.py; the data draws follow the seeds), scores each final model on the
``--split`` subjects with the evaluation's own cells (benchmarks/validate.py), adds the
workflow's own model (seed 0) when its ``eval/<model>/metrics.tsv`` exists for that split, and
writes ``results/<cohort>/seed_spread/<kind>_<split>_per_seed.tsv`` (per seed and input kind
the mean PSNR/SSIM gain over B-spline) and ``<kind>_<split>.tsv`` (their mean, standard
deviation and range over seeds).
A seed already trained and scored is read back, not redone: run seeds side by side as
separate calls (``--seeds 1`` and ``--seeds 2``), then once with all of them for the table.
Nothing is chosen on these scores: they measure how far a rerun of README's numbers can move.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_variant  # noqa: E402
import validate  # noqa: E402
from cohort import cohort_args, resolved_config, split_files  # noqa: E402

from sr7t.evaluate.run import summary_table  # noqa: E402

WORKFLOW_MODEL = {"chain": "student_stage{k}", "regression": "regression", "teacher": "teacher"}


def gains(summary: pd.DataFrame, name: str, seed: int) -> pd.DataFrame:
    g = summary[(summary["kind"] == "gain") & (summary["resolution_mm"] < 0)]
    g = g[g["metric"].isin(["psnr", "ssim"])][["input", "metric", "mean"]]
    return g.assign(seed=seed, model=name)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--kind", choices=sorted(WORKFLOW_MODEL), default="chain")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--split", default="test")
    ap.add_argument("--threads", type=int, default=2, help="torch threads while training")
    cohort_args(ap)
    a = ap.parse_args(argv)

    root = Path(a.results)
    out = root / a.cohort / "seed_spread"
    rows = []
    common = ["--results", a.results, "--cohort", a.cohort, "--config", a.config]
    for s in a.seeds:
        name = f"{a.kind}_seed{s}"
        model = root / a.cohort / "variants" / name / "model.pt"
        if not model.exists():
            sets = [f"teacher.seed={s}", f"distill.seed={s}", *a.set]
            train_variant.main(
                ["--name", name, "--kind", a.kind, "--threads", str(a.threads), *common]
                + sum([["--set", x] for x in sets], [])
            )
        folder = out / f"{name}_{a.split}"
        if not (folder / "summary.tsv").exists():  # scored once (seeds run side by side)
            validate.main(
                [*common, "--models", "bspline", name, "--model-file", f"{name}={model}"]
                + ["--out", str(folder), "--split", a.split]
            )
        rows.append(gains(pd.read_csv(folder / "summary.tsv", sep="\t"), name, s))

    cfg = resolved_config(a.config)
    own = WORKFLOW_MODEL[a.kind].format(k=cfg["distill"]["stages"])
    split = {Path(f).stem for f in split_files(root, a.cohort).get(a.split, [])}
    tables = [root / a.cohort / "eval" / m / "metrics.tsv" for m in ("bspline", own)]
    if a.split == "test" and all(t.exists() for t in tables) and not a.set:
        table = pd.concat([pd.read_csv(t, sep="\t") for t in tables], ignore_index=True)
        if set(table["subject"]) == split:
            rows.append(gains(summary_table(table), own, 0))
    per_seed = pd.concat(rows, ignore_index=True)
    spread = (
        per_seed.groupby(["input", "metric"])["mean"]
        .agg(["mean", "std", "min", "max", "count"])
        .reset_index()
        .rename(columns={"count": "seeds"})
    )
    out.mkdir(parents=True, exist_ok=True)
    tsv = out / f"{a.kind}_{a.split}.tsv"
    per_seed.to_csv(out / f"{a.kind}_{a.split}_per_seed.tsv", sep="\t", index=False)
    spread.to_csv(tsv, sep="\t", index=False, float_format="%.4f")
    print(spread.to_string(index=False, float_format=lambda v: f"{v:+.3f}"))
    print(f"written: {tsv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
