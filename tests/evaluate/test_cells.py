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
