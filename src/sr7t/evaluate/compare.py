"""Students against their teacher: quality kept versus cost saved (the distillation's goal)."""

from __future__ import annotations

import pandas as pd

from sr7t.evaluate.run import BASELINE_ORDER


def compare_to_teacher(metrics: pd.DataFrame, reference: str = "teacher") -> pd.DataFrame | None:
    """One row per learned model and input resolution, from ``metrics.tsv``'s table.

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
    table = learned.groupby(["model", "resolution_mm"]).agg(cols).reset_index()
    ref = table[table["model"] == reference].set_index("resolution_mm")
    by_res = table["resolution_mm"]
    table["delta_psnr_db"] = table["psnr"] - by_res.map(ref["psnr"])
    table["delta_ssim"] = table["ssim"] - by_res.map(ref["ssim"])
    table["params_ratio"] = table["params"] / float(ref["params"].iloc[0])
    table["speedup"] = by_res.map(ref["seconds"]) / table["seconds"]
    order = ["model", "resolution_mm", "psnr", "delta_psnr_db", "ssim", "delta_ssim"]
    order += ["sampling_steps", "params", "params_ratio"]
    order += [c for c in ("macs_per_slice",) if c in table.columns] + ["seconds", "speedup"]
    return table[order]
