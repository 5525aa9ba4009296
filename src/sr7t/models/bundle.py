"""A model bundle: weights plus the plan that inference obeys, in one ``weights_only`` file.

The meta is plain Python (dict/list/str/int/float/bool/None), so
``torch.load(path, weights_only=True)`` reads it without unpickling any code. Keys
written by the trainers:

- ``kind``: ``"teacher"`` or ``"student_stage<k>"``; ``stage`` (0 for the teacher); ``parent``
- ``architecture``: :class:`~sr7t.models.diffusion.Denoiser` arch (incl. ``n_condition``)
- ``channels``: npz channel names the condition expects, in order; ``use_guidance``
- ``slice_axis`` (list of plane axes), ``context_slices``, ``sampling_steps``
- ``train_slice_mm`` [lo, hi] (requested), ``trained_slice_mm`` [lo, hi] (really seen),
  ``native_slice_mm_seen`` [min, max], ``spacing_mm_seen`` [[x,y,z] min, max]
- ``residual_scale`` and ``normalisation`` (text), ``param_count``
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from sr7t.models.diffusion import Denoiser, param_count

BUNDLE_FORMAT = "sr7t-bundle-1"


def plain(obj):
    """``obj`` with numpy scalars/arrays, tuples and Paths turned into plain Python."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"bundle meta must be plain Python, got {type(obj).__name__}: {obj!r}")


def atomic_torch_save(obj, path: str | Path) -> Path:
    """``torch.save`` to a temporary file then rename, so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def save_bundle(path: str | Path, model: Denoiser, meta: dict) -> Path:
    """Write ``model``'s state_dict and ``meta`` (architecture and param_count filled in)."""
    meta = plain(meta)
    meta["architecture"] = plain(model.arch)
    meta["param_count"] = param_count(model)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return atomic_torch_save({"format": BUNDLE_FORMAT, "state_dict": state, "meta": meta}, path)


def load_bundle(path: str | Path, device: str | torch.device | None = None):
    """Read a bundle with ``weights_only=True``; returns ``(model in eval mode, meta)``.

    ``device`` None: CUDA when available, else CPU.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{path}: not an sr7t model bundle (format {BUNDLE_FORMAT})")
    meta = blob["meta"]
    arch = meta["architecture"]
    model = Denoiser(arch["n_condition"], arch)
    model.load_state_dict(blob["state_dict"])
    return model.to(device).eval(), meta
