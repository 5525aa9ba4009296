"""BIDS derivatives of an inference cohort (BIDS 1.9, "Derivatives" and the ``res`` entity).

Layout under ``results/<cohort>/derivatives/sr7t/``::

    dataset_description.json
    sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>]_res-<res>_desc-sr7t_T1w.nii.gz
    sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>]_res-<res>_desc-sr7t_T1w.json
    sub-<label>/[ses-<label>/]figures/sub-<label>[_ses-<label>]_res-<res>_desc-sr7t_T1w.png

The ``res`` label is the output voxel size in mm with ``p`` for the decimal point (``1p2``:
1.2 mm; :func:`resolution_label`), explained by the sidecar's ``Resolution``. There is no
``space`` entity: the output lies in the input scan's own world space (its grid subdivided).
"""

from __future__ import annotations

import re
from pathlib import Path

from sr7t.config import ConfigError

BIDS_VERSION = "1.9.0"
LABEL_RE = re.compile(r"[^A-Za-z0-9]")


def resolution_label(voxel_mm: float) -> str:
    """``res`` label of an output voxel size: ``1.2`` -> ``1p2``, ``2.0`` -> ``2``."""
    return f"{round(float(voxel_mm), 3):g}".replace(".", "p")


def session_of(scan_path: str | Path) -> str | None:
    """The BIDS session label of a scan inside a BIDS folder (``.../ses-X/anat/...``)."""
    for part in Path(scan_path).parts[::-1]:
        if part.startswith("ses-"):
            return part[4:]
    return None


def entities(subjects: dict[str, str | None], cohort: str) -> dict[str, dict[str, str]]:
    """Each subject's BIDS entities: subject ID -> ``{"dir": "sub-X[/ses-Y]", "prefix":
    "sub-X[_ses-Y]"}``. ``subjects``: subject ID -> session label (None: none).

    The label is the ID without a leading ``sub-`` and without characters BIDS labels do not
    allow (``subj_01`` -> ``subj01``); two subjects with the same label are refused."""
    out, seen = {}, {}
    for subject, session in sorted(subjects.items()):
        label = LABEL_RE.sub("", subject.removeprefix("sub-"))
        ses = LABEL_RE.sub("", session) if session else None
        key = (label, ses)
        if not label or key in seen:
            raise ConfigError(
                f"cohort {cohort}: subjects {seen.get(key, '')!r} and {subject!r} get the same "
                f"BIDS label sub-{label} (labels keep letters and digits only)"
            )
        seen[key] = subject
        parts = [f"sub-{label}"] + ([f"ses-{ses}"] if ses else [])
        out[subject] = {"dir": "/".join(parts), "prefix": "_".join(parts)}
    return out


def source_uri(scan_path: str | Path, bids_root: str | Path | None) -> str:
    """The input scan as a BIDS URI (``bids:raw:sub-X/...`` with ``raw`` in the
    description's ``DatasetLinks``) when it lies in the BIDS input folder, else a file URI."""
    scan = Path(scan_path).absolute()
    if bids_root:
        root = Path(bids_root).absolute()
        if scan.is_relative_to(root):
            return f"bids:raw:{scan.relative_to(root).as_posix()}"
    return scan.as_uri()


def dataset_description(name: str, version: str, bids_root: str | Path | None) -> dict:
    """``dataset_description.json`` of the derivatives (BIDS 1.9): ``DatasetType``
    ``derivative``, ``GeneratedBy`` (no ``CodeURL``: the package names no public home), and
    ``SourceDatasets`` and ``DatasetLinks`` (``raw``) for BIDS input."""
    desc = {
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "sr7t",
                "Version": version,
                "Description": "1.5T to 7T-like T1w super-resolution (diffusion teacher "
                "distilled into a few-step student)",
            }
        ],
    }
    if bids_root:
        uri = Path(bids_root).absolute().as_uri()
        desc["SourceDatasets"] = [{"URL": uri}]
        desc["DatasetLinks"] = {"raw": uri}
    return desc


def sidecar(info: dict, model: dict, source: str, version: str) -> dict:
    """The JSON sidecar of one output: ``info`` from the prediction (voxel size, grid, input
    geometry, mask, warnings), ``model`` the ``infer_model`` description, ``source`` the
    input's URI (:func:`source_uri`)."""
    voxel = [round(float(v), 4) for v in info["voxel_sizes_mm"]]
    return {
        "Description": "7T-like T1w super-resolved from a 1.5T T1w by sr7t",
        "Resolution": (
            f"res-{model['res_label']}: voxels of {' x '.join(f'{v:g}' for v in voxel)} mm, the "
            f"input's own voxel grid subdivided to the model's {model['voxel_mm']:g} mm voxel, "
            "same field of view (voxel edge to voxel edge), in the input's world space"
        ),
        "Sources": [source],
        "SkullStripped": info["mask"] != "head",
        "BrainMask": info["mask"],
        "IntensityUnits": "normalised 7T units (99th percentile inside the brain = 1)",
        "InputGeometry": {
            "VoxelSizesMM": [round(float(v), 4) for v in info["input_spacing_mm"]],
            "ThickAxis": info["thick_axis"],
            "SliceSpacingMM": info["input_slice_mm"],
            "InplaneResolutionMM": info["input_inplane_mm"],
            "GNLCorrection": info["gnl"],
        },
        "Model": {
            "Kind": model["kind"],
            "Source": model["description"],
            "File": model["file"],
            "SHA256": model["sha256"],
            "TrainedSliceSpacingMM": model["trained_slice_mm"],
            "TrainedInplaneResolutionMM": model["train_inplane_mm"],
            "VoxelMM": model["voxel_mm"],
            **({"MLflow": model["mlflow"]} if model.get("mlflow") else {}),
        },
        "OutOfRangeWarnings": info["warnings"],
        "SoftwareVersions": {"sr7t": version},
    }
