"""Every output location of the workflow, in one place.

Templates are relative to the results root (config key ``results_dir``, default
``results``). Snakemake rules call :func:`pattern` (wildcards left as ``{name}``);
package code calls :func:`path` with every field filled in. A path never appears twice.
"""

from __future__ import annotations

import string
from pathlib import Path

FIELDS = ("1p5T", "7T")  # field-strength labels used in file names and the manifest

TEMPLATES: dict[str, str] = {
    # demo cohort (synthetic raw data; a real cohort's raw data live wherever the user keeps them)
    "demo_raw_dir": "{cohort}/raw",
    "demo_samples": "{cohort}/raw/samples.tsv",
    "demo_scan": "{cohort}/raw/{subject}/{subject}_{field}.nii.gz",
    "demo_truth_dir": "{cohort}/raw/truth/{subject}",
    "demo_truth_root": "{cohort}/raw/truth",
    "demo_coeffs_dir": "{cohort}/raw/coeffs",
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
    # evaluation
    "eval_model_metrics": "{cohort}/eval/{model}/metrics.tsv",
    "eval_prediction": "{cohort}/eval/{model}/{subject}_{cell}.nii.gz",
    "metrics": "{cohort}/eval/metrics.tsv",
    "eval_summary": "{cohort}/eval/summary.tsv",
    "eval_figure": "{cohort}/eval/metrics.png",
    # report
    "report": "{cohort}/report/index.html",
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
