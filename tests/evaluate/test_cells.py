"""The evaluation's cells: simulated inputs along any axis, same region and truth for all."""

import numpy as np
import pytest

from sr7t.evaluate.cells import Cell, cell_input, context_voxels, eval_cells, roi
from sr7t.evaluate.run import cell_label, tissue_cell, uncertainty_error_correlation

CFG = {"resolutions_mm": [2.0, 4.0], "axes": [0, 1, 2], "isotropic": True, "pipeline": True}


def _subject(shape=(24, 20, 22)):
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = sum(g * g for g in grid) < 0.8
    texture = rng.random(shape).astype(np.float32)
    truth7 = np.where(mask, 0.5 + 0.5 * texture, 0.0).astype(np.float32)
    truth15 = np.where(mask, 0.3 + 0.4 * texture, 0.0).astype(np.float32)
    arrays = {
        "condition": np.stack([truth15, np.zeros(shape, np.float32)]),
        "mask": mask.astype(np.uint8),
        "target": truth7,
        "affine": np.eye(4),
        "spacing_mm": np.array([1.0, 1.0, 1.0]),
        "native_slice_mm": 3.0,
        "native_spacing_mm": np.array([2.0, 2.0, 3.0]),
    }
    truth = {"truth_7T": truth7, "truth_1p5T": truth15, "mask": mask}
    return arrays, truth


def test_cells_cover_every_axis_spacing_and_the_pipeline():
    cells = eval_cells("s", True, CFG, native_slice_mm=3.0)
    sim = [c for c in cells if c.kind == "sim" and c.axis >= 0]
    assert len(sim) == 3 * 2 and {c.axis for c in sim} == {0, 1, 2}
    assert [c.axis for c in cells if c.kind == "sim" and c.axis < 0] == [-1]
    # the pipeline input is never finer than the scan was acquired
    assert [c.slice_mm for c in cells if c.kind == "pipeline"] == [3.0, 4.0]
    coarse = eval_cells("s", True, CFG, native_slice_mm=4.0)  # 2 and 4 mm: one cell
    assert [c.slice_mm for c in coarse if c.kind == "pipeline"] == [4.0]
    assert all(c.kind == "pipeline" for c in eval_cells("s", False, CFG, 3.0))
    assert cell_label(Cell("s", "sim", 0, 4.0)) == "sim-x-4mm"
    assert cell_label(Cell("s", "sim", -1, 0.0)) == "sim-iso"
    assert tissue_cell(cells) == Cell("s", "sim", 2, 4.0)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_sim_input_is_thick_along_its_axis_only(axis):
    arrays, truth = _subject()
    inp = cell_input(Cell("s", "sim", axis, 4.0), arrays, truth, noise=0.0)
    assert inp["thick_axis"] == axis and inp["slice_mm"] == 4.0 and inp["inplane_mm"] == 1.0
    t1, mask = inp["t1"], truth["mask"]
    roughness = [
        np.abs(np.diff(t1, 2, axis=a))[tuple(slice(4, -4) for _ in range(3))].mean()
        for a in range(3)
    ]
    others = [r for a, r in enumerate(roughness) if a != axis]
    assert roughness[axis] < 0.5 * min(others)
    # normalised like predict: the 99th percentile in the brain is 1
    assert np.percentile(t1[mask], 99) == pytest.approx(1.0, rel=1e-3)
    assert inp["reference"] is not None and inp["mask"].dtype == bool


def test_iso_cell_is_the_noisy_truth_and_noise_is_seeded():
    arrays, truth = _subject()
    a = cell_input(Cell("s", "sim", -1, 0.0), arrays, truth, noise=0.05)
    b = cell_input(Cell("s", "sim", -1, 0.0), arrays, truth, noise=0.05)
    np.testing.assert_array_equal(a["t1"], b["t1"])
    np.testing.assert_array_equal(a["t1"], a["bspline"])
    clean = cell_input(Cell("s", "sim", -1, 0.0), arrays, truth, noise=0.0)
    assert 0 < np.abs(a["t1"] - clean["t1"])[truth["mask"]].mean() < 0.2


