"""Synthetic demo cohort: determinism, geometry, truth pose, bias, GNL consistency, the
Colin27 held-out subject, the INIA19 validation subject, the 1.5T-contrast truth and the
default split."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from nibabel.affines import voxel_sizes
from scipy import ndimage

from sr7t import paths
from sr7t.cohort import anatomy
from sr7t.cohort.demo import make_demo_cohort
from sr7t.cohort.samples import load_cohort
from sr7t.io import load_volume, read_json
from sr7t.preprocess import gnl

COLIN27 = anatomy.COLIN27_SUBJECT
INIA19 = anatomy.INIA19_SUBJECT
# Every property test below also runs on the Colin27 and INIA19 subjects when their package
# is installed.
SUBJECTS = (
    ["sub-01", "sub-02", "sub-03"]
    + ([COLIN27] if anatomy.colin27_available() else [])
    + ([INIA19] if anatomy.inia19_available() else [])
)
needs_colin27 = pytest.mark.skipif(
    not anatomy.colin27_available(),
    reason=f"Colin27 not installed ({anatomy.COLIN27_BRAIN}; Debian package mricron-data)",
)
needs_inia19 = pytest.mark.skipif(
    not anatomy.inia19_available(),
    reason=f"INIA19 not installed ({anatomy.INIA19_BRAIN}; Debian package mricron-data)",
)
VOX_7T, VOX_1P5T = 4.0, (4.8, 4.8, 6.0)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    # two processes; the determinism test below makes one subject again in this one
    tsv = make_demo_cohort(
        raw_dir(root), SUBJECTS, seed=7, voxel_mm_7t=VOX_7T, voxel_mm_1p5t=VOX_1P5T, workers=2
    )
    return root, tsv


def scan(root, subject, field):
    return load_volume(paths.path("demo_scan", root, cohort="tiny", subject=subject, field=field))


def raw_dir(root):
    return paths.path("demo_raw_dir", root, cohort="tiny")


def truth_dir(root, subject):
    return paths.path("demo_truth_dir", root, cohort="tiny", subject=subject)


def test_samples_sheet(cohort):
    root, tsv = cohort
    assert tsv == paths.path("demo_samples", root, cohort="tiny")
    table = pd.read_csv(tsv, sep="\t", dtype=str)
    assert list(table.columns) == ["subject", "scan_1p5T", "scan_7T", "coef_1p5T", "coef_7T"]
    assert list(table.subject) == SUBJECTS
    for col in table.columns[1:]:
        for rel in table[col]:
            assert not rel.startswith("/") and (tsv.parent / rel).is_file()
    c7 = gnl.read_coefficients(tsv.parent / table.coef_7T[0])
    c15 = gnl.read_coefficients(tsv.parent / table.coef_1p5T[0])
    pts = np.random.default_rng(0).uniform(-80, 80, (3, 500))
    d7 = np.linalg.norm(gnl.displacement_at_mm(c7, pts)[0], axis=0)
    d15 = np.linalg.norm(gnl.displacement_at_mm(c15, pts)[0], axis=0)
    assert d15.max() < 0.7 * d7.max()  # the 1.5T coil is milder


def test_deterministic_and_independent_of_cohort_composition(cohort, tmp_path):
    """A subject's files do not depend on the cohort's other subjects, nor on how many
    processes wrote them."""
    root, _ = cohort
    make_demo_cohort(
        raw_dir(tmp_path), ["sub-02"], seed=7, voxel_mm_7t=VOX_7T, voxel_mm_1p5t=VOX_1P5T
    )
    for field in ("1p5T", "7T"):
        a, aff_a = scan(root, "sub-02", field)
        b, aff_b = scan(tmp_path, "sub-02", field)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(aff_a, aff_b)
    assert read_json(truth_dir(root, "sub-02") / "truth.json") == read_json(
        truth_dir(tmp_path, "sub-02") / "truth.json"
    )


def test_subjects_differ_and_seed_matters(cohort, tmp_path):
    root, _ = cohort
    truths = [read_json(truth_dir(root, s) / "truth.json") for s in SUBJECTS]
    poses = [np.array(t["pose_7T_to_1p5T"]) for t in truths]
    assert not np.allclose(poses[0], poses[1]) and not np.allclose(poses[1], poses[2])
    assert truths[0]["contrast_7T"] != truths[1]["contrast_7T"]
    a, _ = load_volume(truth_dir(root, "sub-01") / "truth_7T.nii.gz")
    b, _ = load_volume(truth_dir(root, "sub-02") / "truth_7T.nii.gz")
    if a.shape == b.shape:
        assert np.abs(a - b).mean() > 0.02
    make_demo_cohort(
        raw_dir(tmp_path), ["sub-01"], seed=8, voxel_mm_7t=VOX_7T, voxel_mm_1p5t=VOX_1P5T
    )
    assert (
        read_json(truth_dir(tmp_path, "sub-01") / "truth.json")["rotation_deg_xyz"]
        != truths[0]["rotation_deg_xyz"]
    )


def test_grids_match_config(cohort):
    root, _ = cohort
    for s in SUBJECTS:
        img7, aff7 = scan(root, s, "7T")
        img15, aff15 = scan(root, s, "1p5T")
        np.testing.assert_allclose(voxel_sizes(aff7), [VOX_7T] * 3)
        np.testing.assert_allclose(voxel_sizes(aff15), VOX_1P5T)  # thick slices along z
        for aff in (aff7, aff15):  # scanner axes: the head moved, not the grid
            np.testing.assert_allclose(aff[:3, :3], np.diag(np.diag(aff[:3, :3])))
        # both FOVs cover a head-sized box (the brain is ~145 x 180 x 155 mm)
        assert np.all(np.array(img7.shape) * VOX_7T > [150, 180, 160])
        assert np.all(np.array(img15.shape) * np.array(VOX_1P5T) > [150, 180, 160])
        for name in ("truth_7T", "brainmask_7T", "wm_7T", "bias_7T"):
            vol, aff = load_volume(truth_dir(root, s) / f"{name}.nii.gz")
            assert vol.shape == img7.shape
            np.testing.assert_array_equal(aff, aff7)
        bias15, aff_b = load_volume(truth_dir(root, s) / "bias_1p5T.nii.gz")
        assert bias15.shape == img15.shape
        np.testing.assert_array_equal(aff_b, aff15)


def test_thick_slices_average_the_slice_profile(tmp_path):
    """The 1.5T integrates across its 6 mm slice: the truth (moved by the true pose) averaged
    over a 6 mm box along the 1.5T z axis explains it better than the truth point-sampled at
    slice centres or averaged over twice the thickness."""
    # a fine (2 mm) truth, so the 6 mm slice profile is resolved; no 1.5T noise, bias, GNL
    root = tmp_path
    make_demo_cohort(
        raw_dir(root),
        ["sub-01"],
        7,
        2.0,
        VOX_1P5T,
        noise_1p5t=0.0,
        bias_1p5t=0.0,
        gnl_max_mm_1p5t=0.0,
    )
    corr = {0.0: [], 1.0: [], 2.0: []}
    err = {}
    for s in ["sub-01"]:
        t = read_json(truth_dir(root, s) / "truth.json")
        assert t["voxel_mm_1p5T"] == list(VOX_1P5T)
        pose_inv = np.array(t["pose_1p5T_to_7T"])
        truth7, aff7 = load_volume(truth_dir(root, s) / "truth_7T.nii.gz")
        img15, aff15 = scan(root, s, "1p5T")
        region = img15 > 0.2 * np.percentile(img15, 99)
        q = gnl.voxel_centres_mm(img15.shape, aff15)
        for width in corr:
            offsets = (np.arange(8) + 0.5) / 8 - 0.5 if width else np.zeros(1)
            acc = np.zeros(img15.shape)
            for dz in offsets * width * VOX_1P5T[2]:
                qz = q + np.array([0, 0, dz])[:, None, None, None]
                h = np.einsum("ij,j...->i...", pose_inv[:3, :3], qz)
                acc += sample_world(truth7, aff7, h + pose_inv[:3, 3, None, None, None])
            corr[width].append(np.corrcoef(acc[region], img15[region])[0, 1])
        # truth_1p5T (1.5T contrast, 7T grid) through the same pose and slice profile is the
        # 1.5T scan in value too, where truth_7T (7T contrast) is not.
        for name in ("truth_1p5T", "truth_7T"):
            vol, aff = load_volume(truth_dir(root, s) / f"{name}.nii.gz")
            np.testing.assert_array_equal(aff, aff7)
            acc = np.zeros(img15.shape)
            for dz in ((np.arange(8) + 0.5) / 8 - 0.5) * VOX_1P5T[2]:
                qz = q + np.array([0, 0, dz])[:, None, None, None]
                h = np.einsum("ij,j...->i...", pose_inv[:3, :3], qz)
                acc += sample_world(vol, aff, h + pose_inv[:3, 3, None, None, None]) / 8
            err[name] = float(np.abs(acc - img15)[region].mean())
    mean = {w: float(np.mean(c)) for w, c in corr.items()}
    assert mean[1.0] > mean[0.0] + 0.005 and mean[1.0] > mean[2.0], mean
    assert err["truth_1p5T"] < 0.03 and err["truth_1p5T"] < 0.3 * err["truth_7T"], err


def sample_world(vol, aff, pts):
    inv = np.linalg.inv(aff)
    vox = inv[:3, :3] @ pts.reshape(3, -1) + inv[:3, 3:4]
    return ndimage.map_coordinates(vol, vox, order=1).reshape(pts.shape[1:])


def test_truth_pose_maps_7t_onto_1p5t(cohort):
    root, _ = cohort
    for s in SUBJECTS:
        t = read_json(truth_dir(root, s) / "truth.json")
        pose_inv = np.array(t["pose_1p5T_to_7T"])
        np.testing.assert_allclose(pose_inv @ np.array(t["pose_7T_to_1p5T"]), np.eye(4), atol=1e-9)
        truth7, aff7 = load_volume(truth_dir(root, s) / "truth_7T.nii.gz")
        img15, aff15 = scan(root, s, "1p5T")
        q = gnl.voxel_centres_mm(img15.shape, aff15)
        region = img15 > 0.2 * np.percentile(img15, 99)
        h = np.einsum("ij,j...->i...", pose_inv[:3, :3], q) + pose_inv[:3, 3, None, None, None]
        with_pose = sample_world(truth7, aff7, h)
        identity = sample_world(truth7, aff7, q)
        corr_pose = np.corrcoef(with_pose[region], img15[region])[0, 1]
        corr_id = np.corrcoef(identity[region], img15[region])[0, 1]
        assert corr_pose > 0.8 and corr_pose > corr_id + 0.05, (s, corr_pose, corr_id)


def test_bias_fields_in_expected_ranges(cohort):
    root, _ = cohort
    for s in SUBJECTS:
        brain = load_volume(truth_dir(root, s) / "brainmask_7T.nii.gz")[0] > 0.5
        b7 = load_volume(truth_dir(root, s) / "bias_7T.nii.gz")[0][brain]
        assert 0.6 <= b7.min() and b7.max() <= 1.5 and b7.max() / b7.min() > 1.5  # strong, B1-like
        b15, aff15 = load_volume(truth_dir(root, s) / "bias_1p5T.nii.gz")
        brain7, aff7 = load_volume(truth_dir(root, s) / "brainmask_7T.nii.gz")
        pose_inv = np.array(read_json(truth_dir(root, s) / "truth.json")["pose_1p5T_to_7T"])
        q = gnl.voxel_centres_mm(b15.shape, aff15)
        h = np.einsum("ij,j...->i...", pose_inv[:3, :3], q) + pose_inv[:3, 3, None, None, None]
        b15 = b15[sample_world(brain7, aff7, h) > 0.5]
        assert 0.85 <= b15.min() and b15.max() <= 1.15 and b15.max() / b15.min() > 1.05  # milder
        wm = load_volume(truth_dir(root, s) / "wm_7T.nii.gz")[0] > 0.5
        assert wm.sum() > 0.2 * brain.sum() and not np.any(wm & ~brain)


def test_7t_scan_is_biased_distorted_noisy_truth(cohort):
    """scan = Rician(bias * GNL(truth)): dividing out the true bias and unwarping with the
    scanner's own coefficients brings the scan closer to the truth than either alone."""
    root, tsv = cohort
    table = pd.read_csv(tsv, sep="\t", dtype=str)
    c7 = gnl.read_coefficients(tsv.parent / table.coef_7T[0])
    for s in SUBJECTS:
        img7, aff7 = scan(root, s, "7T")
        truth, _ = load_volume(truth_dir(root, s) / "truth_7T.nii.gz")
        bias, _ = load_volume(truth_dir(root, s) / "bias_7T.nii.gz")
        brain = load_volume(truth_dir(root, s) / "brainmask_7T.nii.gz")[0] > 0.5
        unbiased = img7 / bias
        corrected, _ = gnl.unwarp(unbiased, aff7, c7)

        def err(x, brain=brain, truth=truth):
            return float(np.abs(x - truth)[brain].mean())

        assert err(corrected) < 0.85 * err(unbiased) < 0.85 * err(img7)
        assert err(corrected) < 0.06  # ~ noise + interpolation at 4 mm
        wm_level = np.median(truth[load_volume(truth_dir(root, s) / "wm_7T.nii.gz")[0] > 0.5])
        assert 0.8 < wm_level < 1.2


