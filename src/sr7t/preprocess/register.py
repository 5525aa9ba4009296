"""Register 1.5T scans to their 7T partner (antspyx) and resample 1.5T maps onto the 7T grid.

Conventions: arrays are float32 (x, y, z) RAS+ with 4x4 voxel-to-world affines in mm
(:mod:`sr7t.io`). A registration is summarised by one 4x4 *world matrix* ``W`` that maps a
point in 7T world RAS mm to the corresponding point in 1.5T world RAS mm (the pull-back used
to resample a 1.5T map onto the 7T grid). It is saved as plain text (``numpy.savetxt``): ANTs'
own ``.mat`` files are LPS, centred, and awkward to use outside ANTs.

Similarity QC is the mutual information (nats, 32x32-bin joint histogram) between the 7T
image and the 1.5T image resampled onto the 7T grid, inside the 7T mask: higher is better.
"Before" uses the scanner headers alone (identity world matrix).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import ants
import numpy as np
from nibabel.affines import voxel_sizes
from scipy import ndimage

from sr7t.errors import RegistrationDiverged
from sr7t.io import load_volume, save_volume, write_json
from sr7t.preprocess.masks import RAS_TO_LPS, head_mask, set_itk_threads, to_ants

log = logging.getLogger(__name__)

# Coarse-to-fine pyramid, as target voxel sizes (mm) for the fit; converted to integer ANTs
# shrink factors of the 7T grid. The 1.5T has 3 mm slices, so a level finer than ~1.5 mm
# costs time without adding information.
LEVEL_SPACING_MM = (8.0, 4.0, 2.0)
ITERATIONS = {"Rigid": (200, 100, 50), "Affine": (100, 50, 25), "Similarity": (100, 50, 25)}
FIXED_MASK_DILATION_MM = 4.0  # let the brain edge, the strongest feature, count


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_1p5t_to_7t`.

    ``world_matrix``: 4x4, 7T world RAS mm -> 1.5T world RAS mm (linear part only; a SyN warp,
    when asked for, is in ``transform_files`` only). ``transform_files``: ANTs forward
    transforms (fixed=7T -> moving=1.5T, LPS) in ``ants.apply_transforms`` order; they live in
    a temporary folder. ``similarity_before`` / ``similarity_after``: mutual information in
    nats on the 7T grid inside the 7T mask, higher is better. ``seconds``: wall time.
    """

    world_matrix: np.ndarray
    transform_files: list[str]
    similarity_before: float
    similarity_after: float
    seconds: float
    similarity_metric: str = "mutual_information_nats (higher is better)"
    stages: list[str] = field(default_factory=list)

    @property
    def diverged(self) -> bool:
        return self.similarity_after < self.similarity_before


@contextmanager
def _ants_seed(seed: int):
    """Make antsRegistration's random metric sampling repeatable.

    antspyx 0.6 ignores ``registration(random_seed=...)`` and passes ``--random-seed`` only
    from its module-level ``ants.config._random_seed`` (measured: without it, two Rigid runs
    on the same pair differed by up to 0.06 in the matrix). Set it for the call, then restore.
    """
    config = getattr(ants, "config", None)
    if config is None or not hasattr(config, "_random_seed"):
        yield
        return
    before = config._random_seed
    config._random_seed = int(seed)
    try:
        yield
    finally:
        config._random_seed = before


