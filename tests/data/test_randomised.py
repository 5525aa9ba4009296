"""Randomised training inputs and the model frame: any thick axis, contrast, profile."""

import collections

import numpy as np
import pytest
import torch

from sr7t.config import resolve
from sr7t.data import synth
from sr7t.data.randomised import GEOMETRY_SCALE_MM, RandomisedSliceDataset
from sr7t.data.resolution import slice_spacing_matrix
from sr7t.data.slices import load_subject
from tests.model_phantom import VOXEL_MM, write_phantom_npz

CFG = {"context_slices": 1, "patch_size": 16, "train_slice_mm": [2.0, 8.0]}


def data_config(**changes) -> dict:
    """The resolved ``data`` section: CFG with ``changes``, schema defaults for the rest."""
    return resolve({"data": {**CFG, **changes}})["data"]


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    files = write_phantom_npz(tmp_path_factory.mktemp("rand"), 2)
    return [load_subject(f) for f in files]


def test_box_profile_without_gap_is_the_slice_spacing_matrix():
    m = synth.acquisition_matrix(40, 1.0, 4.0, 4.0, "box", 1.5)
    np.testing.assert_array_equal(m, slice_spacing_matrix(40, 1.0, 4.0, 1.5))


@pytest.mark.parametrize("profile", ["box", "gauss"])
def test_acquisition_keeps_constants_and_removes_fine_detail(profile):
    m = synth.acquisition_matrix(64, 1.0, 5.0, 4.0, profile, 0.7)
    np.testing.assert_allclose(m.sum(1), 1.0)
    stripes = np.cos(np.pi * np.arange(64))  # the finest pattern the grid holds
    assert np.abs(m @ stripes)[8:-8].max() < 0.2  # edge slices hold partial tissue
    smooth = np.sin(2 * np.pi * np.arange(64) / 64)
    assert np.abs(m @ smooth - smooth)[8:-8].max() < 0.1


def test_ventricle_warp_scales_the_centre_and_leaves_the_rim():
    """A sphere of radius 5 mm at the brain's centre comes out 1.5 times as wide with scale
    1.5 and 0.8 times with 0.8; a point 100 mm away does not move."""
    voxel = 1.0
    grid = np.stack(np.meshgrid(*[np.arange(41.0)] * 3, indexing="ij"))
    centre = np.array([20.0, 20.0, 20.0])
    ball = (np.linalg.norm(grid - centre[:, None, None, None], axis=0) <= 5).astype(np.float32)
    for scale in (1.5, 0.8):
        warped = synth.sample(ball, synth.ventricle_warp(grid, centre, scale, voxel))
        profile = warped[:, 20, 20] > 0.5
        radius = profile.sum() / 2
        assert abs(radius - 5 * scale) <= 0.75, (scale, radius)
    far = np.array([120.0, 20.0, 20.0]).reshape(3, 1)
    np.testing.assert_allclose(synth.ventricle_warp(far, centre, 1.6, voxel), far, atol=1e-3)
    np.testing.assert_array_equal(synth.ventricle_warp(grid, centre, 1.0, voxel), grid)


def test_whole_voxel_sampling_is_the_cubic_spline_there():
    """Real examples (unwarped, rounded coordinates) skip the spline inside the grid: the
    same values, edges included; a block reaching beyond the grid is interpolated."""
    rng = np.random.default_rng(1)
    vol = rng.random((10, 12, 14)).astype(np.float32)
    coef = synth.spline_coefficients(vol)
    inside = np.stack([rng.integers(0, n, size=(5, 7, 9)) for n in vol.shape]).astype(float)
    beyond = rng.integers(-3, 16, size=(3, 5, 7, 9)).astype(np.float64)
    for coords in (inside, beyond):
        np.testing.assert_allclose(
            synth.sample_on_grid(vol, coef, coords), synth.sample_cubic(coef, coords), atol=1e-5
        )
    np.testing.assert_array_equal(
        synth.sample_on_grid(vol, coef, inside), vol[tuple(inside.astype(int))]
    )


