"""Tissue classes of a volume (CSF / GM / WM) and how well a prediction keeps them.

A super-resolved T1w-like volume is only useful downstream if a segmentation of it agrees
with the segmentation of the truth. :func:`segment_tissues` runs the same cheap ANTs Atropos
k-means + MRF segmentation on every volume (each model's output and the reference), and
:func:`tissue_agreement` compares two label maps.
"""

from __future__ import annotations

import numpy as np

BACKGROUND, CSF, GM, WM = 0, 1, 2, 3
TISSUES = {"csf": CSF, "gm": GM, "wm": WM}
# Few iterations: it runs on every model output at every resolution; k-means already sets
# the classes, the MRF passes only clean up isolated voxels.
ATROPOS_ITERATIONS = 3
ATROPOS_MRF = "[0.2,1x1x1]"


def segment_tissues(volume: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Three-class tissue labels of a T1w-like ``volume`` inside ``mask`` (ANTs Atropos).

    Inputs: a 3-D volume (any intensity units) and a boolean-able brain mask of its shape.
    Returns uint8 labels of that shape: 0 background (outside the mask), 1 CSF, 2 GM, 3 WM,
    the classes ordered by their mean intensity (T1w: CSF darkest, WM brightest). Atropos
    uses ITK's thread pool: set ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=1 in the calling
    process for repeatable labels.
    """
    import ants  # heavy import, only where segmentation runs

    if volume.ndim != 3 or volume.shape != mask.shape:
        raise ValueError(f"need 3-D volume and mask of one shape: {volume.shape}, {mask.shape}")
    inside = np.asarray(mask) > 0
    if not inside.any():
        raise ValueError("empty brain mask")
    img = ants.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))
    mask_img = ants.from_numpy(inside.astype(np.float32))
    result = ants.atropos(
        a=img,
        x=mask_img,
        i="kmeans[3]",
        m=ATROPOS_MRF,
        c=f"[{ATROPOS_ITERATIONS},0]",
    )
    raw = result["segmentation"].numpy().astype(np.int64)
    raw[~inside] = 0
    return _order_by_intensity(raw, volume).astype(np.uint8)


def _order_by_intensity(labels: np.ndarray, volume: np.ndarray) -> np.ndarray:
    # Atropos orders k-means classes by intensity already; re-ordering by the mean makes the
    # CSF < GM < WM contract hold whatever its version does.
    present = [k for k in np.unique(labels) if k != 0]
    means = [float(volume[labels == k].mean()) for k in present]
    out = np.zeros_like(labels)
    for new, k in enumerate((present[i] for i in np.argsort(means)), start=1):
        out[labels == k] = new
    return out


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap ``2 |A & B| / (|A| + |B|)`` of two boolean-able arrays of one shape.

    Returns a value in [0, 1]; 1.0 when both are empty (they agree that nothing is there).
    """
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def _relative_volume_error(n_pred: int, n_ref: int) -> float:
    if n_ref == 0:
        return 0.0 if n_pred == 0 else float("inf")
    return (n_pred - n_ref) / n_ref


def tissue_agreement(pred_labels: np.ndarray, ref_labels: np.ndarray) -> dict[str, float]:
    """Per-tissue agreement of two label maps from :func:`segment_tissues`.

    Inputs: prediction and reference labels (0 background, 1 CSF, 2 GM, 3 WM) of one shape.
    Returns ``dice_csf``, ``dice_gm``, ``dice_wm`` (0..1, higher is better) and
    ``volerr_csf``, ``volerr_gm``, ``volerr_wm``: the relative volume error
    ``(pred - ref) / ref`` of each tissue (voxel counts; 0 is exact, signed).
    """
    if pred_labels.shape != ref_labels.shape:
        raise ValueError(f"label shapes differ: {pred_labels.shape}, {ref_labels.shape}")
    out: dict[str, float] = {}
    for name, k in TISSUES.items():
        out[f"dice_{name}"] = dice(pred_labels == k, ref_labels == k)
    for name, k in TISSUES.items():
        n_pred, n_ref = int((pred_labels == k).sum()), int((ref_labels == k).sum())
        out[f"volerr_{name}"] = _relative_volume_error(n_pred, n_ref)
    return out
