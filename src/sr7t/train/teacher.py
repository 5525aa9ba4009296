"""Train the conditional diffusion teacher (v-prediction on the 7T - 1.5T residual)."""

from __future__ import annotations

from pathlib import Path

from sr7t.train.loop import DiffusionTrainer


class TeacherTrainer(DiffusionTrainer):
    section = "teacher"
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
    resolved config (:func:`sr7t.config.resolve`); sections ``data`` and ``teacher`` are read,
    and the bundle carries it whole. If ``checkpoint_dir`` holds a checkpoint, training resumes
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
