"""One progressive-distillation stage (Salimans & Ho 2022) with feature guidance.

The student learns to reproduce, in ONE deterministic DDIM step from ``t`` to ``t - 1/N``,
what its parent does in TWO steps (``t -> t - 1/(2N) -> t - 1/N``), where ``N`` is the
student's number of sampling steps (half the parent's). With ``x''`` the parent's result, the
student's target is the ``x0~`` for which a DDIM step lands on ``x''``::

    x0~ = (x'' - (sigma_t'' / sigma_t) x_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)

expressed as a v target ``v~ = (alpha_t x_t - x0~) / sigma_t`` (v-MSE = "SNR+1" weighting of
the x0 error). Feature guidance adds ``feature_weight`` times the mean over layers of the
normalised MSE between the parent's middle/decoder feature maps (hooked during its first
pass at ``(x_t, t)``) and the student's, mapped to the parent's widths by 1x1 convolutions.
``data_weight`` adds the ordinary diffusion loss against the real 7T at the same ``x_t``
(knowledge distillation with the hard labels kept; 0 is pure progressive distillation).
``parent_steps`` 1 replaces the parent's two steps by its one step over the same interval
(plain knowledge distillation of the parent's own estimate; README § Benchmarks: worse).

``on_path`` (per stage) trains the student on the inputs its own sampler gives it: at
``t = k / N`` its ``x_t`` is where its deterministic DDIM, started as the plan says (zeros for
``sampling_start: zero``, else the example's noise), stands after ``N - k`` of its own steps
(no gradient through them), instead of the 7T noised to ``t``. A student sampled from zeros
otherwise never sees at training the noise-free inputs its first and later steps get. The
data loss then asks for the ``v`` whose ``x0`` is the real 7T at that ``x_t``,
``(alpha_t x_t - x0) / sigma_t``, which is the ordinary ``v`` target on noised inputs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from sr7t.config import per_stage
from sr7t.data.slices import slice_axes
from sr7t.models.bundle import load_bundle
from sr7t.models.diffusion import (
    Denoiser,
    alpha_sigma,
    capture_features,
    ddim_step,
    q_sample,
    sampler_path,
    v_from_x0,
)
from sr7t.models.predict import sampling_start
from sr7t.train.loop import BatchShard, DiffusionTrainer

# distill.data_weight_power scales the data loss of each example thicker than this by
# (slice_mm / this) ** power: the demo's 1.5T slice, so its real examples keep their weight
DATA_WEIGHT_REF_MM = 4.0


def spacing_weighted_mean(err: torch.Tensor, slice_mm: torch.Tensor, power: float):
    """The mean of ``err`` (B, ...); with ``power`` != 0 each example's mean weighted by
    ``(max(slice_mm, DATA_WEIGHT_REF_MM) / DATA_WEIGHT_REF_MM) ** power``: slices thicker than
    the reference leave a wider posterior, where the parent's samples help less; thinner ones
    keep weight 1 (weighting them down too cost the 2.5 mm cells: README § Benchmarks).
    ``power`` 0 is the plain mean, bit for bit."""
    if not power:
        return torch.mean(err)
    mm = slice_mm.to(err.device).float().clamp(min=DATA_WEIGHT_REF_MM)
    w = (mm / DATA_WEIGHT_REF_MM) ** float(power)
    return torch.mean(w * err.flatten(1).mean(dim=1))


class StudentWithAdapters(nn.Module):
    """Student denoiser plus 1x1 convolutions mapping its features to the parent's widths.

    ``forward(x_t, cond, t) -> (v, adapted features)``; a single module so DDP synchronises
    the adapters' gradients too.
    """

    def __init__(self, student: Denoiser, parent_channels: list[int]):
        super().__init__()
        self.student = student
        ours = student.feature_channels()
        if len(ours) != len(parent_channels):
            raise ValueError(
                f"student levels {student.arch['channels']} must match the parent's count of "
                "levels for feature matching"
            )
        self.adapters = nn.ModuleList(
            nn.Identity() if a == b else nn.Conv2d(a, b, kernel_size=1)
            for a, b in zip(ours, parent_channels, strict=True)
        )

    def forward(self, x_t, cond, t):
        with capture_features(self.student) as feats:
            v = self.student(x_t, cond, t)
        return v, [ad(f) for ad, f in zip(self.adapters, feats, strict=True)]


def _norm_groups(channels: list[int], preferred: int) -> int:
    g = math.gcd(*channels)
    return preferred if g % preferred == 0 else math.gcd(g, preferred)


@torch.no_grad()
def parent_target(parent: nn.Module, x_t, cond, t: torch.Tensor, n: int, parent_steps: int = 2):
    """The student's target for one step ``t -> t - 1/n``: ``parent_steps`` parent DDIM steps
    over the same interval (2: progressive distillation; 1: the parent's own step, whose
    target x0 is the parent's own estimate: plain knowledge distillation).

    ``x_t`` (B,1,H,W), ``t`` (B,) on the student's grid (multiples of ``1/n``). Returns
    ``(v_target, x0_target, parent_features)``: the features are the parent's
    :func:`capture_features` outputs (float32) from its first pass at ``(x_t, t)``.
    """
    k = int(parent_steps)
    t_end = t - 1.0 / n
    with capture_features(parent) as feats:  # the parent's first pass only
        x = ddim_step(parent, x_t, cond, t, t - 1 / (k * n))
    for j in range(2, k + 1):
        x = ddim_step(parent, x, cond, t - (j - 1) / (k * n), t - j / (k * n))
    a_t, s_t = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
    a_e, s_e = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t_end))
    ratio = s_e / s_t
    x0_target = (x - ratio * x_t) / (a_e - ratio * a_t)
    v_goal = v_from_x0(x_t, t, x0_target)
    return v_goal, x0_target, [f.float() for f in feats]


class DistillTrainer(DiffusionTrainer):
    section = "distill"

    def __init__(self, parent, stage: int, *args, init_model=None, **kwargs):
        if isinstance(parent, str | Path):
            parent = load_bundle(parent, device="cpu")
        self.parent, self.parent_meta = parent
        if isinstance(init_model, str | Path):
            init_model = load_bundle(init_model, device="cpu")
        self.init_model = init_model  # (Denoiser, meta) whose weights the student starts from
        self.stage = int(stage)
        self.kind = f"student_stage{self.stage}"
        super().__init__(*args, **kwargs)

    def setup(self) -> None:
        pm = self.parent_meta
        if pm["sampling_steps"] < 2 or pm["sampling_steps"] % 2:
            raise ValueError(f"parent samples in {pm['sampling_steps']} steps: cannot halve")
        # The plan (channels, planes, context, scale) is the parent's; only patch size and the
        # slice-spacing range come from this config.
        self.data_cfg["slice_axis"] = list(pm["slice_axis"])
        self.data_cfg["context_slices"] = int(pm["context_slices"])
        self.axes = slice_axes(self.data_cfg)
        self.context_slices = int(pm["context_slices"])
        self.use_guidance = bool(pm["use_guidance"])
        self.channels = list(pm["channels"])
        for s in self.train_subjects + self.val_subjects:
            if s.channels != self.channels:
                raise ValueError(f"subject {s.name}: channels {s.channels} != {self.channels}")
        self.residual_scale = float(pm["residual_scale"])
        self.sampling_steps = int(pm["sampling_steps"]) // 2
        self.inference_steps = None  # the parent's inference steps are its own plan
        self.sampling_start = sampling_start(pm)
        self.test_time_flips = int(per_stage(self.cfg["test_time_flips"], self.stage, False))
        self.test_time_rotations = int(
            per_stage(self.cfg["test_time_rotations"], self.stage, False)
        )
        self.feature_weight = float(per_stage(self.cfg["feature_weight"], self.stage, False))
        self.data_weight = float(per_stage(self.cfg["data_weight"], self.stage, False))
        self.on_path = bool(per_stage(self.cfg["on_path"], self.stage, False))
        self.parent_steps = int(per_stage(self.cfg["parent_steps"], self.stage, False))
        self.data_weight_power = float(per_stage(self.cfg["data_weight_power"], self.stage, False))
        self.parent = self.parent.to(self.device).eval().requires_grad_(False)

    @property
    def total_steps(self) -> int:
        return int(per_stage(self.cfg["steps_per_stage"], self.stage, False))

    def build_trainable(self, n_condition: int) -> nn.Module:
        parent_arch = self.parent.arch
        if n_condition != parent_arch["n_condition"]:
            raise ValueError(f"condition has {n_condition} channels, parent expects {parent_arch}")
        channels = [int(c) for c in per_stage(self.cfg["channels"], self.stage, True)]
        attention = self.cfg["attention_levels"]
        if attention is None:
            attention = parent_arch["attention_levels"]
        attention = [bool(a) for a in per_stage(attention, self.stage, True)]
        arch = {
            **parent_arch,
            "channels": channels,
            "attention_levels": attention,
            "norm_num_groups": _norm_groups(channels, parent_arch["norm_num_groups"]),
        }
        student = Denoiser(n_condition, arch)
        if self.init_model is not None:
            student.load_state_dict(self._init_weights(student.arch))
        elif student.arch == parent_arch:
            student.load_state_dict(self.parent.state_dict())
        return StudentWithAdapters(student, self.parent.feature_channels())

    def _init_weights(self, arch: dict) -> dict:
        """The init model's weights, after checking that they mean what the student's will:
        the same architecture, condition channels and residual scale."""
        model, meta = self.init_model
        pm = self.parent_meta
        problems = []
        if model.arch != arch:
            problems.append(f"architecture {model.arch} != the student's {arch}")
        if list(meta.get("channels", [])) != self.channels:
            problems.append(f"channels {meta.get('channels')} != {self.channels}")
        scale = float(meta.get("residual_scale", float("nan")))
        if not math.isclose(scale, self.residual_scale, rel_tol=1e-6):
            problems.append(f"residual_scale {scale} != the parent's {self.residual_scale}")
        if meta.get("context_slices") != pm["context_slices"]:
            problems.append(f"context_slices {meta.get('context_slices')} != the parent's")
        if problems:
            raise ValueError(
                f"stage {self.stage}: cannot start from the {meta.get('kind', 'given')} model: "
                + "; ".join(problems)
            )
        return model.state_dict()

    def denoiser(self, trainable: nn.Module) -> Denoiser:
        return trainable.student

    def path_inputs(self, module: nn.Module, cond, noise, i: torch.Tensor, n: int):
        """Where the student's own deterministic DDIM stands at ``t = i / n`` (per example),
        started at ``t = 1`` from zeros (``sampling_start: zero``) or from ``noise``."""

        def student(x_t, c, t):
            return module(x_t, c, t)[0]

        return sampler_path(student, cond, noise, i, n, self.sampling_start, self.autocast)

    def loss(self, module: nn.Module, batch: dict, gen: BatchShard):
        x0, cond = self.x0_cond(batch)
        b = x0.shape[0]
        n = self.sampling_steps
        i = gen.randint(1, n + 1, b).to(self.device)
        noise = gen.randn(x0.shape).to(self.device)
        t = i.float() / n
        if self.on_path:
            x_t = self.path_inputs(module, cond, noise, i, n)
        else:
            x_t = q_sample(x0, t, noise)
        with self.autocast():
            v_goal, _, parent_feats = parent_target(self.parent, x_t, cond, t, n, self.parent_steps)
        with self.autocast():
            v, feats = module(x_t, cond, t)
        loss_v = torch.mean((v.float() - v_goal) ** 2)
        # each layer's normaliser is the parent's mean square over the GLOBAL batch, so that
        # W processes at batch B/W compute the loss of one process at batch B
        norms = gen.global_mean(torch.stack([torch.mean(p**2) for p in parent_feats]))
        loss_f = sum(
            torch.mean((f.float() - p) ** 2) / (norm + 1e-6)
            for f, p, norm in zip(feats, parent_feats, norms, strict=True)
        ) / len(feats)
        # Hinton-style knowledge distillation keeps the hard labels too: the ordinary diffusion
        # loss against the real 7T at the same x_t (its optimum is the posterior mean, which is
        # what a few-step sampler's first step should predict).
        err_data = (v.float() - v_from_x0(x_t.float(), t, x0)) ** 2
        loss_data = torch.mean(err_data)
        weighted_data = spacing_weighted_mean(err_data, batch["slice_mm"], self.data_weight_power)
        loss = loss_v + self.feature_weight * loss_f + self.data_weight * weighted_data
        parts = {"loss_v": loss_v.detach(), "loss_feature": loss_f.detach()}
        return loss, parts | {"loss_data": loss_data.detach()}

    def meta(self) -> dict:
        meta = super().meta()
        pm = self.parent_meta
        meta.update(
            stage=self.stage,
            parent=pm["kind"],
            parent_param_count=pm.get("param_count"),
            feature_weight=self.feature_weight,
            data_weight=self.data_weight,
            on_path=self.on_path,
            parent_steps=self.parent_steps,
            data_weight_power=self.data_weight_power,
            init=None if self.init_model is None else self.init_model[1].get("kind"),
            native_slice_mm_seen=[
                min(meta["native_slice_mm_seen"][0], pm["native_slice_mm_seen"][0]),
                max(meta["native_slice_mm_seen"][1], pm["native_slice_mm_seen"][1]),
            ],
        )
        # what the student's output means is its parent's: same contrast, same grid
        for key in ("output_contrast", "contrast_map", "interpolation", "sampling_start"):
            if key in pm:
                meta[key] = pm[key]
        return meta

    def resume_key(self) -> str:
        """The base key plus the parent's weights: a retrained parent voids the checkpoints."""
        import hashlib

        digest = hashlib.sha256()
        models = [self.parent] + ([] if self.init_model is None else [self.init_model[0]])
        for model in models:  # a retrained init model voids them too
            for name, tensor in sorted(model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
        return f"{super().resume_key()}-{digest.hexdigest()[:12]}"


def distill_stage(
    parent_model,
    train_files: list[str | Path],
    val_files: list[str | Path],
    cfg: dict,
    stage: int,
    out_model: str | Path,
    checkpoint_dir: str | Path,
    metrics_cb=None,
    device=None,
    artifact_cb=None,
    init_model=None,
) -> dict:
    """Distil ``parent_model`` into a student sampling in half its steps; write its bundle.

    ``parent_model``: a bundle path, or a ``(Denoiser, meta)`` pair as returned by
    :func:`~sr7t.models.bundle.load_bundle`. ``stage``: 1-based index (stage 1's parent is the
    teacher). ``cfg``: the whole resolved config; ``data.patch_size`` /
    ``data.train_slice_mm`` and the ``distill`` section are read; the student's width is
    ``distill.channels`` (this stage's entry), its self-attention ``distill.attention_levels``
    (None: the parent's), its training steps ``distill.steps_per_stage`` (a number or one per
    stage); it starts from ``init_model``'s weights when given (a bundle path or pair, e.g. the
    regression UNet, which has the final student's architecture; a mismatch raises), else from
    the parent's when the architecture is the same, else from scratch. Its target per step is
    ``distill.parent_steps`` of the parent's (:func:`parent_target`). Checkpointing, resume,
    EMA, metrics and DDP are those of :func:`~sr7t.train.teacher.train_teacher`.

    Returns the summary dict of the teacher plus ``loss_v``/``loss_feature`` in
    ``final_losses``.
    """
    trainer = DistillTrainer(
        parent_model,
        stage,
        train_files,
        val_files,
        cfg,
        checkpoint_dir,
        metrics_cb,
        device,
        artifact_cb,
        init_model=init_model,
    )
    return trainer.run(out_model)
