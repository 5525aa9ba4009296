"""Students against their teacher: quality kept versus cost saved (the distillation's goal)."""

from __future__ import annotations

import pandas as pd

from sr7t.evaluate.run import BASELINE_ORDER


def compare_to_teacher(metrics: pd.DataFrame, reference: str = "teacher") -> pd.DataFrame | None:
    """One row per learned model, input kind and resolution, from ``metrics.tsv``'s table.

    Columns: ``model``, ``resolution_mm``, ``psnr``, ``delta_psnr_db`` (model - teacher, mean
    over subjects), ``ssim``, ``delta_ssim``, ``sampling_steps``, ``params``,
    ``params_ratio`` (model / teacher), ``macs_per_slice``, ``speedup`` (teacher seconds per
    volume / the model's). None when the table has no ``reference`` rows.
    """
    learned = metrics[~metrics["model"].isin(list(BASELINE_ORDER))]
    if reference not in set(learned["model"]):
        return None
    cols = {"psnr": "mean", "ssim": "mean", "seconds": "mean", "sampling_steps": "first"}
    cols |= {"params": "first"}
    if "macs_per_slice" in learned.columns:
        cols["macs_per_slice"] = "first"
    keys = [k for k in ("input", "resolution_mm") if k in learned.columns]
    table = learned.groupby(["model", *keys]).agg(cols).reset_index()
    ref = table[table["model"] == reference].set_index(keys)
    by_cell = table.set_index(keys).index
    table["delta_psnr_db"] = table["psnr"].to_numpy() - ref["psnr"].reindex(by_cell).to_numpy()
    table["delta_ssim"] = table["ssim"].to_numpy() - ref["ssim"].reindex(by_cell).to_numpy()
    table["params_ratio"] = table["params"] / float(ref["params"].iloc[0])
    table["speedup"] = ref["seconds"].reindex(by_cell).to_numpy() / table["seconds"].to_numpy()
    order = ["model", *keys, "psnr", "delta_psnr_db", "ssim", "delta_ssim"]
    order += ["sampling_steps", "params", "params_ratio"]
    order += [c for c in ("macs_per_slice",) if c in table.columns] + ["seconds", "speedup"]
    return table[order]
