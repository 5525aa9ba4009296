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

from sr7t.data.contrast import quantile_map, quantile_map_of
from sr7t.data.dataset import robust_scale
from sr7t.data.slices import load_subject
from sr7t.evaluate.cells import STRESS_PREFIX
from sr7t.io import save_volume

log = logging.getLogger(__name__)

# Scores of every row (contrast-neutral: sr7t.evaluate.metrics.contrast_neutral_metrics).
SCORE_COLUMNS = [
    "psnr",
    "ssim",
    "nmse",
    "hfen",
    "gmsd",
    "psnr_linear",
    "ssim_linear",
    "striping",
]
# Tissue agreement (sr7t.evaluate.tissue): filled on the tissue cell only (tissue_cell()).
TISSUE_COLUMNS = [f"{k}_{t}" for k in ("dice", "volerr") for t in ("csf", "gm", "wm")]
METRIC_COLUMNS = [
    "model",
    "resolution_mm",
    "subject",
    "input",
    "axis",
    *SCORE_COLUMNS,
    *TISSUE_COLUMNS,
    "uncertainty_error_corr",
    "seconds",
    "input_slice_mm",
    "reference",
    "sampling_steps",
    "params",
    "macs_per_slice",
    "warning",
]
# name -> spline order
BASELINE_ORDER = {"trilinear": 1, "bspline": 3, "bspline_map": 3, "bspline_consistent": 3}
# Baselines made to agree with the cell's own acquired slices afterwards (the slice
# consistency of sr7t.models.consistency, which the learned models leave off): an
# interpolation that honours the box slice profile, for a reviewer's stronger baseline.
CONSISTENT_BASELINES = ("bspline_consistent",)
# Baselines whose interpolation is then mapped to the 7T's contrast: the monotone 1.5T -> 7T
# quantile map of the training subjects (sr7t.data.contrast), the one a learned model with
# data.synth.target_contrast "input" applies. Contrast only, no resolution gain: under the
# isotonic fit of the metrics it scores as its interpolation (a monotone map), under the
# linear fit it shows how much of a gain is contrast alone.
MAPPED_BASELINES = {"bspline_map": "bspline"}


def degrade_condition(arrays: dict, slice_mm: float, order: int = 1) -> tuple[np.ndarray, float]:
    """The subject's condition with its 1.5T channel re-acquired at ``slice_mm`` along z and
    interpolated back with spline ``order`` (the model's :func:`~sr7t.models.predict.input_order`).

    Returns the condition and the effective slice spacing (never finer than the native
    1.5T slice spacing: a scan cannot be made sharper than it was acquired).
    """
    from sr7t.data.resolution import simulate_slice_spacing

    native = float(arrays["native_slice_mm"])
    effective = max(float(slice_mm), native)
    cond = arrays["condition"].copy()
    voxel_z = float(arrays["spacing_mm"][2])
    cond[0] = simulate_slice_spacing(cond[0], voxel_z, effective, order=order)
    return cond, effective


def baseline_prediction(arrays: dict, slice_mm: float, order: int) -> np.ndarray:
    """Interpolation baseline: the thick-slice 1.5T interpolated along z with spline ``order``."""
    from sr7t.data.resolution import simulate_slice_spacing

    native = float(arrays["native_slice_mm"])
    voxel_z = float(arrays["spacing_mm"][2])
    return simulate_slice_spacing(
        arrays["condition"][0], voxel_z, max(float(slice_mm), native), order=order
    )


