"""Brain masks for whole-head scans: register the Colin27 head template, warp its brain mask.

sr7t models are trained on skull-stripped brains, so ``sr7t predict`` on a routine whole-head
scan needs a brain mask (for N4, the intensity normalisation and the output). Colin27 (one
real head, Debian's ``mricron-data``: ``ch2.nii.gz`` with skull, ``ch2bet.nii.gz`` brain)
is registered to the scan with ANTs (Rigid then Affine, Mattes mutual information, on
:data:`REGISTRATION_MM` versions of both), and its brain mask, dilated by
:data:`DILATION_MM` so that the cortex is not cut, is pulled onto the scan's grid.

:func:`looks_skull_stripped` tells the two kinds of input apart with two cheap measures
(:func:`skull_features`, on a :data:`REGISTRATION_MM` version of the scan): a whole head is
big (:func:`~sr7t.preprocess.masks.head_mask` volume >= :data:`HEAD_MIN_L`) *and* its
brain is only part of it (``core_fraction`` < :data:`HEAD_MAX_CORE_FRACTION`: the bright
tissue left after a 4 mm erosion, which cuts the scalp off across the dark skull, dilated
back, over the head mask). Measured on the 3 mm versions (volume L / core fraction):

=============================================  ======================
ch2 (Colin27 head)                             4.14 / 0.37
routine head, 2 x 2 x 3 mm (face cut off)      3.10 / 0.26
ch2bet (Colin27 brain)                         1.86 / 0.78
ITK's skull strip of the routine head          1.63 / 0.92
demo 1.5T brains, 2.4 x 2.4 x 4 mm (7)         1.89-2.54 / 0.51-0.81
tiny demo 1.5T brains, 4.8 x 4.8 x 6 mm (4)    1.52-1.98 / 0.63-0.78
demo 7T brains (not a predict input)           1.46-2.47 / 0.26-0.37
=============================================  ======================

Neither measure alone is safe (the demo's scaled MNI152 brains reach 2.5 L; its randomised
contrasts push the core fraction of brains down to 0.5, of 7T-contrast brains to 0.3), hence
both. A scan whose field of view holds only part of a head can pass for a brain: give its
mask explicitly then (``--brain-mask``).
"""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage

from sr7t.cohort.anatomy import COLIN27_BRAIN, COLIN27_HEAD, COLIN27_PACKAGE
from sr7t.io import load_volume

log = logging.getLogger(__name__)

REGISTRATION_MM = 3.0  # both images are registered on grids at least this coarse
# The warped brain mask is this much larger than ch2bet's brain. Measured on the routine scan
# against ITK's own skull strip of it (KmeansTest_T1RawSkullStrip): Dice 0.911 / 0.940 /
# 0.944 / 0.941 and brain covered 85 / 92 / 95 / 96 % at 0 / 2 / 3 / 4 mm (an affine fit
# cannot follow every gyrus; a SyN stage added 20 s for +0.004 Dice).
DILATION_MM = 3.0
HEAD_MIN_L = 2.7  # head_mask volume (litres) below which a scan is a brain
HEAD_MAX_CORE_FRACTION = 0.5  # whole heads: 0.26-0.37; 1.5T brains: 0.51-0.92 (see above)
CORE_EROSION_MM = 4.0
SCALE_RANGE = (0.5, 2.0)  # plausible template-to-scan volume ratio of the affine fit
BRAIN_MASK_MODES = ("auto", "head")  # or a path to a NIfTI mask


def colin27_missing() -> str | None:
    """A one-line reason when the Colin27 head template or its brain is not installed."""
    for f in (COLIN27_HEAD, COLIN27_BRAIN):
        if not Path(f).is_file():
            return (
                f"Colin27 head template {f} not found: install the Debian package "
                f"{COLIN27_PACKAGE} (apt-get install {COLIN27_PACKAGE})"
            )
    return None


