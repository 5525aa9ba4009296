"""N4 bias-field correction (antspyx) and its QC numbers.

Conventions: arrays are float32 (x, y, z) RAS+ with a 4x4 affine in mm (:mod:`sr7t.io`).
The bias field is multiplicative and normalised to mean 1 inside the mask, so that
``corrected * bias == image`` and the corrected image keeps the input's intensity scale.
"""

from __future__ import annotations

import time
from pathlib import Path

import ants
import numpy as np

from sr7t.io import load_volume, save_volume, write_json
from sr7t.preprocess.masks import head_mask, set_itk_threads, to_ants


def n4_correct(
    image: np.ndarray,
    affine: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    shrink_factor: int,
    iterations: tuple[int, ...] | list[int],
    spline_distance_mm: float,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """N4 bias-field correction of one scan.

    ``image``: (x, y, z) float, ``affine`` 4x4 mm. ``mask``: uint8/bool (x, y, z) where the
    field is estimated (default :func:`head_mask`); restricting N4 to the head is several
    times faster than the antspyx default (whole field of view) and ignores the background.
    ``iterations``: per fitting level (its length is the number of levels); ``shrink_factor``:
    down-sampling used for the fit; ``spline_distance_mm``: B-spline control-point spacing at
    the first level (N4 halves it at each further level, so 100 mm with 3 levels ends at
    25 mm; measured bias-field correlation with truth: MNI 2 mm 0.91 at 60 mm vs 0.97 at
    100 mm, 4 mm phantom 0.79 vs 0.95: finer meshes start absorbing anatomy). These three are
    the config's ``preprocess.n4`` (defaults in the schema).
    ``threads``: ITK threads (see :func:`set_itk_threads`).

    Returns ``(corrected, bias_field)``, both float32 (x, y, z); the bias field is defined over
    the whole grid (N4's B-spline extrapolates it), has mean 1 inside the mask, and
    ``corrected * bias_field == image`` everywhere.
    """
    set_itk_threads(threads)
    image = np.asarray(image, dtype=np.float32)
    if mask is None:
        mask = head_mask(image, affine)
    mask = np.asarray(mask) > 0
    if not mask.any():
        raise ValueError("n4_correct: the mask is empty")
    # N4 works on log intensities: non-positive voxels inside the mask cannot be used.
    fit_mask = mask & (image > 0)
    bias_img = ants.n4_bias_field_correction(
        to_ants(image, affine),
        mask=to_ants(fit_mask.astype(np.float32), affine),
        shrink_factor=int(shrink_factor),
        convergence={"iters": [int(i) for i in iterations], "tol": 1e-7},
        spline_param=float(spline_distance_mm),
        return_bias_field=True,
    )
    bias = bias_img.numpy().astype(np.float64)
    bias /= bias[mask].mean()
    corrected = image / bias
    return corrected.astype(np.float32), bias.astype(np.float32)


def bias_field_correlation(estimated: np.ndarray, true: np.ndarray, mask: np.ndarray) -> float:
    """Pearson correlation of ``log(estimated)`` and ``log(true)`` bias fields inside ``mask``.

    Scale-free (a constant factor between the fields does not matter); 1 is perfect.
    """
    m = (np.asarray(mask) > 0) & (estimated > 0) & (true > 0)
    a = np.log(np.asarray(estimated, dtype=np.float64)[m])
    b = np.log(np.asarray(true, dtype=np.float64)[m])
    return float(np.corrcoef(a, b)[0, 1])


def kmeans_1d(values: np.ndarray, k: int = 3, iterations: int = 50) -> np.ndarray:
    """Deterministic 1-D k-means; returns the class centres sorted ascending."""
    values = np.asarray(values, dtype=np.float64).ravel()
    centres = np.percentile(values, np.linspace(100 / (2 * k), 100 - 100 / (2 * k), k))
    for _ in range(iterations):
        labels = np.argmin(np.abs(values[:, None] - centres[None, :]), axis=1)
        new = np.array(
            [values[labels == c].mean() if np.any(labels == c) else centres[c] for c in range(k)]
        )
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def white_matter_proxy(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Bool (x, y, z): voxels of the brightest of 3 intensity classes (k-means) inside ``mask``.

    On T1-like images (the demo cohort, MNI-based) that class is white matter.
    """
    mask = np.asarray(mask) > 0
    values = image[mask]
    centres = kmeans_1d(values, 3)
    threshold = 0.5 * (centres[1] + centres[2])
    return mask & (image > threshold)


def coefficient_of_variation(image: np.ndarray, region: np.ndarray) -> float:
    """std / mean of ``image`` inside bool ``region`` (unitless)."""
    v = np.asarray(image, dtype=np.float64)[region]
    return float(v.std() / v.mean())


def run_n4_stage(
    in_scan: str | Path,
    out_corrected: str | Path,
    out_bias: str | Path,
    out_mask: str | Path,
    out_qc_json: str | Path,
    cfg: dict,
    threads: int | None = None,
    subject: str = "?",
) -> dict:
    """File-level N4 stage: read ``in_scan``, write corrected image, bias field, mask, QC json.

    ``subject`` names the subject in the QC json and in errors (a bad scan is a
    :class:`~sr7t.errors.ScanError` naming subject and file).

    ``cfg``: the resolved config's ``preprocess.n4`` (``shrink_factor``, ``iterations``, one
    entry per level, ``spline_distance_mm``); ``threads``: ITK threads.
    QC json: ``seconds`` (N4 + mask), ``wm_cov_before`` / ``wm_cov_after`` (coefficient of
    variation in the white-matter proxy: the brightest of 3 k-means classes of the corrected
    image inside the mask, the same voxels for both; lower is better), ``wm_voxels``,
    ``mask_voxels``, ``bias_min`` / ``bias_max`` inside the mask, and the config used.
    Returns the QC dict.
    """
    image, affine = load_volume(in_scan, subject)
    t0 = time.perf_counter()
    mask = head_mask(image, affine)
    corrected, bias = n4_correct(
        image,
        affine,
        mask=mask,
        shrink_factor=cfg["shrink_factor"],
        iterations=tuple(cfg["iterations"]),
        spline_distance_mm=cfg["spline_distance_mm"],
        threads=threads,
    )
    seconds = time.perf_counter() - t0
    wm = white_matter_proxy(corrected, mask)
    inside = mask > 0
    qc = {
        "subject": subject,
        "scan": str(in_scan),
        "seconds": round(seconds, 3),
        "mask_voxels": int(inside.sum()),
        "wm_voxels": int(wm.sum()),
        "wm_cov_before": coefficient_of_variation(image, wm),
        "wm_cov_after": coefficient_of_variation(corrected, wm),
        "bias_min": float(bias[inside].min()),
        "bias_max": float(bias[inside].max()),
        "config": {**cfg, "threads": threads},
    }
    save_volume(out_corrected, corrected, affine)
    save_volume(out_bias, bias, affine)
    save_volume(out_mask, mask.astype(np.float32), affine)
    write_json(out_qc_json, qc)
    return qc
