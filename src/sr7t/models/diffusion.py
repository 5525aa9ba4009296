"""Conditional residual denoiser, v-prediction with a continuous cosine schedule, DDIM sampling.

Notation (Salimans & Ho 2022): data ``x0`` (the scaled residual ``(7T - 1.5T) / scale``), noise
``eps ~ N(0, 1)``, time ``t`` in [0, 1], ``alpha_t = cos(pi t / 2)``, ``sigma_t = sin(pi t / 2)``,
``x_t = alpha_t x0 + sigma_t eps``. The network predicts ``v = alpha_t eps - sigma_t x0``, so
``x0 = alpha_t x_t - sigma_t v`` and ``eps = sigma_t x_t + alpha_t v``.
"""

from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext

import torch
from monai.networks.nets import DiffusionModelUNet
from torch import nn

# MONAI's UNet embeds timesteps sinusoidally and its schedulers count 0..999: feed t * 1000.
MONAI_TIMESTEPS = 1000.0
# The architecture every Denoiser is given in full (from the config's teacher/distill sections).
ARCH_KEYS = ("channels", "attention_levels", "num_res_blocks", "norm_num_groups")


def alpha_sigma(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine schedule: ``(cos(pi t / 2), sin(pi t / 2))``, exact at t = 0 and t = 1."""
    a = torch.cos(0.5 * math.pi * t)
    s = torch.sin(0.5 * math.pi * t)
    # cos(pi/2) is 6e-17 in floating point; make the end points exact.
    a = torch.where(t >= 1, torch.zeros_like(a), a)
    s = torch.where(t <= 0, torch.zeros_like(s), s)
    return a, s


def _bcast(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``x_t = alpha_t x0 + sigma_t eps``; ``t`` has shape (B,)."""
    a, s = alpha_sigma(t)
    return _bcast(a, x0) * x0 + _bcast(s, x0) * noise


def v_target(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """``v = alpha_t eps - sigma_t x0``."""
    a, s = alpha_sigma(t)
    return _bcast(a, x0) * noise - _bcast(s, x0) * x0


def v_from_x0(x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The ``v`` whose ``x0`` is ``x0`` at ``x_t``: ``(alpha_t x_t - x0) / sigma_t`` (t > 0);
    on ``x_t = q_sample(x0, t, eps)`` it is :func:`v_target`."""
    a, s = alpha_sigma(t)
    return (_bcast(a, x_t) * x_t - x0) / _bcast(s, x_t)


def x0_eps_from_v(
    x_t: torch.Tensor, t: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Recover ``(x0, eps)`` from the noisy input and a v prediction."""
    a, s = alpha_sigma(t)
    a, s = _bcast(a, x_t), _bcast(s, x_t)
    return a * x_t - s * v, s * x_t + a * v


class Denoiser(nn.Module):
    """MONAI ``DiffusionModelUNet`` (2-D) predicting v for the residual, given the condition.

    ``forward(x_t (B,1,H,W), cond (B,Ccond,H,W), t (B,) in [0,1]) -> v (B,1,H,W)``. H and W
    must be multiples of :attr:`size_multiple`.
    """

    def __init__(self, n_condition: int, arch: dict):
        super().__init__()
        missing = [k for k in ARCH_KEYS if k not in arch]
        if missing:
            raise ValueError(f"Denoiser architecture {arch} lacks {missing}")
        self.arch = {
            "n_condition": int(n_condition),
            "channels": [int(c) for c in arch["channels"]],
            "attention_levels": [bool(a) for a in arch["attention_levels"]],
            "num_res_blocks": int(arch["num_res_blocks"]),
            "norm_num_groups": int(arch["norm_num_groups"]),
        }
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=1 + self.arch["n_condition"],
            out_channels=1,
            channels=self.arch["channels"],
            attention_levels=self.arch["attention_levels"],
            num_res_blocks=self.arch["num_res_blocks"],
            norm_num_groups=self.arch["norm_num_groups"],
            # torch's fused attention: the same outputs (to 5e-7 on the demo teacher) at 1.6-2.3x
            # the inference speed of MONAI's einsum + softmax on CPU; training steps about as
            # fast (benchmarks/attention.py)
            use_flash_attention=True,
        )

    @property
    def size_multiple(self) -> int:
        return 2 ** (len(self.arch["channels"]) - 1)

    def forward(self, x_t: torch.Tensor, cond: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(torch.cat([x_t, cond], dim=1), t * MONAI_TIMESTEPS)

    def feature_layers(self) -> list[nn.Module]:
        """Modules whose outputs are matched in distillation: the middle block and each decoder
        (up) block, coarse to fine."""
        return [self.unet.middle_block, *self.unet.up_blocks]

    def feature_channels(self) -> list[int]:
        """Channel count of each :meth:`feature_layers` output."""
        ch = self.arch["channels"]
        return [ch[-1], *reversed(ch)]


@contextmanager
def einsum_attention(model: nn.Module):
    """Inside the block, ``model``'s attention runs MONAI's einsum + softmax path instead of
    torch's fused kernel (the same arithmetic): what torch's FLOP counter can see, and the
    reference the fused kernel is measured against."""
    fused = [m for m in model.modules() if getattr(m, "use_flash_attention", False)]
    for m in fused:
        m.use_flash_attention = False
    try:
        yield
    finally:
        for m in fused:
            m.use_flash_attention = True


@contextmanager
def capture_features(model: Denoiser):
    """Collect the outputs of ``model.feature_layers()`` with forward hooks.

    Usage: ``with capture_features(m) as feats: m(x, c, t)``; ``feats`` is then a list of
    tensors (B, C_i, H_i, W_i), coarse to fine, filled during the pass (cleared on entry).
    """
    feats: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        feats.append(output[0] if isinstance(output, tuple) else output)

    handles = [m.register_forward_hook(hook) for m in model.feature_layers()]
    try:
        yield feats
    finally:
        for h in handles:
            h.remove()


def _time(t: float | torch.Tensor, b: int, device) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t.to(device=device, dtype=torch.float32).expand(b) if t.ndim == 0 else t.to(device)
    return torch.full((b,), float(t), device=device, dtype=torch.float32)


def ddim_step(
    model: nn.Module,
    x_t: torch.Tensor,
    cond: torch.Tensor,
    t: float | torch.Tensor,
    s: float | torch.Tensor,
) -> torch.Tensor:
    """One deterministic DDIM step from time ``t`` to time ``s < t``.

    ``t``, ``s``: scalars in [0, 1] or per-example tensors (B,). Returns x_s (B, 1, H, W).
    """
    b = x_t.shape[0]
    tt, ss = _time(t, b, x_t.device), _time(s, b, x_t.device)
    v = model(x_t, cond, tt).float()
    x0, eps = x0_eps_from_v(x_t.float(), tt, v)
    a_s, s_s = alpha_sigma(ss)
    return _bcast(a_s, x0) * x0 + _bcast(s_s, x0) * eps


@torch.no_grad()
def sampler_path(
    model: nn.Module,
    cond: torch.Tensor,
    noise: torch.Tensor,
    i: torch.Tensor,
    n: int,
    start: str = "zero",
    autocast=nullcontext,
) -> torch.Tensor:
    """Where ``model``'s own deterministic ``n``-step DDIM, started at ``t = 1`` from zeros
    (``start`` ``zero``) or from ``noise``, stands at ``t = i / n`` (``i``: per example,
    1..n), with no gradient: each step runs only on the examples still on their way
    (``i < k``). ``model`` returns v (wrap a model that returns more)."""
    x = torch.zeros_like(noise) if start == "zero" else noise.clone()
    if x.shape[0] == 0:
        return x
    for k in range(n, int(i.min()), -1):  # the step k/n -> (k-1)/n
        rows = torch.nonzero(i < k).squeeze(1)
        with autocast():
            stepped = ddim_step(model, x[rows], cond[rows], k / n, (k - 1) / n)
        x = x.index_copy(0, rows, stepped.to(x.dtype))
    return x


@torch.no_grad()
def ddim_sample(
    model: nn.Module,
    cond: torch.Tensor,
    steps: int,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Deterministic DDIM from t = 1 to t = 0 over ``steps`` uniform steps.

    ``cond``: (B, Ccond, H, W). Starts from ``noise`` (B, 1, H, W) if given, else from noise
    drawn with ``generator`` (a fixed seed-0 generator if None, so repeated calls agree).
    Returns x0 (B, 1, H, W), float32, in the model's scaled-residual units.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    b, _, h, w = cond.shape
    if noise is None:
        if generator is None:
            generator = torch.Generator(device="cpu").manual_seed(0)
        noise = torch.randn((b, 1, h, w), generator=generator, device="cpu")
    x = noise.to(device=cond.device, dtype=torch.float32)
    for k in range(steps, 0, -1):
        x = ddim_step(model, x, cond, k / steps, (k - 1) / steps)
    return x


def param_count(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