def register_1p5t_to_7t(
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed: np.ndarray,
    fixed_affine: np.ndarray,
    transforms: tuple[str, ...] | list[str] = ("Rigid", "Affine"),
    syn: bool = False,
    threads: int | None = None,
    seed: int = 0,
    fixed_mask: np.ndarray | None = None,
) -> RegistrationResult:
    """Register the 1.5T ``moving`` (x, y, z) to the 7T ``fixed`` (x, y, z); affines 4x4 mm.

    Stages run in the order of ``transforms`` (each of ``Translation``, ``Rigid``,
    ``Similarity``, ``Affine``), each initialised from the previous; the first starts from
    aligned centres of mass. Metric: Mattes mutual information (32 bins) on a regular grid
    with a fixed ``seed``, restricted to the (dilated) 7T ``fixed_mask`` (default
    :func:`head_mask` of ``fixed``). ``syn``: add a SyN stage (its warp is only in
    ``transform_files``). ``threads``: ITK threads; with 1 thread the result is bit-for-bit
    repeatable for a given ``seed`` (multi-threaded runs differ by ~0.1 mm).
    """
    set_itk_threads(threads)
    t0 = time.perf_counter()
    if fixed_mask is None:
        fixed_mask = head_mask(fixed, fixed_affine)
    fixed_mask = np.asarray(fixed_mask) > 0
    # Blur the 7T to the 1.5T's resolution first: against sharp 7T edges the affine stage
    # partly "explains" the thick-slice blur as a scaling. Measured on the test phantom:
    # scale error 1.9 % -> 1.2 %, mean error 0.65 -> 0.56 mm (rigid-only: 0.36-0.40 mm).
    fixed_img = to_ants(match_resolution(fixed, fixed_affine, moving_affine), fixed_affine)
    moving_img = to_ants(moving, moving_affine)
    metric_mask = to_ants(
        _dilate_mm(fixed_mask, fixed_affine, FIXED_MASK_DILATION_MM), fixed_affine
    )

    spacing = float(voxel_sizes(fixed_affine).min())
    shrink = _shrink_factors(spacing, fixed.shape)
    smoothing = tuple(
        0.5 * s * spacing if i < len(shrink) - 1 else 0.0 for i, s in enumerate(shrink)
    )
    workdir = tempfile.mkdtemp(prefix="sr7t_reg_")
    # ANTs treats seed 0 as "use the clock"
    with _ants_seed(int(seed) + 1):
        initial: list[str] | None = None
        stages: list[str] = []
        files: list[str] = []
        for k, kind in enumerate(transforms):
            if kind not in ITERATIONS and kind != "Translation":
                raise ValueError(
                    f"unknown transform {kind!r}; use Translation/Rigid/Similarity/Affine"
                )
            iters = ITERATIONS.get(kind, ITERATIONS["Rigid"])[-len(shrink) :]
            reg = ants.registration(
                fixed=fixed_img,
                moving=moving_img,
                type_of_transform=kind,
                initial_transform=initial,
                outprefix=str(Path(workdir) / f"stage{k}_"),
                mask=metric_mask,
                mask_all_stages=True,
                aff_metric="mattes",
                aff_sampling=32,
                aff_random_sampling_rate=0.25,
                aff_iterations=tuple(iters),
                aff_shrink_factors=tuple(shrink),
                aff_smoothing_sigmas=tuple(round(s, 3) for s in smoothing),
                smoothing_in_mm=True,
                random_seed=str(int(seed) + 1),  # antspyx < 0.6 (see _ants_seed)
            )
            files = list(reg["fwdtransforms"])
            # antsRegistration collapses the initial transform into its output (-z 1), so the
            # newest file alone is the whole linear map so far.
            initial = files
            stages.append(kind)
        world = _world_matrix_from_ants(files)
        if syn:
            reg = ants.registration(
                fixed=fixed_img,
                moving=moving_img,
                type_of_transform="SyNOnly",
                initial_transform=files,
                outprefix=str(Path(workdir) / "syn_"),
                mask=metric_mask,
                random_seed=str(int(seed) + 1),  # antspyx < 0.6 (see _ants_seed)
            )
            files = list(reg["fwdtransforms"])
            stages.append("SyN")

    before = mutual_information(
        fixed, _resample_world(moving, moving_affine, fixed, fixed_affine, np.eye(4)), fixed_mask
    )
    after = mutual_information(
        fixed, _resample_world(moving, moving_affine, fixed, fixed_affine, world), fixed_mask
    )
    return RegistrationResult(
        world_matrix=world,
        transform_files=files,
        similarity_before=before,
        similarity_after=after,
        seconds=time.perf_counter() - t0,
        stages=stages,
    )


def match_resolution(
    fixed: np.ndarray, fixed_affine: np.ndarray, moving_affine: np.ndarray
) -> np.ndarray:
    """Gaussian-blur ``fixed`` (x, y, z) so that its resolution along each world axis matches
    the coarser voxels of ``moving_affine`` (FWHM = voxel size); axes already coarse enough
    are left alone."""

    def fwhm_along_world_axes(affine):
        # Row d of the 3x3 part: how far one voxel step along each grid axis moves along world d.
        return np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=1))

    extra = fwhm_along_world_axes(moving_affine) ** 2 - fwhm_along_world_axes(fixed_affine) ** 2
    sigma_mm = np.sqrt(np.maximum(extra, 0.0)) / 2.3548
    # Fixed grids are near axis-aligned after canonical reorientation: world axis d ~ array axis d.
    sigma_vox = sigma_mm / voxel_sizes(fixed_affine)
    if not np.any(sigma_vox > 0.1):
        return np.asarray(fixed, dtype=np.float32)
    return ndimage.gaussian_filter(np.asarray(fixed, dtype=np.float32), sigma=sigma_vox)


