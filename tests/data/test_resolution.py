import numpy as np
import pytest
import torch

from sr7t.data.resolution import (
    simulate_slice_spacing,
    simulate_slice_spacing_torch,
    slice_spacing_matrix,
)

torch.set_num_threads(1)


@pytest.fixture
def volume():
    return np.random.default_rng(0).normal(size=(6, 7, 40)).astype(np.float32)


def test_constant_stays_constant():
    vol = np.full((5, 4, 33), 3.25, dtype=np.float32)
    for slice_mm, offset in [(2.0, 0.0), (3.0, 0.0), (4.7, 1.1), (9.0, 8.5)]:
        out = simulate_slice_spacing(vol, 1.0, slice_mm, offset_mm=offset)
        np.testing.assert_allclose(out, 3.25, rtol=1e-6)


def test_voxel_sized_slices_are_identity(volume):
    out = simulate_slice_spacing(volume, 2.0, 2.0)
    np.testing.assert_allclose(out, volume, atol=1e-6)
    assert out.dtype == np.float32 and out.shape == volume.shape


def test_box_profile_exact_at_slice_centres(volume):
    # slices 3 voxels thick, first centred on voxel 0: slice k averages voxels 3k-1..3k+1
    out = simulate_slice_spacing(volume, 1.0, 3.0)
    for k in range(1, 13):
        np.testing.assert_allclose(
            out[..., 3 * k], volume[..., 3 * k - 1 : 3 * k + 2].mean(-1), atol=1e-5
        )
    # between centres: linear interpolation of the neighbouring slices
    mid = (out[..., 3] * 2 + out[..., 6]) / 3
    np.testing.assert_allclose(out[..., 4], mid, atol=1e-5)


def test_high_frequency_energy_drops_with_slice_mm(volume):
    def hf_energy(v):
        spec = np.abs(np.fft.rfft(v, axis=2)) ** 2
        return spec[..., spec.shape[-1] // 4 :].sum()

    energies = [hf_energy(simulate_slice_spacing(volume, 1.0, s)) for s in (1.0, 2.0, 3.0, 5.0)]
    assert all(a > b for a, b in zip(energies, energies[1:], strict=False))
    assert energies[-1] < 0.1 * energies[0]


def test_in_plane_untouched(volume):
    # varies only in-plane: unchanged; and each z line is processed independently
    plane = np.random.default_rng(1).normal(size=(6, 7, 1)).astype(np.float32)
    flat_z = np.repeat(plane, 40, axis=2)
    np.testing.assert_allclose(simulate_slice_spacing(flat_z, 1.0, 4.0), flat_z, atol=1e-5)
    out = simulate_slice_spacing(volume, 1.0, 4.0)
    perm = np.random.default_rng(2).permutation(6)
    np.testing.assert_allclose(simulate_slice_spacing(volume[perm], 1.0, 4.0), out[perm])
    np.testing.assert_allclose(out.mean(axis=2), volume.mean(axis=2), atol=0.15)


def test_other_axis(volume):
    out = simulate_slice_spacing(np.moveaxis(volume, 2, 0), 1.0, 4.0, axis=0)
    np.testing.assert_allclose(np.moveaxis(out, 0, 2), simulate_slice_spacing(volume, 1.0, 4.0))


def test_torch_matches_numpy(volume):
    for slice_mm, offset in [(2.5, 0.0), (4.0, 1.3)]:
        ref = simulate_slice_spacing(volume, 1.0, slice_mm, offset_mm=offset)
        got = simulate_slice_spacing_torch(torch.from_numpy(volume), 1.0, slice_mm, -1, offset)
        np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)


def test_rows_sum_to_one_and_finer_than_grid_rejected():
    for offset in (0.0, 0.7, 2.9):
        m = slice_spacing_matrix(17, 1.5, 4.0, offset)
        np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-12)
        assert (m >= 0).all()
    with pytest.raises(ValueError, match="finer"):
        slice_spacing_matrix(10, 2.0, 1.0)


def test_bspline_back_interpolation_keeps_constants_and_the_slice_samples():
    from sr7t.data.resolution import simulate_slice_spacing

    rng = np.random.default_rng(3)
    vol = rng.random((4, 5, 37)).astype(np.float32)
    const = np.full_like(vol, 2.5)
    np.testing.assert_allclose(simulate_slice_spacing(const, 2.0, 6.0, order=3), 2.5, rtol=1e-6)
    linear = simulate_slice_spacing(vol, 2.0, 6.0)
    cubic = simulate_slice_spacing(vol, 2.0, 6.0, order=3)
    # both interpolants pass through the slice samples at the slice centres (every 3rd voxel)
    np.testing.assert_allclose(cubic[..., ::3], linear[..., ::3], atol=1e-5)
    assert np.abs(cubic - linear).max() > 1e-3  # and differ between them
    np.testing.assert_allclose(simulate_slice_spacing(vol, 2.0, 2.0, order=3), vol, atol=1e-6)
