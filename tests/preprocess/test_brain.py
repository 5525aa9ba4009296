"""Brain masks of whole-head scans from the Colin27 template (Debian mricron-data)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sr7t.cohort.anatomy import COLIN27_BRAIN, COLIN27_DIR, COLIN27_HEAD, COLIN27_PACKAGE
from sr7t.errors import ScanError
from sr7t.io import load_volume, save_volume
from sr7t.preprocess import brain
from sr7t.preprocess.register import resample_to_fixed

pytestmark = pytest.mark.skipif(
    not (COLIN27_HEAD.is_file() and COLIN27_BRAIN.is_file()),
    reason=f"Colin27 not installed in {COLIN27_DIR} (Debian package {COLIN27_PACKAGE})",
)

MM = 3.0


@functools.lru_cache(maxsize=1)
def _colin27_3mm():
    """ch2 (head) and ch2bet > 0 (brain, as 0/1) at 1 mm and their 3 mm versions."""
    head, affine = load_volume(COLIN27_HEAD)
    bet, _ = load_volume(COLIN27_BRAIN)
    truth = (bet > 0).astype(np.float32)
    return head, truth, affine, brain.coarsen(head, affine, MM), brain.coarsen(bet, affine, MM)


def _moved_scan():
    """ch2 sampled on a 3 mm scanner grid through a known rigid motion (8 deg about an oblique
    axis, 9 mm shift) and the true brain (ch2bet > 0) sampled the same way."""
    head, truth, affine, _, _ = _colin27_3mm()
    shape = tuple(int(round(n / MM)) for n in head.shape)
    grid = np.diag([MM, MM, MM, 1.0])
    grid[:3, 3] = [-95.0, -130.0, -75.0]  # a scanner origin unrelated to Colin27's
    motion = np.eye(4)  # scanner mm -> Colin27 mm
    motion[:3, :3] = Rotation.from_rotvec(
        np.deg2rad(8) * np.array([1.0, 0.5, 0.3]) / 1.16
    ).as_matrix()
    motion[:3, 3] = [6.0, -5.0, 4.0]
    scan = resample_to_fixed(head, affine, shape, grid, motion, order=1)
    true_brain = resample_to_fixed(truth, affine, shape, grid, motion, order=1) > 0.5
    return scan, grid, true_brain


def _dice(a, b):
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def test_template_brain_mask_recovers_a_moved_head():
    scan, grid, true_brain = _moved_scan()
    mask = brain.template_brain_mask(scan, grid, threads=1)
    assert mask.dtype == np.uint8 and mask.shape == scan.shape
    dice = _dice(mask, true_brain)
    covered = (mask.astype(bool) & true_brain).sum() / true_brain.sum()
    assert dice > 0.9, dice
    assert covered > 0.97, covered  # dilated: the cortex is kept


def test_looks_skull_stripped_tells_brain_from_head():
    _, _, _, (head, head_affine), (bet, bet_affine) = _colin27_3mm()
    assert brain.looks_skull_stripped(bet, bet_affine)
    assert not brain.looks_skull_stripped(head, head_affine)
    # A big brain (x1.25: 3.6 L, as big as a head) is still a brain: no skull around its core.
    big = bet_affine.copy()
    big[:3, :3] *= 1.25
    assert brain.skull_features(bet, big)["volume_l"] > brain.HEAD_MIN_L
    assert brain.looks_skull_stripped(bet, big)


def test_resolve_brain_mask_modes(tmp_path):
    _, _, _, (head, affine), (bet, _) = _colin27_3mm()
    mask, how = brain.resolve_brain_mask(bet, affine, "auto")
    assert how == "head" and mask.dtype == bool and mask.shape == bet.shape
    assert brain.resolve_brain_mask(head, affine, "head")[1] == "head"
    mask_file = save_volume(tmp_path / "mask.nii.gz", (bet > 0).astype(np.float32), affine)
    mask, how = brain.resolve_brain_mask(head, affine, str(mask_file))
    assert how.startswith("mask file") and mask.dtype == bool and mask.sum() == (bet > 0).sum()
    with pytest.raises(ScanError, match="not that of"):
        brain.resolve_brain_mask(head[:-1], affine, str(mask_file), "s", "scan.nii.gz")
    with pytest.raises(ScanError, match="not found"):
        brain.resolve_brain_mask(head, affine, str(tmp_path / "nope.nii.gz"))


def test_missing_colin27_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(brain, "COLIN27_HEAD", tmp_path / "ch2.nii.gz")
    with pytest.raises(FileNotFoundError, match=COLIN27_PACKAGE):
        brain.template_brain_mask(np.ones((8, 8, 8), np.float32), np.eye(4))
    _, _, _, (head, affine), _ = _colin27_3mm()
    with pytest.raises(ScanError, match=f"whole head.*{COLIN27_PACKAGE}"):
        brain.resolve_brain_mask(head, affine, "auto", "s", "scan.nii.gz")
