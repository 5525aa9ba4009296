import numpy as np
import torch
from monai.metrics import SSIMMetric

from sr7t.evaluate.metrics import all_metrics, psnr, ssim, ssim_map


def test_identical_volumes_are_perfect(phantom):
    mask = np.ones_like(phantom, dtype=np.uint8)
    m = all_metrics(phantom, phantom, mask)
    assert m["psnr"] == float("inf") and abs(m["ssim"] - 1) < 1e-9 and m["nmse"] == 0


def test_psnr_matches_its_definition(phantom):
    mask = (phantom > 0.2).astype(np.uint8)
    noisy = phantom + 0.05
    drange = float(phantom[mask > 0].max() - phantom[mask > 0].min())
    assert abs(psnr(noisy, phantom, mask, drange) - 10 * np.log10(drange**2 / 0.05**2)) < 1e-4


def test_ssim_agrees_with_monai_on_full_mask(phantom):
    rng = np.random.default_rng(1)
    noisy = (phantom + 0.05 * rng.standard_normal(phantom.shape)).astype(np.float32)
    drange = float(phantom.max() - phantom.min())
    # MONAI uses a valid convolution (no borders): compare on the same interior voxels
    ours = float(ssim_map(noisy, phantom, drange)[5:-5, 5:-5, 5:-5].mean())
    ref = SSIMMetric(
        spatial_dims=3, data_range=drange, kernel_type="gaussian", win_size=11, kernel_sigma=1.5
    )(torch.from_numpy(noisy)[None, None], torch.from_numpy(phantom)[None, None]).item()
    # MONAI scales (co)variances by N/(N-1): close, not identical
    assert abs(ours - ref) < 0.01
    assert ours < 0.99
    assert ssim(noisy, phantom, np.ones_like(phantom), drange) < ours  # noisy borders count


def test_metrics_only_see_the_mask(phantom):
    mask = np.zeros_like(phantom, dtype=np.uint8)
    mask[8:24, 8:28, 8:22] = 1
    other = phantom.copy()
    other[mask == 0] += 100.0
    assert all_metrics(other, phantom, mask)["nmse"] == 0


# --- the contrast-neutral yardstick (resolution_metrics and its parts) ---------------------

from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402

from sr7t.evaluate.contrast import fit_intensity  # noqa: E402
from sr7t.evaluate.metrics import (  # noqa: E402
    METRIC_NAMES,
    contrast_neutral_metrics,
    gmsd,
    gradient_magnitude,
    hfen,
    laplacian_of_gaussian,
    resolution_metrics,
    scale_reference,
    striping,
    striping_ratio,
)


def _noisy(phantom, sigma=0.05, seed=1):
    rng = np.random.default_rng(seed)
    return (phantom + sigma * rng.standard_normal(phantom.shape)).astype(np.float64)


def test_psnr_agrees_with_scikit_image(phantom):
    ref = phantom.astype(np.float64)
    noisy = _noisy(phantom)
    ours = psnr(noisy, ref, np.ones_like(ref), 1.0)
    theirs = peak_signal_noise_ratio(ref, noisy, data_range=1.0)
    assert abs(ours - theirs) < 1e-9


