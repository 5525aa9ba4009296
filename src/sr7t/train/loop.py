"""Training machinery shared by the teacher and every distillation stage.

:class:`DiffusionTrainer` owns the loop: device and DDP set-up, deterministic batches, AdamW,
warm-up + cosine learning rate (torch's ``LinearLR`` then ``CosineAnnealingLR``), EMA weights
(torch's ``AveragedModel``), gradient clipping, bf16/fp16 autocast on CUDA (fp16 with a
gradient scaler),
checkpoints that resume bit-exactly, tqdm progress, metrics callbacks and validation. A
variant (the distillation stage) is a subclass overriding :meth:`build_trainable`,
:meth:`loss` and :meth:`meta`.

Exact resume works because nothing in a step depends on hidden state: the examples of step
``s`` on rank ``r`` are dataset indices ``(s * world + r) * B + j`` (each example is a pure
function of its index), and the noise and times of step ``s`` are drawn for the whole global
batch from a generator seeded with ``(seed, s)``, rank ``r`` keeping its rows
(:class:`BatchShard`). Model, optimiser, EMA, scheduler, step and the global RNG states are
checkpointed as well. So W processes at batch B/W train on exactly the examples, noise and
times of one process at batch B (the averaged gradient differs by float summation order only).
"""

from __future__ import annotations

import atexit
import copy
import numbers
import os
import random
import re
import sys
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader
from tqdm import tqdm

from sr7t.config import config_hash
from sr7t.data.contrast import fit_quantile_map
from sr7t.data.slices import (
    SliceDataset,
    Subject,
    estimate_residual_scale,
    load_subject,
    sampled_residual_scale,
    slice_axes,
)
from sr7t.errors import TrainingOOM, is_out_of_memory
from sr7t.models.bundle import atomic_torch_save, plain, save_bundle
from sr7t.models.diffusion import Denoiser, param_count

CHECKPOINT_GLOB = "step_*.pt"
# Keys a rerun may change and still resume (the step budget, monitoring, loader workers).
RESUME_FREE = frozenset(
    {
        "train_steps",
        "steps_per_stage",
        "test_time_flips",  # inference only (sampling_start is not: on-path steps follow it)
        "test_time_rotations",
        "inference_steps",
        "checkpoint_every",
        "log_every",
        "val_every",
        "val_examples",
        "sample_every",
        "val_slice_mm",
        "num_workers",
    }
)
KEEP_CHECKPOINTS = 2


def processor_name(device: torch.device) -> str:
    """What the job computed on, for its summary: the GPU's name, else the CPU's model (from
    /proc/cpuinfo where there is one). Runs of one config and seed on different processors
    give different models (other kernels, other rounding), as another seed does."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def loader_workers(setting: int | str, kind: str) -> int:
    """Data-loader processes of a training job of ``kind`` for ``data.num_workers``
    (``setting``): a number as it is; ``auto``: one for the teacher and the distillation
    stages, none for the regression baseline. The teacher and its stages are the workflow's
    longest chain: a loader process makes their examples beside their steps, on a core the
    jobs beside them share (on 2 cores the demo took 17 min 06 s against 18 min 43 s without,
    README § Benchmarks), where one for the regression baseline too would take that core back
    from the chain. The examples, so the models, are the same either way (each is drawn from
    its own index: :class:`StepBatches`)."""
    if setting == "auto":
        return 0 if kind == "regression" else 1
    return int(setting)


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The CPU generator for the noise and times of one step on one rank."""
    return torch.Generator(device="cpu").manual_seed(
        (int(seed) * 1_000_003 + int(step)) * 131 + int(rank)
    )