def test_noise_is_lower_at_7t(cohort):
    root, _ = cohort
    img7, _ = scan(root, "sub-01", "7T")
    img15, _ = scan(root, "sub-01", "1p5T")
    # Rician background (no signal): mean = sigma * sqrt(pi / 2)
    bg7 = img7[:2].mean() / np.sqrt(np.pi / 2)
    bg15 = img15[:2].mean() / np.sqrt(np.pi / 2)
    assert 0.005 < bg7 < 0.02 and 0.03 < bg15 < 0.06


def test_unknown_strength_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="bias_7"):
        make_demo_cohort(tmp_path, ["s"], 0, 4.0, (4.8, 4.8, 6.0), bias_7=0.3)


def test_truth_1p5t_is_aligned_with_truth_7t(cohort):
    """Same grid, same anatomy (tissue boundaries: the image gradients correlate, far more
    than with a one-voxel shift), the subject's own 1.5T contrast (flatter than 7T: its WM/GM
    ratio is lower). Both contrasts order csf < gm < wm, so the gradients' signs agree."""
    root, _ = cohort
    for s in SUBJECTS:
        t7, aff7 = load_volume(truth_dir(root, s) / "truth_7T.nii.gz")
        t15, aff15 = load_volume(truth_dir(root, s) / "truth_1p5T.nii.gz")
        assert t15.shape == t7.shape and t15.dtype == np.float32
        np.testing.assert_array_equal(aff15, aff7)
        brain = load_volume(truth_dir(root, s) / "brainmask_7T.nii.gz")[0] > 0.5
        wm = load_volume(truth_dir(root, s) / "wm_7T.nii.gz")[0] > 0.5
        g7, g15 = np.stack(np.gradient(t7)), np.stack(np.gradient(t15))
        aligned = np.corrcoef(g7[:, brain].ravel(), g15[:, brain].ravel())[0, 1]
        shifted = np.corrcoef(g7[:, brain].ravel(), np.roll(g15, 1, 1)[:, brain].ravel())[0, 1]
        assert aligned > 0.9 and aligned > shifted + 0.15, (s, aligned, shifted)
        gm_like = brain & ~wm & (t7 > 0.3)
        ratio7 = np.median(t7[wm]) / np.median(t7[gm_like])
        ratio15 = np.median(t15[wm]) / np.median(t15[gm_like])
        assert ratio15 < ratio7, (s, ratio15, ratio7)
        c15 = read_json(truth_dir(root, s) / "truth.json")["contrast_1p5T"]
        assert 0.8 * c15["wm"] < np.median(t15[wm]) < c15["wm"] + c15["t1"], (s, c15)