def _resample_world(moving, moving_affine, fixed, fixed_affine, world):
    return resample_to_fixed(moving, moving_affine, fixed.shape, fixed_affine, world, order=1)


def _shrink_factors(spacing_mm: float, shape: tuple[int, ...]) -> list[int]:
    """Integer shrink factors for :data:`LEVEL_SPACING_MM`, coarse to fine, ending at >= 1.

    A level is kept only if the shrunk grid still has >= 16 voxels along its shortest axis.
    """
    factors: list[int] = []
    for target in LEVEL_SPACING_MM:
        f = max(1, int(round(target / spacing_mm)))
        if min(shape) // f < 16 and f > 1:
            continue
        if not factors or f < factors[-1]:
            factors.append(f)
    return factors or [1]


def _dilate_mm(mask: np.ndarray, affine: np.ndarray, mm: float) -> np.ndarray:
    r = np.maximum(np.round(mm / voxel_sizes(affine)).astype(int), 1)
    grid = np.ogrid[tuple(slice(-int(v), int(v) + 1) for v in r)]
    ball = sum((g / v) ** 2 for g, v in zip(grid, r, strict=True)) <= 1.0
    return ndimage.binary_dilation(mask, structure=ball).astype(np.float32)


def ants_linear_to_world(transform_file: str) -> np.ndarray:
    """4x4 RAS world matrix of one ANTs linear transform file (fixed -> moving, LPS).

    Recovered by mapping four points, so it is exact for any ITK linear transform type
    (Euler, similarity, affine; any centre).
    """
    tx = ants.read_transform(transform_file)
    pts = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mapped = np.array([tx.apply_to_point(tuple(p)) for p in pts], dtype=np.float64)
    lps = np.eye(4)
    lps[:3, 3] = mapped[0]
    lps[:3, :3] = (mapped[1:] - mapped[0]).T
    return RAS_TO_LPS @ lps @ RAS_TO_LPS


def _world_matrix_from_ants(files: list[str]) -> np.ndarray:
    # ants.apply_transforms applies the last file first to a fixed point.
    world = np.eye(4)
    for f in files:
        if not f.endswith(".mat"):
            raise ValueError(f"not a linear ANTs transform: {f}")
        world = world @ ants_linear_to_world(f)
    return world


def resample_to_fixed(
    moving: np.ndarray,
    moving_affine: np.ndarray,
    fixed_shape: tuple[int, int, int],
    fixed_affine: np.ndarray,
    world_matrix: np.ndarray,
    order: int = 3,
    cval: float = 0.0,
) -> np.ndarray:
    """Resample a map on the 1.5T grid onto the 7T grid through ``world_matrix``.

    ``moving``: (x, y, z) on ``moving_affine``; result float32 of ``fixed_shape`` on
    ``fixed_affine``. ``world_matrix``: 7T world RAS mm -> 1.5T world RAS mm. ``order``: 3
    cubic B-spline (images), 1 linear (smooth maps: bias field, Jacobian), 0 nearest (masks).
    Like ITK, points up to half a voxel outside the moving grid take the edge value, points
    further out get ``cval``; so it agrees with ``ants.apply_transforms``.
    """
    moving = np.asarray(moving, dtype=np.float32)
    vox = np.linalg.inv(moving_affine) @ np.asarray(world_matrix) @ np.asarray(fixed_affine)
    if order > 1:
        # ITK's B-spline interpolator uses mirror boundaries for its coefficients.
        mode = "mirror"
        coeffs = ndimage.spline_filter(moving, order=order, mode=mode, output=np.float32)
    else:
        mode = "nearest"
        coeffs = moving
    out = np.empty(fixed_shape, dtype=np.float32)
    nx, ny, _ = fixed_shape
    ij = np.indices((nx, ny), dtype=np.float64).reshape(2, -1)
    upper = np.array(moving.shape, dtype=np.float64)[:, None] - 0.5
    for k in range(fixed_shape[2]):  # slice by slice keeps memory small on 7T grids
        pts = vox[:3, :2] @ ij + (vox[:3, 2] * k + vox[:3, 3])[:, None]
        vals = ndimage.map_coordinates(
            coeffs, pts, order=order, mode=mode, prefilter=False, output=np.float32
        )
        outside = np.any((pts < -0.5) | (pts > upper), axis=0)
        vals[outside] = cval
        out[:, :, k] = vals.reshape(nx, ny)
    return out


