"""Any input geometry: thick axis from the header, the model frame, the refined output grid."""

import nibabel as nib
import numpy as np
import pytest
import torch

from sr7t.models.diffusion import Denoiser
from sr7t.models.predict import predict_volume
from sr7t.predict import acquisition_geometry, refined_grid, upsample


def _oblique(spacing, angle_deg=20.0, flip_x=True):
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    if flip_x:
        rot = np.diag([-1.0, 1.0, 1.0]) @ rot  # LPS-like handedness
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = [10.0, -20.0, 5.0]
    return affine


@pytest.mark.parametrize("thick", [0, 1, 2])
def test_geometry_names_the_thick_axis(thick):
    spacing = [1.0, 1.0, 1.0]
    spacing[thick] = 5.0
    g = acquisition_geometry(_oblique(spacing))
    assert g["thick_axis"] == thick
    assert g["slice_mm"] == pytest.approx(5.0) and g["inplane_mm"] == pytest.approx(1.0)
    iso = acquisition_geometry(_oblique([2.0, 2.0, 2.0]))
    assert iso["thick_axis"] == 2 and iso["slice_mm"] == pytest.approx(2.0)


def test_refined_grid_keeps_the_field_of_view_to_the_voxel_edges():
    shape, affine = (20, 16, 9), _oblique([1.0, 1.2, 4.0])
    new_shape, new_affine, f = refined_grid(shape, affine, 1.0)
    assert new_shape == (20, 19, 36)

    def edges(sh, aff):  # world positions of the outer voxel corners
        corners = np.array(
            [
                [i, j, k]
                for i in (-0.5, sh[0] - 0.5)
                for j in (-0.5, sh[1] - 0.5)
                for k in (-0.5, sh[2] - 0.5)
            ]
        )
        return nib.affines.apply_affine(aff, corners)

    np.testing.assert_allclose(edges(new_shape, new_affine), edges(shape, affine), atol=1e-9)
    # a linear ramp stays a ramp in world space (no shift of the content)
    ramp = np.broadcast_to(np.arange(9, dtype=np.float32), shape)
    up = upsample(ramp, new_shape)
    centre_old = nib.affines.apply_affine(affine, [0, 0, 4])
    k = np.argmin(np.abs(np.arange(36) - (4 + 0.5) * 36 / 9 + 0.5))
    assert up[0, 0, k] == pytest.approx(4.0, abs=0.2)
    assert np.linalg.norm(nib.affines.apply_affine(new_affine, [0, 0, k]) - centre_old) < 1.5
    # cubic: the same ramp, and a smooth curve closer than linear
    np.testing.assert_allclose(upsample(ramp, new_shape, 3), up, atol=1e-4)
    fine_pos = (np.arange(36) + 0.5) * 9 / 36 - 0.5
    curve = np.broadcast_to(np.sin(np.arange(9) / 2.0).astype(np.float32), shape)
    truth = np.sin(np.clip(fine_pos, 0, 8) / 2.0)
    errors = [np.abs(upsample(curve, new_shape, o)[0, 0] - truth).max() for o in (1, 3)]
    assert errors[1] < 0.25 * errors[0]


def test_thick_axis_moves_the_frame_exactly():
    """Predicting a volume thick along x equals predicting its axes-swapped copy thick along z."""
    torch.manual_seed(0)
    meta = {
        "channels": ["t1_1p5T"],
        "use_guidance": False,
        "slice_axis": [0, 1],
        "context_slices": 1,
        "sampling_steps": 2,
        "residual_scale": 0.3,
        "geometry_channels": True,
    }
    model = Denoiser(
        3 + 2,
        {
            "channels": [8, 8],
            "attention_levels": [False, False],
            "num_res_blocks": 1,
            "norm_num_groups": 4,
        },
    )
    rng = np.random.default_rng(0)
    vol = rng.random((1, 12, 8, 10)).astype(np.float32)
    kw = dict(progress=False, slice_mm=4.0, inplane_mm=1.0)
    along_x = predict_volume(model, meta, vol, thick_axis=0, **kw)
    moved = np.moveaxis(vol, 1, 3)  # (C, Y, Z, X): x last
    along_z = predict_volume(model, meta, moved, thick_axis=2, **kw)
    np.testing.assert_allclose(along_x, np.moveaxis(along_z, 2, 0), atol=1e-5)
    assert along_x.shape == vol.shape[1:]
    with pytest.raises(ValueError, match="slice_mm"):
        predict_volume(model, meta, vol, progress=False)