def training_contrast_map(train_files: list[str]) -> dict:
    """The 1.5T -> 7T quantile map of the training subjects (``dataset_subject`` files), as
    the trainer fits it for ``meta["contrast_map"]``."""
    return quantile_map_of((s.t1, s.target, s.mask) for s in map(load_subject, train_files))


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
    :func:`~sr7t.data.slices.load_subject` returns it (``condition``, ``mask``,
    ``spacing_mm``, ``native_slice_mm``). Returns ``(prediction / its in-mask 99th percentile,
    effective slice spacing in mm, seconds, out-of-range warning or "")``.
    """
    warning = ""
    t0 = time.perf_counter()
    if model is None and model_name in MAPPED_BASELINES:
        raise ValueError(f"baseline {model_name} needs its training subjects' contrast map")
    if model is None and model_name in CONSISTENT_BASELINES:
        raise ValueError(f"baseline {model_name} needs an evaluation cell's slices")
    if model is None:
        pred = baseline_prediction(arrays, slice_mm, BASELINE_ORDER[model_name])
        effective = max(float(slice_mm), float(arrays["native_slice_mm"]))
    else:
        from sr7t.models.predict import check_input_spacing, input_order, predict_volume

        cond, effective = degrade_condition(arrays, slice_mm, input_order(meta))
        warning = check_input_spacing(meta, effective) or ""
        native = arrays.get("native_spacing_mm")
        inplane = (
            float(np.max(native[:2])) if native is not None else float(arrays["spacing_mm"][0])
        )
        pred = predict_volume(
            model,
            meta,
            cond,
            batch_size=batch_size,
            device=device,
            progress=progress,
            thick_axis=2,
            slice_mm=effective,
            inplane_mm=inplane,
        )
    seconds = time.perf_counter() - t0
    mask = arrays["mask"]
    pred = np.where(mask > 0, pred, 0.0).astype(np.float32)
    return pred / robust_scale(pred, mask), effective, seconds, warning


def evaluate_model(
    model_name: str,
    model_file: str | None,
    test_files: list[str],
    cfg: dict,
    pred_pattern: str,
    out_tsv: str | Path,
    truth_root: str | Path | None = None,
    device: str | None = None,
    std_pattern: str | None = None,
    train_files: list[str] | None = None,
    flips: int | None = None,
    tile: int | None = None,
    cores: int = 1,
    fusion: str | None = None,
    fusion_power: float | None = None,
    rotations: int | None = None,
    steps: int | None = None,
    consistency: float | None = None,
) -> pd.DataFrame:
    """Score one model on every cell (:mod:`sr7t.evaluate.cells`) of every held-out subject.

    ``cfg``: the resolved ``evaluate`` config (:func:`sr7t.config.resolve`: ``resolutions_mm``,
    ``axes``, ``isotropic``, ``pipeline``, ``roi_mm``, ``context_mm``, ``noise``,
    ``n_samples``, ``tissue``, ``batch_size``; defaults live in the schema only). A model runs
    on the planes through the scored box, each with ``context_mm`` of real image around it.
    ``truth_root``: the demo's truth folder (``<raw>/truth``, one folder per subject) or None
    for cohorts without truth.
    Each output gets its own monotone intensity map to the reference inside the brain
    (:func:`sr7t.evaluate.metrics.contrast_neutral_metrics`). ``pred_pattern`` has
    ``{subject}`` and ``{cell}`` fields (NIfTI of the scored region); ``std_pattern`` (same
    fields; None: not written): where a model that draws several samples writes their
    per-voxel standard deviation (the report's uncertainty panel). ``train_files``: the
    training subjects, whose 1.5T -> 7T contrast map a :data:`MAPPED_BASELINES` baseline
    applies. ``flips``: test-time plane flips instead of the model's own (a choice made on
    validation subjects); ``tile``: the inference tile instead of the model's own (0: whole
    planes; :func:`sr7t.models.predict.inference_tile`); ``fusion`` / ``fusion_power``: the
    orthogonal-plane fusion instead of the model's own (:mod:`sr7t.models.fusion`);
    ``rotations``: the test-time rotations about the thick axis instead of the model's own
    (:func:`sr7t.models.predict.test_time_rotations`); ``steps``: the inference steps instead
    of the model's own (:func:`sr7t.models.predict.with_steps`); ``consistency``: the slice
    consistency instead of the model's own (:func:`sr7t.models.predict.slice_consistency`).
    ``cores``: on CPU, up to that many subjects are scored side by side, each in its own
    process with its share of the cores (the scores do not depend on it).
    Returns the table (:data:`METRIC_COLUMNS`) also written to ``out_tsv``.
    """
    if model_name not in BASELINE_ORDER and not model_file:
        raise ValueError(f"model {model_name} needs --model-file")
    cmap = None
    if model_name in MAPPED_BASELINES:
        if not train_files:
            raise ValueError(f"baseline {model_name} needs the training subjects (train_files)")
        cmap = training_contrast_map(train_files)
    plan = {
        "model_name": model_name,
        "model_file": model_file,
        "flips": flips,
        "tile": tile,
        "fusion": fusion,
        "fusion_power": fusion_power,
        "rotations": rotations,
        "steps": steps,
        "consistency": consistency,
        "device": device,
        "cfg": cfg,
        "truth_root": truth_root,
        "pred_pattern": pred_pattern,
        "std_pattern": std_pattern,
        "cmap": cmap,
    }
    workers = min(int(cores), len(test_files)) if (device or "cpu") == "cpu" else 1
    if workers > 1:
        from sr7t.parallel import call_in_processes

        calls = [(plan, f) for f in test_files]
        per_subject = call_in_processes(_subject_rows, calls, workers, int(cores) // workers)
    else:
        loaded = _load_model(plan)
        per_subject = [_subject_rows(plan, f, loaded) for f in test_files]
    rows = [row for subject_rows in per_subject for row in subject_rows]
    table = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    Path(out_tsv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_tsv, sep="\t", index=False, float_format="%.6g")
    return table


def _load_model(plan: dict) -> tuple:
    """(model, meta) of a learned model with the plan's flips, tile, fusion, rotations and
    steps; (None, None) for a baseline."""
    if plan["model_name"] in BASELINE_ORDER:
        return None, None
    from sr7t.models.bundle import load_bundle
    from sr7t.models.fusion import with_fusion
    from sr7t.models.predict import (
        with_consistency,
        with_flips,
        with_rotations,
        with_steps,
        with_tile,
    )

    model, meta = load_bundle(plan["model_file"], device=plan["device"])
    meta = with_tile(with_flips(meta, plan["flips"]), plan["tile"])
    meta = with_steps(with_rotations(meta, plan["rotations"]), plan["steps"])
    meta = with_consistency(meta, plan.get("consistency"))
    return model, with_fusion(meta, plan["fusion"], plan["fusion_power"])


def _subject_rows(plan: dict, test_file: str, loaded: tuple | None = None) -> list[dict]:
    """:func:`evaluate_model`'s rows of one held-out subject (``loaded``: the model, loaded
    here when None)."""
    from sr7t.evaluate.cells import (
        AXIS_NAMES,
        cell_input,
        context_voxels,
        eval_cells,
        load_truth,
        roi,
    )
    from sr7t.evaluate.metrics import contrast_neutral_metrics

    model, meta = loaded if loaded is not None else _load_model(plan)
    model_name, cfg, cmap, device = plan["model_name"], plan["cfg"], plan["cmap"], plan["device"]
    truth_root, pred_pattern = plan["truth_root"], plan["pred_pattern"]
    std_pattern = plan["std_pattern"]
    rows = []
    reference_labels: dict = {}
    arrays = load_subject(test_file)
    subject = Path(test_file).name.removesuffix(".npz")
    truth = None
    if truth_root is not None:
        truth = load_truth(Path(truth_root) / subject, subject, arrays)
    elif "target" not in arrays:
        raise ValueError(f"{test_file}: no 7T target, cannot evaluate subject {subject}")
    cells = eval_cells(subject, truth is not None, cfg, float(arrays["native_slice_mm"]))
    context = context_voxels(cfg, arrays["spacing_mm"])
    for cell in cells:
        inp = cell_input(cell, arrays, truth, float(cfg["noise"]))
        box = roi(inp["mask"], arrays["spacing_mm"], cfg["roi_mm"], context)
        inner = roi(inp["mask"], arrays["spacing_mm"], cfg["roi_mm"])
        local = tuple(
            slice(i.start - b.start, i.stop - b.start) for i, b in zip(inner, box, strict=True)
        )
        warning, t0, spread = "", time.perf_counter(), None
        if model is None:
            pred = inp["t1"] if model_name == "trilinear" else inp["bspline"]
            if model_name in CONSISTENT_BASELINES:
                pred = consistent_interpolation(inp, arrays["spacing_mm"])
            pred = pred[inner] if cmap is None else quantile_map(pred[inner], cmap)
        else:
            from sr7t.models.predict import (
                check_input_spacing,
                inference_steps,
                input_order,
                predict_volume,
                sampling_start,
            )

            warning = check_input_spacing(meta, inp["slice_mm"]) or ""
            base = inp["bspline"] if input_order(meta) == 3 else inp["t1"]
            condition = np.concatenate([base[None], arrays["condition"][1:]], axis=0)[
                (slice(None), *box)
            ]
            n_samples = 1 if meta.get("deterministic") else int(cfg["n_samples"])
            thick = inp["thick_axis"]
            voxel_mm = float(arrays["spacing_mm"][thick])
            # the slices' phase on the cropped grid
            offset_mm = inp["slice_offset_mm"] - box[thick].start * voxel_mm

            def sample(
                start=None,
                seed=0,
                condition=condition,
                inp=inp,
                local=local,
                offset_mm=offset_mm,
                voxel_mm=voxel_mm,
            ):
                return predict_volume(
                    model,
                    meta,
                    condition,
                    batch_size=int(cfg["batch_size"]),
                    device=device,
                    progress=False,
                    seed=seed,
                    thick_axis=inp["thick_axis"],
                    slice_mm=inp["slice_mm"],
                    inplane_mm=inp["inplane_mm"],
                    start=start,
                    region=local,
                    slice_offset_mm=offset_mm,
                    voxel_mm=voxel_mm,
                )

            # The prediction follows the model's plan (sampling_start); with several
            # samples their spread (noise-started) is the uncertainty, and a noise-started
            # plan scores their mean.
            draws = [sample("noise", seed) for seed in range(n_samples)] if n_samples > 1 else []
            if draws and sampling_start(meta) == "noise":
                pred = np.mean(draws, axis=0)
            else:
                pred = sample()
            spread = np.std(draws, axis=0) if draws else None
        seconds = time.perf_counter() - t0
        if warning:
            log.warning("%s %s: %s", model_name, subject, warning)
        reference, mask = inp["reference"][inner], inp["mask"][inner]
        scores = contrast_neutral_metrics(pred, reference, mask, inp["thick_axis"])
        scores["uncertainty_error_corr"] = (
            uncertainty_error_correlation(pred, spread, reference, mask)
            if spread is not None
            else np.nan
        )
        axis_name = AXIS_NAMES[cell.axis]
        label = cell_label(cell)
        if cfg["tissue"] and cell == tissue_cell(cells):
            scores |= _tissue_scores(pred, reference, mask, reference_labels, subject)
        save_volume(
            pred_pattern.format(subject=subject, cell=label),
            np.where(mask, pred, 0.0).astype(np.float32),
            _crop_affine(arrays["affine"], inner),
        )
        if spread is not None and std_pattern is not None:
            save_volume(
                std_pattern.format(subject=subject, cell=label),
                np.where(mask, spread, 0.0).astype(np.float32),
                _crop_affine(arrays["affine"], inner),
            )
        if model is None:
            steps, n_params, macs = 0, 0, 0
        else:
            steps, n_params = inference_steps(meta), int(meta["param_count"])
            per_step = meta.get("macs_per_evaluation")  # bundles before it: per slice only
            macs = int(per_step) * steps if per_step else int(meta.get("macs_per_slice", 0))
        rows.append(
            {
                "model": model_name,
                "resolution_mm": float(inp["slice_mm"]),
                "subject": subject,
                # the isotropic check and each stress are their own input kinds: never pooled
                # with the main protocol's thick slices
                "input": cell.input_kind,
                "axis": axis_name,
                **{k: scores[k] for k in SCORE_COLUMNS},
                **{k: scores.get(k, np.nan) for k in TISSUE_COLUMNS},
                "uncertainty_error_corr": scores["uncertainty_error_corr"],
                "seconds": seconds,
                "input_slice_mm": float(inp["slice_mm"]),
                "reference": "truth" if truth is not None else "processed_7T",
                "sampling_steps": steps,
                "params": n_params,
                "macs_per_slice": macs,
                "warning": warning,
            }
        )
        log.info(
            "%s %s %s: PSNR %.2f dB, SSIM %.4f, %.1f s",
            model_name,
            subject,
            label,
            scores["psnr"],
            scores["ssim"],
            seconds,
        )
    return rows


def consistent_interpolation(inp: dict, spacing_mm) -> np.ndarray:
    """The cell's B-spline input (:func:`sr7t.evaluate.cells.cell_input`) made to agree with
    its own acquired slices: each line along the thick axis corrected, as a learned model's
    output would be with its slice consistency on, so that its box means are the slices'
    (the correction smoothed in-plane alike). Unchanged where the slices are as fine as the
    grid."""
    from sr7t.models.consistency import SMOOTH_VOXELS, enforce_slice_means

    thick = int(inp["thick_axis"])
    framed = np.moveaxis(inp["bspline"], thick, -1)
    out = enforce_slice_means(
        framed,
        framed,
        float(spacing_mm[thick]),
        float(inp["slice_mm"]),
        float(inp["slice_offset_mm"]),
        order=BASELINE_ORDER["bspline"],
        smooth_voxels=SMOOTH_VOXELS,
    )
    return np.moveaxis(out, -1, thick)


def uncertainty_error_correlation(mean, std, reference, mask) -> float:
    """Does the model know where it is wrong? Spearman correlation, inside ``mask``, between
    the per-voxel standard deviation of its samples and the absolute error of the scored
    prediction ``mean`` (the samples' mean, or the zero-started path: ``sampling_start``),
    after its own isotonic intensity map to the scaled reference."""
    from scipy.stats import spearmanr

    from sr7t.evaluate.contrast import fit_intensity
    from sr7t.evaluate.metrics import scale_reference

    ref = scale_reference(reference, mask)
    error = np.abs(fit_intensity(mean, ref, mask) - ref)[mask]
    spread = std[mask]
    if spread.std() == 0 or error.std() == 0:
        return float("nan")
    return float(spearmanr(spread, error).statistic)


def cell_label(cell) -> str:
    """The cell's name in file names: ``sim-x-4mm``, ``sim-iso``, ``pipeline-z-6mm``,
    ``stress-gauss-x-4mm``."""
    from sr7t.evaluate.cells import AXIS_NAMES

    if cell.axis < 0:
        return f"{cell.kind}-iso"
    kind = cell.input_kind if cell.stress else cell.kind
    return f"{kind}-{AXIS_NAMES[cell.axis]}-{cell.slice_mm:g}mm"


def tissue_cell(cells: list):
    """The cell on which tissue agreement is measured (Atropos is slow): thick along z at the
    middle resolution of the simulated inputs, else of the pipeline inputs."""
    for kind in ("sim", "pipeline"):
        chosen = [c for c in cells if c.kind == kind and c.axis == 2 and not c.stress]
        if chosen:
            return chosen[len(chosen) // 2]
    return None


def _tissue_scores(pred, reference, mask, cache: dict, subject: str) -> dict:
    """GM/WM/CSF Dice and relative volume error of Atropos segmentations of ``pred`` and of
    ``reference`` (segmented once per subject), inside ``mask``."""
    from sr7t.evaluate.tissue import segment_tissues, tissue_agreement

    if subject not in cache:
        cache[subject] = segment_tissues(reference, mask)
    return tissue_agreement(segment_tissues(pred, mask), cache[subject])


def _crop_affine(affine: np.ndarray, box) -> np.ndarray:
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = affine[:3, :3] @ np.array([b.start for b in box]) + affine[:3, 3]
    return out


def read_metrics(path: str | Path) -> pd.DataFrame:
    """A metrics table as written here: numbers as numbers (NaN where not measured), text
    columns as text ('' where empty)."""
    table = pd.read_csv(path, sep="\t")
    for col in ("model", "subject", "input", "axis", "reference", "warning"):
        if col in table.columns:
            table[col] = table[col].fillna("").astype(str)
    return table


def combine_metrics(
    tables: list[str], out_tsv: str | Path, figure: str | Path, summary_tsv: str | Path
) -> pd.DataFrame:
    """Concatenate per-model tables into ``metrics.tsv``; write ``summary.tsv`` (every model's
    mean with a 95 % bootstrap CI, and each learned model minus ``bspline`` paired per unit,
    per input kind and resolution) and plot PSNR/SSIM against input spacing with CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.concat([read_metrics(t) for t in tables], ignore_index=True)
    table = table.sort_values(["model", "input", "axis", "resolution_mm", "subject"])
    table.to_csv(out_tsv, sep="\t", index=False, float_format="%.6g")
    summary = summary_table(table)
    summary.to_csv(summary_tsv, sep="\t", index=False, float_format="%.6g")

    kinds = sorted(table["input"].unique())
    inputs = [k for k in kinds if k != "iso" and not k.startswith(STRESS_PREFIX)]
    stressed = [k for k in kinds if k.startswith(STRESS_PREFIX)]
    n_rows = len(inputs) + bool(stressed)
    fig, axes = plt.subplots(n_rows, 2, figsize=(10, 3.6 * n_rows), dpi=90, squeeze=False)
    if stressed:
        _plot_stress_gains(axes[-1], summary, stressed)
    for row, kind in zip(axes, inputs, strict=False):
        part = summary[
            (summary["input"] == kind)
            & (summary["kind"] == "score")
            & (summary["resolution_mm"] >= 0)
        ]
        for name, group in part.groupby("model"):
            style = "--" if name in BASELINE_ORDER else "-"
            for ax, key in zip(row, ("psnr", "ssim"), strict=True):
                g = group[group["metric"] == key].sort_values("resolution_mm")
                err = [g["mean"] - g["ci_lo"], g["ci_hi"] - g["mean"]]
                ax.errorbar(
                    g["resolution_mm"],
                    g["mean"],
                    yerr=err,
                    fmt=style,
                    marker="o",
                    capsize=3,
                    label=name,
                )
        row[0].set_ylabel(f"{kind}: PSNR (dB)")
        row[1].set_ylabel(f"{kind}: SSIM")
        for ax in row:
            ax.set_xlabel("input slice spacing (mm)")
            ax.grid(alpha=0.3)
        row[1].legend(fontsize=8)
    fig.suptitle(
        "Held-out subjects, contrast-neutral (isotonic fit), mean and 95 % bootstrap CI "
        "over subjects x axes"
    )
    fig.tight_layout()
    Path(figure).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure)
    plt.close(fig)
    return table


