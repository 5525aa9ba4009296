import numpy as np
import pytest

from sr7t.evaluate.contrast import CONTRAST_FITS, fit_intensity
from sr7t.evaluate.metrics import psnr


def _volumes(shape=(24, 20, 16), seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.random(shape)
    mask = np.ones(shape, dtype=bool)
    return ref, mask


def test_isotonic_beats_linear_on_a_monotone_nonlinear_contrast():
    ref, mask = _volumes()
    pred = np.exp(5 * ref)  # monotone, strongly curved
    iso = fit_intensity(pred, ref, mask, kind="isotonic")
    lin = fit_intensity(pred, ref, mask, kind="linear")
    assert psnr(iso, ref, mask, 1.0) > psnr(lin, ref, mask, 1.0) + 20


def test_linear_recovers_an_affine_map_exactly():
    ref, mask = _volumes()
    lin = fit_intensity(3.0 * ref - 2.0, ref, mask, kind="linear")
    assert np.abs(lin - ref).max() < 1e-6
    assert lin.dtype == np.float32


@pytest.mark.parametrize("kind", CONTRAST_FITS)
def test_identical_volumes_map_to_themselves(kind):
    ref, mask = _volumes()
    ref = ref.astype(np.float32)
    fitted = fit_intensity(ref, ref, mask, kind=kind)
    p = psnr(fitted, ref, mask, 1.0)
    assert p == float("inf") or p > 120


def test_isotonic_map_is_monotone_and_ignores_voxels_outside_the_mask():
    ref, mask = _volumes()
    mask[:, :, :4] = False
    pred = ref**2
    pred_out = pred.copy()
    pred_out[~mask] = 1e6 * np.random.default_rng(3).random(int((~mask).sum()))
    a = fit_intensity(pred, ref, mask)
    b = fit_intensity(pred_out, ref, mask)
    assert np.array_equal(a[mask], b[mask])
    # monotone, and clipped to the fitted range outside it
    order = np.argsort(pred_out.ravel())
    assert np.all(np.diff(b.ravel()[order]) >= 0)
    assert b.max() <= ref[mask].max() + 1e-6


def test_fit_is_deterministic():
    ref, mask = _volumes()
    rng = np.random.default_rng(1)
    pred = ref**3 + 0.1 * rng.standard_normal(ref.shape)
    for kind in CONTRAST_FITS:
        assert np.array_equal(
            fit_intensity(pred, ref, mask, kind=kind), fit_intensity(pred, ref, mask, kind=kind)
        )


def test_binned_isotonic_is_within_1e3_of_the_fit_on_every_voxel():
    # 48^3 voxels in 4096 quantile bins (~27 a bin); the real volumes have ~700 a bin
    ref, mask = _volumes((48, 48, 48), seed=2)
    rng = np.random.default_rng(3)
    pred = ref**2 + 0.05 * rng.standard_normal(ref.shape)
    binned = fit_intensity(pred, ref, mask).astype(np.float64)
    full = fit_intensity(pred, ref, mask, n_bins=pred.size).astype(np.float64)
    assert np.sqrt(np.mean((binned - full) ** 2)) < 1e-3
    assert not np.array_equal(binned, full)  # the bins did something


def test_unknown_fit_and_empty_mask_are_errors():
    ref, mask = _volumes()
    with pytest.raises(ValueError, match="unknown intensity fit"):
        fit_intensity(ref, ref, mask, kind="cubic")
    with pytest.raises(ValueError, match="empty"):
        fit_intensity(ref, ref, np.zeros_like(mask))
    bad = ref.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite"):
        fit_intensity(bad, ref, mask)


def test_training_contrast_map_is_the_trainers_map_fitted_one_subject_at_a_time(tmp_path):
    """The bspline_map baseline's map (sr7t.evaluate.run.training_contrast_map) is the one a
    model's meta carries (sr7t.data.contrast.fit_quantile_map) for the same subjects."""
    from sr7t.data.contrast import fit_quantile_map, quantile_map
    from sr7t.data.slices import load_subject
    from sr7t.evaluate.run import training_contrast_map

    rng = np.random.default_rng(3)
    files = []
    for k in range(2):
        t1 = rng.random((8, 9, 7)).astype(np.float32)
        target = (t1**2 * (1.5 + k)).astype(np.float32)  # a monotone contrast change
        mask = np.ones(t1.shape, bool)
        mask[0] = False
        f = tmp_path / f"s{k}.npz"
        np.savez(
            f,
            condition=t1[None],
            channels=np.array(["t1_1p5T"]),
            target=target,
            mask=mask,
            spacing_mm=np.array([1.0, 1.0, 1.0]),
        )
        files.append(str(f))
    subjects = [load_subject(f) for f in files]
    expected = fit_quantile_map(
        [s.t1 for s in subjects], [s.target for s in subjects], [s.mask for s in subjects]
    )
    cmap = training_contrast_map(files)
    assert cmap == expected
    mapped = quantile_map(subjects[0].t1, cmap)
    # monotone: the order of intensities (what the isotonic fit of the metrics sees) is kept
    inside = subjects[0].mask
    order = np.argsort(subjects[0].t1[inside])
    assert np.all(np.diff(mapped[inside][order]) >= -1e-6)
