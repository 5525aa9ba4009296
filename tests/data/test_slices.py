import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_phantom import NATIVE_SLICE_MM, VOXEL_MM, write_phantom_npz  # noqa: E402

from sr7t.config import resolve  # noqa: E402
from sr7t.data.resolution import simulate_slice_spacing  # noqa: E402
from sr7t.data.slices import (  # noqa: E402
    SliceDataset,
    condition_planes,
    estimate_residual_scale,
    load_subject,
    n_condition_channels,
)

torch.set_num_threads(1)
CFG = resolve(
    {
        "data": {
            "inputs": "paired",
            "interpolation": "linear",
            "slice_axis": 1,
            "context_slices": 1,
            "patch_size": 16,
            "train_slice_mm": [3.0, 8.0],
        }
    }
)["data"]


@pytest.fixture(scope="module")
def subjects(tmp_path_factory):
    files = write_phantom_npz(tmp_path_factory.mktemp("npz"), 2)
    return [load_subject(f) for f in files]


def test_example_shapes_and_channels(subjects):
    ds = SliceDataset(subjects, CFG, use_guidance=True, seed=3)
    ex = ds[0]
    assert ds.n_condition == n_condition_channels(4, 1, True) == 7
    assert ex["cond"].shape == (7, 16, 16)
    for k in ("base", "target", "mask"):
        assert ex[k].shape == (1, 16, 16) and ex[k].dtype == torch.float32
    torch.testing.assert_close(ex["base"], ex["cond"][1:2])  # centre of the 3 t1 planes
    no_guide = SliceDataset(subjects, {**CFG, "context_slices": 2}, use_guidance=False)
    assert no_guide[0]["cond"].shape == (5, 16, 16) and no_guide.n_condition == 5


def test_examples_are_a_function_of_index(subjects):
    a = SliceDataset(subjects, CFG, seed=1)
    b = SliceDataset(subjects, CFG, seed=1)
    for i in (0, 5, 123456789):
        for k in ("cond", "target", "slice_mm"):
            torch.testing.assert_close(a[i][k], b[i][k], rtol=0, atol=0)
    assert not torch.equal(a[0]["cond"], a[1]["cond"])


def test_patches_are_on_brain_and_spacing_in_range(subjects):
    ds = SliceDataset(subjects, CFG, seed=0)
    spacings = []
    for i in range(40):
        ex = ds[i]
        assert float(ex["mask"].mean()) >= 0.1
        spacings.append(float(ex["slice_mm"]))
    # never finer than the native 4 mm even though the range starts at 3 mm
    assert min(spacings) >= NATIVE_SLICE_MM and max(spacings) <= 8.0
    assert max(spacings) - min(spacings) > 2.0


def test_redegraded_plane_matches_volume_degradation(subjects):
    cfg = {**CFG, "patch_size": 64, "train_slice_mm": [6.0, 6.0]}
    ds = SliceDataset(subjects, cfg, seed=0)
    for i in range(3):
        ex = ds[i]
        k, axis, index, a, z = ex["origin"].tolist()
        assert float(ex["slice_mm"]) == 6.0
        s = subjects[k]
        vol = simulate_slice_spacing(s.t1, VOXEL_MM, 6.0, offset_mm=float(ex["offset_mm"]))
        plane = np.take(vol, index, axis=axis)
        # the 64-wide patch holds the whole plane, placed so that (a, z) is at (32, 32)
        got = ex["base"][0].numpy()[
            32 - a : 32 - a + plane.shape[0], 32 - z : 32 - z + plane.shape[1]
        ]
        np.testing.assert_allclose(got, plane, atol=1e-5)
        target = np.take(s.target, index, axis=axis)
        got_t = ex["target"][0].numpy()[
            32 - a : 32 - a + plane.shape[0], 32 - z : 32 - z + plane.shape[1]
        ]
        np.testing.assert_array_equal(got_t, target)


def test_condition_planes_whole_slices(subjects):
    s = subjects[0]
    planes = condition_planes(s.t1, s.guidance, axis=0, indices=[0, 5], context_slices=1)
    assert planes.shape == (2, 3 + 4, s.t1.shape[1], s.t1.shape[2])
    np.testing.assert_array_equal(planes[0, 0], s.t1[0])  # clamped at the edge
    np.testing.assert_array_equal(planes[1, 0], s.t1[4])
    np.testing.assert_array_equal(planes[1, 2], s.t1[6])
    np.testing.assert_array_equal(planes[1, 3], s.guidance[0, 5])
    cor = condition_planes(s.t1, None, axis=1, indices=[3], context_slices=0)
    np.testing.assert_array_equal(cor[0, 0], s.t1[:, 3])


def test_rejects_axial_planes_and_missing_target(subjects):
    with pytest.raises(ValueError, match="slice_axis"):
        SliceDataset(subjects, {**CFG, "slice_axis": 2})
    s = subjects[0]
    no_target = type(s)(**{**s.__dict__, "target": None})
    with pytest.raises(ValueError, match="target"):
        SliceDataset([no_target], CFG)


def test_residual_scale(subjects):
    scale = estimate_residual_scale(subjects)
    res = np.concatenate([(s.target - s.t1)[s.mask] for s in subjects])
    assert scale == pytest.approx(2 * res.std())


def test_paired_inputs_refuse_a_cubic_grid_interpolation(subjects):
    with pytest.raises(ValueError, match="data.interpolation"):
        SliceDataset(subjects, {**CFG, "interpolation": "cubic"})
