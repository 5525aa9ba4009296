import torch
from torch import nn

from sr7t.models.cost import inference_cost, macs_per_evaluation
from sr7t.models.diffusion import Denoiser

ARCH = {
    "channels": [8, 16],
    "attention_levels": [False, False],
    "num_res_blocks": 1,
    "norm_num_groups": 8,
}


def test_macs_scale_with_plane_area_steps_and_width():
    model = Denoiser(3, ARCH)
    small = macs_per_evaluation(model, (16, 16))
    big = macs_per_evaluation(model, (32, 32))
    # 4x the voxels: 4x the convolution work, more for the middle block's self-attention
    # (quadratic in tokens), a little less for the per-plane time embedding
    assert 4.0 < big / small < 5.0
    # padded to the size multiple like inference: 15x15 costs what 16x16 does
    assert macs_per_evaluation(model, (15, 15)) == small
    cost = inference_cost(model, 8, (16, 16))
    assert cost["macs_per_slice"] == 8 * small and cost["evaluations_per_slice"] == 8
    narrow = Denoiser(3, {**ARCH, "channels": [8, 8]})
    assert macs_per_evaluation(narrow, (16, 16)) < 0.6 * small


def test_macs_of_one_convolution_match_the_hand_count():
    class OneConv(nn.Module):
        # the interface macs_per_evaluation needs: arch, size_multiple, forward(x, cond, t)
        arch = {"n_condition": 2}
        size_multiple = 1

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 5, 3, padding=1)

        def forward(self, x, cond, t):
            return self.conv(torch.cat([x, cond], 1))

    assert macs_per_evaluation(OneConv(), (10, 12)) == 10 * 12 * 5 * 3 * 3 * 3
