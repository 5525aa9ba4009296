"""Tests for sr7t.preprocess.n4 and the head mask.

Phantom: a blobby 3-class "brain" (CSF/GM/WM-like, piecewise constant with soft edges) on a
40^3 grid at 4 mm, multiplied by a known smooth bias field, plus mild Rician noise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from sr7t.config import resolve
from sr7t.io import load_volume, save_volume
from sr7t.preprocess.masks import head_mask, set_itk_threads
from sr7t.preprocess.n4 import (
    bias_field_correlation,
    coefficient_of_variation,
    n4_correct,
    run_n4_stage,
    white_matter_proxy,
)

set_itk_threads(1)


def blobby_brain(shape=(40, 40, 40), spacing_mm=4.0, seed=0):
    """Returns (image, true_bias, brain, affine): tissue * bias + Rician noise."""
    rng = np.random.default_rng(seed)
    affine = np.diag([spacing_mm] * 3 + [1.0])
    affine[:3, 3] = -spacing_mm * (np.array(shape) - 1) / 2
    ijk = np.indices(shape, dtype=np.float64)
    world = np.einsum("ij,j...->i...", affine[:3, :3], ijk) + affine[:3, 3, None, None, None]
    r = np.sqrt((world[0] / 62) ** 2 + (world[1] / 72) ** 2 + (world[2] / 58) ** 2)
    brain = r < 1.0
    # Folded WM/GM boundary: a thresholded smooth random field inside the brain.
    field = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    field = field / field.std() + 2.5 * (0.75 - r)
    tissue = np.where(brain, 0.65, 0.0)  # GM
    tissue[brain & (field > 0.4)] = 1.0  # WM
    tissue[(np.abs(world[0] - 8) < 6) & (np.abs(world[1]) < 18) & (np.abs(world[2] - 6) < 8)] = 0.25
    tissue = ndimage.gaussian_filter(tissue, 0.6)
    bias = np.exp(0.35 * world[0] / 70 - 0.30 * world[1] / 80 + 0.30 * (world[2] / 60) ** 2 - 0.1)
    noisy = tissue * bias * 100
    sigma = 1.5
    noisy = np.abs(noisy + rng.normal(0, sigma, shape) + 1j * rng.normal(0, sigma, shape))
    return noisy.astype(np.float32), bias.astype(np.float32), brain, affine


@pytest.fixture(scope="module")
def phantom():
    return blobby_brain()


def test_head_mask_covers_the_brain(phantom):
    image, _, brain, affine = phantom
    mask = head_mask(image, affine)
    assert mask.dtype == np.uint8
    dice = 2 * np.sum(mask & brain) / (mask.sum() + brain.sum())
    assert dice > 0.95


def test_n4_recovers_bias_and_flattens_white_matter(phantom):
    image, true_bias, brain, affine = phantom
    mask = head_mask(image, affine)
    defaults = resolve({})["preprocess"]["n4"]  # the workflow's, from the schema
    corrected, bias = n4_correct(image, affine, mask=mask, threads=1, **defaults)
    assert corrected.shape == bias.shape == image.shape
    assert abs(bias[mask > 0].mean() - 1.0) < 1e-4
    np.testing.assert_allclose(corrected * bias, image, rtol=1e-4, atol=1e-3)
    r = bias_field_correlation(bias, true_bias, mask)
    assert r > 0.9, r  # measured 0.95 at 40^3 / 4 mm (0.79 with a 60 mm mesh)
    wm = white_matter_proxy(corrected, mask)
    before = coefficient_of_variation(image, wm)
    after = coefficient_of_variation(corrected, wm)
    assert after < 0.6 * before, (before, after)


def test_bias_field_correlation_is_scale_free():
    rng = np.random.default_rng(1)
    b = np.exp(rng.normal(size=(5, 5, 5)) * 0.1)
    mask = np.ones(b.shape, bool)
    assert bias_field_correlation(3.0 * b, b, mask) == pytest.approx(1.0)
    assert bias_field_correlation(1.0 / b, b, mask) == pytest.approx(-1.0)


def test_run_n4_stage_writes_consistent_outputs(tmp_path, phantom):
    image, true_bias, _, affine = phantom
    scan = save_volume(tmp_path / "s1_7T.nii.gz", image, affine)
    out = {k: tmp_path / "n4" / f"s1_7T_{k}" for k in ("n4.nii.gz", "bias.nii.gz", "mask.nii.gz")}
    qc_path = tmp_path / "n4" / "qc.json"
    cfg = {"shrink_factor": 2, "iterations": [50, 50, 30], "spline_distance_mm": 100.0}
    run_n4_stage(
        scan, out["n4.nii.gz"], out["bias.nii.gz"], out["mask.nii.gz"], qc_path, cfg, subject="s1"
    )
    corrected, corrected_affine = load_volume(out["n4.nii.gz"])
    bias, _ = load_volume(out["bias.nii.gz"])
    mask, _ = load_volume(out["mask.nii.gz"])
    np.testing.assert_allclose(corrected_affine, affine, atol=1e-4)
    np.testing.assert_allclose(corrected * bias, image, rtol=1e-4, atol=1e-3)
    assert bias_field_correlation(bias, true_bias, mask) > 0.9
    qc = json.loads(qc_path.read_text())
    assert qc["subject"] == "s1"
    assert qc["mask_voxels"] == int(mask.sum())
    assert qc["wm_cov_after"] < qc["wm_cov_before"]
    assert qc["seconds"] > 0 and qc["config"]["iterations"] == [50, 50, 30]
