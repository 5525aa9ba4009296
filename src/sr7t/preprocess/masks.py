"""Head masks and the one bridge between sr7t arrays and ANTs images.

sr7t volumes are float32 arrays indexed (x, y, z) in RAS+ with a 4x4 voxel-to-world affine
in mm (see :mod:`sr7t.io`). ANTs (ITK) images live in LPS physical space and describe the
grid by origin, spacing and a direction matrix. :func:`to_ants` / :func:`from_ants` convert
between the two so that every voxel keeps its world position; nothing else in sr7t builds
ANTs images by hand.
"""

from __future__ import annotations

import logging
import os

import ants
import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage
from skimage.filters import threshold_otsu

log = logging.getLogger(__name__)

# RAS <-> LPS: negate x and y. Its own inverse.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])

_ITK_THREADS_ENV = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
_itk_threads_first: int | None = None


def to_ants(array: np.ndarray, affine: np.ndarray) -> ants.ANTsImage:
    """RAS+ array (x, y, z) with a 4x4 voxel-to-world affine (mm) -> float32 ANTs image.

    The voxel index (i, j, k) of ``array`` is the ITK index (i, j, k) of the result, and its
    LPS physical point is ``RAS_TO_LPS @ affine @ (i, j, k, 1)``.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"to_ants needs a 3-D array, got shape {array.shape}")
    lps = RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = np.sqrt((lps[:3, :3] ** 2).sum(axis=0))
    direction = lps[:3, :3] / spacing
    return ants.from_numpy(
        np.ascontiguousarray(array, dtype=np.float32),
        origin=tuple(float(v) for v in lps[:3, 3]),
        spacing=tuple(float(v) for v in spacing),
        direction=direction,
    )


def from_ants(img: ants.ANTsImage) -> tuple[np.ndarray, np.ndarray]:
    """ANTs image -> ``(array float32 (x, y, z), 4x4 RAS voxel-to-world affine in mm)``.

    Exact inverse of :func:`to_ants` (the array is not reoriented: if the ANTs image came from
    :func:`to_ants` the result is RAS+ again).
    """
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(img.direction, dtype=np.float64) * np.asarray(img.spacing)
    lps[:3, 3] = np.asarray(img.origin, dtype=np.float64)
    return img.numpy().astype(np.float32), RAS_TO_LPS @ lps


def set_itk_threads(threads: int | None) -> None:
    """Ask ITK (inside antspyx) to use ``threads`` threads; ``None`` leaves it alone.

    ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once, at the first filter it runs in a
    process (measured: a later change of the variable does not resize its thread pool), so
    this only takes effect before the first ANTs call. A later different request is logged.
    Each workflow rule runs in its own process, so setting it at the start of a stage works.
    """
    global _itk_threads_first
    if threads is None:
        return
    threads = max(1, int(threads))
    if _itk_threads_first is None:
        _itk_threads_first = threads
        os.environ[_ITK_THREADS_ENV] = str(threads)
    elif threads != _itk_threads_first:
        log.warning(
            "ITK already runs with %d threads in this process; request for %d ignored",
            _itk_threads_first,
            threads,
        )


def head_mask(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Foreground (head/brain) mask of a 3-D image, uint8 (x, y, z), 1 inside.

    Smooth (~2 mm) against noise, threshold at half of Otsu's level (dark, bias-shadowed
    tissue and CSF stay in), keep the largest connected component, close gaps of a few mm and
    fill holes (ventricles). Works for skull-stripped and whole-head images alike; for whole
    heads the result includes the scalp, which is what N4 and registration want.
    """
    image = np.asarray(image, dtype=np.float32)
    spacing = voxel_sizes(affine)
    smooth = ndimage.gaussian_filter(image, sigma=np.maximum(2.0 / spacing, 0.5))
    lo, hi = np.percentile(smooth, [0.5, 99.9])
    # Otsu on the robust range only: a few very bright voxels must not set the threshold.
    level = 0.5 * threshold_otsu(np.clip(smooth, lo, hi).astype(np.float64), nbins=256)
    fg = smooth > level
    labels, n = ndimage.label(fg)
    if n == 0:
        raise ValueError("head_mask: no foreground found (image is flat or empty)")
    sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
    fg = labels == (1 + int(np.argmax(sizes)))
    radius_vox = np.maximum(np.round(3.0 / spacing).astype(int), 1)
    structure = _ellipsoid(radius_vox)
    pad = int(radius_vox.max()) + 1
    # Pad so that closing does not erode at the field-of-view border.
    fg = np.pad(fg, pad)
    fg = ndimage.binary_closing(fg, structure=structure)[pad:-pad, pad:-pad, pad:-pad]
    fg = ndimage.binary_fill_holes(fg)
    return fg.astype(np.uint8)


def _ellipsoid(radius_vox: np.ndarray) -> np.ndarray:
    r = np.asarray(radius_vox)
    grid = np.ogrid[tuple(slice(-int(v), int(v) + 1) for v in r)]
    return sum((g / max(int(v), 1)) ** 2 for g, v in zip(grid, r, strict=True)) <= 1.0
