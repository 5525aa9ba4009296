"""Volume inference: whole planes, batched, following the plan stored with the model."""

from __future__ import annotations

import logging
import sys

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from sr7t.data.slices import T1_CHANNEL, condition_planes
from sr7t.models.diffusion import Denoiser, ddim_sample
from sr7t.models.fusion import fuse, fusion_plan

log = logging.getLogger(__name__)

# Spacing within this many mm of the trained range counts as inside it.
SPACING_TOLERANCE_MM = 0.05


def check_input_spacing(meta: dict, slice_mm: float) -> str | None:
    """A loud warning (text) when ``slice_mm`` lies outside the slice spacings the model was
    trained on (``meta["trained_slice_mm"]``); None when inside."""
    lo, hi = meta.get("trained_slice_mm") or meta["train_slice_mm"]
    if lo - SPACING_TOLERANCE_MM <= slice_mm <= hi + SPACING_TOLERANCE_MM:
        return None
    side = "finer" if slice_mm < lo else "coarser"
    return (
        f"WARNING: input slice spacing {slice_mm:g} mm is {side} than anything model "
        f"{meta.get('kind', '?')} was trained on ([{lo:g}, {hi:g}] mm). Super-resolution "
        "outside the training range fails silently: treat this output as unvalidated."
    )


def nothing_to_resolve(meta: dict, slice_mm: float | None, inplane_mm: float | None) -> bool:
    """True when the input is already at the model's output resolution on every axis (its
    slice spacing and in-plane resolution within ``SPACING_TOLERANCE_MM`` of the finest grid
    spacing the model was trained on, ``meta["spacing_mm_seen"]``): there is nothing to
    super-resolve, and :func:`predict_volume` returns the input as it is (in the output
    contrast) rather than run a network that can only make it worse. False when the input's
    geometry is not given."""
    seen = meta.get("spacing_mm_seen")
    if slice_mm is None or inplane_mm is None or not seen:
        return False
    voxel = float(np.min(seen[0]))
    return max(float(slice_mm), float(inplane_mm)) <= voxel + SPACING_TOLERANCE_MM


def sampling_start(meta: dict) -> str:
    """Where the model's DDIM starts: ``meta["sampling_start"]`` (``zero`` or ``noise``);
    bundles from before it was recorded sampled from noise."""
    return str(meta.get("sampling_start", "noise"))


# The plane flips averaged at inference (``meta["test_time_flips"]`` of them, in this order):
# none, along the in-plane axis, along the thick axis, both. Training flips its anatomy at
# random, so each is an input the model knows; their mean is a cheap ensemble.
FLIPS = ((), (-2,), (-1,), (-2, -1))


def test_time_flips(meta: dict) -> int:
    """How many plane flips (1, 2 or 4 of :data:`FLIPS`) inference averages:
    ``meta["test_time_flips"]``; bundles from before it was recorded: 1 (none). Raises
    ``ValueError`` for any other count."""
    flips = int(meta.get("test_time_flips", 1))
    if flips not in (1, 2, len(FLIPS)):
        raise ValueError(f"test_time_flips must be 1, 2 or 4, got {flips}")
    return flips


def with_flips(meta: dict, flips: int | None) -> dict:
    """``meta`` with its test-time flips replaced by ``flips`` (None: as it is); a count other
    than 1, 2 or 4 raises ``ValueError`` here, before any work."""
    if flips is None:
        return meta
    meta = {**meta, "test_time_flips": int(flips)}
    test_time_flips(meta)
    return meta


def inference_steps(meta: dict) -> int:
    """The DDIM steps inference samples in: ``meta["inference_steps"]`` where the model's plan
    sets it (a teacher scored at other steps than the ``sampling_steps`` its students distil),
    else ``meta["sampling_steps"]``."""
    return int(meta.get("inference_steps") or meta["sampling_steps"])


def with_steps(meta: dict, steps: int | None) -> dict:
    """``meta`` with its inference steps (:func:`inference_steps`) replaced by ``steps`` (None:
    as it is); a student off the steps it was trained for is off its training. A count below
    1 raises ``ValueError`` here, before any work."""
    if steps is None:
        return meta
    if int(steps) < 1:
        raise ValueError(f"sampling steps must be at least 1, got {steps}")
    return {**meta, "inference_steps": int(steps)}


