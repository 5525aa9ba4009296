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
- ``sampling_start``; inference only: ``test_time_flips``, ``test_time_rotations``,
  ``inference_steps`` (None: ``sampling_steps``), ``inference_tile``, and ``fusion`` /
  ``fusion_power`` (:mod:`sr7t.models.fusion`; not written by the trainers, so the mean of
  the plane orientations), ``slice_consistency`` (:mod:`sr7t.models.consistency`; not
  written by the trainers, so off)
"""

from __future__ import annotations

import os
import pickle
import re
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


class BundleError(ValueError):
    """A model file that is not a usable sr7t bundle: missing, corrupt or someone else's.

    The message is one line naming the file and what was expected.
    """

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(
            f"model {path}: {problem}; expected an sr7t model bundle ({BUNDLE_FORMAT}: a "
            "model.pt written by the workflow's teacher or distill_stage rule)"
        )


def read_bundle(path: str | Path) -> dict:
    """The raw bundle dict (``format``, ``state_dict``, ``meta``), read with ``weights_only``.

    Raises :class:`BundleError` for a missing, unreadable, corrupt or foreign file, never
    PyTorch's advice to unpickle arbitrary code.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(path, "does not exist")
    if not path.is_file():
        raise BundleError(path, "is not a file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # PyTorch's message suggests weights_only=False, i.e. running code from the file: no.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        problem = (
            f"holds a pickled {found.group(1)}, not only tensors and plain Python values"
            if found
            else "is not a PyTorch file, or is corrupt"
        )
        raise BundleError(path, problem) from None
    except Exception as exc:  # corrupt zip, truncated file, not a torch file at all
        raise BundleError(path, f"cannot be read by torch.load ({_first_line(exc)})") from None
    if not isinstance(blob, dict):
        raise BundleError(path, f"holds a {type(blob).__name__}, not a bundle dict")
    if blob.get("format") != BUNDLE_FORMAT:
        keys = sorted(str(k) for k in blob)[:8]
        raise BundleError(path, f"has format {blob.get('format')!r} (a dict with keys {keys})")
    meta = blob.get("meta")
    if not isinstance(meta, dict) or not isinstance(meta.get("architecture"), dict):
        raise BundleError(path, "has no meta.architecture")
    if not isinstance(blob.get("state_dict"), dict):
        raise BundleError(path, "has no state_dict")
    return blob


def load_bundle(path: str | Path, device: str | torch.device | None = None):
    """Read a bundle with ``weights_only=True``; returns ``(model in eval mode, meta)``.

    ``device`` None: CUDA when available, else CPU. Raises :class:`BundleError` (one line
    naming the file) when ``path`` is not a usable bundle.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    blob = read_bundle(path)
    meta = blob["meta"]
    arch = meta["architecture"]
    try:
        model = Denoiser(arch["n_condition"], arch)
        model.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise BundleError(
            path, f"its weights do not fit its architecture ({_first_line(exc)})"
        ) from None
    return model.to(device).eval(), meta


def _first_line(exc: BaseException, limit: int = 200) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if "weights_only" in text:
        text = type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
