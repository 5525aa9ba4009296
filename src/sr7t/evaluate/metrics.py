"""Image-quality metrics, all computed the same way for every model.

Every metric is computed on the 7T grid, inside the brain mask.

:func:`resolution_metrics` is the one scoring entry point of the evaluation: the reference
(the undistorted, corrected 7T) is divided by its 99th percentile in the mask
(:func:`scale_reference`), each prediction gets its own monotone intensity map to it
(:func:`sr7t.evaluate.contrast.fit_intensity`), and PSNR / SSIM / NMSE / HFEN / GMSD are
computed with data range 1. So no method gains or loses from its intensity scale or its
tissue contrast, only from its structure.

:func:`all_metrics` is the older path (each volume scaled by the caller, PSNR's data range
the reference's max - min inside the mask), kept for its callers.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter, gaussian_laplace, sobel

from sr7t.data.dataset import robust_scale
from sr7t.evaluate.contrast import FitKind, fit_intensity

SSIM_SIGMA_VOX = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


# The keys of :func:`resolution_metrics`, in report order.
METRIC_NAMES = ("psnr", "ssim", "nmse", "hfen", "gmsd")
HFEN_SIGMA_VOX = 1.5
# GMSD's constant for data range 1: Xue et al. 2014 use T = 170 on 0..255 images,
# i.e. 170 / 255**2 = 0.0026 of the squared data range.
GMSD_C = 0.0026
# scipy's 3-D Sobel weights the central difference by the [1, 2, 1] x [1, 2, 1] smoothing
# of the two other axes (sum 16); dividing by 16 gives 2x the slope per voxel, the same
# scale as the 1/3-normalised 2-D Prewitt filter that GMSD's constant was tuned for.
_SOBEL_3D_NORM = 16.0


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


def scale_reference(reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``reference`` divided by its 99th percentile inside ``mask``.

    Inputs: a volume (any intensity units) and a boolean-able mask of its shape. Returns
    the volume in units of that percentile (float32), so the brain's bright end sits at
    1.0 and PSNR / SSIM / GMSD can use a data range of 1.
    """
    scale = robust_scale(reference, mask)
    return (np.asarray(reference, dtype=np.float64) / scale).astype(np.float32)