# Overlap of neighbouring tiles (a fraction of the tile) and their blending: MONAI's
# sliding-window inference with a Gaussian weight, so a voxel's value comes mostly from the
# tiles it lies deep inside.
TILE_OVERLAP = 0.5
TILE_BLEND = "gaussian"


def test_time_rotations(meta: dict) -> int:
    """How many rotations about the thick axis inference averages (:func:`predict_volume`):
    ``meta["test_time_rotations"]``; bundles from before it was recorded: 1 (none). Raises
    ``ValueError`` for a count below 1."""
    rotations = int(meta.get("test_time_rotations", 1))
    if rotations < 1:
        raise ValueError(f"test_time_rotations must be at least 1, got {rotations}")
    return rotations


def with_rotations(meta: dict, rotations: int | None) -> dict:
    """``meta`` with its test-time rotations replaced by ``rotations`` (None: as it is),
    checked here, before any work."""
    if rotations is None:
        return meta
    meta = {**meta, "test_time_rotations": int(rotations)}
    test_time_rotations(meta)
    return meta


def slice_consistency(meta: dict) -> float:
    """How far the output is pulled towards the input's slice means (0: not at all, 1: equal;
    :func:`sr7t.models.consistency.enforce_slice_means`): ``meta["slice_consistency"]``;
    bundles from before it: 0."""
    weight = float(meta.get("slice_consistency", 0.0))
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"slice_consistency must lie in [0, 1], got {weight}")
    return weight


def with_consistency(meta: dict, weight: float | None) -> dict:
    """``meta`` with its slice consistency replaced by ``weight`` (None: as it is)."""
    if weight is None:
        return meta
    meta = {**meta, "slice_consistency": float(weight)}
    slice_consistency(meta)
    return meta


def inference_tile(meta: dict) -> int | None:
    """The square tile (pixels) each plane is cut into at inference, or None for whole planes:
    ``meta["inference_tile"]``; bundles from before it was recorded: None. The network's group
    norms (and the teacher's attention) pool over whatever they are given, so a plane run
    whole is an input of another size than the training patches; tiles of the training
    patch size give it what it was trained on."""
    tile = meta.get("inference_tile")
    return None if tile in (None, 0) else int(tile)


def with_tile(meta: dict, tile: int | None) -> dict:
    """``meta`` with its inference tile replaced by ``tile`` (None: as it is; 0: whole
    planes). A tile that is not a positive multiple of 4 raises ``ValueError`` here."""
    if tile is None:
        return meta
    tile = int(tile)
    if tile < 0 or tile % 4:
        raise ValueError(
            f"an inference tile must be 0 (whole planes) or a multiple of 4, got {tile}"
        )
    return {**meta, "inference_tile": tile}


def input_order(meta: dict) -> int:
    """The spline order (1 or 3) that brings an acquired input onto the fine grid for this
    model (``meta["interpolation"]``; bundles from before it was recorded: linear)."""
    from sr7t.data.resolution import INTERPOLATION_ORDER

    return INTERPOLATION_ORDER[meta.get("interpolation", "linear")]


def _select_channels(meta: dict, condition: np.ndarray):
    channels = list(meta["channels"])
    if condition.ndim != 4 or condition.shape[0] != len(channels):
        raise ValueError(
            f"condition must be (C, X, Y, Z) with C = {len(channels)} channels {channels}, "
            f"got shape {condition.shape}"
        )
    t1 = condition[channels.index(T1_CHANNEL)]
    guidance = None
    if meta["use_guidance"]:
        guidance = condition[[i for i, c in enumerate(channels) if c != T1_CHANNEL]]
    return t1, guidance


def _geometry(meta: dict, slice_mm, inplane_mm, shape) -> np.ndarray | None:
    """The constant geometry channels for a model that takes them (None otherwise)."""
    if not meta.get("geometry_channels"):
        return None
    if slice_mm is None or inplane_mm is None:
        raise ValueError(f"model {meta.get('kind', '?')} needs the input's slice_mm and inplane_mm")
    from sr7t.data.randomised import geometry_planes

    return geometry_planes(float(slice_mm), float(inplane_mm), shape)


def _to_frame(condition: np.ndarray, thick_axis: int) -> np.ndarray:
    """(C, X, Y, Z) with the thick axis moved last: the model frame."""
    return np.moveaxis(condition, 1 + int(thick_axis), 3)


