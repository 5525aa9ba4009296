"""The deterministic regression UNet: the model a user would pick instead of diffusion.

The same data, architecture and training budget as the final distilled student (its width,
self-attention, learning rate, batch size and the sum of the stages' steps), trained with a
plain mean squared error on the scaled residual. It reuses the denoiser and the whole loop:
the network sees ``x_t = 0`` at ``t = 1``, where v-prediction is exactly ``v = -x0``, so one
deterministic DDIM step from zeros returns its regression (``meta["deterministic"]``).
It answers the evaluation's question "is diffusion worth it here?".
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sr7t.config import per_stage
from sr7t.models.diffusion import Denoiser
from sr7t.train.loop import DiffusionTrainer


class RegressionTrainer(DiffusionTrainer):
    section = "distill"  # the final student's budget and optimiser
    kind = "regression"

    def setup(self) -> None:
        super().setup()  # guidance as the teacher's (and so every student's)
        self.sampling_steps = 1
        self.inference_steps = None
        k = max(int(self.cfg["stages"]), 1)
        self.channels_arch = [int(c) for c in per_stage(self.cfg["channels"], k, True)]
        attention = self.cfg["attention_levels"]
        self.attention_arch = None if attention is None else per_stage(attention, k, True)
        self.test_time_flips = int(per_stage(self.cfg["test_time_flips"], k, False))
        self.test_time_rotations = int(per_stage(self.cfg["test_time_rotations"], k, False))

    @property
    def total_steps(self) -> int:
        steps = self.cfg["steps_per_stage"]
        k = max(int(self.cfg["stages"]), 1)
        return sum(int(per_stage(steps, s, False)) for s in range(1, k + 1))

    def build_trainable(self, n_condition: int) -> nn.Module:
        attention = self.attention_arch
        if attention is None:
            attention = [False] * len(self.channels_arch)
        teacher = self.config["teacher"]  # the students keep its blocks and groups
        arch = {
            "channels": self.channels_arch,
            "attention_levels": [bool(a) for a in attention],
            "num_res_blocks": int(teacher["num_res_blocks"]),
            "norm_num_groups": min(int(teacher["norm_num_groups"]), min(self.channels_arch)),
        }
        return Denoiser(n_condition, arch)

    def loss(self, module: nn.Module, batch: dict, gen: torch.Generator):
        x0, cond = self.x0_cond(batch)
        t = torch.ones(x0.shape[0], device=self.device)
        with self.autocast():
            v = module(torch.zeros_like(x0), cond, t)
        loss = torch.mean((v.float() + x0) ** 2)  # v = -x0 at t = 1 with x_t = 0
        return loss, {"loss_mse": loss.detach()}

    def meta(self) -> dict:
        return {**super().meta(), "deterministic": True}


def train_regression(
    train_files: list[str | Path],
    val_files: list[str | Path],
    cfg: dict,
    out_model: str | Path,
    checkpoint_dir: str | Path,
    metrics_cb=None,
    device=None,
    artifact_cb=None,
) -> dict:
    """Train the regression UNet with the final student's budget; write its bundle.

    ``cfg``: the whole resolved config; ``data`` and ``distill`` are read (the last stage's
    width and attention, the sum of ``steps_per_stage``, ``lr``, ``batch_size``), and the
    teacher's ``num_res_blocks``/``norm_num_groups``/``use_guidance`` (the students keep
    them). Returns the training summary, as :func:`~sr7t.train.teacher.train_teacher`.
    """
    trainer = RegressionTrainer(
        train_files, val_files, cfg, checkpoint_dir, metrics_cb, device, artifact_cb
    )
    return trainer.run(out_model)
