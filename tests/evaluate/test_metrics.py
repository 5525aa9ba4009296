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
