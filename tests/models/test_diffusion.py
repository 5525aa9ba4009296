import math

import pytest
import torch
from torch import nn

from sr7t.models.bundle import load_bundle, save_bundle
from sr7t.models.diffusion import (
    Denoiser,
    alpha_sigma,
    capture_features,
    ddim_sample,
    ddim_step,
    einsum_attention,
    q_sample,
    v_target,
    x0_eps_from_v,
)

torch.set_num_threads(1)
ARCH = {
    "channels": [8, 16, 16],
    "attention_levels": [False, False, True],
    "num_res_blocks": 1,
    "norm_num_groups": 8,
}


class Oracle(nn.Module):
    """The perfect denoiser for a known x0: v = (alpha_t x_t - x0) / sigma_t."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x_t, cond, t):
        a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
        return torch.where(s > 0, (a * x_t - self.x0) / s.clamp_min(1e-12), -self.x0)


def test_schedule_end_points_and_identities():
    t = torch.linspace(0, 1, 11)
    a, s = alpha_sigma(t)
    torch.testing.assert_close(a**2 + s**2, torch.ones(11))
    assert a[0] == 1 and s[0] == 0 and a[-1] == 0 and s[-1] == 1
    torch.testing.assert_close(a[5], torch.tensor(math.cos(math.pi / 4)))
    x0, eps = torch.randn(11, 1, 4, 4), torch.randn(11, 1, 4, 4)
    x_t = q_sample(x0, t, eps)
    rx0, reps = x0_eps_from_v(x_t, t, v_target(x0, t, eps))
    torch.testing.assert_close(rx0, x0, atol=1e-5, rtol=0)
    torch.testing.assert_close(reps, eps, atol=1e-5, rtol=0)


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_ddim_with_perfect_model_returns_x0(steps):
    x0 = torch.randn(3, 1, 8, 8)
    cond = torch.zeros(3, 2, 8, 8)
    out = ddim_sample(Oracle(x0), cond, steps, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)


def test_ddim_step_per_example_times():
    x0, eps = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    t, s = torch.tensor([0.9, 0.5]), torch.tensor([0.4, 0.25])
    x_s = ddim_step(Oracle(x0), q_sample(x0, t, eps), None, t, s)
    # deterministic DDIM keeps the same eps on the way down
    torch.testing.assert_close(x_s, q_sample(x0, s, eps), atol=1e-5, rtol=0)


def test_sampler_is_deterministic():
    torch.manual_seed(0)
    model = Denoiser(3, ARCH).eval()
    for p in model.unet.out.parameters():  # MONAI zero-initialises the output conv
        nn.init.normal_(p, std=0.1)
    cond = torch.randn(2, 3, 16, 24)
    a = ddim_sample(model, cond, 4)
    b = ddim_sample(model, cond, 4)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    c = ddim_sample(model, cond, 4, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, c)
    assert a.shape == (2, 1, 16, 24) and torch.isfinite(a).all()


def test_feature_capture_shapes():
    model = Denoiser(3, ARCH)
    x = torch.randn(2, 1, 16, 16)
    with capture_features(model) as feats:
        model(x, torch.randn(2, 3, 16, 16), torch.rand(2))
    assert [f.shape[1] for f in feats] == model.feature_channels() == [16, 16, 16, 8]
    assert [f.shape[-1] for f in feats] == [4, 8, 16, 16]
    model(x, torch.randn(2, 3, 16, 16), torch.rand(2))
    assert len(feats) == 4  # hooks removed on exit
    assert model.size_multiple == 4


def test_bundle_round_trip_weights_only(tmp_path):
    torch.manual_seed(1)
    model = Denoiser(5, ARCH)
    meta = {"kind": "teacher", "sampling_steps": 8, "channels": ["t1_1p5T", "x"], "scale": 0.5}
    path = save_bundle(tmp_path / "m.pt", model, meta)
    raw = torch.load(path, weights_only=True)  # no pickled code inside
    assert raw["meta"]["param_count"] == sum(p.numel() for p in model.parameters())
    loaded, meta2 = load_bundle(path, device="cpu")
    assert meta2["architecture"]["n_condition"] == 5 and meta2["sampling_steps"] == 8
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, atol=0, rtol=0)
    x, c, t = torch.randn(1, 1, 8, 8), torch.randn(1, 5, 8, 8), torch.rand(1)
    torch.testing.assert_close(loaded(x, c, t), model.eval()(x, c, t))
    with pytest.raises(TypeError, match="plain Python"):
        save_bundle(tmp_path / "bad.pt", model, {"obj": object()})


def test_v_from_x0_is_the_v_target_on_noised_inputs():
    from sr7t.models.diffusion import v_from_x0

    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(4, 1, 6, 6, generator=g), torch.randn(4, 1, 6, 6, generator=g)
    t = torch.tensor([0.1, 0.4, 0.75, 1.0])
    x_t = q_sample(x0, t, eps)
    torch.testing.assert_close(v_from_x0(x_t, t, x0), v_target(x0, t, eps), atol=1e-5, rtol=0)


def test_fused_attention_gives_the_einsum_path_output():
    torch.manual_seed(0)
    model = Denoiser(2, ARCH).eval()
    with torch.no_grad():  # MONAI zero-initialises the output layer: give every weight a value
        for w in model.parameters():
            w.copy_(torch.randn_like(w) * 0.1)
    blocks = [m for m in model.modules() if hasattr(m, "use_flash_attention")]
    assert blocks and all(m.use_flash_attention for m in blocks)
    x, cond, t = torch.randn(2, 1, 16, 16), torch.randn(2, 2, 16, 16), torch.rand(2)
    with torch.no_grad():
        fused = model(x, cond, t)
        with einsum_attention(model):
            assert not any(m.use_flash_attention for m in blocks)
            plain = model(x, cond, t)
    assert all(m.use_flash_attention for m in blocks)
    assert fused.abs().max() > 0.01
    torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-6)
