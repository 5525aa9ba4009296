"""The inference cohort's steps, as the workflow runs them (one function per rule).

``resolve_model`` (once per cohort) -> per subject ``n4`` (native grid), ``guidance`` (output
grid) -> ``super_resolve_subject`` (BIDS derivative, sidecar, reportlet). They are the steps of
``sr7t predict`` (:mod:`sr7t.predict`), split so that each writes its own files.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from sr7t.infer import bids
from sr7t.infer.source import describe, fetch_registered
from sr7t.io import load_volume, read_json, save_volume, write_json

log = logging.getLogger(__name__)


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_model(
    spec: dict,
    bundle: str | None,
    out_model: str | Path,
    out_info: str | Path,
    tracking_uri: str | None = None,
) -> dict:
    """Copy (``bundle``: a cohort's model or a bundle file) or download (MLflow) the model of
    ``spec`` (:func:`sr7t.infer.source.model_source`) to ``out_model``, check it is a usable
    bundle, and describe it in ``out_info`` (JSON: kind, source, file, SHA-256, trained ranges,
    output voxel size and its ``res`` label). Returns the description."""
    from sr7t.models.bundle import read_bundle
    from sr7t.predict import model_voxel_mm

    Path(out_model).parent.mkdir(parents=True, exist_ok=True)
    registered = None
    if spec["source"] == "mlflow":
        registered = fetch_registered(spec["uri"], tracking_uri, out_model)
        origin = registered["source"]
    else:
        if not bundle:
            raise ValueError(f"{describe(spec)}: no bundle file given")
        shutil.copyfile(bundle, out_model)
        origin = str(Path(bundle).absolute())
    meta = read_bundle(out_model)["meta"]
    voxel_mm = model_voxel_mm(meta)
    info = {
        "spec": spec,
        "description": describe(spec)
        + (f" (version {registered['version']})" if registered else ""),
        "kind": meta.get("kind", "?"),
        "file": origin,
        "sha256": _sha256(out_model),
        "train_slice_mm": meta.get("train_slice_mm"),
        "trained_slice_mm": meta.get("trained_slice_mm"),
        "train_inplane_mm": meta.get("train_inplane_mm"),
        "voxel_mm": voxel_mm,
        "res_label": bids.resolution_label(voxel_mm),
        "mlflow": registered,
    }
    write_json(out_info, info)
    return info


def n4(
    scan: str,
    model: str,
    out_corrected: str,
    out_bias: str,
    out_mask: str,
    out_qc: str,
    brain_mask: str = "auto",
    subject: str = "?",
    threads: int | None = None,
) -> dict:
    """N4 of a 1.5T scan as the model's training data were corrected, inside the brain (or
    head) mask ``brain_mask`` picks (:func:`sr7t.predict.n4_for_model`), on the scan's grid."""
    from sr7t.models.bundle import read_bundle
    from sr7t.predict import n4_for_model

    t0 = time.perf_counter()
    data, affine = load_volume(scan, subject)
    meta = read_bundle(model)["meta"]
    corrected, bias, brain, kind = n4_for_model(
        data, affine, meta, brain_mask, subject, scan, threads
    )
    save_volume(out_corrected, corrected, affine)
    save_volume(out_bias, bias, affine)
    save_volume(out_mask, brain.astype(np.uint8), affine)
    qc = {"mask": kind, "mask_fraction": float(brain.mean()), "seconds": time.perf_counter() - t0}
    write_json(out_qc, qc)
    return qc


def guidance(
    scan: str, model: str, coef: str | None, out_jacobian: str, out_dispmag: str, subject="?"
) -> dict:
    """GNL guidance maps of the scanner's coefficient file (None: none, flagged) on the output
    grid (:func:`sr7t.predict.refined_grid` of the scan at the model's voxel size)."""
    import nibabel as nib

    from sr7t.models.bundle import read_bundle
    from sr7t.predict import guidance_on_grid, model_voxel_mm, refined_grid

    header = nib.load(scan)
    meta = read_bundle(model)["meta"]
    shape, grid, _ = refined_grid(header.shape[:3], header.affine, model_voxel_mm(meta))
    jac, disp = guidance_on_grid(coef, shape, grid)
    save_volume(out_jacobian, jac, grid)
    save_volume(out_dispmag, disp, grid)
    return {"gnl": bool(coef), "max_dispmag_mm": float(disp.max()), "shape": list(shape)}