def test_pipeline_cell_uses_the_real_input_and_the_truth():
    arrays, truth = _subject()
    inp = cell_input(Cell("s", "pipeline", 2, 4.0), arrays, truth, noise=0.0)
    assert inp["thick_axis"] == 2 and inp["inplane_mm"] == 2.0
    np.testing.assert_array_equal(inp["reference"], truth["truth_7T"])
    no_truth = cell_input(Cell("s", "pipeline", 2, 4.0), arrays, None, noise=0.0)
    np.testing.assert_array_equal(no_truth["reference"], arrays["target"])


def test_roi_is_a_centred_box_of_the_asked_size():
    mask = np.zeros((40, 40, 40), bool)
    mask[10:30, 8:32, 12:28] = True
    box = roi(mask, np.array([1.0, 1.0, 2.0]), 10.0)
    assert [b.stop - b.start for b in box] == [10, 10, 6]
    assert roi(mask, np.ones(3), None) == (slice(0, 40),) * 3
    grown = roi(mask, np.ones(3), 10.0, margin=3)
    assert [b.stop - b.start for b in grown] == [16, 16, 16]


def test_context_is_whole_volume_by_default_and_millimetres_per_axis_otherwise():
    mask = np.zeros((40, 40, 40), bool)
    mask[10:30, 8:32, 12:28] = True
    spacing = np.array([1.0, 1.0, 2.0])
    whole = roi(mask, spacing, 10.0, context_voxels({"context_mm": None}, spacing))
    assert whole == (slice(0, 40),) * 3
    four = context_voxels({"context_mm": 4.0}, spacing)
    assert four.tolist() == [4, 4, 2]
    assert [b.stop - b.start for b in roi(mask, spacing, 10.0, four)] == [18, 18, 10]


def test_uncertainty_correlation_sees_a_spread_that_tracks_the_error():
    rng = np.random.default_rng(1)
    ref = rng.random((16, 16, 16)).astype(np.float32)
    mask = np.ones(ref.shape, bool)
    err_scale = rng.random(ref.shape).astype(np.float32)
    mean = ref + err_scale * rng.choice([-0.3, 0.3], ref.shape)
    good = uncertainty_error_correlation(mean, err_scale, ref, mask)
    blind = uncertainty_error_correlation(mean, rng.random(ref.shape), ref, mask)
    assert good > 0.5 and abs(blind) < 0.1


def test_stress_cells_come_along_every_axis_as_their_own_input_kind():
    cfg = {**CFG, "stress": ["gauss", "thick8"], "stress_mm": 4.0}
    cells = eval_cells("s", True, cfg, native_slice_mm=3.0)
    stressed = [c for c in cells if c.stress]
    assert [(c.stress, c.axis, c.slice_mm) for c in stressed] == [
        ("gauss", 0, 4.0), ("gauss", 1, 4.0), ("gauss", 2, 4.0),
        ("thick8", 0, 8.0), ("thick8", 1, 8.0), ("thick8", 2, 8.0),
    ]  # fmt: skip
    assert {c.input_kind for c in stressed} == {"stress-gauss", "stress-thick8"}
    assert cell_label(stressed[0]) == "stress-gauss-x-4mm"
    # the main protocol's cells and the tissue cell do not move
    assert [c for c in cells if not c.stress] == eval_cells("s", True, CFG, 3.0)
    assert tissue_cell(cells) == Cell("s", "sim", 2, 4.0)
    assert not [c for c in eval_cells("s", False, cfg, 3.0) if c.stress]  # no truth: none
    with pytest.raises(ValueError, match="unknown 'blur'"):
        eval_cells("s", True, {**cfg, "stress": ["blur"]}, 3.0)


def test_the_schema_offers_every_stress_and_no_other():
    from importlib.resources import files

    import yaml

    from sr7t.evaluate.cells import STRESS

    schema = yaml.safe_load((files("sr7t") / "schemas" / "config.schema.yaml").read_text())
    offered = schema["properties"]["evaluate"]["properties"]["stress"]["items"]["enum"]
    assert offered == list(STRESS)