@needs_colin27
def test_colin27_subject_has_its_own_anatomy(cohort):
    root, tsv = cohort
    assert COLIN27 in list(pd.read_csv(tsv, sep="\t", dtype=str).subject)
    info = {s: read_json(truth_dir(root, s) / "truth.json") for s in SUBJECTS}
    assert info[COLIN27]["anatomy"] == "colin27" and "Atropos" in info[COLIN27]["anatomy_source"]
    assert {info[s]["anatomy"] for s in SUBJECTS if s not in (COLIN27, INIA19)} == {"mni152"}
    brain, aff = load_volume(truth_dir(root, COLIN27) / "brainmask_7T.nii.gz")
    litres = brain.sum() * abs(np.linalg.det(aff[:3, :3])) / 1e6 / info[COLIN27]["head_scale"] ** 3
    assert 1.5 < litres < 2.0  # Colin27's 1.74 L (MNI152's mask: 1.88 L), 4 mm voxels


@needs_inia19
def test_inia19_subject_is_the_macaque_brain_at_human_size(cohort):
    root, tsv = cohort
    assert INIA19 in list(pd.read_csv(tsv, sep="\t", dtype=str).subject)
    info = read_json(truth_dir(root, INIA19) / "truth.json")
    assert info["anatomy"] == "inia19" and "macaque" in info["anatomy_source"]
    brain, aff = load_volume(truth_dir(root, INIA19) / "brainmask_7T.nii.gz")
    litres = brain.sum() * abs(np.linalg.det(aff[:3, :3])) / 1e6 / info["head_scale"] ** 3
    assert 1.4 < litres < 2.0  # 0.109 L x 2.5^3 = 1.71 L, 4 mm voxels