def test_cubic_resampling_keeps_what_linear_blurs():
    """On the grid the cubic sampler returns the volume itself; half a voxel off and back it
    loses much less detail than linear interpolation (which averages neighbours)."""
    rng = np.random.default_rng(0)
    from scipy import ndimage

    # anatomy-like: detail down to a couple of voxels
    vol = ndimage.gaussian_filter(rng.random((16, 16, 16)), 1.0).astype(np.float32)
    grid = np.stack(np.meshgrid(*[np.arange(16.0)] * 3, indexing="ij"))
    coef = synth.spline_coefficients(vol)
    np.testing.assert_allclose(synth.sample_cubic(coef, grid), vol, atol=1e-4)
    half = grid + 0.5
    inner = (slice(4, -4),) * 3
    lin = synth.sample(synth.sample(vol, half), grid - 0.5)
    cub_half = synth.sample_cubic(coef, half)
    cub = synth.sample_cubic(synth.spline_coefficients(cub_half), grid - 0.5)
    err_lin = np.abs(lin - vol)[inner].mean()
    err_cub = np.abs(cub - vol)[inner].mean()
    assert err_cub < 0.6 * err_lin, (err_cub, err_lin)


def test_fine_inplane_fraction_leaves_the_plane_at_the_grid():
    rng = np.random.default_rng(0)
    cfg = {"fine_fraction": 0.0, "gap_fraction": [0.0, 0.3], "fine_inplane_fraction": 1.0}
    draws = [synth.draw_acquisition(rng, [1.0, 7.0], [1.0, 2.5], 1.2, cfg) for _ in range(50)]
    assert all(a.inplane_mm == 1.2 for a in draws)
    assert len({a.slice_mm for a in draws}) == 50  # the slices are still drawn
    cfg["fine_inplane_fraction"] = 0.5
    draws = [synth.draw_acquisition(rng, [1.0, 7.0], [1.0, 2.5], 1.2, cfg) for _ in range(400)]
    share = np.mean([a.inplane_mm == 1.2 for a in draws])
    assert 0.4 < share < 0.6, share


def test_random_contrast_is_monotone_and_normalised():
    x = np.linspace(0, 1.4, 200)
    for seed in range(10):
        y = synth.random_contrast(np.random.default_rng(seed), x, (0.6, 1.7))
        assert np.all(np.diff(y) >= -1e-6)
        assert synth.random_contrast(np.random.default_rng(seed), np.array(1.0), (0.6, 1.7)) == (
            pytest.approx(1.0, abs=1e-5)
        )


def test_examples_are_a_function_of_index_and_cover_every_axis(subjects):
    ds = RandomisedSliceDataset(subjects, data_config(), seed=3)
    again = RandomisedSliceDataset(subjects, data_config(), seed=3)
    for i in (0, 7, 21):
        a, b = ds[i], again[i]
        assert all(torch.equal(a[k], b[k]) for k in a)
    items = [ds[i] for i in range(80)]
    axes = collections.Counter(int(e["origin"][1]) for e in items)
    assert set(axes) == {0, 1, 2}
    e = items[0]
    assert e["cond"].shape == (ds.n_condition, 16, 16)
    assert ds.n_condition == 3 + 4 + 2  # input planes, guidance, geometry
    # the geometry channels carry the drawn spacing; the base is the centre input plane
    for e in items:
        assert float(e["cond"][-2, 0, 0]) == pytest.approx(float(e["slice_mm"]) / GEOMETRY_SCALE_MM)
        assert 2.0 - 1e-6 <= float(e["slice_mm"]) <= 8.0 + 1e-6
        assert torch.equal(e["base"][0], e["cond"][1])
        assert torch.isfinite(e["cond"]).all() and torch.isfinite(e["target"]).all()


