"""``sr7t predict``: super-resolve one 1.5T scan with a trained model, no workflow.

The scan goes through the same steps as in the workflow, minus registration (there is no
7T partner): N4, linear interpolation onto its own grid subdivided to the model's voxel size
(the field of view kept to the voxel edges, in the scan's world space), GNL guidance from its
scanner's coefficient file (or flagged absent), the model's condition channels
(:func:`sr7t.data.dataset.condition_channels`), and sampling with the thick axis and spacings
read from the header. The output is in normalised 7T units (99th percentile in the brain = 1).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from sr7t.io import load_volume, save_volume

log = logging.getLogger(__name__)


def acquisition_geometry(affine: np.ndarray) -> dict:
    """The scan's acquisition geometry from its header: voxel sizes (mm, per array axis), the
    thick axis (the coarsest; axis 2 when the voxels are isotropic to 10 %), its slice spacing
    and the in-plane resolution (the coarser of the two other axes)."""
    from nibabel.affines import voxel_sizes

    spacing = np.asarray(voxel_sizes(affine), dtype=np.float64)
    thick = int(np.argmax(spacing)) if spacing.max() > 1.1 * spacing.min() else 2
    others = [a for a in range(3) if a != thick]
    return {
        "spacing_mm": spacing.tolist(),
        "thick_axis": thick,
        "slice_mm": float(spacing[thick]),
        "inplane_mm": float(spacing[others].max()),
    }


def refined_grid(shape, affine: np.ndarray, voxel_mm: float):
    """The scan's own voxel grid subdivided to about ``voxel_mm`` along each axis (never
    coarser than it was), covering exactly the same field of view, voxel edge to voxel edge.

    Returns ``(shape, affine, factors)``: the new grid in the scan's world space (oblique and
    LPS affines stay what they are) and, per axis, old voxels per new voxel.
    """
    from nibabel.affines import voxel_sizes

    spacing = np.asarray(voxel_sizes(affine), dtype=np.float64)
    n = np.asarray(shape, dtype=int)
    m = np.maximum(np.round(n * spacing / voxel_mm).astype(int), n)
    f = n / m
    step = np.eye(4)
    step[:3, :3] = np.diag(f)
    step[:3, 3] = 0.5 * f - 0.5  # new voxel 0's centre, in old voxel indices
    return tuple(int(v) for v in m), np.asarray(affine) @ step, f


def upsample(volume: np.ndarray, shape, order: int = 1) -> np.ndarray:
    """``volume`` interpolated onto :func:`refined_grid`'s ``shape`` with spline ``order`` (1
    linear, 3 cubic B-spline; constant beyond the first and last voxel centre): how training
    brought acquired slices onto the grid (:func:`sr7t.data.resolution.interpolation_matrix`)."""
    from sr7t.data.resolution import interpolation_matrix

    out = np.asarray(volume, dtype=np.float64)
    for axis, m in enumerate(shape):
        n = out.shape[axis]
        # the old voxel centres in units of the new voxel: k * m / n + (m / n - 1) / 2
        centres = (np.arange(n) + 0.5) * m / n - 0.5
        mat = interpolation_matrix(centres, m, 1.0, order)
        out = np.moveaxis(np.moveaxis(out, axis, -1) @ mat.T, -1, axis)
    return out.astype(np.float32)


def geometry_warnings(meta: dict, geometry: dict) -> list[str]:
    """Loud warnings when the scan's slice spacing or in-plane resolution lies outside what
    the model was trained on; they name the axis and spacing."""
    from sr7t.models.predict import check_input_spacing

    axis = "xyz"[geometry["thick_axis"]]
    out = []
    w = check_input_spacing(meta, geometry["slice_mm"])
    if w:
        sizes = np.round(geometry["spacing_mm"], 2).tolist()
        out.append(f"{w} (thick axis {axis}, voxel sizes {sizes} mm)")
    lo, hi = meta.get("train_inplane_mm") or (0.0, np.inf)
    if not lo - 0.05 <= geometry["inplane_mm"] <= hi + 0.05:
        out.append(
            f"WARNING: in-plane resolution {geometry['inplane_mm']:g} mm (axes other than "
            f"{axis}) is outside the [{lo:g}, {hi:g}] mm model {meta.get('kind', '?')} was "
            "trained on: treat this output as unvalidated."
        )
    return out


def model_voxel_mm(meta: dict) -> float:
    """The output voxel size (mm) of a model: the finest spacing of the grid it was trained on."""
    return float(np.min(meta["spacing_mm_seen"][0]))


def n4_for_model(
    data: np.ndarray,
    affine: np.ndarray,
    meta: dict,
    brain_mask: str = "auto",
    subject: str = "?",
    in_path: str | Path = "?",
    threads: int | None = None,
):
    """N4 of a scan as the model's own training data were corrected (the bundle's config),
    inside the mask ``brain_mask`` picks (:func:`sr7t.preprocess.brain.resolve_brain_mask`).

    Returns ``(corrected, bias, brain, mask_kind)`` on the scan's grid: the corrected image,
    the bias field, the bool mask and how it was made (``"head"``, ``"Colin27 template"``...).
    """
    from sr7t.config import bundle_config
    from sr7t.preprocess.brain import resolve_brain_mask
    from sr7t.preprocess.n4 import n4_correct

    brain, mask_kind = resolve_brain_mask(data, affine, brain_mask, subject, in_path, threads)
    n4 = bundle_config(meta)["preprocess"]["n4"]  # as the model's own training data
    corrected, bias = n4_correct(data, affine, mask=brain, threads=threads, **n4)
    return corrected, bias, brain, mask_kind


def guidance_on_grid(coef: str | Path | None, shape, grid: np.ndarray):
    """GNL guidance maps (Jacobian determinant, displacement magnitude in mm) of the scanner's
    coefficient file ``coef`` on the grid ``shape``/``grid`` (4x4 affine); without a file,
    no distortion (ones, zeros), which the model is told by its flag channel."""
    from sr7t.preprocess import gnl

    if not coef:
        return np.ones(shape, np.float32), np.zeros(shape, np.float32)
    coeffs = gnl.read_coefficients(coef)
    jac = gnl.jacobian_determinant(coeffs, shape, grid)
    disp = np.linalg.norm(gnl.displacement_field_mm(coeffs, shape, grid), axis=0)
    return np.asarray(jac, np.float32), np.asarray(disp, np.float32)


def super_resolve(
    model,
    meta: dict,
    corrected: np.ndarray,
    bias: np.ndarray,
    brain: np.ndarray,
    mask_kind: str,
    affine: np.ndarray,
    jacobian: np.ndarray,
    dispmag: np.ndarray,
    gnl_present: bool,
    steps: int | None = None,
    device: str | None = None,
    batch_size: int = 16,
):
    """Sample the model on a scan already corrected by :func:`n4_for_model` (``corrected``,
    ``bias``, ``brain``, ``mask_kind`` on the scan's grid, ``affine``), with the guidance maps
    of :func:`guidance_on_grid` on :func:`refined_grid` (``gnl_present``: from a real file).

    Returns ``(prediction, grid affine, output mask)``: the masked prediction in normalised 7T
    units on the refined grid, in the scan's world space.
    """
    from sr7t.data.dataset import condition_channels
    from sr7t.models.predict import input_order, predict_volume
    from sr7t.preprocess.masks import head_mask

    geometry = acquisition_geometry(affine)
    shape, grid, _ = refined_grid(corrected.shape, affine, model_voxel_mm(meta))
    if tuple(jacobian.shape) != tuple(shape) or tuple(dispmag.shape) != tuple(shape):
        raise ValueError(
            f"guidance maps {jacobian.shape} / {dispmag.shape} are not on the output grid {shape}"
        )
    t1 = upsample(corrected, shape, input_order(meta))
    if mask_kind == "head":
        mask = head_mask(t1, grid).astype(bool)
    else:
        mask = upsample(brain.astype(np.float32), shape) > 0.5
        t1 = np.where(mask, t1, 0.0).astype(np.float32)  # brain extraction
    bias_up = upsample(bias, shape)
    condition, _ = condition_channels(t1, bias_up, jacobian, dispmag, gnl_present, mask)
    pred = predict_volume(
        model,
        meta,
        condition,
        steps=steps,
        batch_size=batch_size,
        device=device,
        thick_axis=geometry["thick_axis"],
        slice_mm=geometry["slice_mm"],
        inplane_mm=geometry["inplane_mm"],
    )
    return np.where(mask, pred, 0.0).astype(np.float32), grid, mask


def predict_scan(
    in_path: str | Path,
    out_path: str | Path,
    model_path: str | Path,
    coef: str | Path | None = None,
    steps: int | None = None,
    device: str | None = None,
    batch_size: int = 16,
    brain_mask: str = "auto",
    flips: int | None = None,
    rotations: int | None = None,
) -> dict:
    """Super-resolve ``in_path`` into ``out_path`` with the model bundle ``model_path``.

    The acquisition geometry comes from the header (:func:`acquisition_geometry`): thick
    slices along any axis, isotropically coarse or fine scans. The output lies on the scan's
    own grid subdivided to the model's voxel size (:func:`refined_grid`), in the scan's world
    space. Returns a summary (seconds, geometry, grid, warnings).

    ``brain_mask`` (:func:`sr7t.preprocess.brain.resolve_brain_mask`): ``"auto"`` uses
    :func:`head_mask` on a skull-stripped scan and the Colin27 template's brain mask on a
    whole head; ``"head"`` always :func:`head_mask`; or a NIfTI mask on the scan's grid. The
    mask restricts N4 and the intensity normalisation; a brain mask also strips the input
    (the models saw only brains) and the output, :func:`head_mask` masks the output.
    ``flips``: test-time plane flips (1, 2 or 4) instead of the model's own
    (:func:`sr7t.models.predict.test_time_flips`): each flip is one more pass of the network;
    ``rotations``: test-time rotations about the thick axis instead of the model's own
    (:func:`sr7t.models.predict.test_time_rotations`): each is one more prediction.

    The steps are :func:`n4_for_model`, :func:`guidance_on_grid` and :func:`super_resolve`
    (the workflow runs them as separate jobs for inference-only subjects).
    """
    from sr7t.models.bundle import load_bundle
    from sr7t.models.predict import with_flips, with_rotations

    t0 = time.perf_counter()
    subject = Path(in_path).name
    data, affine = load_volume(in_path, subject)
    model, meta = load_bundle(model_path, device=device)
    meta = with_rotations(with_flips(meta, flips), rotations)
    geometry = acquisition_geometry(affine)
    warnings = geometry_warnings(meta, geometry)
    for w in warnings:
        log.warning("%s: %s", subject, w)

    corrected, bias, brain, mask_kind = n4_for_model(
        data, affine, meta, brain_mask, subject, in_path
    )
    voxel_mm = model_voxel_mm(meta)
    shape, grid, _ = refined_grid(data.shape, affine, voxel_mm)
    jac, disp = guidance_on_grid(coef, shape, grid)
    pred, grid, _ = super_resolve(
        model,
        meta,
        corrected,
        bias,
        brain,
        mask_kind,
        affine,
        jac,
        disp,
        bool(coef),
        steps=steps,
        device=device,
        batch_size=batch_size,
    )
    save_volume(out_path, pred, grid)
    info = {
        "seconds": time.perf_counter() - t0,
        "input_slice_mm": geometry["slice_mm"],
        "thick_axis": "xyz"[geometry["thick_axis"]],
        "input_spacing_mm": geometry["spacing_mm"],
        "voxel_mm": voxel_mm,
        "shape": list(shape),
        "mask": mask_kind,
        "warning": " ".join(warnings),
    }
    log.info(
        "wrote %s (%s voxels of ~%.2f mm) in %.1f s", out_path, shape, voxel_mm, info["seconds"]
    )
    return info