def test_default_split_holds_out_colin27_and_the_last_mni_subjects(monkeypatch):
    monkeypatch.setattr(anatomy, "colin27_available", lambda: True)
    monkeypatch.setattr(anatomy, "inia19_available", lambda: True)
    demo = {"n_subjects": 6, "colin27": True, "inia19": True}
    cfg = {"source": "demo", "demo": demo, "split": {}}
    c = load_cohort("demo", cfg, "results/demo/raw")
    assert c.in_split("test") == ["sub-06", COLIN27]
    assert c.in_split("val") == ["sub-05", INIA19]
    assert c.in_split("train") == ["sub-01", "sub-02", "sub-03", "sub-04"]
    # an explicit split wins, but never trains on Colin27 or INIA19
    cfg["split"] = {"val": ["sub-01"], "test": ["sub-02"]}
    c = load_cohort("demo", cfg, "results/demo/raw")
    assert c.in_split("val") == ["sub-01", INIA19] and c.in_split("test") == ["sub-02", COLIN27]
    # two MNI subjects: one trains, one is tested, INIA19 is the only val
    demo = {"n_subjects": 2, "colin27": True, "inia19": True}
    cfg = {"source": "demo", "demo": demo, "split": {}}
    c = load_cohort("demo", cfg, "results/demo/raw")
    assert c.in_split("train") == ["sub-01"] and c.in_split("test") == ["sub-02", COLIN27]
    assert c.in_split("val") == [INIA19]
    cfg["demo"]["colin27"] = cfg["demo"]["inia19"] = False
    c = load_cohort("demo", cfg, "results/demo/raw")
    assert COLIN27 not in c.subjects and INIA19 not in c.subjects


