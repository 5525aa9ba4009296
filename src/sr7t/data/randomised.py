"""Training examples with randomised anatomy, contrast and acquisition (:mod:`sr7t.data.synth`).

Each example is a 2.5-D patch in the *model frame*: the image axes are (a, t) where ``t`` is
the input's thick-slice axis (always the plane's last axis), ``a`` one of the two other axes,
and the context planes are neighbours along the third axis ``n``. The thick axis is drawn
among the subject's x, y and z per example, and so are the plane's other axis and the
acquisition, so one model serves thick slices along any axis, isotropically coarse inputs and
fine ones. The condition channels are, in order:

- ``2 * context_slices + 1`` input planes (the acquired 1.5T-like block, interpolated back to
  the fine grid as ``data.interpolation`` says, normalised so its 99th percentile in the brain
  is about 1);
- the guidance channels of the centre plane (as :class:`~sr7t.data.slices.SliceDataset`),
  unless ``use_guidance`` is false;
- :data:`GEOMETRY_CHANNELS`: constant planes with the input's slice spacing and in-plane
  resolution (mm / :data:`GEOMETRY_SCALE_MM`), so the model knows the acquisition.

With probability ``synth.real_fraction`` the input is the subject's real registered 1.5T
(thick along z as acquired, re-acquired at a coarser spacing when drawn): the real scanner's
appearance stays in the mix. It is not warped, unless ``synth.warp_real``: then input and
target are warped alike but without rotation or shear (:func:`sr7t.data.synth.axis_aligned`),
so its slices stay along the frame's thick axis, and the geometry channels give its voxel as
the warped block sees it. Otherwise the input is made from the warped
7T target (random contrast, bias, noise, acquisition).

The target (``synth.target_contrast``): ``7T``, the warped 7T itself (the network translates
contrast too); or ``input``, the warped 7T in the input's own contrast and shading — the same
random map and bias as the input, or for the real 1.5T the 7T mapped onto its intensities
(:func:`sr7t.data.contrast.target_in_input_contrast`) — so the network learns resolution only
and the 7T contrast comes from one global map (:mod:`sr7t.data.contrast`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from sr7t.data import synth
from sr7t.data.contrast import target_in_input_contrast
from sr7t.data.resolution import INTERPOLATION_ORDER
from sr7t.data.slices import Subject, brain_voxels

GEOMETRY_CHANNELS = ("slice_mm", "inplane_mm")
GEOMETRY_SCALE_MM = 8.0
CONTEXT_MARGIN = 3  # extra planes each side along n, so in-plane blur there has support


def geometry_planes(slice_mm: float, inplane_mm: float, shape) -> np.ndarray:
    """The geometry condition channels: (2, *shape) float32 constants."""
    values = np.array([slice_mm, inplane_mm], dtype=np.float32) / GEOMETRY_SCALE_MM
    return np.broadcast_to(values[:, None, None], (2, *shape)).astype(np.float32)


class RandomisedSliceDataset(Dataset):
    """Randomised 2.5-D training patches, each fully determined by ``(seed, index)``.

    Items are dicts of float32 tensors like :class:`~sr7t.data.slices.SliceDataset`'s:
    ``cond`` (Ccond, P, P), ``base`` (1, P, P) the centre input plane, ``target`` (1, P, P),
    ``mask`` (1, P, P), ``slice_mm``, ``offset_mm`` and ``origin`` (subject, thick axis, plane
    axis, real input flag, 0).
    """

    def __init__(
        self,
        subjects: list[Subject],
        data_cfg: dict,
        use_guidance: bool = True,
        seed: int = 0,
        length: int = 10**9,
    ):
        self._brain = brain_voxels(subjects, "RandomisedSliceDataset")
        self._brain_centre = [b.mean(axis=0) for b in self._brain]
        self.subjects = subjects
        self.cfg = data_cfg
        self.synth = data_cfg["synth"]
        self.use_guidance = use_guidance
        self.seed = int(seed)
        self.length = int(length)
        for s in subjects:
            if not np.allclose(s.spacing_mm, s.spacing_mm[0], rtol=0.02):
                raise ValueError(
                    f"subject {s.name}: randomised inputs need an isotropic 7T grid, got "
                    f"{s.spacing_mm.tolist()} mm"
                )
        self.input_contrast = self.synth["target_contrast"] == "input"
        self.order = INTERPOLATION_ORDER[data_cfg["interpolation"]]
        # resampling the anatomy: linear (blurs what lies off the grid) or cubic B-spline
        # from coefficients made once per subject and volume (Subject.derived, shared with
        # every other dataset on the same subjects, like the real 1.5T's targets)
        self.resample_order = int(self.synth.get("resample_order", 1))

    @property
    def n_condition(self) -> int:
        c = int(self.cfg["context_slices"])
        n_guidance = len(self.subjects[0].channels) - 1 if self.use_guidance else 0
        return 2 * c + 1 + n_guidance + len(GEOMETRY_CHANNELS)

    def __len__(self) -> int:
        return self.length

    def real_target(self, k: int) -> np.ndarray:
        """Subject ``k``'s 7T in the contrast and shading of its registered 1.5T (made once
        per subject and process)."""
        s = self.subjects[k]
        if "real_target" not in s.derived:
            s.derived["real_target"] = target_in_input_contrast(
                s.target, s.t1, s.mask, float(s.spacing_mm[0])
            )
        return s.derived["real_target"]

    def resample(self, k: int, name: str, coords: np.ndarray, on_grid: bool = False) -> np.ndarray:
        """Subject ``k``'s volume ``name`` (``target``, ``t1`` or ``real_target``) at voxel
        ``coords``, with ``synth.resample_order`` (1 linear, 3 cubic B-spline); ``on_grid``:
        the coordinates are whole voxels, where the cubic spline is the volume itself."""
        volume = self.real_target(k) if name == "real_target" else getattr(self.subjects[k], name)
        if self.resample_order == 1:
            return synth.sample(volume, coords)
        derived = self.subjects[k].derived
        if f"spline_{name}" not in derived:
            derived[f"spline_{name}"] = synth.spline_coefficients(volume)
        if on_grid:
            return synth.sample_on_grid(volume, derived[f"spline_{name}"], coords)
        return synth.sample_cubic(derived[f"spline_{name}"], coords)

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(index)])
        k = int(rng.integers(len(self.subjects)))
        subj = self.subjects[k]
        voxel = float(subj.spacing_mm[0])
        size = int(self.cfg["patch_size"])
        c = int(self.cfg["context_slices"])
        real = rng.random() < float(self.synth["real_fraction"])
        if real:
            thick = 2  # the real 1.5T is thick along z as acquired
        else:
            thick = synth.draw_thick_axis(
                rng,
                float(self.synth["real_fraction"]),
                bool(self.synth.get("balance_thick_axes", False)),
            )
        a, n = (ax for ax in (0, 1, 2) if ax != thick)
        if rng.random() < 0.5:
            a, n = n, a
        centre = self._brain[k][int(rng.integers(len(self._brain[k])))]
        depth = 2 * c + 1 + 2 * CONTEXT_MARGIN
        warp_real = real and bool(self.synth.get("warp_real", False))
        coords = synth.sampling_coords(
            rng,
            centre,
            (depth, size, size),
            (n, a, thick),
            voxel,
            synth.axis_aligned(self.synth) if warp_real else self.synth,
            warp=warp_real or not real,
            brain_centre_vox=self._brain_centre[k],
        )
        grid = real and not warp_real and self.resample_order != 1
        if grid:
            coords = np.round(coords)  # unwarped: on the grid, nothing to interpolate
        mid = CONTEXT_MARGIN + c
        if real and self.input_contrast:
            target = self.resample(k, "real_target", coords[:, mid], grid)
        elif real:
            target = self.resample(k, "target", coords[:, mid], grid)
        if "mask_float" not in subj.derived:
            subj.derived["mask_float"] = subj.mask.astype(np.float32)
        mask = synth.sample(subj.derived["mask_float"], coords[:, mid]) > 0.5

        if real:
            native = subj.native_spacing_mm  # x, y, z: thick along z
            if warp_real:  # the 1.5T's voxel as the warped block sees it, (n, a, thick)
                native = synth.spacing_in_block(native, coords, (n, a, thick))
            inplane = float(max(native[0], native[1]))
            # (the drawn in-plane resolution is not used: the real 1.5T's own is kept)
            acq = synth.draw_acquisition(
                rng, self.cfg["train_slice_mm"], [inplane, inplane], voxel, self.synth
            )
            slice_mm = max(acq.slice_mm, float(native[2]))
            block = self.resample(k, "t1", coords, grid)
            if slice_mm > native[2] * 1.001 or self.order != 1:
                # re-acquired; with cubic interpolation at its own spacing too, so it comes
                # back onto the grid by the same spline as every other input
                m = synth.acquisition_matrix(
                    size, voxel, slice_mm, offset_mm=acq.offset_mm, order=self.order
                )
                block = synth.apply_along(block, m, 2)
            offset = acq.offset_mm
        else:
            acq = synth.draw_acquisition(
                rng, self.cfg["train_slice_mm"], self.synth["inplane_mm"], voxel, self.synth
            )
            anatomy = self.resample(k, "target", coords)
            target = anatomy[mid].copy()  # the same points as the block's centre plane
            block = synth.random_contrast(rng, anatomy, self.synth["gamma"])
            block = block * np.exp(synth.smooth_log_bias(rng, block.shape, self.synth["bias_log"]))
            if self.input_contrast:  # the same coordinates as the target plane
                target = block[mid].copy()
            block = synth.rician(rng, block, float(rng.uniform(*self.synth["noise"])))
            block = synth.acquire(block, voxel, acq, 2, (0, 1), self.order)
            slice_mm, inplane, offset = acq.slice_mm, acq.inplane_mm, acq.offset_mm

        planes = block[CONTEXT_MARGIN : CONTEXT_MARGIN + 2 * c + 1]
        parts = [planes]
        if self.use_guidance:
            guidance = np.stack([synth.sample(g, coords[:, mid]) for g in subj.guidance])
            parts.append(guidance)
        parts.append(geometry_planes(slice_mm, inplane, (size, size)))
        cond = np.concatenate(parts).astype(np.float32)
        return {
            "cond": torch.from_numpy(cond),
            "base": torch.from_numpy(planes[c : c + 1].copy()),
            "target": torch.from_numpy(target[None]),
            "mask": torch.from_numpy(mask[None].astype(np.float32)),
            "slice_mm": torch.tensor(slice_mm, dtype=torch.float32),
            "offset_mm": torch.tensor(offset, dtype=torch.float32),
            "origin": torch.tensor([k, thick, n, int(real), 0]),
        }