def laplacian_of_gaussian(volume: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Laplacian of Gaussian whose taps sum to exactly zero.

    Input: a volume, sigma in voxels. Returns float64 of its shape, in intensity / voxel^2.
    scipy's kernel is truncated at 4 sigma, so its taps sum to a little below zero and a
    constant would come out nonzero (about 1% of HFEN on a smooth brain); subtracting that
    sum times the Gaussian blur makes constants and ramps come out exactly zero.
    """
    v = volume.astype(np.float64)
    tap_sum = float(gaussian_laplace(np.ones((1,) * v.ndim), sigma_vox).item())
    return gaussian_laplace(v, sigma_vox) - tap_sum * gaussian_filter(v, sigma_vox)


def hfen(
    pred: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    sigma_vox: float = HFEN_SIGMA_VOX,
) -> float:
    """High-frequency error norm: ``||LoG(pred) - LoG(ref)|| / ||LoG(ref)||`` inside ``mask``.

    Inputs: two volumes in the same intensity units, a boolean-able mask, the Laplacian of
    Gaussian's sigma in voxels. Returns a unitless ratio: 0 for identical volumes, 1 for a
    prediction with none of the reference's edges (or twice them). Lower is better.
    """
    m = mask > 0
    lp = laplacian_of_gaussian(pred, sigma_vox)[m]
    lr = laplacian_of_gaussian(reference, sigma_vox)[m]
    num, den = float(np.linalg.norm(lp - lr)), float(np.linalg.norm(lr))
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return num / den


def gradient_magnitude(volume: np.ndarray) -> np.ndarray:
    """3-D gradient magnitude from Sobel derivatives, scaled to 2x the slope per voxel.

    Input: a volume. Returns a float64 volume of its shape; a ramp rising ``s`` per voxel
    along any axis gives ``2 * s`` away from the borders (as the 2-D Prewitt filter of
    GMSD does).
    """
    v = volume.astype(np.float64)
    squares = sum((sobel(v, axis=a) / _SOBEL_3D_NORM) ** 2 for a in range(v.ndim))
    return np.sqrt(squares)


def gmsd(pred: np.ndarray, reference: np.ndarray, mask: np.ndarray, drange: float = 1.0) -> float:
    """Gradient magnitude similarity deviation (Xue et al. 2014), in 3-D, inside ``mask``.

    Inputs: two volumes in the same intensity units, a boolean-able mask, the data range
    (1 for :func:`scale_reference`'s units). Returns the (population) standard deviation of
    the gradient magnitude similarity map ``(2 g_p g_r + c) / (g_p^2 + g_r^2 + c)`` with
    ``c = 0.0026 * drange**2``: 0 for identical volumes, lower is better. Unlike the 2-D
    original there is no 2x downsampling first: the volumes are already on the 7T grid.
    """
    m = mask > 0
    gp = gradient_magnitude(pred)[m]
    gr = gradient_magnitude(reference)[m]
    c = GMSD_C * drange**2
    gms = (2 * gp * gr + c) / (gp**2 + gr**2 + c)
    return float(np.std(gms))


def striping(volume: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """Mean absolute second difference across planes along ``axis`` inside ``mask``.

    Inputs: a volume, a boolean-able mask, the axis across whose planes to look. Counts
    voxels whose two neighbours along ``axis`` are also in the mask. Returns a value in the
    volume's intensity units: 0 for a linear ramp, ``4 a`` for planes alternating ``+-a``.
    """
    v = np.moveaxis(volume.astype(np.float64), axis, 0)
    m = np.moveaxis(np.asarray(mask) > 0, axis, 0)
    second = v[2:] - 2 * v[1:-1] + v[:-2]
    valid = m[2:] & m[1:-1] & m[:-2]
    if not valid.any():
        raise ValueError(f"no mask voxel has both neighbours along axis {axis} in the mask")
    return float(np.mean(np.abs(second[valid])))


def striping_ratio(pred: np.ndarray, reference: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """``striping(pred) / striping(reference)`` along ``axis``, inside ``mask``.

    Inputs: two volumes in the same intensity units (e.g. after
    :func:`~sr7t.evaluate.contrast.fit_intensity`), a boolean-able mask, an axis. Returns a
    unitless ratio: 1 is truth-like, above 1 slice-to-slice striping, below 1 over-smoothing
    across planes. 1.0 if neither volume varies across planes.
    """
    sp, sr = striping(pred, mask, axis), striping(reference, mask, axis)
    if sr == 0:
        return 1.0 if sp == 0 else float("inf")
    return sp / sr


def fitted_pair(
    pred: np.ndarray, reference: np.ndarray, mask: np.ndarray, fit: FitKind
) -> tuple[np.ndarray, np.ndarray]:
    """``(pred after its intensity fit to the scaled reference, the scaled reference)``: what
    every metric compares (``fit``: ``isotonic`` or ``linear``)."""
    # SSIM, HFEN and GMSD look at neighbourhoods that cross the mask's edge. Outside the
    # mask the prediction takes the reference's voxels, so what a method puts there (skull,
    # background, the clipped end of its intensity map) cannot score, and no artificial edge
    # appears where zero-filling both would draw one along the mask (a shared edge that
    # dilutes HFEN and GMSD and flatters SSIM).
    ref = scale_reference(reference, mask)
    fitted = fit_intensity(pred, ref, mask, kind=fit)
    return np.where(np.asarray(mask) > 0, fitted, ref), ref


def resolution_metrics(
    pred: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    fit: FitKind = "isotonic",
    stripe_axis: int | None = None,
) -> dict[str, float]:
    """Score ``pred`` against the undistorted ``reference``: the evaluation's one yardstick.

    Inputs: a prediction and the reference on one grid (any intensity units each), a
    boolean-able brain mask, the intensity map (``"isotonic"`` or ``"linear"``). The
    reference is scaled by :func:`scale_reference`, ``pred`` is mapped onto it by
    :func:`~sr7t.evaluate.contrast.fit_intensity` and takes the reference's voxels outside
    the mask (so only the brain is scored, neighbourhoods included). Returns
    :data:`METRIC_NAMES`: ``psnr`` (dB, data range 1), ``ssim`` (3-D, data range 1, mean
    inside the mask), ``nmse``, ``hfen``, ``gmsd`` (unitless; lower is better for the last
    three); with ``stripe_axis`` also ``striping`` (:func:`striping_ratio` across that axis,
    on the fitted prediction, so a method's contrast does not scale it).
    """
    fitted, ref = fitted_pair(pred, reference, mask, fit)
    out = {
        "psnr": psnr(fitted, ref, mask, 1.0),
        "ssim": ssim(fitted, ref, mask, 1.0),
        "nmse": nmse(fitted, ref, mask),
        "hfen": hfen(fitted, ref, mask),
        "gmsd": gmsd(fitted, ref, mask, 1.0),
    }
    if stripe_axis is not None:
        out["striping"] = striping_ratio(fitted, ref, mask, int(stripe_axis))
    return out


def contrast_neutral_metrics(
    pred: np.ndarray, reference: np.ndarray, mask: np.ndarray, stripe_axis: int | None = None
) -> dict[str, float]:
    """:func:`resolution_metrics` with the isotonic map, plus PSNR / SSIM with a linear one.

    Inputs as :func:`resolution_metrics`. Returns :data:`METRIC_NAMES` (isotonic map) and
    ``psnr_linear`` (dB), ``ssim_linear``: the gap between the two shows how much of a
    score hangs on forgiving a nonlinear contrast.
    """
    out = resolution_metrics(pred, reference, mask, fit="isotonic", stripe_axis=stripe_axis)
    linear, ref = fitted_pair(pred, reference, mask, "linear")
    out["psnr_linear"] = psnr(linear, ref, mask, 1.0)
    out["ssim_linear"] = ssim(linear, ref, mask, 1.0)
    return out