def test_missing_colin27_or_inia19_prints_one_line_each_and_omits_the_subject(
    monkeypatch, tmp_path, capsys
):
    monkeypatch.setattr(anatomy, "COLIN27_BRAIN", tmp_path / "absent" / "ch2bet.nii.gz")
    monkeypatch.setattr(anatomy, "INIA19_BRAIN", tmp_path / "absent" / "inia19-t1-brain.nii.gz")
    tsv = make_demo_cohort(
        raw_dir(tmp_path),
        ["sub-01", COLIN27, INIA19],
        seed=7,
        voxel_mm_7t=8.0,
        voxel_mm_1p5t=(8, 8, 8),
    )
    assert list(pd.read_csv(tsv, sep="\t", dtype=str).subject) == ["sub-01"]
    assert not truth_dir(tmp_path, COLIN27).exists() and not truth_dir(tmp_path, INIA19).exists()
    err = capsys.readouterr().err
    assert err.splitlines() == [anatomy.COLIN27_MISSING, anatomy.INIA19_MISSING]
    # the workflow decides at parse time: the cohort has neither subject, one line each
    demo = {"n_subjects": 4, "colin27": True, "inia19": True}
    cfg = {"source": "demo", "demo": demo, "split": {}}
    c = load_cohort("demo", cfg, "results/demo/raw")
    assert sorted(c.subjects) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    assert c.in_split("test") == ["sub-04"] and c.in_split("val") == ["sub-03"]
    assert capsys.readouterr().err.splitlines() == [
        anatomy.COLIN27_MISSING,
        anatomy.INIA19_MISSING,
    ]