def _stressed(name, axis=2, noise=0.0, arrays_truth=None):
    arrays, truth = arrays_truth or _subject()
    spacing = 4.0 if name != "thick8" else 8.0
    return cell_input(Cell("s", "sim", axis, spacing, name), arrays, truth, noise=noise)


def _box(axis):
    return cell_input(Cell("s", "sim", axis, 4.0), *_subject(), noise=0.0)


@pytest.mark.parametrize("name", ["gauss", "offset", "gap", "inplane"])
def test_each_acquisition_stress_changes_the_input_and_keeps_it_thick(name):
    inp, box = _stressed(name), _box(2)
    assert inp["thick_axis"] == 2 and inp["slice_mm"] == 4.0
    assert not np.allclose(inp["t1"], box["t1"], atol=1e-3)
    assert np.array_equal(inp["reference"], box["reference"])
    assert np.array_equal(inp["mask"], box["mask"])
    assert inp["inplane_mm"] == (2.5 if name == "inplane" else 1.0)
    # where the slices lie, for the models' slice consistency: half a slice on, or none
    assert inp["slice_offset_mm"] == (2.0 if name == "offset" else 0.0)
    assert box["slice_offset_mm"] == 0.0


def test_a_gap_keeps_more_detail_than_a_full_box_and_the_inplane_stress_blurs_in_plane():
    truth = _subject()[1]["truth_1p5T"]
    inner = (slice(4, -4),) * 3

    def err(inp):
        return np.abs(inp["t1"] - truth / np.percentile(truth, 99))[inner].mean()

    gap, gauss, box = _stressed("gap"), _stressed("gauss"), _box(2)
    # thinner slices average less of the texture away from each slice centre
    assert (
        np.abs(np.diff(gap["t1"], axis=2))[inner].mean()
        > np.abs(np.diff(box["t1"], axis=2))[inner].mean()
    )
    assert err(gauss) > 0  # a real change, scored below
    inplane = _stressed("inplane")
    for axis in (0, 1):
        rough = np.abs(np.diff(inplane["t1"], axis=axis))[inner].mean()
        assert rough < 0.7 * np.abs(np.diff(box["t1"], axis=axis))[inner].mean()


def test_contrast_bias_and_noise_stresses_change_the_intensities_as_named():
    box = _box(2)
    mask = box["mask"]
    # slices as fine as the grid, no noise: the input is the truth to the power 0.5
    arrays, truth = _subject()
    fine = cell_input(Cell("s", "sim", 2, 1.0, "contrast"), arrays, truth, noise=0.0)
    root = np.sqrt(truth["truth_1p5T"])
    root /= np.percentile(root[mask], 99)
    np.testing.assert_allclose(fine["t1"][mask], root[mask], rtol=2e-3, atol=2e-3)
    contrast = _stressed("contrast")
    assert np.abs(contrast["t1"] - box["t1"])[mask].mean() > 0.05
    bias = _stressed("bias")
    ratio = bias["t1"][mask] / np.maximum(box["t1"][mask], 1e-3)
    assert 1.1 < ratio.max() / ratio.min() < 1.28**2 * 1.05
    quiet = _stressed("gauss", noise=0.0)
    loud = _stressed("noise", noise=0.0)  # its own sigma, whatever evaluate.noise says
    assert np.std(loud["t1"][mask] - quiet["t1"][mask]) > 0.01
    again = _stressed("noise", noise=0.0)
    assert np.array_equal(loud["t1"], again["t1"])  # seeded per subject, stress and axis


def test_thick8_is_thick_along_each_axis():
    for axis in range(3):
        inp = _stressed("thick8", axis=axis)
        assert inp["thick_axis"] == axis and inp["slice_mm"] == 8.0


def test_a_stress_cell_on_an_anisotropic_grid_is_refused_by_name():
    arrays, truth = _subject()
    arrays["spacing_mm"] = np.array([1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="isotropic grid"):
        cell_input(Cell("s", "sim", 2, 4.0, "gauss"), arrays, truth, noise=0.0)
