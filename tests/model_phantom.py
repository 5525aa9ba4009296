"""Tiny synthetic dataset npz files for the model tests (the dataset stage's contract).

A smooth head phantom; its "7T" has fine texture along z, its "1.5T" is a differently
contrasted, z-blurred (thick slices), noisier version with a mild bias field. Deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sr7t.config import resolve
from sr7t.data.resolution import simulate_slice_spacing

CHANNELS = ["t1_1p5T", "log_bias_1p5T", "gnl_jacobian_1p5T", "gnl_dispmag_1p5T", "gnl_present"]
SHAPE = (24, 28, 24)
VOXEL_MM = 2.0
NATIVE_SLICE_MM = 4.0


def phantom_arrays(seed: int, shape=SHAPE):
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    x, y, z = grid
    r2 = (x / 0.8) ** 2 + (y / 0.85) ** 2 + (z / 0.8) ** 2
    mask = r2 < 1.0
    tissue = np.zeros(shape)
    for _ in range(5):
        c = rng.uniform(-0.5, 0.5, 3)
        w = rng.uniform(0.15, 0.35)
        tissue += rng.uniform(0.3, 0.8) * np.exp(
            -((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) / (2 * w**2)
        )
    stripes = 0.15 * np.sin(2 * np.pi * z * rng.uniform(3.5, 5.0) + rng.uniform(0, 6))
    seven = np.where(mask, 0.6 + tissue + stripes * (tissue > 0.2), 0.0)
    seven = seven / np.percentile(seven[mask], 99)
    bias = 0.1 * x + 0.05 * y
    contrast = 0.5 * seven + 0.4 * seven**2
    low = simulate_slice_spacing(contrast, VOXEL_MM, NATIVE_SLICE_MM, axis=2)
    low = low * np.exp(bias) + rng.normal(0, 0.02, shape) * mask
    low = np.where(mask, low, 0.0)
    low = low / np.percentile(low[mask], 99)
    jac = 0.02 * x * z
    disp = 0.3 * (x**2 + y**2)
    condition = np.stack([low, bias, jac, disp, np.ones(shape)]).astype(np.float32)
    return condition, seven.astype(np.float32), mask.astype(np.uint8)


def write_phantom_npz(directory: Path, n: int, shape=SHAPE, first_seed: int = 0) -> list[Path]:
    """Write ``n`` subjects ``sub-XX.npz`` into ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        condition, target, mask = phantom_arrays(first_seed + i, shape)
        p = directory / f"sub-{i:02d}.npz"
        np.savez_compressed(
            p,
            condition=condition,
            channels=np.array(CHANNELS),
            target=target,
            mask=mask,
            affine=np.diag([VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0]),
            spacing_mm=np.array([VOXEL_MM] * 3),
            native_slice_mm=np.float64(NATIVE_SLICE_MM),
        )
        paths.append(p)
    return paths


def tiny_config(**overrides) -> dict:
    """A config small enough to train for a few steps in seconds on one CPU core, resolved
    (every other key is the schema's default, as in the workflow)."""
    cfg = {
        "data": {
            "slice_axis": 1,
            "context_slices": 1,
            "patch_size": 16,
            "train_slice_mm": [4.0, 8.0],
            # the loop's mechanics; randomised inputs: tests/data/test_randomised.py
            "inputs": "paired",
            "interpolation": "linear",  # paired inputs are the registration's resampling
        },
        "teacher": {
            "channels": [8, 16],
            "attention_levels": [False, False],
            "num_res_blocks": 1,
            "norm_num_groups": 8,
            "train_steps": 6,
            "batch_size": 4,
            "lr": 1e-3,
            "ema_decay": 0.9,
            "grad_clip": 1.0,
            "sampling_steps": 4,
            "checkpoint_every": 3,
            "log_every": 1,
            "val_every": 1000,
            "val_examples": 8,
            "amp": "bf16",
            "seed": 0,
            "use_guidance": True,
        },
        "distill": {
            "stages": 2,
            "steps_per_stage": 4,
            "channels": [8, 8],
            "feature_weight": [0.1, 0.1],
            "lr": 1e-3,
            "batch_size": 4,
            "ema_decay": 0.9,
            "checkpoint_every": 2,
            "log_every": 1,
            "val_examples": 8,
            "seed": 0,
        },
    }
    for section, values in overrides.items():
        cfg[section] = {**cfg[section], **values}
    return resolve(cfg)
