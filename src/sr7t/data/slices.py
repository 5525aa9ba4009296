"""2.5-D training examples from the per-subject npz files of the dataset stage.

A model plane always contains z (the 1.5T thick-slice axis): sagittal planes (``slice_axis``
0, image axes (y, z)) or coronal planes (``slice_axis`` 1, image axes (x, z)). The condition of
one example is, in this order:

- ``2 * context_slices + 1`` planes of channel ``t1_1p5T`` (neighbours along ``slice_axis``,
  clamped at the volume edge), re-degraded to a random slice spacing along z;
- the guidance channels (every npz channel except ``t1_1p5T``) of the centre plane only,
  unless ``use_guidance`` is false.

The diffusion target is the residual ``target - t1_1p5T`` of the centre plane, in the
normalised units of the npz (each scan divided by its 99th percentile inside the mask).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sr7t.data.resolution import simulate_slice_spacing

T1_CHANNEL = "t1_1p5T"


@dataclass
class Subject(Mapping):
    """One subject's arrays, as written by the dataset stage (shapes (C, X, Y, Z) / (X, Y, Z)).

    Also a read-only mapping from the npz's key names (``subject["condition"]``; a key whose
    value is None, such as ``target`` of a subject without 7T, is absent), the way the
    evaluation reads it.
    """

    name: str
    condition: np.ndarray
    channels: list[str]
    target: np.ndarray | None
    mask: np.ndarray
    spacing_mm: np.ndarray
    native_slice_mm: float
    native_spacing_mm: np.ndarray | None = None  # the 1.5T's own voxel size (x, y, z)
    affine: np.ndarray | None = None  # voxel -> world (mm) of the 7T grid
    # Volumes made from these arrays, once per process, by whoever needs them (the randomised
    # dataset's real-1.5T targets and spline coefficients): every dataset built on this Subject
    # shares them. Not one of the npz's keys.
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        if self.native_spacing_mm is None:  # files written before it was recorded
            self.native_spacing_mm = np.array([*self.spacing_mm[:2], self.native_slice_mm])
        if self.affine is None:
            self.affine = np.diag([*self.spacing_mm, 1.0])

    def __getitem__(self, key: str):
        value = getattr(self, key, None) if key in _FIELD_NAMES else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (k for k in _FIELD_NAMES if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def t1(self) -> np.ndarray:
        return self.condition[self.channels.index(T1_CHANNEL)]

    @property
    def guidance(self) -> np.ndarray:
        """The condition's channels other than the 1.5T: a view (no copy of the volume per
        training example) when the 1.5T comes first, as the dataset stage writes it, or last."""
        i = self.channels.index(T1_CHANNEL)
        if i == 0:
            return self.condition[1:]
        if i == len(self.channels) - 1:
            return self.condition[:-1]
        return np.delete(self.condition, i, axis=0)


def load_subject(path: str | Path) -> Subject:
    """Read one dataset npz (the one reader of the dataset stage's files; no pickles).

    Raises ``ValueError`` naming the file if a key is missing."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("condition", "channels", "mask", "spacing_mm") if k not in z]
        if missing:
            raise ValueError(f"{path}: dataset file lacks {missing}")
        channels = [str(c) for c in z["channels"]]
        if T1_CHANNEL not in channels:
            raise ValueError(f"{path}: channel {T1_CHANNEL!r} missing from {channels}")
        spacing = np.asarray(z["spacing_mm"], dtype=np.float64)
        native = float(z["native_slice_mm"]) if "native_slice_mm" in z else float(spacing[2])
        return Subject(
            name=path.stem,
            condition=np.asarray(z["condition"], dtype=np.float32),
            channels=channels,
            target=np.asarray(z["target"], dtype=np.float32) if "target" in z else None,
            mask=np.asarray(z["mask"]) > 0,
            spacing_mm=spacing,
            native_slice_mm=native,
            native_spacing_mm=(
                np.asarray(z["native_spacing_mm"], dtype=np.float64)
                if "native_spacing_mm" in z
                else None
            ),
            affine=np.asarray(z["affine"], dtype=np.float64) if "affine" in z else None,
        )


_FIELD_NAMES = tuple(f.name for f in fields(Subject) if f.name != "derived")


def slice_axes(data_cfg: dict) -> list[int]:
    """The configured plane axes as a list; rejects 2 (z must lie in the plane)."""
    axes = data_cfg["slice_axis"]
    axes = [int(a) for a in (axes if isinstance(axes, list | tuple) else [axes])]
    if not axes or any(a not in (0, 1) for a in axes):
        raise ValueError(
            f"data.slice_axis must be 0 (sagittal) or 1 (coronal), got {axes}: "
            "through-plane super-resolution needs z inside the model plane"
        )
    return axes


def n_condition_channels(n_guidance: int, context_slices: int, use_guidance: bool) -> int:
    """Number of condition channels the denoiser sees (the noisy residual comes on top)."""
    return 2 * context_slices + 1 + (n_guidance if use_guidance else 0)


def condition_planes(
    t1: np.ndarray,
    guidance: np.ndarray | None,
    axis: int,
    indices: np.ndarray | list[int],
    context_slices: int,
) -> np.ndarray:
    """Stack the condition of whole planes.

    ``t1``: (X, Y, Z) 1.5T channel; ``guidance``: (G, X, Y, Z) or None; ``axis``: 0 or 1;
    ``indices``: plane indices along ``axis``. Returns float32 (N, 2c+1+G, A, Z) where A is the
    other in-plane axis (y for sagittal, x for coronal).
    """
    indices = np.asarray(indices, dtype=int)
    n = t1.shape[axis]
    offsets = np.arange(-context_slices, context_slices + 1)
    neighbours = np.clip(indices[:, None] + offsets[None], 0, n - 1)  # (N, 2c+1)
    t1_planes = np.moveaxis(np.take(t1, neighbours, axis=axis), (axis, axis + 1), (0, 1))
    parts = [t1_planes]
    if guidance is not None and len(guidance):
        g = np.moveaxis(np.take(guidance, indices, axis=axis + 1), axis + 1, 0)  # (N, G, A, Z)
        parts.append(g)
    return np.concatenate(parts, axis=1).astype(np.float32, copy=False)


def _crop(planes: np.ndarray, centre: tuple[int, int], size: int) -> np.ndarray:
    """(C, A, Z) -> (C, size, size) window centred on ``centre``, zero outside the plane."""
    out = np.zeros((planes.shape[0], size, size), dtype=np.float32)
    src, dst = [], []
    for dim, c in zip(planes.shape[1:], centre, strict=True):
        lo = c - size // 2
        s0, s1 = max(lo, 0), min(lo + size, dim)
        src.append(slice(s0, s1))
        dst.append(slice(s0 - lo, s1 - lo))
    out[:, dst[0], dst[1]] = planes[:, src[0], src[1]]
    return out


def draw_slice_mm(rng: np.random.Generator, train_slice_mm, native_slice_mm: float) -> float:
    """A slice spacing uniform in ``train_slice_mm``, never finer than the native spacing."""
    lo, hi = float(train_slice_mm[0]), float(train_slice_mm[1])
    lo = max(lo, native_slice_mm)
    return float(rng.uniform(lo, hi)) if hi > lo else lo


def brain_voxels(subjects: list[Subject], dataset: str) -> list[np.ndarray]:
    """Check ``subjects`` can train (at least one, each with a 7T target and a non-empty
    brain mask); return each one's brain voxel indices (N, 3), where patches are centred."""
    if not subjects:
        raise ValueError(f"{dataset} needs at least one subject")
    missing = [s.name for s in subjects if s.target is None]
    if missing:
        raise ValueError(f"subjects without a 7T target cannot be used to train: {missing}")
    brains = [np.argwhere(s.mask) for s in subjects]
    for s, b in zip(subjects, brains, strict=True):
        if not len(b):
            raise ValueError(f"subject {s.name}: empty brain mask")
    return brains


class SliceDataset(Dataset):
    """Random 2.5-D training patches, each fully determined by ``(seed, index)``.

    Because an example depends only on its index, a training run that resumes at step ``s``
    draws exactly the examples the uninterrupted run would have drawn, with any number of
    DataLoader workers.

    Each item is a dict of float32 tensors: ``cond`` (Ccond, P, P), ``base`` (1, P, P) the
    re-degraded centre 1.5T plane, ``target`` (1, P, P) the 7T plane, ``mask`` (1, P, P), and
    ``slice_mm`` (scalar): the simulated input slice spacing, ``offset_mm`` its first slice
    centre, ``origin`` (5,) int: subject index, plane axis, plane index, patch centre (a, z).
    """

    def __init__(
        self,
        subjects: list[Subject],
        data_cfg: dict,
        use_guidance: bool = True,
        seed: int = 0,
        length: int = 10**9,
    ):
        if data_cfg.get("interpolation", "linear") != "linear":
            raise ValueError(
                "data.interpolation: paired inputs are the registration's linear resampling; "
                f"{data_cfg['interpolation']!r} needs data.inputs: randomised"
            )
        self._brain = brain_voxels(subjects, "SliceDataset")
        self.subjects = subjects
        self.cfg = dict(data_cfg)
        self.axes = slice_axes(self.cfg)
        self.use_guidance = use_guidance
        self.seed = int(seed)
        self.length = int(length)

    @property
    def n_condition(self) -> int:
        n_guidance = len(self.subjects[0].channels) - 1
        return n_condition_channels(n_guidance, self.cfg["context_slices"], self.use_guidance)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(index)])
        cfg = self.cfg
        k = int(rng.integers(len(self.subjects)))
        subj = self.subjects[k]
        axis = self.axes[int(rng.integers(len(self.axes)))]
        size = int(cfg["patch_size"])
        c = int(cfg["context_slices"])
        voxel_z = float(subj.spacing_mm[2])
        slice_mm = max(draw_slice_mm(rng, cfg["train_slice_mm"], subj.native_slice_mm), voxel_z)
        offset_mm = float(rng.uniform(0.0, slice_mm))

        for _ in range(20):  # a brain voxel as the patch centre; re-draw if mostly background
            x, y, z = self._brain[k][int(rng.integers(len(self._brain[k])))]
            index_along, a = (x, y) if axis == 0 else (y, x)
            mask_patch = _crop(
                np.take(subj.mask, [index_along], axis=axis)
                .astype(np.float32)
                .reshape(1, -1, subj.mask.shape[2]),
                (a, z),
                size,
            )
            if mask_patch.mean() >= cfg["min_mask_fraction"]:
                break

        guidance = subj.guidance if self.use_guidance else None
        planes = condition_planes(subj.t1, guidance, axis, [index_along], c)[0]  # (Ccond, A, Z)
        if slice_mm > subj.native_slice_mm * (1 + 1e-6):
            # Only the 2c+1 t1 planes need re-degrading; z is their last axis.
            planes[: 2 * c + 1] = simulate_slice_spacing(
                planes[: 2 * c + 1], voxel_z, slice_mm, axis=-1, offset_mm=offset_mm
            )
        target = np.take(subj.target, index_along, axis=axis)[None]
        cond = _crop(planes, (a, z), size)
        return {
            "cond": torch.from_numpy(cond),
            "base": torch.from_numpy(cond[c : c + 1].copy()),
            "target": torch.from_numpy(_crop(target, (a, z), size)),
            "mask": torch.from_numpy(mask_patch),
            "slice_mm": torch.tensor(slice_mm, dtype=torch.float32),
            "offset_mm": torch.tensor(offset_mm, dtype=torch.float32),
            # where the patch came from: subject, plane axis, plane index, centre (a, z)
            "origin": torch.tensor([k, axis, index_along, a, z]),
        }


def estimate_residual_scale(subjects: list[Subject]) -> float:
    """Twice the in-mask standard deviation of ``target - t1_1p5T`` over ``subjects``.

    The diffusion model works on ``residual / scale``, so its data have a standard deviation of
    about 0.5, the scale the cosine schedule was designed for.
    """
    res = np.concatenate([(s.target - s.t1)[s.mask] for s in subjects])
    return float(max(2.0 * res.std(), 1e-3))


def sampled_residual_scale(dataset, n: int | None = None) -> float:
    """Twice the in-mask standard deviation of ``target - base`` over ``n`` examples of
    ``dataset`` (all of them by default): :func:`estimate_residual_scale` for datasets whose
    targets are made per example (randomised inputs in the input's contrast)."""
    n = len(dataset) if n is None else int(n)
    res = []
    for i in range(n):
        item = dataset[i]
        res.append((item["target"] - item["base"])[item["mask"] > 0].numpy())
    return float(max(2.0 * np.concatenate(res).std(), 1e-3))
