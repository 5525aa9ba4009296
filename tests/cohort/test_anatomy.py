"""Source anatomies of the demo: MNI152 (nilearn), Colin27 and INIA19 (Debian mricron-data)."""

from __future__ import annotations

import numpy as np
import pytest

from sr7t.cohort import anatomy
from sr7t.cohort.anatomy import load_anatomy

needs_colin27 = pytest.mark.skipif(
    not anatomy.colin27_available(),
    reason=f"Colin27 not installed ({anatomy.COLIN27_BRAIN}; Debian package mricron-data)",
)


def tissue_checks(a: anatomy.Anatomy):
    channels, mask, affine, bbox_mm = a
    assert channels.dtype == np.float32 and channels.shape == (4, *mask.shape)
    np.testing.assert_allclose(affine[:3, :3], np.eye(3))
    brain = mask > 0
    t1, tissues = channels[0], channels[1:]
    np.testing.assert_allclose(tissues.sum(0)[brain], 1.0, atol=1e-3)
    assert tissues.min() >= 0 and 0 <= t1.min() and t1.max() <= 1.0
    gm, wm, csf = (float((p[brain] * t1[brain]).sum() / p[brain].sum()) for p in tissues)
    assert wm > gm + 0.05 and gm > csf + 0.05, (wm, gm, csf)
    volume_l = brain.sum() * abs(np.linalg.det(affine[:3, :3])) / 1e6
    # the bounding box is in template mm, inside the cropped grid, brain-sized
    extent = bbox_mm[1] - bbox_mm[0]
    assert np.all(extent > [120, 150, 120]) and np.all(extent < [170, 200, 170])
    lo_mm, hi_mm = affine[:3, 3], affine[:3, 3] + np.array(mask.shape) - 1
    assert np.all(bbox_mm[0] >= lo_mm) and np.all(bbox_mm[1] <= hi_mm)
    return volume_l, (wm, gm, csf), tissues[:, brain].sum(1) / 1e6


def test_mni152():
    volume_l, _, _ = tissue_checks(load_anatomy("mni152"))
    assert 1.5 < volume_l < 2.1  # nilearn's mask is generous (1.88 L)


@needs_colin27
def test_colin27_tissue_maps_are_a_plausible_segmentation():
    colin = load_anatomy("colin27")
    volume_l, (wm, gm, csf), litres = tissue_checks(colin)
    outside = colin.mask == 0  # (nilearn's MNI GM/WM maps reach outside its brain mask)
    assert np.all(colin.channels[:, outside] == 0)
    assert 1.0 < volume_l < 1.8, volume_l
    gm_l, wm_l, csf_l = litres
    # adult brain: GM ~0.6-0.9 L, WM ~0.5-0.8 L; CSF the smallest class inside a BET mask
    assert 0.5 < gm_l < 1.0 and 0.4 < wm_l < 0.9 and 0.05 < csf_l < min(gm_l, wm_l), litres


@pytest.mark.skipif(not anatomy.inia19_available(), reason="INIA19 not installed (mricron-data)")
def test_inia19_is_a_brain_of_human_size_with_plausible_tissues():
    inia = load_anatomy("inia19")
    volume_l, (wm, gm, csf), litres = tissue_checks(inia)
    assert np.all(inia.channels[:, inia.mask == 0] == 0)
    assert 1.5 < volume_l < 1.9, volume_l  # 0.109 L scaled 2.5x: 1.71 L
    gm_l, wm_l, csf_l = litres
    # the dim outer cortex is grey matter, not CSF: CSF the smallest class
    assert 0.7 < gm_l < 1.2 and 0.4 < wm_l < 0.8 and 0.1 < csf_l < min(gm_l, wm_l) / 2, litres
    assert csf < 0.4 < gm < 0.75 < wm, (csf, gm, wm)


def test_segmentation_is_repeatable_and_ordered_by_intensity():
    """Three nested shells of intensity 0.45 (csf) < 0.65 (gm) < 0.85 (wm) with noise: the
    posteriors come back darkest first, recover the shells and are bit-for-bit repeatable."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*(np.arange(48) - 23.5,) * 3, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    mask = r < 22
    truth = np.select([r < 10, r < 17, mask], [2, 1, 0], -1)
    t1 = np.choose(truth + 1, [0.0, 0.45, 0.65, 0.85]) + 0.03 * rng.standard_normal(r.shape)
    t1 = np.where(mask, t1, 0).astype(np.float32)
    a = anatomy._segment_classes(t1, mask)
    b = anatomy._segment_classes(t1, mask)
    for pa, pb in zip(a, b, strict=True):
        np.testing.assert_array_equal(pa, pb)
    probs = np.stack(a)
    np.testing.assert_allclose(probs.sum(0)[mask], 1.0, atol=1e-5)
    assert np.all(probs[:, ~mask] == 0)
    inner = mask & (np.abs(r - 10) > 2) & (np.abs(r - 17) > 2) & (r < 20)  # away from edges
    assert (probs.argmax(0)[inner] == truth[inner]).mean() > 0.95


def test_unknown_anatomy_and_missing_colin27_or_inia19(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="unknown anatomy"):
        load_anatomy("bogus")
    monkeypatch.setattr(anatomy, "COLIN27_BRAIN", tmp_path / "absent.nii.gz")
    monkeypatch.setattr(anatomy, "INIA19_BRAIN", tmp_path / "absent.nii.gz")
    assert not anatomy.colin27_available() and not anatomy.inia19_available()
    with pytest.raises(FileNotFoundError, match="mricron-data"):
        anatomy._colin27()
    with pytest.raises(FileNotFoundError, match="mricron-data"):
        anatomy._inia19()


@pytest.mark.skipif(not anatomy.ROUTINE_T1_SCAN.is_file(), reason="insighttoolkit5-examples")
def test_routine_t1_scan_is_a_thick_slice_head():
    import nibabel as nib

    img = nib.load(anatomy.ROUTINE_T1_SCAN)
    assert img.shape == (128, 128, 62)
    assert sorted(float(z) for z in img.header.get_zooms()) == [2.0, 2.0, 3.0]
