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


def subject_row(root: Path, cohort: str, subject: str, demo_raw: Path | None) -> dict:
    def p(name, **kw):
        return paths.path(name, root, cohort=cohort, subject=subject, **kw)

    reg = read_json(p("reg_qc"))
    row = {"subject": subject}
    row |= {k: reg[k] for k in ("similarity_before", "similarity_after") if k in reg}
    row["qc_failed"] = bool(reg.get("diverged", False))
    row |= _flat("gnl_", read_json(p("gnl_qc")))
    for fld in paths.FIELDS:
        row |= _flat(f"n4_{fld}_", read_json(p("n4_qc", field=fld)))
    row |= _flat("reg_", {k: v for k, v in reg.items() if k not in row})
    if demo_raw is not None:
        row |= truth_errors(root, cohort, subject, demo_raw)
    return row


def truth_errors(root: Path, cohort: str, subject: str, demo_raw: Path) -> dict:
    """Each preprocessing stage against the demo cohort's known truth."""
    from sr7t.preprocess.n4 import bias_field_correlation
    from sr7t.preprocess.register import registration_error_mm

    def p(name, **kw):
        return paths.path(name, root, cohort=cohort, subject=subject, **kw)

    tdir = paths.path("demo_truth_dir", root, cohort=cohort, subject=subject)
    truth = read_json(tdir / "truth.json")
    brain, aff7 = load_volume(tdir / "brainmask_7T.nii.gz", subject)
    brain = brain > 0.5
    est = np.loadtxt(p("reg_transform"))
    mean_mm, max_mm = registration_error_mm(est, np.asarray(truth["pose_7T_to_1p5T"]), brain, aff7)
    bias_true, _ = load_volume(tdir / "bias_7T.nii.gz", subject)
    bias_est, _ = load_volume(p("n4_bias", field="7T"), subject)
    clean, _ = load_volume(tdir / "truth_7T.nii.gz", subject)
    reference = clean * bias_true
    reference /= robust_scale(reference, brain)

    def rmse(vol):
        vol = vol / robust_scale(vol, brain)
        return float(np.sqrt(np.mean((vol[brain] - reference[brain]) ** 2)))

    return {
        "reg_error_mean_mm_truth": mean_mm,
        "reg_error_max_mm_truth": max_mm,
        "n4_bias_corr_7T_truth": bias_field_correlation(bias_est, bias_true, brain),
        "gnl_rmse_distorted_truth": rmse(load_volume(p("ingest_scan", field="7T"), subject)[0]),
        "gnl_rmse_unwarped_truth": rmse(load_volume(p("gnl_7T_unwarped"), subject)[0]),
    }


def preprocess_qc_table(
    results_root: str | Path,
    cohort: str,
    subjects: list[str],
    demo_raw: str | Path | None,
    out_tsv: str | Path,
) -> pd.DataFrame:
    """Write and return ``qc/preprocess.tsv`` for ``subjects`` of ``cohort``."""
    root = Path(results_root)
    raw = Path(demo_raw) if demo_raw else None
    table = pd.DataFrame([subject_row(root, cohort, s, raw) for s in sorted(subjects)])
    Path(out_tsv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_tsv, sep="\t", index=False, float_format="%.6g")
    return table