class BatchShard:
    """This rank's share of one training step's global batch: its random draws, and means
    over the whole batch.

    Each draw is made for the whole global batch (``world * b`` rows) from the generator of
    ``(seed, step)`` and this rank's rows ``rank * b .. (rank + 1) * b - 1`` are returned --
    the rows of the examples :class:`StepBatches` gives it. An example's noise and time thus
    depend on its place in the global batch, not on how many processes share the batch; with
    one process the draws are those of the plain generator. Losses draw through
    :meth:`rand`, :meth:`randn` and :meth:`randint` (CPU tensors); a batch statistic inside a
    loss (a normaliser) goes through :meth:`global_mean`.
    """

    def __init__(self, seed: int, step: int, rank: int = 0, world: int = 1):
        self.generator = step_generator(seed, step, 0)
        self.rank, self.world = int(rank), int(world)

    def _mine(self, x: torch.Tensor, b: int) -> torch.Tensor:
        return x[self.rank * b : (self.rank + 1) * b] if self.world > 1 else x

    def rand(self, b: int) -> torch.Tensor:
        """Uniform [0, 1), shape (b,)."""
        return self._mine(torch.rand(b * self.world, generator=self.generator), b)

    def randn(self, shape) -> torch.Tensor:
        """Standard normal of ``shape`` (rows first)."""
        b, *rest = shape
        return self._mine(torch.randn((b * self.world, *rest), generator=self.generator), b)

    def randint(self, low: int, high: int, b: int) -> torch.Tensor:
        """Integers in ``[low, high)``, shape (b,)."""
        x = torch.randint(low, high, (b * self.world,), generator=self.generator)
        return self._mine(x, b)

    def global_mean(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (a per-rank mean over this rank's rows; no gradient) averaged over the ranks:
        the mean over the global batch. Every rank must call it (an all-reduce)."""
        if self.world == 1:
            return x
        x = x.detach().clone()
        dist.all_reduce(x)
        return x / self.world


@lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX, from Linux's
    /proc/cpuinfo): without them torch emulates bf16 convolutions, slower than float32."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class StepBatches(torch.utils.data.Sampler):
    """Batches of dataset indices for steps ``start .. stop-1`` of this rank."""

    def __init__(self, start: int, stop: int, batch_size: int, rank: int, world: int):
        self.start, self.stop, self.b, self.rank, self.world = start, stop, batch_size, rank, world

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self):
        for s in range(self.start, self.stop):
            first = (s * self.world + self.rank) * self.b
            yield list(range(first, first + self.b))


def ema_warmup_decay(k: int) -> float:
    """The EMA's warm-up decay at update ``k`` (counted from 1): ``(1 + k) / (10 + k)``."""
    return (1.0 + k) / (10.0 + k)


def ema_decay_note(decay: float, steps: int) -> str | None:
    """A line for the log when ``decay`` is never reached in ``steps`` updates: the warm-up
    alone sets the average (below 0.995 up to update 1790), so the configured decay changes
    nothing (README § Config); None when it is reached."""
    last = ema_warmup_decay(max(int(steps), 1))
    if last >= float(decay):
        return None
    return (
        f"EMA: ema_decay {decay} is never reached in {steps} steps (the warm-up decay "
        f"(1 + k) / (10 + k) ends at {last:.4f}), so it does not change the model"
    )


def ema_model(module: nn.Module, decay: float) -> AveragedModel:
    """Exponential moving average of ``module``'s parameters (torch's ``AveragedModel``; the
    average is ``.module``), with a warm-up so that short runs are not dominated by the random
    initialisation: update ``k`` (counted from 1) uses the decay ``min(decay, (1 + k) / (10 +
    k))``. ``AveragedModel`` copies the weights at the first update and counts the updates in
    its ``n_averaged`` buffer, which the checkpoint keeps."""
    decay = float(decay)

    def lerp(averaged: list, current: list, n_averaged: torch.Tensor) -> None:
        k = int(n_averaged) + 1
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, ema_warmup_decay(k)))

    ema = AveragedModel(module, multi_avg_fn=lerp, use_buffers=True)
    ema.module.eval().requires_grad_(False)
    return ema