def mutual_information(a: np.ndarray, b: np.ndarray, mask: np.ndarray, bins: int = 32) -> float:
    """Mutual information (nats) of ``a`` and ``b`` inside bool ``mask``; higher is better.

    Intensities are clipped to their 0.5-99.5th percentiles in the mask before binning.
    """
    m = np.asarray(mask) > 0
    x = np.asarray(a, dtype=np.float64)[m]
    y = np.asarray(b, dtype=np.float64)[m]
    x = np.clip(x, *np.percentile(x, [0.5, 99.5]))
    y = np.clip(y, *np.percentile(y, [0.5, 99.5]))
    joint, _, _ = np.histogram2d(x, y, bins=bins)
    p = joint / joint.sum()
    px = p.sum(axis=1, keepdims=True)
    py = p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / (px @ py)[nz])))


def registration_error_mm(
    est_world_matrix: np.ndarray,
    true_world_matrix: np.ndarray,
    fixed_mask: np.ndarray,
    fixed_affine: np.ndarray,
) -> tuple[float, float]:
    """Mean and max distance (mm) between where two world matrices send the mask's voxels.

    ``fixed_mask``: (x, y, z) on the 7T grid ``fixed_affine``; both matrices 7T -> 1.5T world.
    """
    ijk = np.argwhere(np.asarray(fixed_mask) > 0).T.astype(np.float64)
    if ijk.size == 0:
        raise ValueError("registration_error_mm: empty mask")
    world = fixed_affine[:3, :3] @ ijk + fixed_affine[:3, 3:]
    diff = np.asarray(est_world_matrix) - np.asarray(true_world_matrix)
    d = np.linalg.norm(diff[:3, :3] @ world + diff[:3, 3:], axis=0)
    return float(d.mean()), float(d.max())


def check_not_diverged(
    qc: dict, qc_json: str | Path, moving_scan, fixed_scan, subject: str = "?"
) -> None:
    """Raise :class:`~sr7t.errors.RegistrationDiverged` naming the subject and files if
    ``qc['diverged']``; the QC json is already written."""
    if qc["diverged"]:
        raise RegistrationDiverged(
            f"subject {subject}: registration of {moving_scan} to {fixed_scan} diverged: "
            "mutual information "
            f"{qc['similarity_after']:.4f} after < {qc['similarity_before']:.4f} before "
            f"(header alignment); see {qc_json}"
        )


