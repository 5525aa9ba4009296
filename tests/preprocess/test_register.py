"""Tests for sr7t.preprocess.register (and the ANTs bridge in masks.py).

A smooth, asymmetric, analytic head phantom is evaluated in world coordinates, so the "7T"
scan and the moved, thick-slice, noisy "1.5T" scan are exact samples of one object under a
known world transform.
"""

from __future__ import annotations

import json

import ants
import numpy as np
import pytest

from sr7t.config import resolve
from sr7t.io import load_volume, save_volume
from sr7t.preprocess.masks import from_ants, head_mask, set_itk_threads, to_ants
from sr7t.preprocess.register import (
    mutual_information,
    register_1p5t_to_7t,
    registration_error_mm,
    resample_to_fixed,
    run_register_stage,
)

# One ITK thread: ANTs registration is bit-for-bit repeatable only single-threaded.
set_itk_threads(1)

# (centre mm, radii mm, intensity added); asymmetric on purpose.
_SHAPES = [
    ((2.0, -4.0, 3.0), (46.0, 55.0, 42.0), 0.55),  # brain (GM level)
    ((3.0, -2.0, 6.0), (35.0, 43.0, 30.0), 0.40),  # white matter
    ((-9.0, 4.0, 10.0), (5.0, 16.0, 8.0), -0.70),  # left ventricle
    ((10.0, 1.0, 8.0), (4.0, 12.0, 7.0), -0.65),  # right ventricle, smaller and shifted
    ((22.0, 25.0, -12.0), (9.0, 7.0, 6.0), -0.35),  # grey "nucleus"
    ((-20.0, -30.0, 15.0), (6.0, 10.0, 5.0), -0.30),
    ((15.0, -35.0, -20.0), (7.0, 6.0, 9.0), 0.25),  # bright spot
]


# The 1.5T contrast: other tissue values (applied before partial-volume mixing, as in a scanner).
_VALUES_1P5T = [0.7, 0.2, -0.75, -0.7, -0.1, -0.2, 0.1]


def phantom(world: np.ndarray, values=None) -> np.ndarray:
    """Intensity at world RAS points ``world`` (3, N) mm; smooth edges (~1.5 mm)."""
    out = np.zeros(world.shape[1])
    values = values or [v for _, _, v in _SHAPES]
    for (centre, radii, _), value in zip(_SHAPES, values, strict=True):
        rel = (world - np.array(centre)[:, None]) / np.array(radii)[:, None]
        d = (np.sqrt((rel**2).sum(axis=0)) - 1.0) * np.mean(radii)
        out += value / (1.0 + np.exp(np.clip(d / 1.5, -50, 50)))
    return np.maximum(out, 0.0)


def grid_world(shape, affine):
    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return affine[:3, :3] @ ijk + affine[:3, 3:]