def warmup_cosine(opt: torch.optim.Optimizer, total_steps: int, warmup_steps: int | None):
    """Linear warm-up from ``lr / warmup`` to ``lr`` over ``warmup_steps`` (None: 5 % of the
    steps, at most 200), then a cosine decay to 10 % of ``lr`` at ``total_steps``."""
    total = max(int(total_steps), 1)
    warm = max(1, min(200, total // 20)) if warmup_steps is None else max(int(warmup_steps), 1)
    eta_min = [0.1 * group["lr"] for group in opt.param_groups]
    return SequentialLR(
        opt,
        [
            LinearLR(opt, start_factor=1.0 / warm, end_factor=1.0, total_iters=warm - 1),
            CosineAnnealingLR(opt, T_max=max(total - warm, 1), eta_min=eta_min[0]),
        ],
        milestones=[warm],
    )


def upgrade_checkpoint(state: dict, opt, total_steps: int, warmup_steps) -> dict:
    """A checkpoint written before the EMA and the schedule were torch's (``ema`` with
    ``updates``, a ``LambdaLR`` state), in today's form: the EMA weights and update count carry
    over exactly, the schedule is replayed to the checkpoint's step (the same learning rates
    to within float rounding)."""
    if "updates" not in state["ema"]:
        return state
    ema = {f"module.{k}": v for k, v in state["ema"]["module"].items()}
    ema["n_averaged"] = torch.tensor(int(state["ema"]["updates"]), dtype=torch.long)
    replay_opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=opt.defaults["lr"])
    replay = warmup_cosine(replay_opt, total_steps, warmup_steps)
    for _ in range(int(state["step"])):
        replay_opt.step()
        replay.step()
    for group in state["optimizer"]["param_groups"]:
        group["lr"] = replay_opt.param_groups[0]["lr"]
    print("upgraded an older checkpoint (EMA and schedule now torch's)", file=sys.stderr)
    return {**state, "ema": ema, "scheduler": replay.state_dict()}


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))
    random.setstate(_tuplify(state["python"]))


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def latest_checkpoint(checkpoint_dir: str | Path) -> Path | None:
    """The checkpoint with the highest step in ``checkpoint_dir``, or None."""
    files = sorted(Path(checkpoint_dir).glob(CHECKPOINT_GLOB))
    return files[-1] if files else None


def oom_advice(section: str, batch_size: int, patch: int, params: int, world: int = 1) -> str:
    """The one-line message of :class:`TrainingOOM`: where it ran out and what to set."""
    steps = "steps_per_stage" if section == "distill" else "train_steps"
    per = " per process" if world > 1 else ""
    head = (
        f"out of GPU memory at batch_size {batch_size}{per} (patch {patch}, "
        f"model {params / 1e6:.1f} M params)"
    )
    if batch_size <= 1:
        return f"{head}: batch_size is already 1: lower data.patch_size or {section}.channels"
    return f"{head}: set {section}.batch_size to {batch_size // 2} (and double {section}.{steps})"


DEVICE_CHOICES = "auto, cpu, cuda, cuda:N"


def parse_device(device=None) -> torch.device:
    """The torch device for ``device``: None or ``"auto"`` (CUDA when available, else CPU),
    ``"cpu"``, ``"cuda"`` (the current CUDA device) or ``"cuda:N"``.

    Raises ValueError (one line) for another name, for CUDA asked for on a machine without
    it, and for an index beyond the visible devices.
    """
    name = "auto" if device is None else str(device).strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", name)
    if m is None:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {device!r}")
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise ValueError(
            f"device {name!r} asked for, but CUDA is not available (torch {torch.__version__}, "
            f"{build}): use --device cpu, or run where a GPU is visible"
        )
    n = torch.cuda.device_count()
    index = int(m.group(1)) if m.group(1) is not None else torch.cuda.current_device()
    if index >= n:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
        raise ValueError(
            f"device {name} asked for, but only {n} CUDA device{'s' if n != 1 else ''} "
            f"{'are' if n != 1 else 'is'} visible (cuda:0..cuda:{n - 1}; "
            f"CUDA_VISIBLE_DEVICES={visible})"
        )
    return torch.device("cuda", index)