def _plot_stress_gains(row, summary: pd.DataFrame, stressed: list[str]) -> None:
    """PSNR and SSIM gain over B-spline per stress input kind (pooled over its cells), one bar
    with its 95 % CI per learned model: does the gain survive acquisitions the main protocol
    does not score?"""
    gains = summary[
        (summary["kind"] == "gain")
        & (summary["resolution_mm"] < 0)
        & summary["input"].isin(stressed)
        & ~summary["model"].isin(list(BASELINE_ORDER))
    ]
    models = sorted(gains["model"].unique())
    width = 0.8 / max(len(models), 1)
    for ax, key in zip(row, ("psnr", "ssim"), strict=True):
        for i, model in enumerate(models):
            g = gains[(gains["metric"] == key) & (gains["model"] == model)].set_index("input")
            g = g.reindex(stressed)
            x = np.arange(len(stressed)) + (i - (len(models) - 1) / 2) * width
            err = [g["mean"] - g["ci_lo"], g["ci_hi"] - g["mean"]]
            ax.bar(x, g["mean"], width, yerr=err, capsize=2, label=model)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(stressed)))
        ax.set_xticklabels([k.removeprefix(STRESS_PREFIX) for k in stressed], rotation=30)
        ax.set_ylabel(f"stress: {key.upper()} gain over bspline")
        ax.grid(alpha=0.3, axis="y")
    row[1].legend(fontsize=8)