def test_slice_power_weights_thick_spacings_and_zero_is_the_uniform_draw():
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    assert [a.uniform(1.2, 7.0) for _ in range(50)] == [
        synth.draw_spacing(b, 1.2, 7.0, 0.0) for _ in range(50)
    ]
    rng = np.random.default_rng(0)
    s = np.array([synth.draw_spacing(rng, 1.2, 7.0, 1.0) for _ in range(40000)])
    assert s.min() >= 1.2 and s.max() <= 7.0
    near = [np.mean(np.abs(s - c) < 0.5) for c in (3.0, 6.0)]
    assert near[1] / near[0] == pytest.approx(2.0, rel=0.1)  # density proportional to s
    assert synth.draw_spacing(rng, 4.0, 4.0, 1.0) == 4.0


@pytest.mark.parametrize("real_fraction", [0.0, 0.25, 0.5])
def test_balanced_thick_axes_give_each_axis_a_third_of_all_examples(real_fraction):
    """Real examples are thick along z; balanced draws leave the simulated ones z only as
    often as that share leaves room for (none above a third), uniform draws do not."""
    rng = np.random.default_rng(0)
    n = 30000
    for balanced, z_share in ((True, max(1 / 3, real_fraction)), (False, None)):
        real = rng.random(n) < real_fraction
        axes = np.where(
            real, 2, [synth.draw_thick_axis(rng, real_fraction, balanced) for _ in real]
        )
        share = np.bincount(axes, minlength=3) / n
        if balanced:
            assert share[2] == pytest.approx(z_share, abs=0.015)
            assert share[0] == pytest.approx(share[1], abs=0.015)
        else:
            assert share[2] == pytest.approx(real_fraction + (1 - real_fraction) / 3, abs=0.015)


def test_balanced_dataset_draws_x_and_y_more_often_than_uniform(subjects):
    counts = {}
    for balanced in (False, True):
        cfg = data_config(synth={"real_fraction": 0.5, "balance_thick_axes": balanced})
        ds = RandomisedSliceDataset(subjects, cfg, seed=0)
        counts[balanced] = collections.Counter(int(ds[i]["origin"][1]) for i in range(60))
    assert counts[True][2] < counts[False][2]  # z: a half at most against two thirds


def test_synthetic_input_is_blurred_along_the_plane_last_axis(subjects):
    """In the model frame the thick axis is the last image axis: the input loses more detail
    along it than along the other, for coarse draws."""
    synth_cfg = {"real_fraction": 0.0, "inplane_mm": [VOXEL_MM, VOXEL_MM], "noise": [0, 0]}
    synth_cfg["bias_log"] = 0.0
    cfg = data_config(patch_size=24, train_slice_mm=[8.0, 8.0], synth=synth_cfg)
    ds = RandomisedSliceDataset(subjects, cfg, seed=0)
    along_t, along_a = [], []
    for i in range(40):
        base = ds[i]["base"][0].numpy()
        along_t.append(np.abs(np.diff(base, 2, axis=1)).mean())
        along_a.append(np.abs(np.diff(base, 2, axis=0)).mean())
    assert np.mean(along_t) < 0.5 * np.mean(along_a)


def test_real_fraction_one_uses_the_paired_scan_along_z(subjects):
    ds = RandomisedSliceDataset(subjects, data_config(synth={"real_fraction": 1.0}), seed=0)
    for i in range(10):
        e = ds[i]
        assert int(e["origin"][1]) == 2 and int(e["origin"][3]) == 1
        assert float(e["slice_mm"]) >= subjects[0].native_slice_mm - 1e-6


