"""evaluate_model: the same table whether its subjects are scored one after the other or side
by side in worker processes (cores > 1), for a baseline and for a learned model."""

import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_phantom import tiny_config, write_phantom_npz  # noqa: E402

from sr7t.evaluate.run import METRIC_COLUMNS, TISSUE_COLUMNS, evaluate_model  # noqa: E402
from sr7t.train.teacher import train_teacher  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    files = [str(f) for f in write_phantom_npz(root / "npz", 4)]
    cfg = tiny_config(teacher={"channels": [8, 16], "train_steps": 6, "sampling_steps": 2})
    train_teacher(files[:2], [], cfg, root / "teacher.pt", root / "ck_teacher")
    # no Atropos tissue scores: they are not bit-for-bit repeatable from run to run
    ecfg = dict(cfg["evaluate"], tissue=False, resolutions_mm=[4.0], n_samples=1)
    return files, ecfg, root


@pytest.mark.parametrize("model", ["bspline", "bspline_consistent", "teacher"])
def test_subjects_side_by_side_score_the_same(cohort, model):
    files, ecfg, root = cohort
    bundle = str(root / "teacher.pt") if model == "teacher" else None
    tables = {}
    for cores in (1, 2):
        out = root / model / str(cores)
        tables[cores] = evaluate_model(
            model,
            bundle,
            files[2:],
            ecfg,
            f"{out}/{{subject}}_{{cell}}.nii.gz",
            out / "m.tsv",
            cores=cores,
        )
        assert list(pd.read_csv(out / "m.tsv", sep="\t").columns) == METRIC_COLUMNS
    one, two = (t.drop(columns=["seconds", *TISSUE_COLUMNS]) for t in tables.values())
    # no truth: one cell per subject, the real 1.5T re-acquired at 4 mm
    assert list(one["subject"]) == list(two["subject"]) == ["sub-02", "sub-03"]
    pd.testing.assert_frame_equal(one, two, rtol=1e-5)
    for subject in ("sub-02", "sub-03"):  # the same predictions written
        for a in sorted((root / model / "1").glob(f"{subject}_*.nii.gz")):
            b = root / model / "2" / a.name
            np.testing.assert_allclose(nib.load(a).get_fdata(), nib.load(b).get_fdata(), atol=1e-5)


@pytest.mark.parametrize("thick_axis", [2, 0])
def test_the_consistent_baseline_gives_back_the_acquired_slices(thick_axis):
    """B-spline made consistent: every slice wholly inside has the truth's box mean (a volume
    that varies along the thick axis only, so the in-plane smoothing keeps it exact), where
    B-spline itself does not; slices as fine as the grid leave it as it is."""
    from scipy.ndimage import gaussian_filter

    from sr7t.data.resolution import simulate_slice_spacing
    from sr7t.evaluate.run import consistent_interpolation
    from sr7t.models.consistency import slice_means_operator

    line = gaussian_filter(np.random.default_rng(0).normal(size=40), 1.5) * 5
    truth = np.moveaxis(np.broadcast_to(line, (5, 6, 40)), 2, thick_axis).copy()
    bspline = simulate_slice_spacing(truth, 1.2, 6.0, axis=thick_axis, order=3)
    inp = {"bspline": bspline, "thick_axis": thick_axis, "slice_mm": 6.0, "slice_offset_mm": 0.0}
    out = consistent_interpolation(inp, [1.2, 1.2, 1.2])
    _, means, inside = slice_means_operator(40, 1.2, 6.0, 0.0)

    def box_means(v):
        return np.moveaxis(v, thick_axis, -1).reshape(-1, 40) @ means[inside].T

    np.testing.assert_allclose(box_means(out), box_means(truth), atol=1e-4)
    assert np.abs(box_means(bspline) - box_means(truth)).max() > 0.05
    fine = {**inp, "slice_mm": 1.2}
    np.testing.assert_allclose(consistent_interpolation(fine, [1.2] * 3), bspline, atol=1e-6)
