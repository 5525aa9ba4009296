"""Evaluation: one model x every input resolution x every held-out subject.

The input at resolution r is the subject's registered 1.5T re-acquired with slice spacing
r mm along z (:func:`sr7t.data.resolution.simulate_slice_spacing`), on the 7T grid. Every
prediction and the reference (the corrected 7T) are scaled by their own 99th percentile in
the brain mask before the metrics (:mod:`sr7t.evaluate.metrics`), so no model gains from a
different intensity scale.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sr7t.data.dataset import load_subject_arrays, robust_scale
from sr7t.evaluate.metrics import all_metrics
from sr7t.io import save_volume

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "model",
    "resolution_mm",
    "subject",
    "psnr",
    "ssim",
    "nmse",
    "seconds",
    "input_slice_mm",
    "data_range",
    "sampling_steps",
    "params",
    "macs_per_slice",
    "warning",
]
BASELINE_ORDER = {"trilinear": 1, "bspline": 3}


def degrade_condition(arrays: dict, slice_mm: float) -> tuple[np.ndarray, float]:
    """The subject's condition with its 1.5T channel re-acquired at ``slice_mm`` along z.

    Returns the condition and the effective slice spacing (never finer than the native
    1.5T slice spacing: a scan cannot be made sharper than it was acquired).
    """
    from sr7t.data.resolution import simulate_slice_spacing

    native = float(arrays["native_slice_mm"])
    effective = max(float(slice_mm), native)
    cond = arrays["condition"].copy()
    voxel_z = float(arrays["spacing_mm"][2])
    cond[0] = simulate_slice_spacing(cond[0], voxel_z, effective)
    return cond, effective


def baseline_prediction(arrays: dict, slice_mm: float, order: int) -> np.ndarray:
    """Interpolation baseline: the thick-slice 1.5T interpolated along z with spline ``order``."""
    from sr7t.data.resolution import simulate_slice_spacing

    native = float(arrays["native_slice_mm"])
    voxel_z = float(arrays["spacing_mm"][2])
    return simulate_slice_spacing(
        arrays["condition"][0], voxel_z, max(float(slice_mm), native), order=order
    )


def scaled_reference(arrays: dict) -> np.ndarray:
    """The corrected 7T divided by its own 99th percentile in the brain mask."""
    target = arrays["target"]
    return target / robust_scale(target, arrays["mask"])


def predict_scaled(
    model_name: str,
    model,
    meta: dict | None,
    arrays: dict,
    slice_mm: float,
    batch_size: int = 16,
    device=None,
    progress: bool = True,
) -> tuple[np.ndarray, float, float, str]:
    """One prediction at input slice spacing ``slice_mm``, masked and scaled like the reference.

    ``model`` None: the interpolation baseline ``model_name``. ``arrays``: a subject as
    :func:`~sr7t.data.dataset.load_subject_arrays` returns it (``condition``, ``mask``,
    ``spacing_mm``, ``native_slice_mm``). Returns ``(prediction / its in-mask 99th percentile,
    effective slice spacing in mm, seconds, out-of-range warning or "")``.
    """
    warning = ""
    t0 = time.perf_counter()
    if model is None:
        pred = baseline_prediction(arrays, slice_mm, BASELINE_ORDER[model_name])
        effective = max(float(slice_mm), float(arrays["native_slice_mm"]))
    else:
        from sr7t.models.predict import check_input_spacing, predict_volume

        cond, effective = degrade_condition(arrays, slice_mm)
        warning = check_input_spacing(meta, effective) or ""
        pred = predict_volume(
            model, meta, cond, batch_size=batch_size, device=device, progress=progress
        )
    seconds = time.perf_counter() - t0
    mask = arrays["mask"]
    pred = np.where(mask > 0, pred, 0.0).astype(np.float32)
    return pred / robust_scale(pred, mask), effective, seconds, warning


def evaluate_model(
    model_name: str,
    model_file: str | None,
    test_files: list[str],
    resolutions_mm: list[float],
    pred_pattern: str,
    out_tsv: str | Path,
    batch_size: int = 16,
    device: str | None = None,
) -> pd.DataFrame:
    """Predict every held-out subject at every resolution; write predictions and metrics.

    ``pred_pattern`` has ``{subject}`` and ``{resolution_mm}`` fields (NIfTI on the 7T grid).
    Returns the metrics table (columns :data:`METRIC_COLUMNS`) also written to ``out_tsv``.
    """
    model = meta = None
    if model_name not in BASELINE_ORDER:
        from sr7t.models.bundle import load_bundle

        if not model_file:
            raise ValueError(f"model {model_name} needs --model-file")
        model, meta = load_bundle(model_file, device=device)
    rows = []
    for test_file in test_files:
        arrays = load_subject_arrays(test_file)
        subject = Path(test_file).name.removesuffix(".npz")
        if "target" not in arrays:
            raise ValueError(f"{test_file}: no 7T target, cannot evaluate subject {subject}")
        mask = arrays["mask"]
        reference = scaled_reference(arrays)
        for res in resolutions_mm:
            scaled, effective, seconds, warning = predict_scaled(
                model_name, model, meta, arrays, res, batch_size, device
            )
            if warning:
                log.warning("%s %s: %s", model_name, subject, warning)
            if model is None:
                steps, n_params, macs = 0, 0, 0
            else:
                steps, n_params = int(meta["sampling_steps"]), int(meta["param_count"])
                macs = int(meta.get("macs_per_slice", 0))
            save_volume(
                pred_pattern.format(subject=subject, resolution_mm=f"{res:g}"),
                scaled,
                arrays["affine"],
            )
            m = all_metrics(scaled, reference, mask)
            rows.append(
                {
                    "model": model_name,
                    "resolution_mm": float(res),
                    "subject": subject,
                    **{k: m[k] for k in ("psnr", "ssim", "nmse", "data_range")},
                    "seconds": seconds,
                    "input_slice_mm": effective,
                    "sampling_steps": steps,
                    "params": n_params,
                    "macs_per_slice": macs,
                    "warning": warning,
                }
            )
            log.info(
                "%s %s %g mm: PSNR %.2f dB, SSIM %.4f, %.1f s",
                model_name,
                subject,
                res,
                m["psnr"],
                m["ssim"],
                seconds,
            )
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    Path(out_tsv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_tsv, sep="\t", index=False, float_format="%.6g")
    return table


def combine_metrics(tables: list[str], out_tsv: str | Path, figure: str | Path) -> pd.DataFrame:
    """Concatenate per-model tables into ``metrics.tsv`` and plot PSNR/SSIM vs resolution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.concat(
        [pd.read_csv(t, sep="\t", keep_default_na=False) for t in tables], ignore_index=True
    )
    table = table.sort_values(["model", "resolution_mm", "subject"])
    table.to_csv(out_tsv, sep="\t", index=False, float_format="%.6g")
    summary = table.groupby(["model", "resolution_mm"])[["psnr", "ssim"]].mean().reset_index()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=90)
    for name, group in summary.groupby("model"):
        style = "--" if name in BASELINE_ORDER else "-"
        for ax, key in zip(axes, ("psnr", "ssim"), strict=True):
            ax.plot(group["resolution_mm"], group[key], style, marker="o", label=name)
    axes[0].set_ylabel("PSNR in brain mask (dB)")
    axes[1].set_ylabel("SSIM in brain mask")
    for ax in axes:
        ax.set_xlabel("input slice spacing (mm)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("Held-out subjects, mean over subjects (higher is better)")
    fig.tight_layout()
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure)
    plt.close(fig)
    return table