def test_ssim_agrees_with_scikit_image_away_from_borders(phantom):
    ref = phantom.astype(np.float64)
    noisy = _noisy(phantom)
    theirs = structural_similarity(
        ref,
        noisy,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    # scikit-image averages the map without the 5-voxel border its 11-tap window spills over
    interior = np.zeros_like(ref, dtype=bool)
    interior[5:-5, 5:-5, 5:-5] = True
    assert abs(ssim(noisy, ref, interior, 1.0) - theirs) < 1e-9
    assert theirs < 0.99  # the noise matters: the comparison is not between two ones


def test_resolution_metrics_psnr_ssim_match_scikit_image_on_the_fitted_volume(phantom):
    mask = np.ones_like(phantom, dtype=bool)
    pred = 3.0 * _noisy(phantom) + 2.0  # another scanner's scale and offset
    ref = scale_reference(phantom, mask).astype(np.float64)
    fitted = fit_intensity(pred, ref, mask, kind="linear").astype(np.float64)
    m = resolution_metrics(pred, phantom, mask, fit="linear")
    assert tuple(m) == METRIC_NAMES
    assert abs(m["psnr"] - peak_signal_noise_ratio(ref, fitted, data_range=1.0)) < 1e-3
    interior = np.zeros_like(mask)
    interior[5:-5, 5:-5, 5:-5] = True
    whole = structural_similarity(
        ref,
        fitted,
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert abs(ssim(fitted, ref, interior, 1.0) - whole) < 1e-3


def test_scale_reference_puts_the_99th_percentile_at_one(phantom):
    mask = phantom > 0.2
    scaled = scale_reference(7.0 * phantom, mask)
    assert abs(np.percentile(scaled[mask], 99) - 1.0) < 1e-5
    assert scaled.dtype == np.float32


def test_hfen_is_zero_for_identical_and_for_offsets_one_for_doubled(phantom):
    mask = np.zeros_like(phantom, dtype=bool)
    mask[6:-6, 6:-6, 6:-6] = True
    assert hfen(phantom, phantom, mask) == 0.0
    # the Laplacian of Gaussian is linear in the volume and blind to a constant
    assert hfen(phantom + 0.7, phantom, mask) < 1e-6
    assert abs(hfen(2.0 * phantom, phantom, mask) - 1.0) < 1e-6
    assert abs(hfen(np.full_like(phantom, 0.5), phantom, mask) - 1.0) < 1e-6
    assert hfen(_noisy(phantom), phantom, mask) > 0.1


def test_laplacian_of_gaussian_of_a_ramp_is_zero_and_of_a_parabola_is_its_curvature():
    x = np.arange(16, dtype=np.float64)[:, None, None] * np.ones((16, 5, 5))
    # the kernel reaches 6 voxels (4 sigma): the reflected borders bend the ramp there
    assert np.abs(laplacian_of_gaussian(3.0 * x + 1.0, 1.5)[6:-6]).max() < 1e-9
    # d2/dx2 of x^2 is 2 (Gaussian blur keeps it; the truncated taps lose ~0.2%)
    assert np.allclose(laplacian_of_gaussian(x**2, 1.5)[7:9], 2.0, atol=0.01)


def test_gradient_magnitude_is_twice_the_slope_of_a_ramp():
    ramp = 0.05 * np.arange(10, dtype=np.float64)[:, None, None] * np.ones((10, 8, 6))
    assert np.allclose(gradient_magnitude(ramp)[1:-1, 1:-1, 1:-1], 0.1)


def test_gmsd_against_a_hand_computation():
    # ref: ramp of slope s along axis 0. pred equals it for y < 6 and is flat for y >= 6.
    # At P (y=2) GMS = 1; at Q (y=9) pred has no gradient: GMS = c / (g^2 + c), g = 2 s.
    s, c = 0.05, 0.0026
    ref = s * np.arange(10, dtype=np.float64)[:, None, None] * np.ones((10, 12, 8))
    pred = ref.copy()
    pred[:, 6:, :] = 0.3
    mask = np.zeros_like(ref, dtype=bool)
    mask[4, 2, 4] = mask[4, 9, 4] = True
    q = c / ((2 * s) ** 2 + c)
    assert abs(gmsd(pred, ref, mask) - (1 - q) / 2) < 1e-12
    assert gmsd(ref, ref, mask) == 0.0


def test_striping_of_alternating_planes_and_of_a_ramp():
    shape = (10, 6, 5)
    a = 0.25
    sign = (-1.0) ** np.arange(shape[2])
    alternating = a * sign[None, None, :] * np.ones(shape)
    mask = np.ones(shape, dtype=bool)
    assert abs(striping(alternating, mask, axis=2) - 4 * a) < 1e-12
    assert striping(alternating, mask, axis=0) == 0.0  # constant across the other planes
    ramp = np.arange(shape[2], dtype=np.float64)[None, None, :] * np.ones(shape)
    assert striping(ramp, mask, axis=2) == 0.0


def test_striping_counts_only_voxels_with_both_neighbours_in_the_mask():
    vol = np.zeros((3, 3, 7))
    vol[:, :, 3] = 1.0  # one bright plane: second differences -2 at z=3, +1 at z=2 and z=4
    mask = np.zeros_like(vol, dtype=bool)
    mask[:, :, 2:5] = True  # only z=3 has both neighbours inside
    assert striping(vol, mask, axis=2) == 2.0
    with np.testing.assert_raises(ValueError):
        striping(vol, mask[:, :, ::-1] & (np.arange(7) == 0), axis=2)


def test_striping_ratio_against_a_hand_computation():
    # ref curves with second difference 2k; pred adds planes alternating +-a with 4a > 2k,
    # so |2k +- 4a| averages to 4a over an even number of centre planes: ratio 2a / k.
    k, a = 0.01, 0.05
    z = np.arange(12, dtype=np.float64)
    ref = (k * z**2)[None, None, :] * np.ones((4, 4, 12))
    pred = ref + a * ((-1.0) ** z)[None, None, :]
    mask = np.ones_like(ref, dtype=bool)
    assert abs(striping_ratio(pred, ref, mask, axis=2) - 2 * a / k) < 1e-9
    assert striping_ratio(ref, ref, mask, axis=2) == 1.0


def test_resolution_metrics_forgive_monotone_contrast_but_not_blur(phantom):
    mask = phantom > 0.2
    ref = scale_reference(phantom, mask)
    same = resolution_metrics(phantom, phantom, mask)
    assert same["psnr"] > 100 and abs(same["ssim"] - 1) < 1e-6 and same["hfen"] < 1e-6
    assert same["gmsd"] < 1e-6
    # a monotone, nonlinear contrast change costs (almost) nothing
    curved = resolution_metrics(np.sqrt(np.clip(ref, 0, None)) * 5 + 1, phantom, mask)
    assert curved["psnr"] > 50
    from scipy.ndimage import gaussian_filter

    blurred = resolution_metrics(gaussian_filter(phantom, 1.5), phantom, mask)
    assert blurred["psnr"] < curved["psnr"] - 10
    assert blurred["hfen"] > 0.1 > 1e3 * curved["hfen"]
    assert blurred["gmsd"] > 1e3 * curved["gmsd"]
    assert blurred["ssim"] < curved["ssim"]


def test_contrast_neutral_metrics_shows_the_cost_of_a_linear_map(phantom):
    mask = phantom > 0.2
    ref = scale_reference(phantom, mask)
    m = contrast_neutral_metrics(np.exp(4 * ref), phantom, mask)
    assert set(m) == {*METRIC_NAMES, "psnr_linear", "ssim_linear"}
    assert m["psnr"] > m["psnr_linear"] + 10
    assert m["ssim"] >= m["ssim_linear"]
