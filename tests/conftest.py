"""Shared fixtures: small synthetic volumes written as NIfTI."""

from __future__ import annotations

import os
from pathlib import Path

# ITK sizes its thread pool at the first ANTs filter of a process and never again; one thread
# for the whole test session keeps registrations bit-for-bit repeatable (as each workflow
# job is: it runs in its own process with `threads: 1`), whatever test runs first.
os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "1")

import numpy as np
import pytest
import torch

from sr7t.io import save_volume

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(2)


def affine_mm(spacing=(2.0, 2.0, 2.0), origin=(-40.0, -50.0, -30.0)) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    a[:3, 3] = origin
    return a


@pytest.fixture
def phantom():
    """A smooth blobby 3-D phantom (float32, 32x36x30) with positive values."""
    rng = np.random.default_rng(0)
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (32, 36, 30)), indexing="ij")
    vol = np.exp(-(x**2 + y**2 + z**2) * 2.0) + 0.3 * np.exp(-((x - 0.3) ** 2 + y**2) * 20)
    vol += 0.01 * rng.standard_normal(vol.shape)
    return vol.astype(np.float32)


@pytest.fixture
def write_scan(tmp_path):
    def write(name, data, spacing=(2.0, 2.0, 2.0)):
        return save_volume(tmp_path / name, data, affine_mm(spacing))

    return write