def super_resolve_subject(
    i: dict,
    out_t1w: str,
    out_sidecar: str,
    out_figure: str,
    source: str,
    res_label: str,
    gnl_present: bool,
    subject: str = "?",
    device: str | None = None,
    batch_size: int = 16,
) -> dict:
    """Sample the model (``i["model"]``, described by ``i["model_info"]``) on the subject's
    corrected 1.5T (``i``: ``scan``, ``corrected``, ``bias``, ``mask``, ``n4_qc``,
    ``jacobian``, ``dispmag``); write the BIDS derivative ``out_t1w`` in the scan's world
    space, its sidecar and a reportlet (input above output, three orientations)."""
    from sr7t import __version__
    from sr7t.models.bundle import load_bundle
    from sr7t.predict import acquisition_geometry, geometry_warnings, super_resolve

    t0 = time.perf_counter()
    info_model = read_json(i["model_info"])
    if info_model["res_label"] != res_label:
        raise ValueError(
            f"subject {subject}: output asked at res-{res_label} but the model's voxel gives "
            f"res-{info_model['res_label']}"
        )
    data, affine = load_volume(i["scan"], subject)
    corrected, _ = load_volume(i["corrected"], subject)
    # maps may be constant (no coefficient file: Jacobian 1, displacement 0), which
    # load_volume refuses for scans
    bias, _ = _map(i["bias"])
    brain, _ = _map(i["mask"])
    jac, grid_affine = _map(i["jacobian"])
    disp, _ = _map(i["dispmag"])
    model, meta = load_bundle(i["model"], device=device)
    geometry = acquisition_geometry(affine)
    warnings = geometry_warnings(meta, geometry)
    for w in warnings:
        log.warning("subject %s: %s", subject, w)
    mask_kind = read_json(i["n4_qc"])["mask"]
    pred, grid, _ = super_resolve(
        model,
        meta,
        corrected,
        bias,
        brain > 0,
        mask_kind,
        affine,
        jac,
        disp,
        gnl_present,
        device=device,
        batch_size=batch_size,
    )
    if not np.allclose(grid, grid_affine, atol=1e-4):
        raise ValueError(f"subject {subject}: guidance maps are not on the output grid")
    save_volume(out_t1w, pred, grid)
    from nibabel.affines import voxel_sizes

    info = {
        "voxel_sizes_mm": voxel_sizes(grid).tolist(),
        "input_spacing_mm": geometry["spacing_mm"],
        "thick_axis": "xyz"[geometry["thick_axis"]],
        "input_slice_mm": geometry["slice_mm"],
        "input_inplane_mm": geometry["inplane_mm"],
        "gnl": gnl_present,
        "mask": mask_kind,
        "warnings": warnings,
    }
    write_json(out_sidecar, bids.sidecar(info, info_model, source, __version__))
    save_figure(data, affine, pred, grid, out_figure, subject)
    return {"seconds": time.perf_counter() - t0, "warnings": len(warnings)}


def _map(path: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    img = nib.load(path)
    return np.asarray(img.dataobj, dtype=np.float32), img.affine


def save_figure(data, affine, pred, grid, out_png, subject: str) -> Path:
    """Input (top, as acquired: nearest neighbour) above output (bottom): the middle slice of
    each array axis, drawn in mm so both rows show the same field of view."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nibabel.affines import voxel_sizes

    fig, axes = plt.subplots(2, 3, figsize=(9, 6.2))
    for row, (vol, aff, name) in enumerate(((data, affine, "input"), (pred, grid, "sr7t"))):
        vol = np.asarray(vol, np.float32)
        hi = float(np.percentile(vol[vol > 0], 99.5)) if (vol > 0).any() else 1.0
        size = voxel_sizes(aff)
        for axis in range(3):
            plane = np.take(vol, vol.shape[axis] // 2, axis=axis)
            others = [a for a in range(3) if a != axis]
            extent = [0, vol.shape[others[0]] * size[others[0]], 0]
            extent += [vol.shape[others[1]] * size[others[1]]]
            ax = axes[row, axis]
            ax.imshow(
                plane.T,
                origin="lower",
                cmap="gray",
                vmin=0,
                vmax=hi,
                extent=extent,
                interpolation="nearest",
            )
            ax.set_title(f"{name}: middle of array axis {'xyz'[axis]}", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"{subject}: 1.5T input (top) and 7T-like output (bottom)", fontsize=10)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return Path(out_png)
