"""NIfTI reading and writing in one canonical convention.

Every volume inside sr7t is a float32 array indexed (x, y, z) in RAS+ orientation
(``nibabel.as_closest_canonical``) with a 4x4 voxel-to-world affine in mm. Axis 2 (z,
inferior to superior) is the slice axis of thick-slice 1.5T acquisitions.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes

from sr7t.errors import ScanError

# Voxel sizes outside this range are almost certainly a header in the wrong unit.
SANE_SPACING_MM = (0.1, 12.0)


def load_volume(
    path: str | Path, subject: str = "?", allow_constant: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3-D NIfTI, reoriented to RAS+.

    Returns ``(data, affine)``: float32 array (x, y, z) and the 4x4 affine in mm.
    Raises :class:`ScanError` naming ``subject`` and ``path`` if the file is unreadable,
    not 3-D, contains NaN/inf, is empty (all one value, unless ``allow_constant``: a
    guidance map of a scanner without gradient nonlinearity is legitimately constant) or
    has absurd voxel spacing.
    """
    path = Path(path)
    try:
        img = nib.load(str(path))
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as exc:  # nibabel raises many types for broken files
        raise ScanError(subject, path, f"cannot be read as NIfTI ({exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ScanError(subject, path, f"is not 3-D (shape {data.shape})")
    if min(data.shape) < 2:
        raise ScanError(subject, path, f"has a degenerate shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise ScanError(subject, path, f"contains {int(np.sum(~np.isfinite(data)))} NaN/inf voxels")
    if not allow_constant and float(data.max()) == float(data.min()):
        raise ScanError(subject, path, "is empty (every voxel has the same value)")
    spacing = voxel_sizes(img.affine)
    lo, hi = SANE_SPACING_MM
    if np.any(spacing < lo) or np.any(spacing > hi):
        raise ScanError(
            subject,
            path,
            f"has voxel spacing {np.round(spacing, 3).tolist()} mm outside [{lo}, {hi}]",
        )
    return data, img.affine.astype(np.float64)


def save_volume(path: str | Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write ``data`` (float32, x y z) with ``affine`` as NIfTI; parents are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(data, dtype=np.float32), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))
    return path


def write_json(path: str | Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    return path


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