def test_axis_aligned_warps_keep_the_block_axes_on_source_axes():
    """Without rotation and shear (and no displacement) a line along any block axis keeps
    the other two source coordinates: a scan's slices stay along the block's thick axis. The
    spacing the block sees is the source's over the block's step along each source axis."""
    cfg = {
        "rotation_deg": 15.0,
        "shear": 0.08,
        "scale": [0.8, 1.25],
        "deform_mm": 0.0,
        "ventricle_scale": [1.0, 1.0],
    }
    frame = (0, 1, 2)  # n, a, thick = x, y, z
    for seed in range(5):
        rng = np.random.default_rng(seed)
        coords = synth.sampling_coords(
            rng, np.zeros(3), (5, 8, 9), frame, 1.0, synth.axis_aligned(cfg)
        )
        for j in range(3):
            for other in {0, 1, 2} - {j}:
                assert np.ptp(coords[other], axis=j).max() < 1e-9
        steps = [abs(float(np.diff(coords[j], axis=j).mean())) for j in range(3)]
        assert all(0.8 - 1e-9 <= st <= 1.25 + 1e-9 for st in steps)
        np.testing.assert_allclose(
            synth.spacing_in_block([2.4, 2.4, 4.0], coords, frame),
            np.array([2.4, 2.4, 4.0]) / steps,
        )
        tilted = synth.sampling_coords(
            np.random.default_rng(seed), np.zeros(3), (5, 8, 9), frame, 1.0, cfg
        )
        assert np.ptp(tilted[0], axis=2).max() > 1e-3  # the full warp turns them
    rng = np.random.default_rng(0)
    plain = synth.sampling_coords(rng, np.zeros(3), (4, 5, 6), (2, 0, 1), 1.0, cfg, warp=False)
    # unwarped: the spacing permuted to the block's axes
    np.testing.assert_allclose(synth.spacing_in_block([1.0, 2.0, 4.0], plain, (2, 0, 1)), [4, 1, 2])


def test_warped_real_examples_move_input_and_target_together(subjects):
    """``warp_real``: the real 1.5T examples are warped (other voxels than unwarped, thick
    along z as acquired) with input and target alike (as well matched as unwarped), and the
    geometry channels carry the 1.5T's slice spacing as the warped block sees it."""
    plain = RandomisedSliceDataset(subjects, data_config(synth={"real_fraction": 1.0}), seed=4)
    cfg = data_config(synth={"real_fraction": 1.0, "warp_real": True})
    warped = RandomisedSliceDataset(subjects, cfg, seed=4)
    match = {"plain": [], "warped": []}
    spacings = []
    for i in range(16):
        p, w = plain[i], warped[i]
        assert int(w["origin"][1]) == 2 and int(w["origin"][3]) == 1
        assert not torch.equal(p["target"], w["target"])
        for name, e in (("plain", p), ("warped", w)):
            m = e["mask"][0] > 0
            if int(m.sum()) > 20:
                match[name].append(np.corrcoef(e["target"][0][m], e["base"][0][m])[0, 1])
        assert float(w["cond"][-2, 0, 0]) == pytest.approx(float(w["slice_mm"]) / GEOMETRY_SCALE_MM)
        spacings.append(float(w["slice_mm"]))
    assert np.mean(match["warped"]) > np.mean(match["plain"]) - 0.05, match
    # the 4 mm slices seen through a scale in [0.85, 1.15] and the re-acquisitions
    assert min(spacings) >= 4.0 / 1.15 - 0.2 and len(set(spacings)) > 8


def test_input_contrast_target_differs_from_the_input_only_by_the_acquisition(subjects):
    """With ``target_contrast: input`` the target is the input's own contrast and bias: with
    no noise and an acquisition at the grid's resolution, input and target are nearly equal;
    with the 7T target they are not (the random contrast)."""
    synth_cfg = {
        "real_fraction": 0.0,
        "inplane_mm": [VOXEL_MM, VOXEL_MM],
        "noise": [0, 0],
        "gap_fraction": [0.0, 0.0],
    }
    fine = [VOXEL_MM, VOXEL_MM]
    same = data_config(train_slice_mm=fine, synth={**synth_cfg, "target_contrast": "input"})
    other = data_config(train_slice_mm=fine, synth={**synth_cfg, "target_contrast": "7T"})
    ds_same, ds_other = (
        RandomisedSliceDataset(subjects, same),
        RandomisedSliceDataset(subjects, other),
    )
    gaps_same, gaps_other = [], []
    for i in range(12):
        e, f = ds_same[i], ds_other[i]
        m = e["mask"] > 0
        gaps_same.append(float(torch.abs(e["target"] - e["base"])[m].mean()))
        gaps_other.append(float(torch.abs(f["target"] - f["base"])[m].mean()))
    # what is left is the Gaussian profile's blur at one voxel
    assert np.mean(gaps_same) < 0.02, gaps_same
    assert np.mean(gaps_same) < 0.2 * np.mean(gaps_other), (gaps_same, gaps_other)


