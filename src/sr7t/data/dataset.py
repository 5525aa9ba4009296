"""Per-subject training/inference arrays: condition channels, target and mask on the 7T grid.

One ``.npz`` per subject, read by :func:`sr7t.data.slices.load_subject` (training and the
evaluation alike):

- ``condition`` float32 (C, X, Y, Z), channel names in ``channels`` (:data:`CHANNELS`)
- ``target`` float32 (X, Y, Z): corrected 7T / its 99th percentile in the mask
- ``mask`` uint8 (X, Y, Z); ``affine`` (4, 4); ``spacing_mm`` (3,); ``native_slice_mm``;
  ``native_spacing_mm`` (3,): the 1.5T scan's own voxel size
- ``norm_scale_1p5T``, ``norm_scale_7T``: the divisors used (intensity units of the inputs)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from nibabel.affines import voxel_sizes

from sr7t.io import load_volume, read_json

CHANNELS = ("t1_1p5T", "log_bias_1p5T", "gnl_jacobian_1p5T", "gnl_dispmag_1p5T", "gnl_present")
NORM_PERCENTILE = 99.0
# Bias fields are positive by construction; this floor only guards log() against the zeros
# that resampling leaves outside the 1.5T field of view.
_BIAS_FLOOR = 1e-3


def robust_scale(volume: np.ndarray, mask: np.ndarray) -> float:
    """The intensity that maps to 1.0: the 99th percentile inside ``mask``."""
    values = volume[mask > 0]
    if values.size == 0:
        raise ValueError("empty brain mask")
    scale = float(np.percentile(values, NORM_PERCENTILE))
    if scale <= 0:
        raise ValueError(f"non-positive intensity scale {scale}")
    return scale


def condition_channels(
    t1_1p5t: np.ndarray,
    bias: np.ndarray,
    jacobian: np.ndarray,
    dispmag_mm: np.ndarray,
    gnl_present: bool,
    mask: np.ndarray,
) -> tuple[np.ndarray, float]:
    """Stack the model's condition channels (:data:`CHANNELS`), all (X, Y, Z) on one grid.

    Returns ``(condition (C, X, Y, Z) float32, scale)`` where ``scale`` is the 1.5T
    intensity that maps to 1.0. The workflow's dataset stage and ``sr7t predict`` both
    build their inputs here, so inference can never disagree with training.
    """
    scale = robust_scale(t1_1p5t, mask)
    condition = np.stack(
        [
            t1_1p5t / scale,
            np.log(np.maximum(bias, _BIAS_FLOOR)),
            jacobian - 1.0,
            dispmag_mm,
            np.full(t1_1p5t.shape, 1.0 if gnl_present else 0.0, np.float32),
        ]
    ).astype(np.float32)
    return condition, scale


def build_subject_arrays(
    reg_1p5t: str | Path,
    reg_bias: str | Path,
    reg_jacobian: str | Path,
    reg_dispmag: str | Path,
    gnl_qc: str | Path,
    scan_1p5t_native: str | Path,
    mask_7t: str | Path,
    target_7t: str | Path | None,
    out_npz: str | Path,
    subject: str = "?",
) -> dict:
    """Assemble one subject's arrays (all inputs on the 7T grid except the native 1.5T,
    read only for its slice spacing) and write ``out_npz``. Returns a small summary."""
    t1, affine = load_volume(reg_1p5t, subject)
    mask = (load_volume(mask_7t, subject)[0] > 0.5).astype(np.uint8)
    bias = load_volume(reg_bias, subject)[0]
    jac = load_volume(reg_jacobian, subject, allow_constant=True)[0]
    disp = load_volume(reg_dispmag, subject, allow_constant=True)[0]
    gnl_present = bool(read_json(gnl_qc).get("gnl_present_1p5T", False))
    _, native_affine = load_volume(scan_1p5t_native, subject)
    native_slice_mm = float(voxel_sizes(native_affine)[2])

    condition, scale_1p5 = condition_channels(t1, bias, jac, disp, gnl_present, mask)
    arrays = dict(
        condition=condition,
        channels=np.array(CHANNELS),
        mask=mask,
        affine=affine,
        spacing_mm=voxel_sizes(affine),
        native_slice_mm=np.float64(native_slice_mm),
        native_spacing_mm=voxel_sizes(native_affine),
        norm_scale_1p5T=np.float64(scale_1p5),
    )
    summary = {
        "subject": subject,
        "shape": list(t1.shape),
        "native_slice_mm": native_slice_mm,
        "gnl_present": gnl_present,
        "mask_voxels": int(mask.sum()),
    }
    if target_7t is not None:
        target, _ = load_volume(target_7t, subject)
        scale_7 = robust_scale(target, mask)
        arrays["target"] = (target / scale_7).astype(np.float32)
        arrays["norm_scale_7T"] = np.float64(scale_7)
    Path(out_npz).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_npz, **arrays)
    return summary


GUIDANCE_PANELS = (
    ("t1_1p5T", "1.5T on the 7T grid", "gray", (0.0, 1.2)),
    ("log_bias_1p5T", "1.5T log bias field", "coolwarm", None),
    ("gnl_jacobian_1p5T", "GNL Jacobian - 1", "coolwarm", None),
    ("gnl_dispmag_1p5T", "GNL displacement (mm)", "viridis", None),
)


def save_guidance_figure(npz: str | Path, out_png: str | Path, subject: str = "?") -> Path:
    """QC reportlet: a coronal mid-slice of the 1.5T input, each guidance map and the 7T."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sr7t.data.slices import load_subject

    arrays = load_subject(npz)
    channels = arrays["channels"]
    y = arrays["mask"].shape[1] // 2
    brain = arrays["mask"][:, y, :] > 0
    panels = [
        (arrays["condition"][channels.index(n)][:, y, :], t, c, r) for n, t, c, r in GUIDANCE_PANELS
    ]
    if "target" in arrays:
        panels.append((arrays["target"][:, y, :], "7T target (corrected)", "gray", (0.0, 1.2)))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.7 * len(panels), 3.3), dpi=80)
    for ax, (img, title, cmap, rng) in zip(axes, panels, strict=True):
        if rng is None:  # symmetric or data range, from the brain only
            vals = img[brain] if brain.any() else img.ravel()
            lo, hi = float(vals.min()), float(vals.max())
            if cmap == "coolwarm":
                hi = max(abs(lo), abs(hi), 1e-6)
                lo = -hi
            rng = (lo, hi)
        im = ax.imshow(np.rot90(img), cmap=cmap, vmin=rng[0], vmax=rng[1])
        ax.set_title(title, fontsize=8)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    present = bool(arrays["condition"][channels.index("gnl_present")].max() > 0)
    fig.suptitle(
        f"{subject}: model inputs, coronal slice {y}"
        + ("" if present else " (no GNL coefficient file: maps absent)"),
        fontsize=9,
    )
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return Path(out_png)