@torch.no_grad()
def predict_volume(
    model: Denoiser,
    meta: dict,
    condition: np.ndarray,
    steps: int | None = None,
    batch_size: int = 16,
    device=None,
    progress: bool = True,
    seed: int = 0,
    thick_axis: int = 2,
    slice_mm: float | None = None,
    inplane_mm: float | None = None,
    start: str | None = None,
    region: tuple[slice, slice, slice] | None = None,
    slice_offset_mm: float = 0.0,
    voxel_mm: float | None = None,
) -> np.ndarray:
    """Super-resolve one volume (or the box ``region`` of it).

    ``condition``: float32 (C, X, Y, Z) on the fine grid, channels as ``meta["channels"]``, in
    the dataset's normalised units (1.5T divided by its in-mask 99th percentile), the input
    interpolated onto the grid with spline order :func:`input_order`. ``thick_axis``: the
    input's slice axis (0, 1 or 2); it becomes the last axis of every model plane.
    ``slice_mm`` / ``inplane_mm``: the input's slice spacing and in-plane resolution (needed
    by models with geometry channels).
    Every plane along each of ``meta["slice_axis"]`` (axes of the frame where the thick axis is
    last) is sampled with deterministic DDIM (``steps``, default :func:`inference_steps`)
    from ``start`` (default :func:`sampling_start`):
    ``zero``, the path towards the posterior mean, or ``noise`` drawn from ``seed``; planes
    are zero-padded to the UNet's size multiple and cropped back; the residual is added to
    the input channel; each batch is the mean over ``meta["test_time_flips"]`` plane flips
    (:func:`test_time_flips`). With several plane axes the predictions are fused as the
    model's plan says (:func:`sr7t.models.fusion.fusion_plan`: their mean by default), with
    ``meta["slice_consistency"]`` > 0 (:func:`slice_consistency`; off unless set) pulled
    towards the input's slice means (:mod:`sr7t.models.consistency`: slices every
    ``slice_mm``, the first centred ``slice_offset_mm`` from the first voxel centre, on a grid
    of ``voxel_mm`` along the thick axis), then mapped to the 7T contrast
    (:func:`to_output_contrast`).
    Returns float32 (X, Y, Z) in normalised 7T units. An input already at the output resolution
    (:func:`nothing_to_resolve`) skips the network: its 1.5T channel, in the output contrast.

    ``region`` (slices in X, Y, Z): only the planes through that box are run (each plane
    whole, so what lies around the box is the planes' context, as in a whole-volume run) and
    only the box is returned: the evaluation scores a box of a larger crop at the cost of
    the box's planes. Every plane keeps the noise it gets in a whole-volume run.

    With ``meta["test_time_rotations"]`` k > 1 (:func:`test_time_rotations`), the result is
    the mean of k such predictions on the input rotated about its thick axis by 90 i / k
    degrees (i = 0 .. k - 1; each rotated back, :func:`_rotated_member`): their plane
    orientations are 2 k directions around the thick axis instead of two.
    """
    if nothing_to_resolve(meta, slice_mm, inplane_mm):
        t1, _ = _select_channels(meta, np.asarray(condition, dtype=np.float32))
        log.info(
            "input at %.3g mm slices, %.3g mm in-plane is already at the model's resolution: "
            "returned as it is (in the output contrast)",
            slice_mm,
            inplane_mm,
        )
        out = to_output_contrast(meta, t1.astype(np.float32))
        return out if region is None else out[tuple(region)]
    rotations = test_time_rotations(meta)
    fusion_plan(meta)  # an unknown fusion fails here, before any plane is run
    condition = np.asarray(condition, dtype=np.float32)
    same = {"steps": steps, "batch_size": batch_size, "device": device, "start": start}
    same |= {"thick_axis": thick_axis, "slice_mm": slice_mm, "inplane_mm": inplane_mm}
    same |= {"slice_offset_mm": slice_offset_mm, "voxel_mm": voxel_mm}

    def member(cond, box, index):
        label = f"predict {90.0 * index / rotations:g}°" if rotations > 1 else "predict"
        return _predict_member(
            model, meta, cond, box, seed + index, label if progress else None, **same
        )

    out = member(condition, region, 0)
    if rotations == 1:
        return out
    total, weight = out.astype(np.float64), np.ones(out.shape)
    for i in range(1, rotations):
        angle = 90.0 * i / rotations
        pred, valid = _rotated_member(member, condition, angle, int(thick_axis), region, i)
        total += np.where(valid, pred, 0.0)
        weight += valid
    return (total / weight).astype(np.float32)


