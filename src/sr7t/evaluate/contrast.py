"""Per-method intensity maps to the reference, so metrics judge structure, not contrast.

Every method (a network, an interpolation baseline) outputs its own intensity scale and its
own, possibly nonlinear, tissue contrast. Before scoring, each output gets its own map to the
reference, fitted inside the brain mask and applied to the whole volume:

- ``"isotonic"``: the best monotone increasing map (least squares). It keeps the order of
  intensities, so it cannot invent structure, but it forgives any monotone contrast change.
- ``"linear"``: the least-squares ``a * pred + b``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression

CONTRAST_FITS = ("isotonic", "linear")
# Equal-count quantile bins of the prediction used for the isotonic fit: on ~3 M voxels the
# bins hold ~700 voxels each, far finer than any contrast curve, and the fit takes a fraction
# of the time of a fit on every voxel (tests check it stays within 1e-3 of the full fit).
ISOTONIC_BINS = 4096

FitKind = Literal["isotonic", "linear"]


def _masked_pairs(
    pred: np.ndarray, reference: np.ndarray, mask: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    m = np.asarray(mask) > 0
    if pred.shape != reference.shape or pred.shape != m.shape:
        raise ValueError(
            f"shapes differ: pred {pred.shape}, reference {reference.shape}, mask {m.shape}"
        )
    if not m.any():
        raise ValueError("empty brain mask")
    # A NaN or inf from a diverged model must fail loudly here, not as a score
    if not np.isfinite(pred).all():
        raise ValueError(f"pred has {int((~np.isfinite(pred)).sum())} non-finite voxels")
    return pred[m].astype(np.float64), reference[m].astype(np.float64)


def quantile_bins(
    x: np.ndarray, y: np.ndarray, n_bins: int = ISOTONIC_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapse paired samples into equal-count bins of ``x``.

    Inputs: 1-D ``x`` and ``y`` of the same length; ``n_bins`` (>= 3) the number of bins.
    Returns ``(x_mean, y_mean, count)`` per bin, ordered by ``x``: the smallest and the
    largest sample are bins of their own, the others share ``n_bins - 2`` equal-count bins.
    With no more samples than bins every sample is its own bin (so the fit is exact).
    """
    if n_bins < 3:
        raise ValueError(f"need at least 3 bins, got {n_bins}")
    n = x.size
    order = np.argsort(x, kind="stable")  # stable: the same bins on every run
    if n <= n_bins:
        return x[order], y[order], np.ones(n)
    # The extremes as their own bins: the fitted map then spans the data's whole range, where
    # bin means alone would clip the darkest and brightest half-bin to a bin's mean.
    bin_of_rank = np.empty(n, dtype=np.int64)
    bin_of_rank[0], bin_of_rank[-1] = 0, n_bins - 1
    bin_of_rank[1:-1] = 1 + np.arange(n - 2, dtype=np.int64) * (n_bins - 2) // (n - 2)
    count = np.bincount(bin_of_rank, minlength=n_bins).astype(np.float64)
    x_mean = np.bincount(bin_of_rank, weights=x[order], minlength=n_bins) / count
    y_mean = np.bincount(bin_of_rank, weights=y[order], minlength=n_bins) / count
    return x_mean, y_mean, count


def fit_intensity(
    pred: np.ndarray,
    reference: np.ndarray,
    mask: np.ndarray,
    kind: FitKind = "isotonic",
    n_bins: int = ISOTONIC_BINS,
) -> np.ndarray:
    """Map ``pred``'s intensities onto ``reference``'s, fitted inside ``mask``.

    Inputs: ``pred`` and ``reference`` volumes of one shape (any intensity units); ``mask``
    a boolean-able array of that shape (voxels > 0 are fitted); ``kind`` one of
    :data:`CONTRAST_FITS`; ``n_bins`` the quantile bins of the isotonic fit
    (:func:`quantile_bins`). Returns the whole of ``pred`` mapped to the reference's
    intensity units, float32. The isotonic map interpolates linearly between its fitted
    points and holds its end values outside them (``out_of_bounds="clip"``). Deterministic.
    """
    x, y = _masked_pairs(pred, reference, mask)
    flat = pred.astype(np.float64).ravel()
    if kind == "isotonic":
        xb, yb, wb = quantile_bins(x, y, n_bins)
        iso = IsotonicRegression(increasing=True, out_of_bounds="clip")
        iso.fit(xb, yb, sample_weight=wb)
        mapped = iso.predict(flat)
    elif kind == "linear":
        # lstsq gives the minimum-norm answer for a constant prediction (a * c + b = mean(y))
        design = np.stack([x, np.ones_like(x)], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
        mapped = a * flat + b
    else:
        raise ValueError(f"unknown intensity fit {kind!r}; expected one of {CONTRAST_FITS}")
    return mapped.reshape(pred.shape).astype(np.float32)
