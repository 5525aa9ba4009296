"""``sr7t predict``: super-resolve one 1.5T scan with a trained model, no workflow.

The scan goes through the same steps as in the workflow, minus registration (there is no
7T partner): GNL guidance from its scanner's coefficient file (or flagged absent), N4,
resampling onto an isotropic grid at the model's 7T voxel size covering the scan's field of
view, the model's condition channels (:func:`sr7t.data.dataset.condition_channels`), and
sampling. The output is in normalised 7T units (99th percentile in the brain = 1).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from sr7t.io import load_volume, save_volume, voxel_spacing_mm

log = logging.getLogger(__name__)


def output_grid(shape, affine: np.ndarray, voxel_mm: float) -> tuple[tuple[int, ...], np.ndarray]:
    """An axis-aligned RAS grid of ``voxel_mm`` voxels covering the scan's field of view."""
    corners = np.array(
        [
            [i, j, k, 1.0]
            for i in (0, shape[0] - 1)
            for j in (0, shape[1] - 1)
            for k in (0, shape[2] - 1)
        ]
    )
    world = (affine @ corners.T)[:3]
    lo, hi = world.min(axis=1), world.max(axis=1)
    out_shape = tuple(
        int(np.floor((h - low) / voxel_mm)) + 1 for low, h in zip(lo, hi, strict=True)
    )
    out_affine = np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0])
    out_affine[:3, 3] = lo
    return out_shape, out_affine


def predict_scan(
    in_path: str | Path,
    out_path: str | Path,
    model_path: str | Path,
    coef: str | Path | None = None,
    steps: int | None = None,
    device: str | None = None,
    batch_size: int = 16,
) -> dict:
    """Super-resolve ``in_path`` into ``out_path`` with the model bundle ``model_path``.

    Returns a summary (seconds, grid, warnings). Warns loudly when the scan's slice spacing
    is outside the range the model was trained on.
    """
    from sr7t.data.dataset import condition_channels
    from sr7t.models.bundle import load_bundle
    from sr7t.models.predict import check_input_spacing, predict_volume
    from sr7t.preprocess import gnl
    from sr7t.preprocess.masks import head_mask
    from sr7t.preprocess.n4 import n4_correct
    from sr7t.preprocess.register import resample_to_fixed

    t0 = time.perf_counter()
    subject = Path(in_path).name
    data, affine = load_volume(in_path, subject)
    model, meta = load_bundle(model_path, device=device)
    slice_mm = float(voxel_spacing_mm(affine)[2])
    warning = check_input_spacing(meta, slice_mm)
    if warning:
        log.warning("%s: %s", subject, warning)

    if coef:
        coeffs = gnl.read_coefficients(coef)
        jac = gnl.jacobian_determinant(coeffs, data.shape, affine)
        disp = np.linalg.norm(gnl.displacement_field_mm(coeffs, data.shape, affine), axis=0)
    else:
        jac, disp = np.ones_like(data), np.zeros_like(data)
    corrected, bias = n4_correct(data, affine, mask=head_mask(data, affine).astype(bool))

    voxel_mm = float(np.min(meta["spacing_mm_seen"][0]))
    shape, grid = output_grid(data.shape, affine, voxel_mm)
    identity = np.eye(4)

    def onto_grid(vol, order):
        return resample_to_fixed(vol, affine, shape, grid, identity, order=order)

    t1 = onto_grid(corrected, 3)
    mask = head_mask(t1, grid).astype(bool)
    condition, _ = condition_channels(
        t1, onto_grid(bias, 1), onto_grid(jac, 1), onto_grid(disp, 1), bool(coef), mask
    )
    pred = predict_volume(model, meta, condition, steps=steps, batch_size=batch_size, device=device)
    save_volume(out_path, np.where(mask, pred, 0.0), grid)
    info = {
        "seconds": time.perf_counter() - t0,
        "input_slice_mm": slice_mm,
        "voxel_mm": voxel_mm,
        "shape": list(shape),
        "warning": warning or "",
    }
    log.info(
        "wrote %s (%s voxels of %.2f mm) in %.1f s", out_path, shape, voxel_mm, info["seconds"]
    )
    return info