def _predict_member(
    model: Denoiser,
    meta: dict,
    condition: np.ndarray,
    region,
    seed: int,
    progress: str | None,
    *,
    steps,
    batch_size,
    device,
    start,
    thick_axis,
    slice_mm,
    inplane_mm,
    slice_offset_mm=0.0,
    voxel_mm=None,
) -> np.ndarray:
    """One prediction of :func:`predict_volume` (the input as it is, every plane
    orientation fused); ``progress``: the progress bar's label, or None for none."""
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    model = model.to(device).eval()
    steps = int(steps or inference_steps(meta))
    scale = float(meta["residual_scale"])
    context = int(meta["context_slices"])
    condition = _to_frame(np.asarray(condition, dtype=np.float32), thick_axis)
    t1, guidance = _select_channels(meta, condition)
    mult = model.size_multiple
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    flips = test_time_flips(meta)
    tile = inference_tile(meta)
    if tile is not None and tile % mult:
        raise ValueError(f"inference tile {tile} is not a multiple of the UNet's {mult}")

    parts = []
    axes = [int(a) for a in meta["slice_axis"]]
    if region is None:
        region = (slice(None),) * 3
    thick = int(thick_axis)  # the region in the frame: the thick axis last
    frame_region = tuple(region[a] for a in range(3) if a != thick) + (region[thick],)
    consistency = slice_consistency(meta)
    if consistency and (slice_mm is None or voxel_mm is None):
        raise ValueError(
            "slice consistency needs the input's slice spacing and the grid's voxel size"
        )
    lines, crop = frame_region, (slice(None),) * 3
    if consistency:  # whole lines along the thick axis (each plane holds them), and planes
        # beyond the box as far as the correction's smoothing reaches
        lines, crop = _consistency_lines(frame_region, t1.shape)
    wanted = {a: np.arange(t1.shape[a])[lines[a]] for a in axes}
    total = sum(len(wanted[a]) for a in axes)
    bar = tqdm(total=total, desc=progress, unit="plane", file=sys.stderr, disable=not progress)
    for axis in axes:
        n = t1.shape[axis]
        h, w = t1.shape[1 - axis], t1.shape[2]
        ph, pw = (-h) % mult, (-w) % mult
        geometry = _geometry(meta, slice_mm, inplane_mm, (h, w))
        residual = np.zeros((n, h, w), dtype=np.float32)
        # One draw per axis, so the result does not depend on batch_size; a deterministic
        # (regression) model and sampling_start "zero" start from zeros.
        noise_all = torch.randn((n, 1, h + ph, w + pw), generator=gen)
        if meta.get("deterministic") or (start or sampling_start(meta)) == "zero":
            noise_all.zero_()
        first, todo = 0, wanted[axis]
        while first < len(todo):
            idx = todo[first : first + batch_size]
            planes = condition_planes(t1, guidance, axis, idx, context)
            if geometry is not None:
                geo = np.broadcast_to(geometry, (len(idx), *geometry.shape))
                planes = np.concatenate([planes, geo], axis=1)
            try:
                x0 = _sample_padded(
                    model, torch.from_numpy(planes), steps, noise_all[idx], device, flips, tile
                )
            except RuntimeError as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
                batch_size = _smaller_batch(exc, len(idx), (h, w), device)
                continue  # the same planes again, fewer at a time (same noise: same result)
            residual[idx] = x0 * scale
            bar.update(len(idx))
            first += len(idx)
        # (N, A, Z) back to the frame's (X, Y, Z), the box only (with slice consistency
        # every line along the thick axis whole: each plane holds it)
        parts.append(t1[lines] + np.moveaxis(residual, 0, axis)[lines])
    bar.close()
    fused = fuse(parts, axes, *fusion_plan(meta)).astype(np.float32)
    if consistency:
        from sr7t.models.consistency import SMOOTH_VOXELS, enforce_slice_means

        fused = enforce_slice_means(
            fused,
            t1[lines],
            float(voxel_mm),
            float(slice_mm),
            slice_offset_mm,
            consistency,
            input_order(meta),
            smooth_voxels=SMOOTH_VOXELS,
        )[crop]
    return np.moveaxis(to_output_contrast(meta, fused), 2, thick)


