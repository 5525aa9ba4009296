"""Image-quality metrics, all computed the same way for every model.

Every metric is computed on the 7T grid, inside the brain mask, on intensities normalised
by the 99th percentile inside the mask (:func:`sr7t.data.dataset.robust_scale`, applied to
each volume by the caller). PSNR's data range is the reference's max - min inside the mask.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

SSIM_SIGMA_VOX = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def data_range(reference: np.ndarray, mask: np.ndarray) -> float:
    values = reference[mask > 0]
    return float(values.max() - values.min())


def psnr(pred: np.ndarray, reference: np.ndarray, mask: np.ndarray, drange: float) -> float:
    """Peak signal-to-noise ratio in dB inside ``mask``."""
    m = mask > 0
    mse = float(np.mean((pred[m] - reference[m]) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(drange**2 / mse))


def nmse(pred: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Normalised mean squared error: sum((p - r)^2) / sum(r^2) inside ``mask``."""
    m = mask > 0
    return float(np.sum((pred[m] - reference[m]) ** 2) / np.sum(reference[m] ** 2))


def ssim_map(pred: np.ndarray, reference: np.ndarray, drange: float) -> np.ndarray:
    """3-D SSIM map with a Gaussian window (sigma 1.5 voxels), as Wang et al. 2004."""
    x = pred.astype(np.float64)
    y = reference.astype(np.float64)
    c1, c2 = (SSIM_K1 * drange) ** 2, (SSIM_K2 * drange) ** 2

    def blur(a):
        return gaussian_filter(a, SSIM_SIGMA_VOX, mode="reflect", truncate=3.5)

    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cxy = blur(x * y) - mx * my
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


def ssim(pred: np.ndarray, reference: np.ndarray, mask: np.ndarray, drange: float) -> float:
    """Mean SSIM inside ``mask``."""
    return float(np.mean(ssim_map(pred, reference, drange)[mask > 0]))


def all_metrics(pred: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM and NMSE of ``pred`` against ``reference`` inside ``mask``."""
    drange = data_range(reference, mask)
    return {
        "psnr": psnr(pred, reference, mask, drange),
        "ssim": ssim(pred, reference, mask, drange),
        "nmse": nmse(pred, reference, mask),
        "data_range": drange,
    }