def resolve_device(device=None) -> tuple[torch.device, int, int, bool]:
    """``(device, rank, world_size, we_initialised_ddp)`` for ``device`` (see
    :func:`parse_device`).

    Under torchrun (WORLD_SIZE > 1) the process group is initialised here (nccl on CUDA, gloo
    on CPU) and destroyed at interpreter exit, not after one trainer, so a second trainer in
    the same process (teacher, then a stage) reuses it; each process takes one GPU,
    ``cuda:LOCAL_RANK`` (an explicit ``cuda:N`` only says "CUDA"; pick GPUs with
    CUDA_VISIBLE_DEVICES).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = parse_device(device)
    if dev.type == "cuda" and world > 1:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        n = torch.cuda.device_count()
        if local >= n:
            raise ValueError(
                f"LOCAL_RANK {local} but only {n} CUDA devices are visible: start at most {n} "
                "processes per node (torchrun --nproc_per_node)"
            )
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # before nccl, and so "cuda" means this device from now on
    if world <= 1:
        return dev, 0, 1, False
    initialised = False
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        atexit.register(_destroy_process_group)
        initialised = True
    return dev, dist.get_rank(), world, initialised


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class DiffusionTrainer:
    """Teacher training; subclasses change what is trained and its loss.

    ``cfg`` is the whole resolved config (:func:`sr7t.config.resolve`; sections ``data``,
    ``teacher`` and :attr:`section` are read); the bundle carries it whole
    (``meta["config"]``). Call :meth:`run` to train and write the bundle.
    """

    section = "teacher"
    kind = "teacher"

    def __init__(
        self,
        train_files,
        val_files,
        cfg: dict,
        checkpoint_dir,
        metrics_cb=None,
        device=None,
        artifact_cb=None,
    ):
        self.config = plain(cfg)
        self.data_cfg = copy.deepcopy(self.config["data"])
        self.cfg = copy.deepcopy(self.config[self.section])
        self.checkpoint_dir = Path(checkpoint_dir)
        self.metrics_cb = metrics_cb
        self.artifact_cb = artifact_cb
        self.device, self.rank, self.world, self._own_pg = resolve_device(device)
        self.train_subjects = [load_subject(f) for f in train_files]
        self.val_subjects = [load_subject(f) for f in (val_files or [])]
        self.setup()

    # ----- hooks for subclasses -------------------------------------------------------
    def setup(self) -> None:
        """Decide the plan (channels, residual scale...) before the model is built."""
        teacher = self.config["teacher"]
        self.use_guidance = bool(teacher["use_guidance"])
        # Randomised inputs: the thick axis is the frame's last, planes along both others.
        self.axes = [0, 1] if self.randomised else slice_axes(self.data_cfg)
        self.context_slices = int(self.data_cfg["context_slices"])
        self.channels = self.train_subjects[0].channels
        for s in self.train_subjects + self.val_subjects:
            if s.channels != self.channels:
                raise ValueError(f"subject {s.name}: channels {s.channels} != {self.channels}")
        self.residual_scale = (
            sampled_residual_scale(self.make_dataset(self.train_subjects, seed=1, length=64))
            if self.output_contrast == "input"
            else estimate_residual_scale(self.train_subjects)
        )
        self.sampling_steps = int(teacher["sampling_steps"])
        self.sampling_start = str(teacher["sampling_start"])
        self.test_time_flips = int(teacher["test_time_flips"])
        self.test_time_rotations = int(teacher["test_time_rotations"])
        steps = teacher["inference_steps"]  # the teacher's own plan, never its students'
        self.inference_steps = None if steps is None else int(steps)

    @property
    def total_steps(self) -> int:
        return int(self.cfg["train_steps"])

    @property
    def randomised(self) -> bool:
        """Randomised inputs (:mod:`sr7t.data.randomised`) or the paired 1.5T as acquired."""
        return self.data_cfg["inputs"] == "randomised"

    @property
    def output_contrast(self) -> str:
        """``input``: the network super-resolves in the input's contrast and one global map
        (``meta["contrast_map"]``) gives the 7T's; ``7T``: the network translates contrast."""
        if not self.randomised:
            return "7T"
        return str(self.data_cfg["synth"]["target_contrast"])

    def make_dataset(self, subjects: list[Subject], seed: int, length: int):
        if self.randomised:
            from sr7t.data.randomised import RandomisedSliceDataset

            return RandomisedSliceDataset(
                subjects, self.data_cfg, self.use_guidance, seed=seed, length=length
            )
        return SliceDataset(subjects, self.data_cfg, self.use_guidance, seed=seed, length=length)

    def build_trainable(self, n_condition: int) -> nn.Module:
        """The module that is optimised, EMA-averaged and checkpointed."""
        arch = {k: self.cfg[k] for k in ("channels", "attention_levels", "num_res_blocks")}
        arch["norm_num_groups"] = self.cfg["norm_num_groups"]
        return Denoiser(n_condition, arch)

    def denoiser(self, trainable: nn.Module) -> Denoiser:
        """The exported model inside the trainable module."""
        return trainable

    def loss(self, module: nn.Module, batch: dict, gen: BatchShard):
        """Return ``(loss, parts)``; ``module`` may be DDP-wrapped; random draws via ``gen``."""
        from sr7t.models.diffusion import q_sample, sampler_path, v_from_x0, v_target

        x0, cond = self.x0_cond(batch)
        b = x0.shape[0]
        t = gen.rand(b).to(self.device)
        noise = gen.randn(x0.shape).to(self.device)
        x_t = q_sample(x0, t, noise)
        zero_start = float(self.cfg["zero_start_fraction"])  # teacher (the others override)
        if zero_start > 0:
            # the sampler's first step from zeros: t = 1 with x_t = 0 instead of pure noise
            # (the target v = -x0 is the same; drawn last, so the other draws do not move)
            first = (gen.rand(b) < zero_start).to(self.device)
            t = torch.where(first, torch.ones_like(t), t)
            x_t = torch.where(first[:, None, None, None], torch.zeros_like(x_t), x_t)
        target = v_target(x0, t, noise)
        on_path = float(self.cfg.get("on_path_fraction", 0.0))  # teacher (as zero_start)
        n = self.sampling_steps
        if on_path > 0 and n > 1:
            # a share of examples at the sampler's later steps t = i / n (i < n), where its own
            # deterministic path from the start stands (no gradient): the inputs sampling
            # gives it there; target: the v whose x0 is the 7T at that x_t. Drawn last.
            along = (gen.rand(b) < on_path).to(self.device)
            i = gen.randint(1, n, b).to(self.device)
            rows = torch.nonzero(along).squeeze(1)
            if len(rows):
                x_path = sampler_path(
                    module, cond[rows], noise[rows], i[rows], n, self.sampling_start, self.autocast
                )
                t = t.index_copy(0, rows, i[rows].to(t.dtype) / n)
                x_t = x_t.index_copy(0, rows, x_path.to(x_t.dtype))
                target = target.index_copy(0, rows, v_from_x0(x_path.float(), t[rows], x0[rows]))
        with self.autocast():
            v = module(x_t, cond, t)
        loss = torch.mean((v.float() - target) ** 2)
        return loss, {"loss_v": loss.detach()}

    def meta(self) -> dict:
        lo, hi = (float(v) for v in self.data_cfg["train_slice_mm"])
        subjects = self.train_subjects
        natives = [s.native_slice_mm for s in subjects]
        spacings = np.array([s.spacing_mm for s in subjects])
        return {
            "kind": self.kind,
            "stage": 0,
            "parent": None,
            "channels": list(self.channels),
            "use_guidance": self.use_guidance,
            "slice_axis": list(self.axes),
            "context_slices": self.context_slices,
            "sampling_steps": self.sampling_steps,
            "sampling_start": self.sampling_start,
            "test_time_flips": self.test_time_flips,
            "test_time_rotations": self.test_time_rotations,
            "inference_steps": self.inference_steps,
            "train_slice_mm": [lo, hi],
            "trained_slice_mm": (
                [max(lo, float(spacings.min())), hi]
                if self.randomised
                else [max(lo, min(natives)), max(hi, max(lo, min(natives)))]
            ),
            "native_slice_mm_seen": [min(natives), max(natives)],
            "spacing_mm_seen": [spacings.min(0).tolist(), spacings.max(0).tolist()],
            "residual_scale": self.residual_scale,
            "inputs": self.data_cfg["inputs"],
            "output_contrast": self.output_contrast,
            "interpolation": self.data_cfg["interpolation"],
            "contrast_map": fit_quantile_map(
                [s.t1 for s in subjects], [s.target for s in subjects], [s.mask for s in subjects]
            ),
            "geometry_channels": self.randomised,
            "train_inplane_mm": self.train_inplane_mm(),
            "normalisation": (
                "every scan divided by its 99th percentile inside the brain mask; the model "
                "predicts (target - 1.5T) / residual_scale on the 7T grid, the target being the "
                "7T (output_contrast 7T) or the 7T in the input's contrast (input), then mapped "
                "to the 7T's by contrast_map (1.5T -> 7T quantiles of the training subjects)"
            ),
            "config": self.config,
        }

    def train_inplane_mm(self) -> list[float]:
        """The in-plane resolutions (mm) the model saw: drawn when randomised, else the
        paired 1.5T's own."""
        natives = [float(s.native_spacing_mm[:2].max()) for s in self.train_subjects]
        if not self.randomised:
            return [min(natives), max(natives)]
        voxel = float(min(s.spacing_mm.min() for s in self.train_subjects))
        lo, hi = self.data_cfg["synth"]["inplane_mm"]
        return [max(float(lo), voxel), max(float(hi), max(natives))]

    def resume_key(self) -> str:
        """What a checkpoint must have been made with to be resumed: the kind, the config
        sections that shape training (all but :data:`RESUME_FREE`: a longer or shorter budget
        resumes) and the training subjects (a subclass adds its parent)."""
        sections = {
            k: {key: v for key, v in (self.config.get(k) or {}).items() if key not in RESUME_FREE}
            for k in ("data", "teacher", "distill")
        }
        names = sorted(s.name for s in self.train_subjects)
        return config_hash({"kind": self.kind, "sections": sections, "train": names})

    # ----- shared helpers -------------------------------------------------------------
    def x0_cond(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        cond = batch["cond"].to(self.device)
        x0 = (batch["target"] - batch["base"]).to(self.device) / self.residual_scale
        return x0, cond

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype: ``amp`` (bf16 or fp16) on CUDA, ``amp_cpu`` on CPU (bf16; auto:
        bf16 where the CPU has native bf16 instructions, :func:`cpu_has_native_bf16`); None
        (float32) when off."""
        key = "amp" if self.device.type == "cuda" else "amp_cpu"
        amp = str(self.cfg.get(key, "off")).lower()
        if amp == "auto":
            amp = "bf16" if cpu_has_native_bf16() else "off"
        if amp not in ("bf16", "fp16"):
            return None
        return torch.float16 if amp == "fp16" else torch.bfloat16

    def autocast(self):
        dtype = self.amp_dtype
        return torch.autocast(
            device_type=self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None
        )

    # ----- the loop ---------------------------------------------------------------------
    def run(self, out_model) -> dict:
        cfg = self.cfg
        seed = int(cfg["seed"])
        torch.manual_seed(seed)  # model initialisation
        np.random.seed(seed)
        random.seed(seed)
        train_ds = self.make_dataset(self.train_subjects, seed, 10**12)
        trainable = self.build_trainable(train_ds.n_condition).to(self.device)
        ema = ema_model(trainable, cfg["ema_decay"])
        note = ema_decay_note(cfg["ema_decay"], self.total_steps)
        if note and self.rank == 0:
            print(note, file=sys.stderr)
        params = [p for p in trainable.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        sched = warmup_cosine(opt, self.total_steps, cfg["warmup_steps"])
        # fp16 needs loss scaling against underflow; bf16 and float32 do not (pass-through).
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        start = 0
        ckpt = latest_checkpoint(self.checkpoint_dir)
        state = None
        if ckpt is not None:
            state = torch.load(ckpt, map_location=self.device, weights_only=True)
            if state.get("resume_key") != self.resume_key():
                # Checkpoints of another config (or parent, or training data): a resume would
                # give a bundle whose weights do not match its own meta. Start afresh.
                if self.rank == 0:
                    print(
                        f"{ckpt.parent}: checkpoints were made with another config, parent or "
                        "training subjects; starting from step 0",
                        file=sys.stderr,
                    )
                    for old in Path(self.checkpoint_dir).glob(CHECKPOINT_GLOB):
                        old.unlink()
                if self.world > 1:
                    dist.barrier()
                ckpt = state = None
        if ckpt is not None:
            state = upgrade_checkpoint(state, opt, self.total_steps, cfg["warmup_steps"])
            trainable.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if "grad_scaler" in state:
                scaler.load_state_dict(state["grad_scaler"])
            _set_rng_state(state["rng"])
            start = int(state["step"])
            if self.rank == 0:
                print(f"resuming from {ckpt} at step {start}", file=sys.stderr)
        self.records: list = []
        if state is not None and self.rank == 0:
            for step, record in state.get("metric_records", []):
                self.emit(record, step)

        module = trainable
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            module = DistributedDataParallel(trainable, device_ids=ids)

        total = self.total_steps
        batches = StepBatches(start, total, int(cfg["batch_size"]), self.rank, self.world)
        workers = loader_workers(self.data_cfg["num_workers"], self.kind)
        loader = DataLoader(
            train_ds, batch_sampler=batches, num_workers=workers, persistent_workers=False
        )
        history: dict[str, float] = {}
        val_loss = None
        examples = 0
        t0 = time.perf_counter()
        window_t, window_n, window_loss = t0, 0, []
        with tqdm(  # closed on leaving, when training raises too
            total=total,
            initial=start,
            desc=self.kind,
            file=sys.stderr,
            disable=self.rank != 0,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
        ) as bar:
            trainable.train()
            step = start
            for batch in loader:
                gen = BatchShard(seed, step, self.rank, self.world)
                with self.out_of_memory_guard(trainable):
                    loss, parts = self.loss(module, batch, gen)
                    opt.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    if cfg["grad_clip"]:
                        scaler.unscale_(opt)
                        torch.nn.utils.clip_grad_norm_(params, float(cfg["grad_clip"]))
                    scaler.step(opt)
                    scaler.update()
                    sched.step()
                    ema.update_parameters(trainable)
                step += 1
                n = batch["cond"].shape[0] * self.world
                examples += n
                window_n += n
                # detached tensors, no float(): a GPU step does not wait for the previous one
                window_loss.append({"loss": loss.detach(), **parts})
                bar.update(1)

                if step % int(cfg["log_every"]) == 0 or step == total:
                    now = time.perf_counter()
                    history = self.window_mean(window_loss)
                    record = {
                        **history,
                        "lr": float(sched.get_last_lr()[0]),
                        "examples_per_s": window_n / max(now - window_t, 1e-9),
                    }
                    bar.set_postfix(loss=f"{history['loss']:.4f}")
                    window_t, window_n, window_loss = now, 0, []
                    if self.rank == 0:
                        self.emit(record, step)
                if self.val_subjects and step % int(cfg["val_every"]) == 0 and step != total:
                    self.report_val(ema, step)
                if step % self.sample_every == 0 or step == total:
                    self.report_sample(ema, step)
                # after the step's records, so that a resume emits them all again (emit)
                if step % int(cfg["checkpoint_every"]) == 0 or step == total:
                    self.save_checkpoint(step, trainable, ema, opt, sched, scaler)
        seconds = time.perf_counter() - t0
        if self.val_subjects:
            val_loss = self.report_val(ema, step)
        model = self.denoiser(ema.module)
        meta = self.meta()
        scores: dict[str, float] = {}
        cost: dict[str, int] = {}
        if self.rank == 0:
            cost = self.cost(model)
            meta.update(cost)
            save_bundle(out_model, model, meta)
        if self.world > 1:
            # the bundle is on disk before any rank returns; the other ranks do not wait in a
            # collective (and its timeout) while rank 0 scores whole volumes. The process
            # group lives on until exit (resolve_device).
            dist.barrier()
        if self.rank == 0:
            scores = self.report_volume_scores(model, meta, step)
        return {
            "kind": self.kind,
            "steps": step,
            "resumed_from_step": start,
            "final_loss": history.get("loss"),
            "final_losses": history,
            "val_loss": val_loss,
            "seconds": seconds,
            "examples_per_s": examples / max(seconds, 1e-9),
            "param_count": param_count(model),
            "sampling_steps": meta["sampling_steps"],
            **cost,
            **scores,
            "device": str(self.device),
            "processor": processor_name(self.device),
            "autocast": str(self.amp_dtype or torch.float32).removeprefix("torch."),
            "world_size": self.world,
            "loader_workers": workers,
        }

    def emit(self, record: dict, step: int) -> None:
        """Give ``record`` to ``metrics_cb`` and keep its numbers (``[step, record]`` in
        :attr:`records`), which every checkpoint carries: a resumed job emits them again first,
        so its history and MLflow run hold the whole curve, not only the steps after the
        resume."""
        kept = {
            str(k): float(v)
            for k, v in record.items()
            if isinstance(v, numbers.Real) and not isinstance(v, bool)
        }
        self.records.append([int(step), kept])
        if self.metrics_cb is not None:
            self.metrics_cb(record, step)

    @contextmanager
    def out_of_memory_guard(self, trainable: nn.Module):
        """Turn a CUDA out-of-memory error inside the block into :class:`TrainingOOM`."""
        try:
            yield
        except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(exc):
                raise
            msg = oom_advice(
                self.section,
                int(self.cfg["batch_size"]),
                int(self.data_cfg["patch_size"]),
                param_count(self.denoiser(trainable)),
                self.world,
            )
            raise TrainingOOM(msg) from exc

    def window_mean(self, window: list[dict]) -> dict[str, float]:
        """Mean of each logged loss over the steps of ``window`` and over all ranks (each
        rank's loss is the mean over its rows, so this is the global batch's mean)."""
        keys = list(window[0])
        means = torch.stack(
            [torch.stack([torch.as_tensor(w[k]).double() for w in window]).mean() for k in keys]
        )
        if self.world > 1:
            means = means.to(self.device)
            dist.all_reduce(means)
            means = means / self.world
        return dict(zip(keys, means.cpu().tolist(), strict=True))

    def save_checkpoint(self, step, trainable, ema, opt, sched, scaler) -> None:
        if self.rank == 0:
            state = {
                "step": step,
                "model": trainable.state_dict(),
                "ema": ema.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "grad_scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "architecture": plain(self.denoiser(trainable).arch),
                "resume_key": self.resume_key(),
                "kind": self.kind,
                "metric_records": self.records,
            }
            atomic_torch_save(state, self.checkpoint_dir / f"step_{step:08d}.pt")
            for old in sorted(self.checkpoint_dir.glob(CHECKPOINT_GLOB))[:-KEEP_CHECKPOINTS]:
                old.unlink()
        if self.world > 1:
            dist.barrier()

    @torch.no_grad()
    def validation_loss(self, module: nn.Module) -> float:
        """Mean loss of ``module`` (EMA weights) on a fixed set of validation examples."""
        n = int(self.cfg["val_examples"])
        b = int(self.cfg["batch_size"])
        ds = self.make_dataset(self.val_subjects, int(self.cfg["seed"]) + 7919, n)
        losses = []
        was_training = module.training
        module.eval()
        for i in range(0, n, b):
            batch = torch.utils.data.default_collate([ds[j] for j in range(i, min(i + b, n))])
            loss, _ = self.loss(module, batch, BatchShard(int(self.cfg["seed"]) + 7919, i))
            losses.append(float(loss) * batch["cond"].shape[0])
        module.train(was_training)
        return float(np.sum(losses) / n)

    @property
    def sample_every(self) -> int:
        every = self.cfg["sample_every"] or self.cfg["val_every"]
        return max(int(every), 1)

    def val_slice_mm(self) -> list[float]:
        """Spacings of the final whole-volume scores: None = both ends of the trained range;
        an empty list skips them (costly on fine grids; benchmarks/validate.py scores val)."""
        chosen = self.cfg["val_slice_mm"]
        return [float(v) for v in (self.data_cfg["train_slice_mm"] if chosen is None else chosen)]

    def cost(self, model: Denoiser) -> dict:
        """Inference cost on this cohort's planes (:func:`sr7t.models.cost.inference_cost`)."""
        from sr7t.models.cost import inference_cost

        shape = self.train_subjects[0].t1.shape
        axis = self.axes[0]
        return inference_cost(model, self.sampling_steps, (shape[1 - axis], shape[2]))

    def report_sample(self, ema: AveragedModel, step: int) -> None:
        """A validation sample image at ``step`` (EMA weights) to ``artifact_cb``."""
        if self.rank != 0 or not self.val_subjects or self.artifact_cb is None:
            return
        from sr7t.train.monitor import save_sample_figure

        model = self.denoiser(ema.module)
        png = self.checkpoint_dir / "samples" / f"{self.kind}_step_{step:08d}.png"
        spacing = (self.val_slice_mm() or self.data_cfg["train_slice_mm"])[-1]
        save_sample_figure(model, self.meta(), self.val_subjects[0], float(spacing), step, png)
        self.artifact_cb(png)

    def report_volume_scores(self, model: Denoiser, meta: dict, step: int) -> dict[str, float]:
        """Final whole-volume PSNR/SSIM and seconds per volume on the validation subjects."""
        if not self.val_subjects or any(s.target is None for s in self.val_subjects):
            return {}
        from sr7t.train.monitor import volume_scores

        scores = volume_scores(model, meta, self.val_subjects, self.val_slice_mm())
        self.emit(scores, step)
        return scores

    def report_val(self, ema: AveragedModel, step: int) -> float | None:
        if self.rank != 0:
            return None
        val = self.validation_loss(ema.module)
        self.emit({"val_loss": val}, step)
        return val