def _consistency_lines(frame_region, shape):
    """The frame's box widened for :func:`sr7t.models.consistency.enforce_slice_means`: whole
    along the thick axis, and by the smoothing's reach (4 sigma) across it, within the grid;
    and the crop that takes the box back out of it."""
    from sr7t.models.consistency import SMOOTH_VOXELS

    reach = int(np.ceil(4 * SMOOTH_VOXELS))  # scipy's Gaussian: 4 sigma
    lines, crop = [], []
    for a, (part, n) in enumerate(zip(frame_region, shape, strict=True)):
        start, stop, _ = part.indices(n)
        lo, hi = (0, n) if a == 2 else (max(start - reach, 0), min(stop + reach, n))
        lines.append(slice(lo, hi))
        crop.append(slice(start - lo, stop - lo))
    return tuple(lines), tuple(crop)


# Voxels kept clear of a rotated member's computed box: rotated back, values near its edge
# lean on what lies outside it (its edge values, carried on), so only voxels whose rotated
# position lies this deep inside count.
ROTATION_MARGIN = 3


def _rotated_member(member, condition: np.ndarray, angle: float, thick_axis: int, region, index):
    """``member(condition, box, index)``'s prediction on ``condition`` (C, X, Y, Z) rotated
    by ``angle`` degrees about ``thick_axis`` (cubic spline, edges extended), rotated back
    onto the input's grid. Only the planes through the rotated ``region`` (its bounding box
    on the rotated grid, :data:`ROTATION_MARGIN` wider in the rotation's plane) are run.
    Returns (prediction, valid) on the region (the whole grid when None): ``valid`` marks
    the voxels whose rotated position lies inside the computed box, away from its edges (all
    of the region unless the grid's edge is near)."""
    from scipy.ndimage import rotate

    plane = tuple(a for a in range(3) if a != thick_axis)
    shape = condition.shape[1:]
    region = tuple(region) if region is not None else (slice(None),) * 3

    def turn(volume, degrees, order, mode="constant"):
        return rotate(volume, degrees, axes=plane, reshape=False, order=order, mode=mode)

    inside = np.zeros(shape, dtype=np.float32)
    inside[region] = 1.0
    hit = np.argwhere(turn(inside, angle, 0) > 0.5)
    if not len(hit):  # a region near the grid's corner, turned out of it: nothing to add
        return np.zeros(inside[region].shape, np.float32), np.zeros(inside[region].shape, bool)
    margin = np.array([0 if a == thick_axis else ROTATION_MARGIN for a in range(3)])
    lo, hi = hit.min(0), hit.max(0) + 1  # the rotated region's bounding box (to rounding)
    wider = margin + 1 * (margin > 0)  # so that its every voxel lies deep inside
    box = tuple(
        slice(int(a), int(b))
        for a, b in zip(np.maximum(lo - wider, 0), np.minimum(hi + wider, shape), strict=True)
    )
    turned = np.stack([turn(c, angle, 3, "nearest") for c in condition])
    pred = member(turned, box, index)
    pads = [(b.start, n - b.stop) for b, n in zip(box, shape, strict=True)]
    full = np.pad(pred, pads, mode="edge")  # no step at the box's edge for the spline
    core = np.zeros(shape, dtype=np.float32)  # the rotated grid's voxels deep inside the box
    core[tuple(slice(b.start + m, b.stop - m) for b, m in zip(box, margin, strict=True))] = 1.0
    back = turn(full, -angle, 3)
    valid = turn(core, -angle, 0) > 0.5
    return back[region], valid[region]