def summary_table(table: pd.DataFrame, baseline: str = "bspline") -> pd.DataFrame:
    """Long summary: ``kind`` ``score`` rows (model mean and CI per input kind, resolution and
    metric) and ``gain`` rows (model minus ``baseline``, paired over subject x axis units).
    Resolution ``-1`` pools every resolution of the input kind."""
    from sr7t.evaluate.stats import bootstrap_ci, paired_diff_ci

    rows = []
    units = ["subject", "axis", "resolution_mm"]
    for kind, part in table.groupby("input"):
        resolutions = [*sorted(part["resolution_mm"].unique()), -1.0]
        for res in resolutions:
            cell = part if res < 0 else part[part["resolution_mm"] == res]
            for metric in ("psnr", "ssim", "hfen"):
                for model, group in cell.groupby("model"):
                    mean, lo, hi = bootstrap_ci(group[metric].to_numpy())
                    rows.append(
                        _summary_row("score", kind, res, metric, model, mean, lo, hi, len(group))
                    )
                if baseline not in set(cell["model"]):
                    continue
                for model in sorted(set(cell["model"]) - {baseline}):
                    try:
                        d = paired_diff_ci(cell, model, baseline, metric, unit_cols=units)
                    except ValueError:
                        continue
                    rows.append(
                        _summary_row(
                            "gain", kind, res, metric, model, d["mean"], d["lo"], d["hi"], d["n"]
                        )
                    )
    return pd.DataFrame(rows)


def _summary_row(kind_, inp, res, metric, model, mean, lo, hi, n) -> dict:
    return {
        "kind": kind_,
        "input": inp,
        "resolution_mm": float(res),
        "metric": metric,
        "model": model,
        "mean": mean,
        "ci_lo": lo,
        "ci_hi": hi,
        "n": int(n),
    }
