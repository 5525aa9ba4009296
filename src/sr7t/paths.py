"""Every output location of the workflow, in one place.

Templates are relative to the results root (config key ``results_dir``, default
``results``). Snakemake rules call :func:`pattern` (wildcards left as ``{name}``); tests and
benchmarks call :func:`path` with every field filled in. Stages never build a path from the
results root: they get every file they read or write from their rule, and find a file inside
a declared folder with :func:`inside` (the demo's raw folder, :data:`DEMO_RAW`) or a
wildcard's value in a declared file's name with :func:`match`. A path never appears twice.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

FIELDS = ("1p5T", "7T")  # field-strength labels used in file names and the manifest

# Inside a demo cohort's raw folder (synthetic raw data; a real cohort's raw data live
# wherever the user keeps them).
DEMO_RAW: dict[str, str] = {
    "demo_samples": "samples.tsv",
    "demo_scan": "{subject}/{subject}_{field}.nii.gz",
    "demo_truth_dir": "truth/{subject}",
    "demo_truth_root": "truth",
    "demo_coeffs_dir": "coeffs",
}

TEMPLATES: dict[str, str] = {
    "resolved_config": "{cohort}/config.resolved.yaml",
    "demo_raw_dir": "{cohort}/raw",
    **{name: "{cohort}/raw/" + rel for name, rel in DEMO_RAW.items()},
    # ingest
    "ingest_scan": "{cohort}/ingest/{subject}/{subject}_{field}.nii.gz",
    "ingest_row": "{cohort}/ingest/{subject}/{subject}_scans.tsv",
    "manifest": "{cohort}/ingest/manifest.tsv",
    # ingest of a subject without a 7T scan (split "infer"): its 1.5T only, kept apart
    "ingest_infer_scan": "{cohort}/ingest_infer/{subject}/{subject}_1p5T.nii.gz",
    "ingest_infer_row": "{cohort}/ingest_infer/{subject}/{subject}_scans.tsv",
    # gradient-nonlinearity guidance (native grids)
    "gnl_7T_unwarped": "{cohort}/gradunwarp/{subject}/{subject}_7T_unwarped.nii.gz",
    "gnl_1p5T_jacobian": "{cohort}/gradunwarp/{subject}/{subject}_1p5T_jacobian.nii.gz",
    "gnl_1p5T_dispmag": "{cohort}/gradunwarp/{subject}/{subject}_1p5T_dispmag.nii.gz",
    "gnl_qc": "{cohort}/gradunwarp/{subject}/{subject}_gnl_qc.json",
    # N4 (per scan)
    "n4_corrected": "{cohort}/n4/{subject}/{subject}_{field}_n4.nii.gz",
    "n4_bias": "{cohort}/n4/{subject}/{subject}_{field}_bias.nii.gz",
    "n4_mask": "{cohort}/n4/{subject}/{subject}_{field}_mask.nii.gz",
    "n4_qc": "{cohort}/n4/{subject}/{subject}_{field}_n4_qc.json",
    # registration 1.5T -> 7T, everything resampled on the 7T grid
    "reg_transform": "{cohort}/register/{subject}/{subject}_1p5T_to_7T.mat",
    "reg_1p5T": "{cohort}/register/{subject}/{subject}_1p5T_in7T.nii.gz",
    "reg_bias": "{cohort}/register/{subject}/{subject}_1p5T_bias_in7T.nii.gz",
    "reg_jacobian": "{cohort}/register/{subject}/{subject}_1p5T_jacobian_in7T.nii.gz",
    "reg_dispmag": "{cohort}/register/{subject}/{subject}_1p5T_dispmag_in7T.nii.gz",
    "reg_qc": "{cohort}/register/{subject}/{subject}_register_qc.json",
    "reg_qc_png": "{cohort}/register/{subject}/{subject}_register_qc.png",
    "preprocess_qc": "{cohort}/qc/preprocess.tsv",
    # training data
    "dataset_subject": "{cohort}/dataset/{subject}.npz",
    "dataset_qc_png": "{cohort}/dataset/{subject}_guidance.png",
    # models: teacher, student_stage1..K
    "model": "{cohort}/models/{model}/model.pt",
    "model_checkpoints": "{cohort}/models/{model}/checkpoints",
    "model_summary": "{cohort}/models/{model}/summary.json",
    "model_history": "{cohort}/models/{model}/history.tsv",
    "model_run": "{cohort}/models/{model}/mlflow_run.json",
    "training_curves": "{cohort}/models/training_curves.png",
    # evaluation
    "eval_model_metrics": "{cohort}/eval/{model}/metrics.tsv",
    "eval_predictions": "{cohort}/eval/{model}/predictions",
    "eval_prediction": "{cohort}/eval/{model}/predictions/{subject}_{cell}.nii.gz",
    "eval_uncertainty": "{cohort}/eval/{model}/predictions/{subject}_{cell}_std.nii.gz",
    "eval_example_png": "{cohort}/eval/{model}/example.png",
    "eval_run": "{cohort}/eval/{model}/mlflow_run.json",
    "eval_montage": "{cohort}/eval/montage.png",
    "metrics": "{cohort}/eval/metrics.tsv",
    "eval_summary": "{cohort}/eval/summary.tsv",
    "eval_figure": "{cohort}/eval/metrics.png",
    # report
    "report": "{cohort}/report/index.html",
    # inference of subjects without a 7T (sr7t.infer): the model, per-subject steps, and BIDS
    # derivatives (bids_dir: sub-X[/ses-Y]; bids_prefix: sub-X[_ses-Y]; res: sr7t.infer.bids)
    "infer_model": "{cohort}/infer/model/model.pt",
    "infer_model_info": "{cohort}/infer/model/model.json",
    "infer_n4_corrected": "{cohort}/infer/{subject}/{subject}_1p5T_n4.nii.gz",
    "infer_n4_bias": "{cohort}/infer/{subject}/{subject}_1p5T_bias.nii.gz",
    "infer_n4_mask": "{cohort}/infer/{subject}/{subject}_1p5T_mask.nii.gz",
    "infer_n4_qc": "{cohort}/infer/{subject}/{subject}_1p5T_n4_qc.json",
    "infer_jacobian": "{cohort}/infer/{subject}/{subject}_jacobian_outgrid.nii.gz",
    "infer_dispmag": "{cohort}/infer/{subject}/{subject}_dispmag_outgrid.nii.gz",
    "derivatives_description": "{cohort}/derivatives/sr7t/dataset_description.json",
    "derivative_t1w": (
        "{cohort}/derivatives/sr7t/{bids_dir}/anat/{bids_prefix}_res-{res}_desc-sr7t_T1w.nii.gz"
    ),
    "derivative_sidecar": (
        "{cohort}/derivatives/sr7t/{bids_dir}/anat/{bids_prefix}_res-{res}_desc-sr7t_T1w.json"
    ),
    "derivative_figure": (
        "{cohort}/derivatives/sr7t/{bids_dir}/figures/{bids_prefix}_res-{res}_desc-sr7t_T1w.png"
    ),
    "infer_report": "{cohort}/report/inference.html",
}

LOG_TEMPLATE = "logs/{cohort}/{rule}/{tag}.log"


def pattern(name: str, root: str | Path = "results", **fields: str) -> str:
    """Template ``name`` under ``root`` with the given fields filled; others stay ``{field}``."""
    return str(Path(root) / _partial_format(TEMPLATES[name], fields))


def path(name: str, root: str | Path = "results", **fields: str) -> Path:
    """Concrete path for ``name``; every field of the template must be given."""
    missing = [f for f in _field_names(TEMPLATES[name]) if f not in fields]
    if missing:
        raise KeyError(f"path {name!r} needs {missing}")
    return Path(root) / TEMPLATES[name].format(**fields)


def inside(folder: str | Path, name: str, **fields: str) -> Path:
    """Path ``name`` of :data:`DEMO_RAW` inside ``folder`` (a demo cohort's raw folder)."""
    return Path(folder) / DEMO_RAW[name].format(**fields)


def match(name: str, path: str | Path) -> dict[str, str]:
    """The fields of template ``name`` in ``path`` (e.g. its ``subject``), matched against the
    end of the path; raises ``ValueError`` when ``path`` is not one of ``name``'s files."""
    regex, seen = [], set()
    for literal, field, _, _ in string.Formatter().parse(TEMPLATES[name]):
        regex.append(re.escape(literal))
        if field:
            regex.append(f"(?P={field})" if field in seen else f"(?P<{field}>[^/]+)")
            seen.add(field)
    found = re.search("(?:^|/)" + "".join(regex) + "$", Path(path).as_posix())
    if found is None:
        raise ValueError(f"{path} is not a {name} file ({TEMPLATES[name]})")
    return found.groupdict()


def tracking_db(root: str | Path = "results") -> Path:
    """The embedded MLflow SQLite store shared by every cohort."""
    return Path(root) / "mlflow" / "mlflow.db"


def _field_names(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _partial_format(template: str, fields: dict[str, str]) -> str:
    out = []
    for literal, field, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if field:
            out.append(str(fields[field]) if field in fields else "{" + field + "}")
    return "".join(out)
