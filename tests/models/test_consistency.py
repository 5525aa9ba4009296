import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_phantom import CHANNELS, phantom_arrays  # noqa: E402

from sr7t.data.resolution import simulate_slice_spacing  # noqa: E402
from sr7t.models.consistency import enforce_slice_means, slice_means_operator  # noqa: E402
from sr7t.models.predict import predict_volume, slice_consistency, with_consistency  # noqa: E402

torch.set_num_threads(1)
VOXEL = 1.2


def smooth_volume(seed: int, shape=(6, 5, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return gaussian_filter(rng.normal(size=shape), 1.5) * 5.0


@pytest.mark.parametrize(("slice_mm", "offset_mm"), [(6.0, 0.0), (4.0, 1.7), (2.5, 0.0)])
def test_the_output_gets_the_acquired_slice_means(slice_mm, offset_mm):
    """Every slice wholly on the line: the corrected output's box means are the truth's
    (recovered from the interpolated input alone); a consistent volume is left as it is."""
    truth = smooth_volume(0)
    acquired = simulate_slice_spacing(truth, VOXEL, slice_mm, axis=2, offset_mm=offset_mm, order=3)
    pred = truth + smooth_volume(1) * 0.3
    out = enforce_slice_means(pred, acquired, VOXEL, slice_mm, offset_mm)
    _, means, inside = slice_means_operator(truth.shape[2], VOXEL, slice_mm, offset_mm)
    assert inside.sum() >= 3 and not inside.all()  # the ends' partial slices are left free
    wanted = truth.reshape(-1, 40) @ means[inside].T
    before = pred.reshape(-1, 40) @ means[inside].T
    after = out.reshape(-1, 40) @ means[inside].T
    assert np.abs(before - wanted).max() > 0.05
    np.testing.assert_allclose(after, wanted, atol=1e-4)
    np.testing.assert_allclose(
        enforce_slice_means(truth, acquired, VOXEL, slice_mm, offset_mm), truth, atol=1e-4
    )


def test_weight_and_smoothing_scale_the_correction():
    truth = smooth_volume(2)
    acquired = simulate_slice_spacing(truth, VOXEL, 6.0, axis=2, order=3)
    pred = truth + smooth_volume(3) * 0.3
    full = enforce_slice_means(pred, acquired, VOXEL, 6.0)
    half = enforce_slice_means(pred, acquired, VOXEL, 6.0, weight=0.5)
    np.testing.assert_allclose(half - pred, 0.5 * (full - pred), atol=1e-5)
    unchanged = enforce_slice_means(pred, acquired, VOXEL, 6.0, weight=0)
    np.testing.assert_array_equal(unchanged, pred.astype(np.float32))
    smoothed = enforce_slice_means(pred, acquired, VOXEL, 6.0, smooth_voxels=1.0)
    expected = pred + gaussian_filter(full - pred, (1.0, 1.0, 0.0), mode="nearest")
    np.testing.assert_allclose(smoothed, expected, atol=1e-5)
    # an input at the grid's own spacing has nothing to be consistent with
    fine = enforce_slice_means(pred, pred, VOXEL, VOXEL)
    np.testing.assert_array_equal(fine, pred.astype(np.float32))


def test_the_weight_is_a_plan_entry_checked_before_use():
    assert slice_consistency({}) == 0.0  # bundles from before it: off
    assert with_consistency({"a": 1}, None) == {"a": 1}
    assert slice_consistency(with_consistency({}, 0.5)) == 0.5
    with pytest.raises(ValueError, match="slice_consistency must lie in"):
        with_consistency({}, 1.5)


META = {
    "kind": "teacher",
    "channels": CHANNELS,
    "use_guidance": True,
    "slice_axis": [0, 1],
    "context_slices": 1,
    "sampling_steps": 2,
    "residual_scale": 0.5,
    "train_slice_mm": [3.0, 6.0],
}


@pytest.mark.parametrize("thick_axis", [2, 0])
def test_with_consistency_a_region_is_still_the_whole_volume_prediction(thick_axis):
    """Each plane holds its whole line along the thick axis, so the correction of a box is
    the whole volume's, and it changes the prediction."""
    from test_predict import random_denoiser

    model = random_denoiser()
    cond, _, _ = phantom_arrays(0, shape=(13, 10, 24))
    if thick_axis == 0:
        cond = np.ascontiguousarray(np.swapaxes(cond, 1, 3))
    meta = {**META, "slice_consistency": 1.0}
    kw = {"progress": False, "thick_axis": thick_axis, "slice_mm": 4.8, "inplane_mm": VOXEL}
    kw |= {"voxel_mm": VOXEL, "slice_offset_mm": 1.2}
    whole = predict_volume(model, meta, cond, **kw)
    region = [slice(2, 9), slice(3, 7), slice(4, 10)]
    region[thick_axis] = slice(5, 20)
    part = predict_volume(model, meta, cond, region=tuple(region), **kw)
    np.testing.assert_allclose(part, whole[tuple(region)], atol=1e-5)
    plain = predict_volume(model, {**meta, "slice_consistency": 0.0}, cond, **kw)
    assert np.abs(whole - plain).max() > 1e-3
    with pytest.raises(ValueError, match="voxel size"):
        predict_volume(model, meta, cond, **{**kw, "voxel_mm": None})
