"""Train the conditional diffusion teacher (v-prediction on the 7T - 1.5T residual)."""

from __future__ import annotations

from pathlib import Path

from sr7t.train.loop import LOOP_DEFAULTS, DiffusionTrainer

TEACHER_DEFAULTS: dict = {
    **LOOP_DEFAULTS,
    "channels": [32, 64, 64],
    "attention_levels": [False, False, True],
    "num_res_blocks": 1,
    "norm_num_groups": 8,
    "train_steps": 1000,
    "sampling_steps": 16,
    "use_guidance": True,
}


class TeacherTrainer(DiffusionTrainer):
    section = "teacher"
    defaults = TEACHER_DEFAULTS
    kind = "teacher"


def train_teacher(
    train_files: list[str | Path],
    val_files: list[str | Path],
    cfg: dict,
    out_model: str | Path,
    checkpoint_dir: str | Path,
    metrics_cb=None,
    device=None,
    artifact_cb=None,
) -> dict:
    """Train the teacher and write its EMA weights as a bundle to ``out_model``.

    ``train_files``/``val_files``: dataset npz files (one per subject). ``cfg``: the whole
    config; sections ``data`` and ``teacher`` are read (defaults: ``DATA_DEFAULTS``,
    :data:`TEACHER_DEFAULTS`). If ``checkpoint_dir`` holds a checkpoint, training resumes
    from it exactly. ``metrics_cb(dict, step)`` gets ``loss``, ``lr``, ``examples_per_s`` every
    ``log_every`` steps and ``val_loss`` every ``val_every`` steps. ``device`` None: CUDA if
    available, else CPU; under torchrun (WORLD_SIZE > 1) DDP is used. ``artifact_cb(path)`` gets
    a validation sample image (PNG) every ``sample_every`` steps. At the end the model is
    scored on whole validation volumes at ``val_slice_mm`` (``val_psnr_<r>mm``, ...).

    Returns a summary dict: ``steps``, ``final_loss``, ``final_losses``, ``val_loss``,
    ``seconds``, ``examples_per_s``, ``param_count``, ``sampling_steps``, the inference cost
    (``evaluations_per_slice``, ``macs_per_evaluation``, ``macs_per_slice``), the volume
    scores, ``device``.
    """
    trainer = TeacherTrainer(
        train_files, val_files, cfg, checkpoint_dir, metrics_cb, device, artifact_cb
    )
    return trainer.run(out_model)