def skull_features(image: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """``volume_l``: litres of :func:`~sr7t.preprocess.masks.head_mask`; ``core_fraction``:
    the share of it in the largest blob of bright tissue (above Otsu's level inside the head
    mask) that survives a :data:`CORE_EROSION_MM` erosion, dilated back and hole-filled.
    Computed on a :data:`REGISTRATION_MM` version of ``image`` (x, y, z; 4x4 affine, mm)."""
    from skimage.filters import threshold_otsu

    from sr7t.preprocess.masks import _ellipsoid, head_mask

    image, affine = coarsen(image, affine, REGISTRATION_MM)
    head = head_mask(image, affine).astype(bool)
    inside = image[head]
    inside = np.clip(inside, *np.percentile(inside, [0.5, 99.5])).astype(np.float64)
    level = threshold_otsu(inside, nbins=256)
    ball = _ellipsoid(np.maximum(np.round(CORE_EROSION_MM / voxel_sizes(affine)).astype(int), 1))
    core = ndimage.binary_erosion(head & (image > level), structure=ball)
    labels, n = ndimage.label(core)
    if n:
        core = labels == 1 + int(np.argmax(ndimage.sum_labels(core, labels, range(1, n + 1))))
        core = ndimage.binary_fill_holes(ndimage.binary_dilation(core, structure=ball) & head)
    return {
        "volume_l": _litres(head, affine),
        "core_fraction": float(np.count_nonzero(core)) / max(np.count_nonzero(head), 1),
    }


def _litres(mask: np.ndarray, affine: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) * float(np.prod(voxel_sizes(affine))) / 1e6


def _is_whole_head(features: dict[str, float]) -> bool:
    return features["volume_l"] >= HEAD_MIN_L and features["core_fraction"] < HEAD_MAX_CORE_FRACTION


def looks_skull_stripped(image: np.ndarray, affine: np.ndarray) -> bool:
    """Whether ``image`` (x, y, z; 4x4 affine in mm) holds a brain rather than a whole head
    (:func:`skull_features`: a head is >= :data:`HEAD_MIN_L` and its brain core is under
    :data:`HEAD_MAX_CORE_FRACTION` of it)."""
    return not _is_whole_head(skull_features(image, affine))


def template_brain_mask(
    image: np.ndarray, affine: np.ndarray, threads: int | None = None, seed: int = 0
) -> np.ndarray:
    """Brain mask (uint8, 1 inside, the grid of ``image``) of a whole-head scan.

    ``image``: (x, y, z) float, ``affine``: 4x4 voxel-to-world in mm (any position and
    orientation; registration starts from aligned centres of mass). The Colin27 head is
    registered to the scan (Rigid then Affine, both on :data:`REGISTRATION_MM` grids, seeded:
    ``seed`` and ``threads=1`` give bit-for-bit repeatable masks) and its brain mask,
    dilated by :data:`DILATION_MM`, is resampled linearly onto the scan's grid and
    thresholded at 0.5. Raises FileNotFoundError naming the Debian package when Colin27 is
    not installed, RuntimeError when the registration fails (the mutual information drops or
    the fitted scale is implausible).
    """
    from sr7t.preprocess.register import _cleanup, register_1p5t_to_7t, resample_to_fixed

    missing = colin27_missing()
    if missing:
        raise FileNotFoundError(missing)
    image = np.asarray(image, dtype=np.float32)
    affine = np.asarray(affine, dtype=np.float64)
    head, head_affine, brain, brain_affine = _colin27_template()
    fixed, fixed_affine = coarsen(image, affine, REGISTRATION_MM)
    result = register_1p5t_to_7t(
        head,
        head_affine,
        fixed,
        fixed_affine,
        transforms=("Rigid", "Affine"),
        threads=threads,
        seed=seed,
    )
    _cleanup(result.transform_files)
    # world matrix: scan world mm -> Colin27 mm; its determinant is the volume ratio.
    scale = abs(float(np.linalg.det(result.world_matrix[:3, :3])))
    if result.diverged or not SCALE_RANGE[0] <= 1.0 / scale <= SCALE_RANGE[1]:
        raise RuntimeError(
            "Colin27 registration to the scan failed (mutual information "
            f"{result.similarity_before:.3f} -> {result.similarity_after:.3f}, brain volume "
            f"x{1.0 / scale:.2f} of Colin27's): give a brain mask instead"
        )
    warped = resample_to_fixed(brain, brain_affine, image.shape, affine, result.world_matrix, 1)
    mask = warped > 0.5
    log.debug(
        "Colin27 brain mask: %.2f L, registration %.1f s, MI %.3f -> %.3f",
        _litres(mask, affine),
        result.seconds,
        result.similarity_before,
        result.similarity_after,
    )
    return mask.astype(np.uint8)


def coarsen(image: np.ndarray, affine: np.ndarray, mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``image`` on a grid of about ``mm`` (never finer than it was) along each axis, over
    the same field of view (voxel edge to voxel edge), after a Gaussian anti-alias blur (FWHM
    brought to the new voxel size). Returns ``(array float32, affine)``."""
    from sr7t.preprocess.register import resample_to_fixed

    spacing = voxel_sizes(affine)
    n = np.asarray(image.shape)
    m = np.maximum(np.round(n * spacing / np.maximum(spacing, mm)).astype(int), 2)
    m = np.minimum(m, n)
    f = n / m  # old voxels per new voxel
    sigma_vox = np.sqrt(np.maximum((f * spacing) ** 2 - spacing**2, 0.0)) / 2.3548 / spacing
    blurred = ndimage.gaussian_filter(np.asarray(image, dtype=np.float32), sigma_vox)
    step = np.eye(4)
    step[:3, :3] = np.diag(f)
    step[:3, 3] = 0.5 * f - 0.5
    new_affine = np.asarray(affine, dtype=np.float64) @ step
    out = resample_to_fixed(blurred, affine, tuple(int(v) for v in m), new_affine, np.eye(4), 1)
    return out, new_affine


@functools.lru_cache(maxsize=1)
def _colin27_template():
    """Colin27 head at :data:`REGISTRATION_MM` and its 1 mm brain mask dilated by
    :data:`DILATION_MM` (float32 0/1): ``(head, head_affine, brain, brain_affine)``."""
    from sr7t.preprocess.masks import _ellipsoid

    head, head_affine = load_volume(COLIN27_HEAD, "colin27")
    brain_img, brain_affine = load_volume(COLIN27_BRAIN, "colin27")
    # The brain: the largest connected component of ch2bet > 0 (BET left specks outside it).
    labels, _ = ndimage.label(brain_img > 0)
    brain = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    radius = np.maximum(np.round(DILATION_MM / voxel_sizes(brain_affine)).astype(int), 1)
    pad = int(radius.max()) + 1
    brain = ndimage.binary_dilation(np.pad(brain, pad), structure=_ellipsoid(radius))
    brain = ndimage.binary_fill_holes(brain[pad:-pad, pad:-pad, pad:-pad])
    head_coarse, head_coarse_affine = coarsen(head, head_affine, REGISTRATION_MM)
    return head_coarse, head_coarse_affine, brain.astype(np.float32), brain_affine


def resolve_brain_mask(
    image: np.ndarray,
    affine: np.ndarray,
    brain_mask: str | Path = "auto",
    subject: str = "?",
    scan_path: str | Path = "?",
    threads: int | None = None,
) -> tuple[np.ndarray, str]:
    """The mask ``sr7t predict`` uses on a scan (x, y, z; 4x4 affine), per ``brain_mask``:

    - ``"auto"``: a skull-stripped scan (:func:`looks_skull_stripped`) -> its
      :func:`head_mask`; a whole head -> :func:`template_brain_mask`;
    - ``"head"``: :func:`head_mask`;
    - a path to a NIfTI mask (> 0 inside) on the scan's grid -> that mask.

    Returns ``(bool mask on the scan's grid, how)``, ``how`` one of ``"head"`` (a
    :func:`head_mask`), ``"Colin27 template"``, ``"mask file PATH"``. Raises
    :class:`~sr7t.errors.ScanError` naming the scan (one line) when Colin27 is missing, the
    registration fails or the mask file does not fit.
    """
    from sr7t.errors import ScanError
    from sr7t.preprocess.masks import head_mask

    mode = str(brain_mask)
    if mode in BRAIN_MASK_MODES:
        features = skull_features(image, affine) if mode == "auto" else {}
        if mode == "head" or not _is_whole_head(features):
            if features:
                log.info(
                    "%s: looks skull-stripped (%.1f L, brain core %.0f %%): head mask",
                    subject,
                    features["volume_l"],
                    100 * features["core_fraction"],
                )
            return head_mask(image, affine).astype(bool), "head"
        t0 = time.perf_counter()
        try:
            mask = template_brain_mask(image, affine, threads=threads)
        except (FileNotFoundError, RuntimeError) as exc:
            raise ScanError(
                subject, scan_path, f"is a whole head: {exc} (or pass --brain-mask PATH|head)"
            ) from exc
        log.info(
            "%s: whole head (%.1f L, brain core %.0f %%): brain mask %.2f L from the Colin27 "
            "template in %.1f s",
            subject,
            features["volume_l"],
            100 * features["core_fraction"],
            _litres(mask, affine),
            time.perf_counter() - t0,
        )
        return mask.astype(bool), "Colin27 template"
    path = Path(mode)
    if not path.is_file():
        raise ScanError(
            subject, path, f"brain mask not found (use auto, head or a mask NIfTI on {scan_path})"
        )
    data, mask_affine = load_volume(path, subject)
    if data.shape != image.shape or not np.allclose(mask_affine, affine, atol=1e-3):
        raise ScanError(
            subject,
            path,
            f"brain mask grid {data.shape} is not that of {scan_path} {tuple(image.shape)}",
        )
    return data > 0, f"mask file {path}"
