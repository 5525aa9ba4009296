"""One table of preprocessing QC per cohort (``qc/preprocess.tsv``), one row per subject.

It gathers the numbers each stage wrote (GNL, N4 for both scans, registration) and, for
the demo cohort, compares the stages with the synthetic truth:

- ``reg_error_mean_mm_truth`` / ``reg_error_max_mm_truth``: recovered vs true 1.5T pose
  over the 7T brain mask;
- ``n4_bias_corr_7T_truth``: correlation of estimated and true log bias (7T, brain);
- ``gnl_rmse_distorted_truth`` / ``gnl_rmse_unwarped_truth``: RMS difference to the
  undistorted (biased, noise-free) 7T inside the brain, before and after unwarping,
  intensities scaled by their 99th percentile in the mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sr7t import paths
from sr7t.data.dataset import robust_scale
from sr7t.io import load_volume, read_json

# The columns a reviewer reads first (the report shows these; the TSV has every number).
KEY_COLUMNS = [
    "subject",
    "qc_failed",
    "similarity_before",
    "similarity_after",
    "reg_error_mean_mm_truth",
    "reg_error_max_mm_truth",
    "n4_7T_wm_cov_before",
    "n4_7T_wm_cov_after",
    "n4_bias_corr_7T_truth",
    "gnl_present_1p5T",
    "gnl_rmse_distorted_truth",
    "gnl_rmse_unwarped_truth",
]


def _flat(prefix: str, d: dict) -> dict:
    """Numbers and flags only: paths and notes stay in each stage's own QC json."""
    return {
        (k if k.startswith(prefix) else f"{prefix}{k}"): v
        for k, v in d.items()
        if isinstance(v, (int, float, bool))
    }


def subject_row(subject: str, files: dict[str, str], truth_dir: Path | None) -> dict:
    """One subject's QC row from its stages' files (``files``: the keys of
    :data:`sr7t.stages.QC_INPUTS`); ``truth_dir``: the demo's truth of this subject, or None."""
    reg = read_json(files["reg"])
    row = {"subject": subject}
    row |= {k: reg[k] for k in ("similarity_before", "similarity_after") if k in reg}
    row["qc_failed"] = bool(reg.get("diverged", False))
    row |= _flat("gnl_", read_json(files["gnl"]))
    for fld in paths.FIELDS:
        row |= _flat(f"n4_{fld}_", read_json(files[f"n4_{fld}"]))
    row |= _flat("reg_", {k: v for k, v in reg.items() if k not in row})
    if truth_dir is not None:
        row |= truth_errors(subject, files, truth_dir)
    return row


def truth_errors(subject: str, files: dict[str, str], truth_dir: Path) -> dict:
    """Each preprocessing stage against the demo cohort's known truth (in ``truth_dir``)."""
    from sr7t.preprocess.n4 import bias_field_correlation
    from sr7t.preprocess.register import registration_error_mm

    truth = read_json(truth_dir / "truth.json")
    brain, aff7 = load_volume(truth_dir / "brainmask_7T.nii.gz", subject)
    brain = brain > 0.5
    est = np.loadtxt(files["reg_transform"])
    mean_mm, max_mm = registration_error_mm(est, np.asarray(truth["pose_7T_to_1p5T"]), brain, aff7)
    bias_true, _ = load_volume(truth_dir / "bias_7T.nii.gz", subject)
    bias_est, _ = load_volume(files["n4_bias_7T"], subject)
    clean, _ = load_volume(truth_dir / "truth_7T.nii.gz", subject)
    reference = clean * bias_true
    reference /= robust_scale(reference, brain)

    def rmse(vol):
        vol = vol / robust_scale(vol, brain)
        return float(np.sqrt(np.mean((vol[brain] - reference[brain]) ** 2)))

    return {
        "reg_error_mean_mm_truth": mean_mm,
        "reg_error_max_mm_truth": max_mm,
        "n4_bias_corr_7T_truth": bias_field_correlation(bias_est, bias_true, brain),
        "gnl_rmse_distorted_truth": rmse(load_volume(files["scan_7T"], subject)[0]),
        "gnl_rmse_unwarped_truth": rmse(load_volume(files["unwarped_7T"], subject)[0]),
    }


def preprocess_qc_table(
    subjects: dict[str, dict[str, str]],
    truth_dirs: dict[str, str | Path] | None,
    out_tsv: str | Path,
) -> pd.DataFrame:
    """Write and return ``qc/preprocess.tsv``: one row per subject of ``subjects`` (subject ->
    its stages' files, :func:`subject_row`). ``truth_dirs``: subject -> the demo's truth folder
    of that subject, or None for cohorts without truth."""
    rows = [
        subject_row(s, files, Path(truth_dirs[s]) if truth_dirs else None)
        for s, files in sorted(subjects.items())
    ]
    table = pd.DataFrame(rows)
    Path(out_tsv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_tsv, sep="\t", index=False, float_format="%.6g")
    return table
