import numpy as np
import pytest

from sr7t.evaluate.tissue import dice, segment_tissues, tissue_agreement


def _phantom(n=32, noise=0.08, seed=0):
    """Nested spheres: CSF shell (dark), GM shell, WM core (bright), plus Gaussian noise."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n),) * 3, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    mask = r < 0.95
    truth = np.zeros(r.shape, dtype=np.uint8)
    truth[mask] = 1
    truth[r < 0.75] = 2
    truth[r < 0.45] = 3
    rng = np.random.default_rng(seed)
    vol = np.array([0.0, 0.3, 0.6, 0.9])[truth] + noise * rng.standard_normal(r.shape)
    return vol.astype(np.float32), mask, truth


def test_segment_tissues_recovers_a_three_class_phantom():
    vol, mask, truth = _phantom()
    labels = segment_tissues(vol, mask)
    assert labels.dtype == np.uint8
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert np.all(labels[~mask] == 0)
    agreement = tissue_agreement(labels, truth)
    for tissue in ("csf", "gm", "wm"):
        assert agreement[f"dice_{tissue}"] > 0.9, agreement
        assert abs(agreement[f"volerr_{tissue}"]) < 0.1, agreement
    # classes follow intensity, so a contrast-inverted volume swaps CSF and WM
    inverted = segment_tissues(1.0 - vol, mask)
    assert dice(inverted == 1, truth == 3) > 0.9


def test_dice_by_hand():
    a = np.zeros((4, 4), dtype=bool)
    b = np.zeros_like(a)
    assert dice(a, b) == 1.0
    a[0, :] = True  # 4 voxels
    assert dice(a, b) == 0.0
    b[0, :2] = True
    b[1, 0] = True  # 3 voxels, 2 shared
    assert dice(a, b) == pytest.approx(2 * 2 / 7)


def test_tissue_agreement_by_hand():
    ref = np.array([0, 1, 1, 2, 2, 2, 3, 3])
    pred = np.array([0, 1, 2, 2, 2, 3, 3, 3])
    a = tissue_agreement(pred, ref)
    assert a["dice_csf"] == pytest.approx(2 * 1 / 3)
    assert a["dice_gm"] == pytest.approx(2 * 2 / 6)
    assert a["dice_wm"] == pytest.approx(2 * 2 / 5)
    assert a["volerr_csf"] == pytest.approx(-0.5)
    assert a["volerr_gm"] == pytest.approx(0.0)
    assert a["volerr_wm"] == pytest.approx(0.5)
