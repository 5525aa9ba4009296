"""What a model costs at inference: network evaluations and multiply-accumulates per slice."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from sr7t.models.diffusion import Denoiser, einsum_attention


@torch.no_grad()
def macs_per_evaluation(model: Denoiser, plane_shape: tuple[int, int]) -> int:
    """Multiply-accumulates of ONE network evaluation on one plane of ``plane_shape`` voxels.

    ``plane_shape`` (H, W) is padded up to the UNet's size multiple as inference does. Counted
    by PyTorch's ``FlopCounterMode`` on a CPU copy (convolutions, matmuls, attention; element-
    wise operations and normalisation are not counted), MACs = FLOPs / 2. Attention is counted
    through MONAI's einsum path (the same arithmetic): the counter does not see torch's fused
    CPU attention kernel.
    """
    mult = model.size_multiple
    h, w = (int(s) + (-int(s)) % mult for s in plane_shape)
    n_cond = int(model.arch["n_condition"])
    device = next(model.parameters()).device
    x = torch.zeros(1, 1, h, w, device=device)
    cond = torch.zeros(1, n_cond, h, w, device=device)
    t = torch.full((1,), 0.5, device=device)
    was_training = model.training
    model.eval()
    with einsum_attention(model), FlopCounterMode(display=False) as counter:
        model(x, cond, t)
    model.train(was_training)
    return int(counter.get_total_flops()) // 2


def inference_cost(model: Denoiser, sampling_steps: int, plane_shape: tuple[int, int]) -> dict:
    """Cost of super-resolving one plane: ``evaluations_per_slice`` (= sampling steps:
    deterministic DDIM evaluates the network once per step), ``macs_per_evaluation`` and
    ``macs_per_slice`` (their product), for planes of ``plane_shape`` voxels. (The parameter
    count is the bundle's ``param_count``.)"""
    per_eval = macs_per_evaluation(model, plane_shape)
    return {
        "evaluations_per_slice": int(sampling_steps),
        "macs_per_evaluation": per_eval,
        "macs_per_slice": per_eval * int(sampling_steps),
    }