def test_datasets_on_the_same_subjects_share_what_they_derive(tmp_path):
    """The real 1.5T's targets and the spline coefficients are made once per subject and
    process (the teacher builds two datasets), and the examples do not change for it."""
    own = [load_subject(f) for f in write_phantom_npz(tmp_path, 2)]
    cfg = data_config(synth={"real_fraction": 0.5, "target_contrast": "input"})
    first = RandomisedSliceDataset(own, cfg, seed=5)
    items = [first[i] for i in range(12)]
    assert {"real_target", "spline_target"} <= set(own[0].derived) | set(own[1].derived)
    made = {id(v) for s in own for v in s.derived.values()}
    second = RandomisedSliceDataset(own, cfg, seed=5)
    for i, a in enumerate(items):
        b = second[i]
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert {id(v) for s in own for v in s.derived.values()} == made
    fresh = RandomisedSliceDataset(
        [load_subject(f) for f in write_phantom_npz(tmp_path, 2)], cfg, seed=5
    )
    assert all(torch.equal(items[3][k], fresh[3][k]) for k in items[3])
    assert "derived" not in dict(own[0])  # not one of the npz's keys


def test_real_input_contrast_target_is_the_7t_mapped_to_the_paired_scan(subjects):
    """For the real 1.5T, the input-contrast target is the 7T on the 1.5T's intensities:
    closer to the 1.5T than the 7T is (what remains is the 1.5T's thick slices and noise), and
    the examples' targets are drawn from it."""
    cfg = data_config(synth={"real_fraction": 1.0, "target_contrast": "input"})
    ds = RandomisedSliceDataset(subjects, cfg)
    s = subjects[0]
    m = s.mask > 0
    mapped = ds.real_target(0)
    rms = lambda a: float(np.sqrt(np.mean((a[m] - s.t1[m]) ** 2)))  # noqa: E731
    assert rms(mapped) < 0.7 * rms(s.target)
    e = ds[0]
    k = int(e["origin"][0])
    assert float(e["target"].max()) <= float(ds.real_target(k).max()) + 1e-5
    assert not torch.allclose(e["target"], torch.zeros_like(e["target"]))


@pytest.mark.parametrize("interpolation", ["linear", "cubic"])
def test_fine_examples_are_the_target_itself_without_noise(subjects, interpolation):
    """``fine_fraction: 1``: every example is acquired at the grid's resolution; without noise
    the input in the input's contrast is exactly the target, whatever the interpolation."""
    synth_cfg = {"real_fraction": 0.0, "fine_fraction": 1.0, "noise": [0, 0]}
    cfg = data_config(interpolation=interpolation, synth={**synth_cfg, "target_contrast": "input"})
    ds = RandomisedSliceDataset(subjects, cfg)
    for i in range(4):
        e = ds[i]
        assert float(e["slice_mm"]) == pytest.approx(VOXEL_MM)
        np.testing.assert_allclose(e["base"].numpy(), e["target"].numpy(), atol=1e-5)


def test_cubic_interpolation_is_closer_to_the_target_than_linear(subjects):
    """The same acquisitions brought back with a cubic B-spline lie closer to the target."""
    synth_cfg = {"real_fraction": 0.0, "noise": [0, 0], "target_contrast": "input"}
    errors = {}
    for interpolation in ("linear", "cubic"):
        cfg = data_config(interpolation=interpolation, train_slice_mm=[4.0, 6.0], synth=synth_cfg)
        ds = RandomisedSliceDataset(subjects, cfg)
        errors[interpolation] = np.mean(
            [float(((ds[i]["base"] - ds[i]["target"]) ** 2).mean()) for i in range(16)]
        )
    assert errors["cubic"] < errors["linear"]