def rigid(angles_deg, translation_mm):
    ax, ay, az = np.deg2rad(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx
    m[:3, 3] = translation_mm
    return m


def make_pair(seed=0, true_world=None):
    """7T: 52^3 at 2.5 mm. 1.5T: 2.5 x 2.5 x 6 mm slices, moved head, other contrast, noise."""
    rng = np.random.default_rng(seed)
    fixed_affine = np.diag([2.5, 2.5, 2.5, 1.0])
    fixed_affine[:3, 3] = -65.0
    fixed = phantom(grid_world((52, 52, 52), fixed_affine)).reshape(52, 52, 52)
    if true_world is None:
        true_world = rigid((4.0, -3.0, 5.0), (4.0, -6.0, 3.0))
    moving_affine = np.diag([2.5, 2.5, 6.0, 1.0])
    moving_affine[:3, 3] = (-66.0, -68.0, -64.0)
    shape = (54, 54, 22)
    # 1.5T(q) = head(W^-1 q); thick slices average 5 sub-slices across the 6 mm slab.
    inv = np.linalg.inv(true_world)
    acc = np.zeros(int(np.prod(shape)))
    for dz in np.linspace(-2.4, 2.4, 5):
        q = grid_world(shape, moving_affine) + np.array([[0.0], [0.0], [dz]])
        acc += phantom(inv[:3, :3] @ q + inv[:3, 3:], _VALUES_1P5T)
    moving = (acc / 5).reshape(shape) * 100
    sigma = 4.0
    moving = np.abs(moving + rng.normal(0, sigma, shape) + 1j * rng.normal(0, sigma, shape))
    return (
        fixed.astype(np.float32),
        fixed_affine,
        moving.astype(np.float32),
        moving_affine,
        true_world,
    )


@pytest.fixture(scope="module")
def pair():
    return make_pair()


@pytest.fixture(scope="module")
def registered(pair):
    fixed, fixed_affine, moving, moving_affine, _ = pair
    return register_1p5t_to_7t(moving, moving_affine, fixed, fixed_affine, threads=1, seed=0)


def test_ants_round_trip_preserves_world_coordinates():
    rng = np.random.default_rng(3)
    vol = rng.random((7, 9, 5)).astype(np.float32)  # asymmetric shape and content
    rot = rigid((10.0, -20.0, 35.0), (0.0, 0.0, 0.0))[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([0.8, 1.3, 3.0])
    affine[:3, 3] = (-40.0, 12.5, 7.0)
    img = to_ants(vol, affine)
    for ijk in [(0, 0, 0), (6, 0, 0), (1, 8, 2), (6, 8, 4)]:
        lps = np.asarray(ants.transform_index_to_physical_point(img, ijk))
        ras = affine @ np.array([*ijk, 1.0])
        np.testing.assert_allclose(lps * [-1, -1, 1], ras[:3], atol=1e-4)
        assert img.numpy()[ijk] == vol[ijk]
    back, back_affine = from_ants(img)
    np.testing.assert_array_equal(back, vol)
    np.testing.assert_allclose(back_affine, affine, atol=1e-5)


def test_resample_identity_returns_input(pair):
    _, _, moving, moving_affine, _ = pair
    for order in (0, 1, 3):
        out = resample_to_fixed(
            moving, moving_affine, moving.shape, moving_affine, np.eye(4), order
        )
        np.testing.assert_allclose(out, moving, atol=1e-3 * moving.max())


def test_registration_recovers_known_motion(pair, registered):
    fixed, fixed_affine, _, _, true_world = pair
    mask = head_mask(fixed, fixed_affine)
    mean_before, _ = registration_error_mm(np.eye(4), true_world, mask, fixed_affine)
    mean_mm, max_mm = registration_error_mm(registered.world_matrix, true_world, mask, fixed_affine)
    # Measured 0.56 / 1.0 mm (Rigid+Affine) on 2.5 mm voxels; 8.7 mm before registration.
    assert mean_before > 5.0
    assert mean_mm < 1.0 and max_mm < 2.0
    assert registered.similarity_after > registered.similarity_before + 0.5
    assert not registered.diverged


def test_rigid_only_is_repeatable_and_accurate(pair):
    fixed, fixed_affine, moving, moving_affine, true_world = pair
    runs = [
        register_1p5t_to_7t(moving, moving_affine, fixed, fixed_affine, ("Rigid",), threads=1)
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].world_matrix, runs[1].world_matrix)
    rot = runs[0].world_matrix[:3, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-5)  # rigid stays rigid
    mask = head_mask(fixed, fixed_affine)
    mean_mm, _ = registration_error_mm(runs[0].world_matrix, true_world, mask, fixed_affine)
    assert mean_mm < 0.7  # measured 0.40 mm


def test_resample_agrees_with_ants_apply_transforms(pair, registered):
    fixed, fixed_affine, moving, moving_affine, _ = pair
    for order, interp in ((1, "linear"), (3, "bSpline")):
        ref, ref_affine = from_ants(
            ants.apply_transforms(
                to_ants(fixed, fixed_affine),
                to_ants(moving, moving_affine),
                registered.transform_files,
                interpolator=interp,
            )
        )
        ours = resample_to_fixed(
            moving, moving_affine, fixed.shape, fixed_affine, registered.world_matrix, order
        )
        np.testing.assert_allclose(ref_affine, fixed_affine, atol=1e-5)
        assert np.abs(ref - ours).max() < 1e-3 * moving.max()


def test_mutual_information_prefers_alignment(pair):
    fixed, fixed_affine, _, _, _ = pair
    mask = head_mask(fixed, fixed_affine)
    shifted = np.roll(fixed, 4, axis=0)
    assert mutual_information(fixed, fixed, mask) > mutual_information(fixed, shifted, mask)


def _write_stage_inputs(tmp_path, pair):
    fixed, fixed_affine, moving, moving_affine, _ = pair
    paths = {
        "fixed": save_volume(tmp_path / "s1_7T.nii.gz", fixed, fixed_affine),
        "moving": save_volume(tmp_path / "s1_1p5T.nii.gz", moving, moving_affine),
        "mask": save_volume(
            tmp_path / "s1_7T_mask.nii.gz",
            head_mask(fixed, fixed_affine).astype(np.float32),
            fixed_affine,
        ),
        # A smooth multiplicative map on the 1.5T grid, like a bias field.
        "bias": save_volume(
            tmp_path / "s1_1p5T_bias.nii.gz",
            np.exp(np.linspace(-0.2, 0.2, moving.shape[0]))[:, None, None]
            * np.ones(moving.shape, dtype=np.float32),
            moving_affine,
        ),
    }
    return paths


def _run_stage(tmp_path, paths):
    return run_register_stage(
        paths["moving"],
        paths["fixed"],
        paths["mask"],
        {"bias": (str(paths["bias"]), str(tmp_path / "out" / "bias_in7T.nii.gz"))},
        tmp_path / "out" / "1p5T_in7T.nii.gz",
        tmp_path / "out" / "1p5T_to_7T.mat",
        tmp_path / "out" / "qc.json",
        tmp_path / "out" / "qc.png",
        resolve({})["preprocess"]["register"],
        threads=1,
        subject="sub-x",
    )


def test_run_register_stage_files(tmp_path, pair):
    fixed, fixed_affine, _, _, true_world = pair
    paths = _write_stage_inputs(tmp_path, pair)
    qc = _run_stage(tmp_path, paths)
    out = tmp_path / "out"
    world = np.loadtxt(out / "1p5T_to_7T.mat")
    mask = head_mask(fixed, fixed_affine)
    assert registration_error_mm(world, true_world, mask, fixed_affine)[0] < 1.0
    reg, reg_affine = load_volume(out / "1p5T_in7T.nii.gz")
    assert reg.shape == fixed.shape
    np.testing.assert_allclose(reg_affine, fixed_affine, atol=1e-4)
    # The registered 1.5T lines up with the 7T: high correlation inside the brain.
    assert np.corrcoef(reg[mask > 0], fixed[mask > 0])[0, 1] > 0.8
    bias, _ = load_volume(out / "bias_in7T.nii.gz")
    assert bias.shape == fixed.shape and 0.75 < bias[mask > 0].min() < bias[mask > 0].max() < 1.3
    written = json.loads((out / "qc.json").read_text())
    assert written["diverged"] is False and written["similarity_after"] == qc["similarity_after"]
    assert written["subject"] == "sub-x"
    png = (out / "qc.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_diverged_registration_is_reported_and_raises(tmp_path, pair, monkeypatch):
    import sr7t.preprocess.register as register

    # An optimiser that ran away: the stage must see the similarity drop, say so, and stop.
    runaway = rigid((0.0, 0.0, 20.0), (25.0, 0.0, 0.0))
    monkeypatch.setattr(register, "_world_matrix_from_ants", lambda files: runaway)
    paths = _write_stage_inputs(tmp_path, pair)
    with pytest.raises(RuntimeError) as err:
        _run_stage(tmp_path, paths)
    assert str(paths["moving"]) in str(err.value) and str(paths["fixed"]) in str(err.value)
    assert str(err.value).startswith("subject sub-x: ")
    qc = json.loads((tmp_path / "out" / "qc.json").read_text())
    assert qc["diverged"] is True and qc["similarity_after"] < qc["similarity_before"]
    assert not (tmp_path / "out" / "1p5T_in7T.nii.gz").exists()