def _smaller_batch(exc: RuntimeError, batch: int, plane: tuple[int, int], device) -> int:
    """After ``exc`` predicting ``batch`` planes at once: half the batch when it was out of
    memory (planes are batched adaptively), else ``exc`` again. One plane that does not fit
    raises :class:`sr7t.errors.InferenceOOM` with what to try."""
    from sr7t.errors import InferenceOOM, is_out_of_memory

    if not is_out_of_memory(exc):
        raise exc
    if batch <= 1:
        raise InferenceOOM(
            f"out of GPU memory predicting one {plane[0]} x {plane[1]} plane on {device}: "
            "free the GPU of other jobs, use a card with more memory, or run on the CPU "
            "(--device cpu)"
        ) from exc
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    smaller = max(1, batch // 2)
    log.warning("out of memory at %d planes per batch: going on with %d", batch, smaller)
    return smaller


def to_output_contrast(meta: dict, pred: np.ndarray) -> np.ndarray:
    """A model that super-resolves in the input's contrast (``meta["output_contrast"]`` is
    ``input``) gets the 7T's through its global monotone ``contrast_map``; others as they are."""
    if meta.get("output_contrast") != "input":
        return pred
    from sr7t.data.contrast import quantile_map

    return quantile_map(pred, meta["contrast_map"])


def _sample_padded(
    model: Denoiser,
    cond: torch.Tensor,
    steps: int,
    noise: torch.Tensor,
    device,
    flips: int = 1,
    tile: int | None = None,
):
    """DDIM on planes ``cond`` (N, C, H, W) zero-padded to the UNet's size multiple (``noise``
    is already padded); returns the scaled residual (N, H, W) as float32 numpy: the mean over
    the first ``flips`` of :data:`FLIPS` (each flipped back). With ``tile``, each (flipped)
    plane is cut into overlapping ``tile`` x ``tile`` windows (zero-padded where the plane is
    smaller), each window sampled with its crop of the plane's noise, and the windows blended
    (:func:`_sample_tiled`)."""
    h, w = cond.shape[-2:]
    mult = model.size_multiple
    total = 0.0
    for dims in FLIPS[:flips]:  # the first, (), leaves the planes as they are
        if tile is not None:
            x0 = _sample_tiled(model, cond.flip(dims), steps, noise.flip(dims), device, tile)
            total = total + x0.flip(dims)
            continue
        c = F.pad(cond.flip(dims), (0, (-w) % mult, 0, (-h) % mult)).to(device)
        x0 = ddim_sample(model, c, steps, noise=noise.flip(dims))
        total = total + x0[:, 0, :h, :w].float().flip(dims)
    return (total / flips).cpu().numpy()


def _sample_tiled(
    model: Denoiser, cond: torch.Tensor, steps: int, noise: torch.Tensor, device, tile: int
) -> torch.Tensor:
    """DDIM over ``tile`` x ``tile`` windows of the planes ``cond`` (N, C, H, W), blended by
    MONAI's sliding-window inference (:data:`TILE_OVERLAP`, :data:`TILE_BLEND`); ``noise``
    (N, 1, >= H, >= W) is cropped to the planes and travels with them as channel 0, so every
    window starts from its own crop of it. Returns (N, H, W) float32."""
    from monai.inferers import sliding_window_inference

    h, w = cond.shape[-2:]
    joined = torch.cat([noise[:, :, :h, :w].to(cond.dtype), cond], dim=1).to(device)

    def window(x: torch.Tensor) -> torch.Tensor:
        return ddim_sample(model, x[:, 1:], steps, noise=x[:, :1])

    x0 = sliding_window_inference(
        joined,
        roi_size=(tile, tile),
        sw_batch_size=max(1, joined.shape[0]),
        predictor=window,
        overlap=TILE_OVERLAP,
        mode=TILE_BLEND,
    )
    return x0[:, 0].float()


@torch.no_grad()
def predict_plane(
    model: Denoiser,
    meta: dict,
    condition: np.ndarray,
    axis: int,
    index: int,
    seed: int = 0,
    slice_mm: float | None = None,
    inplane_mm: float | None = None,
) -> np.ndarray:
    """Super-resolve the single plane ``index`` along ``axis`` (0 or 1) of ``condition``
    (C, X, Y, Z, thick along z, as for :func:`predict_volume`). Returns float32 (A, Z) in
    normalised 7T units (for monitoring; the noise differs from a whole-volume prediction's)."""
    device = next(model.parameters()).device
    t1, guidance = _select_channels(meta, np.asarray(condition, dtype=np.float32))
    planes = condition_planes(t1, guidance, axis, [index], meta["context_slices"])
    h, w = planes.shape[-2:]
    geometry = _geometry(meta, slice_mm, inplane_mm, (h, w))
    if geometry is not None:
        planes = np.concatenate([planes, geometry[None]], axis=1)
    mult = model.size_multiple
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    noise = torch.randn((1, 1, h + (-h) % mult, w + (-w) % mult), generator=gen)
    if meta.get("deterministic"):
        noise.zero_()
    residual = _sample_padded(
        model,
        torch.from_numpy(planes),
        inference_steps(meta),
        noise,
        device,
        test_time_flips(meta),
        inference_tile(meta),
    )
    plane = np.take(t1, index, axis=axis) + residual[0] * float(meta["residual_scale"])
    return to_output_contrast(meta, plane)