def run_register_stage(
    moving_scan: str | Path,
    fixed_scan: str | Path,
    fixed_mask: str | Path,
    extra_maps: dict[str, tuple[str, str]],
    out_moving: str | Path,
    out_transform: str | Path,
    out_qc_json: str | Path,
    out_qc_png: str | Path,
    cfg: dict,
    threads: int | None = 1,
    subject: str = "?",
) -> dict:
    """File-level registration stage (1.5T ``moving_scan`` -> 7T ``fixed_scan``).

    ``subject`` names the subject in the QC json and in every error.

    ``fixed_mask``: 7T mask NIfTI. ``extra_maps``: name -> (path on the 1.5T grid, output path
    on the 7T grid); maps whose name contains "mask" are resampled nearest-neighbour, others
    linearly. Writes the 1.5T image on the 7T grid (``out_moving``, cubic B-spline by default,
    clipped at 0), the 4x4 world matrix as text (``out_transform``), the QC json and PNG.
    ``cfg``: the resolved config's ``preprocess.register`` (``transforms``, ``syn``,
    ``seed``, ``interpolation_order``). ``threads``: ITK threads; one thread makes
    antsRegistration bit-for-bit repeatable (with 2 the result moved by ~0.1 mm from run to run
    on a phantom), and it costs little at our sizes.
    QC json: ``similarity_before`` / ``similarity_after`` (mutual information, nats, higher is
    better), ``diverged`` (after < before), ``seconds``, ``world_matrix``.
    Raises RuntimeError naming the subject and files if the registration diverged (after
    writing the json).
    """
    moving, moving_affine = load_volume(moving_scan, subject)
    fixed, fixed_affine = load_volume(fixed_scan, subject)
    mask, mask_affine = load_volume(fixed_mask, subject)
    if mask.shape != fixed.shape or not np.allclose(mask_affine, fixed_affine, atol=1e-3):
        raise ValueError(f"subject {subject}: mask {fixed_mask} is not on the grid of {fixed_scan}")
    result = register_1p5t_to_7t(
        moving,
        moving_affine,
        fixed,
        fixed_affine,
        transforms=tuple(cfg["transforms"]),
        syn=bool(cfg["syn"]),
        threads=threads,
        seed=int(cfg["seed"]),
        fixed_mask=mask,
    )
    qc = {
        "subject": subject,
        "moving_scan": str(moving_scan),
        "fixed_scan": str(fixed_scan),
        "similarity_metric": result.similarity_metric,
        "similarity_before": result.similarity_before,
        "similarity_after": result.similarity_after,
        "diverged": bool(result.diverged),
        "seconds": round(result.seconds, 3),
        "stages": result.stages,
        "world_matrix": result.world_matrix,
        "config": {**cfg, "threads": threads},
    }
    write_json(out_qc_json, qc)
    _cleanup(result.transform_files)
    check_not_diverged(qc, out_qc_json, moving_scan, fixed_scan, subject)

    Path(out_transform).parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(
        out_transform,
        result.world_matrix,
        fmt="%.10f",
        header="4x4 world matrix: 7T world RAS mm -> 1.5T world RAS mm (sr7t)",
    )
    registered = resample_to_fixed(
        moving,
        moving_affine,
        fixed.shape,
        fixed_affine,
        result.world_matrix,
        order=int(cfg["interpolation_order"]),
    )
    registered = np.maximum(registered, 0.0)  # B-spline overshoot below 0 is not signal
    save_volume(out_moving, registered, fixed_affine)
    for name, (in_path, out_path) in extra_maps.items():
        # GNL maps of a scanner without a coefficient file are legitimately constant
        data, aff = load_volume(in_path, subject, allow_constant=True)
        order = 0 if "mask" in name else 1
        save_volume(
            out_path,
            resample_to_fixed(data, aff, fixed.shape, fixed_affine, result.world_matrix, order),
            fixed_affine,
        )
    save_qc_figure(out_qc_png, fixed, registered, fixed_affine, title=Path(moving_scan).name)
    return qc


def _cleanup(files: list[str]) -> None:
    dirs = {str(Path(f).parent) for f in files if Path(f).parent.name.startswith("sr7t_reg_")}
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def save_qc_figure(
    path: str | Path,
    fixed: np.ndarray,
    registered: np.ndarray,
    fixed_affine: np.ndarray,
    title: str = "",
) -> Path:
    """PNG: 3 orthogonal mid-slices (columns) of 7T, registered 1.5T and a checkerboard of both.

    A good registration shows continuous edges across the checkerboard squares.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spacing = voxel_sizes(fixed_affine)
    a = _unit_range(fixed)
    b = _unit_range(registered)
    square_mm = 16.0
    idx = np.indices(fixed.shape)
    tiles = sum((idx[d] * spacing[d] // square_mm).astype(int) for d in range(3)) % 2 == 0
    board = np.where(tiles, a, b)
    c = [s // 2 for s in fixed.shape]
    views = [
        ("sagittal", lambda v: v[c[0], :, :], spacing[2] / spacing[1]),
        ("coronal", lambda v: v[:, c[1], :], spacing[2] / spacing[0]),
        ("axial", lambda v: v[:, :, c[2]], spacing[1] / spacing[0]),
    ]
    rows = [("7T", a), ("1.5T registered", b), ("checkerboard", board)]
    fig, axes = plt.subplots(3, 3, figsize=(9, 6), dpi=80)
    for r, (label, vol) in enumerate(rows):
        for col, (name, cut, aspect) in enumerate(views):
            ax = axes[r, col]
            ax.imshow(cut(vol).T, cmap="gray", origin="lower", aspect=aspect, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label)
            if r == 0:
                ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _unit_range(v: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(v, [1, 99.5])
    return np.clip((v - lo) / max(hi - lo, 1e-12), 0, 1)
