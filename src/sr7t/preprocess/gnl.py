"""Gradient nonlinearity (GNL): displacement field, Jacobian, unwarping, guidance maps.

Vendor coefficient files (Siemens ``.grad`` and ``.coef``) are read with the HCP
``gradunwarp`` parsers, so sr7t sees exactly the coefficients gradunwarp sees. The field is
then evaluated here, vectorised, directly at each voxel centre (gradunwarp evaluates it on a
coarse 60^3 grid over ±300 mm and interpolates linearly).

Conventions (all taken from ``gradunwarp.core.unwarp_resample``, and checked against it in
``tests/preprocess/test_gnl.py``):

- A NIfTI affine maps voxel indices (x, y, z) to scanner coordinates in mm, RAS+, with the
  gradient isocentre at the world origin.
- gradunwarp evaluates the harmonics in "LAI" device coordinates: ``(-R, A, -S)`` mm, with
  ``R0`` (metres in the file) converted to mm. The displacement it returns is in the same
  LAI frame; here it is mapped back to RAS.
- Sign: the scanner places the signal from the true position ``p`` at ``p + d(p)``.
  gradunwarp's unwarp samples the distorted image at ``p + d(p)`` and multiplies by the
  Jacobian determinant of ``p -> p + d(p)``; :func:`unwarp` does the same.
- Jacobian: gradunwarp takes ``np.gradient`` of the coarse-grid field with the *image* voxel
  size as spacing and its (y, x, z)-ordered grid axes; that is not the determinant of the
  distortion map, so it is not reproduced. :func:`jacobian_determinant` differentiates the
  harmonic expansion exactly (forward-mode through the recurrence).
"""

from __future__ import annotations

import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from sr7t.errors import ScanError
from sr7t.io import load_volume, save_volume, write_json

# R0 of Siemens .coef files is not in the file; gradunwarp derives it from the file name.
COEF_R0_M = {
    "sonata": 0.25,
    "avanto": 0.25,
    "quantum": 0.25,
    "allegra": 0.14,
    "as39s": 0.25,
    "as39st": 0.25,
    "as39t": 0.25,
}
# Points per chunk of the vectorised evaluation: bounds memory to a few hundred MB.
_CHUNK = 400_000
# The intensity modulation is clipped like gradunwarp's (it caps |det| at 10).
_JAC_CLIP = (0.1, 10.0)
# RAS <-> gradunwarp's LAI device frame (its own m_ras2lai); an involution.
_RAS2LAI = np.array([-1.0, 1.0, -1.0])
_GRAD_LINE = re.compile(
    r"(?P<no>\d+)[\s]+(?P<aorb>[AB])[\s]*\(\s*(?P<n>\d+),\s*(?P<m>\d+)\)\s+"
    r"(?P<spectrum>[\-]?\d+\.\d+)\s+(?P<axis>[xyz])"
)


class CoefficientFileError(ValueError):
    """A gradient coefficient file that cannot be parsed; the message names the file."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"gradient coefficient file {path}: {problem}")


@dataclass(frozen=True)
class GradientCoefficients:
    """Spherical-harmonic coefficients of one gradient coil (Siemens normalisation).

    ``alpha``/``beta``: float64 arrays (3, N+1, N+1) indexed (axis, n, m), axis 0/1/2 =
    gradunwarp's x/y/z (its LAI device frame). ``r0_mm``: reference radius in mm.
    ``path`` and ``fmt`` ("grad" or "coef") say where the coefficients came from.
    """

    alpha: np.ndarray
    beta: np.ndarray
    r0_mm: float
    path: str = ""
    fmt: str = "grad"

    @property
    def nmax(self) -> int:
        return self.alpha.shape[1] - 1

    @property
    def is_zero(self) -> bool:
        """True when the coil is ideal (no non-linear term): the displacement is 0."""
        return not (np.any(self.alpha[:, 2:]) or np.any(self.beta[:, 2:]))

    def to_gradunwarp(self):
        """The same coefficients as gradunwarp's ``Coeffs`` namedtuple (for its functions)."""
        from gradunwarp.core.coeffs import Coeffs

        a, b = self.alpha, self.beta
        return Coeffs(a[0], a[1], a[2], b[0], b[1], b[2], self.r0_mm / 1000.0)


def read_coefficients(path: str | Path) -> GradientCoefficients:
    """Read a Siemens ``.grad`` or ``.coef`` coefficient file with gradunwarp's parsers.

    Raises :class:`CoefficientFileError` naming the file when it is missing, has another
    extension, does not parse, has no coefficient line, or (``.grad``) has no ``R0`` line.
    A ``.coef`` file's R0 comes from its name prefix, as in gradunwarp (``sonata``,
    ``avanto``, ``quantum``, ``allegra``, ``as39s``, ``as39st``, ``as39t``).
    """
    from gradunwarp.core import coeffs as gcoeffs
    from gradunwarp.core.globals import siemens_cas

    path = Path(path)
    if not path.is_file():
        raise CoefficientFileError(path, "does not exist")
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in ("grad", "coef"):
        raise CoefficientFileError(path, "is neither a Siemens .grad nor a .coef file")
    tables = gcoeffs.create_txt_var_map(siemens_cas)
    try:
        if fmt == "grad":
            try:
                r0_m, (nmax, mmax) = gcoeffs.grad_file_parse(str(path), tables)
            except UnboundLocalError as exc:  # gradunwarp's way of saying "no R0 line"
                raise CoefficientFileError(path, "has no 'R0' line ('0.25 m = R0')") from exc
            if nmax == 0 and mmax == 0:
                raise CoefficientFileError(path, "has no coefficient line like 'A( 3, 0) 0.1 z'")
            # gradunwarp's own order (get_siemens_grad): x, y, z as written in the file
            order = ("x", "y", "z")
            ab_order = ("x", "y", "z")
        else:
            prefixes = [p for p in COEF_R0_M if path.name.lower().startswith(p)]
            if not prefixes:
                raise CoefficientFileError(
                    path,
                    "a .coef file has no R0; gradunwarp takes it from the file name, which "
                    f"must start with one of {sorted(COEF_R0_M)}",
                )
            r0_m = COEF_R0_M[max(prefixes, key=len)]
            gcoeffs.coef_file_parse(str(path), tables)
            if not any(np.any(t) for t in tables.values()) and not _has_coef_lines(path):
                raise CoefficientFileError(path, "has no coefficient line like 'alpha_z 3 0 0.1'")
            # gradunwarp's get_siemens_coef assigns the file's tables in this order
            order = ("y", "z", "x")
            ab_order = ("y", "x", "z")
    except CoefficientFileError:
        raise
    except (OSError, UnicodeDecodeError, ValueError, KeyError, IndexError) as exc:
        raise CoefficientFileError(path, f"does not parse ({type(exc).__name__}: {exc})") from exc
    alpha = np.stack([tables[f"alpha_{a}"] for a in order])
    beta = np.stack([tables[f"beta_{a}"] for a in ab_order])
    used = np.nonzero(np.any(alpha != 0, axis=(0, 2)) | np.any(beta != 0, axis=(0, 2)))[0]
    size = int(used.max()) + 1 if used.size else 1
    if not (r0_m > 0 and math.isfinite(r0_m)):
        raise CoefficientFileError(path, f"has an invalid R0 of {r0_m} m")
    return GradientCoefficients(
        alpha=alpha[:, :size, :size].astype(np.float64),
        beta=beta[:, :size, :size].astype(np.float64),
        r0_mm=float(r0_m) * 1000.0,
        path=str(path),
        fmt=fmt,
    )


def _has_coef_lines(path: Path) -> bool:
    for line in path.read_text().splitlines():
        if re.match(r"^[^#]", line) and line.strip():
            return True
    return False


def write_scaled_coefficients(src_path: str | Path, dst_path: str | Path, scale: float) -> Path:
    """Copy a coefficient file with every non-linear coefficient (order n >= 2) times ``scale``.

    The copy keeps the source's format and layout (headers, comments, line order), so any
    reader of the source format reads it. Constant and linear terms (n <= 1) are kept: they
    are the ideal gradient, not its nonlinearity. Returns ``dst_path``; raises
    :class:`CoefficientFileError` if the source does not parse or the result would not (a
    ``.coef`` destination must keep a vendor name prefix, since R0 comes from the name).
    """
    src_path, dst_path = Path(src_path), Path(dst_path)
    src = read_coefficients(src_path)
    if dst_path.suffix.lower() != src_path.suffix.lower():
        raise CoefficientFileError(dst_path, f"must have the source's extension {src.fmt!r}")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    out_lines = []
    for line in src_path.read_text().splitlines(keepends=True):
        if src.fmt == "grad":
            hit = _GRAD_LINE.search(line)
            if hit and int(hit["n"]) >= 2:
                old = hit["spectrum"]
                new = _format_like(float(old) * scale, old)
                line = line[: hit.start("spectrum")] + new + line[hit.end("spectrum") :]
        elif re.match(r"^[^#]", line):
            fields = line.lstrip(" \t").rstrip(";\n").split()
            if len(fields) >= 4 and int(fields[1]) >= 2:
                start = line.index(fields[3], line.index(fields[2]) + len(fields[2]))
                new = repr(float(fields[3]) * scale)
                line = line[:start] + new + line[start + len(fields[3]) :]
        out_lines.append(line)
    dst_path.parent.mkdir(parents=True, exist_ok=True)
    dst_path.write_text("".join(out_lines))
    try:
        read_coefficients(dst_path)
    except CoefficientFileError:
        dst_path.unlink(missing_ok=True)
        raise
    return dst_path


def _format_like(value: float, template: str) -> str:
    # .grad values must match gradunwarp's '-?\d+\.\d+': fixed point, never exponent.
    decimals = max(len(template.split(".")[1]), 8)
    return f"{value:.{decimals}f}"


# ----------------------------------------------------------------------------- evaluation


def _norm(n: int, m: int) -> float:
    # Siemens normalisation of P_n^m (gradunwarp's siemens_B); lpmv's Condon-Shortley phase
    # (-1)^m cancels against gradunwarp's (-1)^m, so plain (2m-1)!! P_m^m seeds are used.
    if m == 0:
        return 1.0
    return math.sqrt((2 * n + 1) * math.factorial(n - m) / (2.0 * math.factorial(n + m)))


def _eval_lai(
    coeffs: GradientCoefficients, pts_mm: np.ndarray, with_jacobian: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Displacement (3, P) in mm at LAI points (3, P) mm; optionally its gradient (3, 3, P).

    Uses regular solid harmonics S_n^m = r^n P_n^m(cos t) e^{i m phi}, computed by the
    upward recurrence (n-m) S_n^m = (2n-1) z S_{n-1}^m - (n+m-1) r^2 S_{n-2}^m seeded with
    S_m^m = (2m-1)!! (x + i y)^m: polynomials, so no singularity at the isocentre.
    """
    r0 = coeffs.r0_mm
    u = np.asarray(pts_mm, dtype=np.float64) / r0
    x, y, z = u
    npts = u.shape[1]
    r2 = x * x + y * y + z * z
    w = x + 1j * y
    disp = np.zeros((3, npts))
    grad = np.zeros((3, 3, npts)) if with_jacobian else None
    alpha, beta = coeffs.alpha, coeffs.beta
    nmax = coeffs.nmax
    wm = np.ones(npts, dtype=np.complex128)  # w^m
    wm1 = np.zeros(npts, dtype=np.complex128)  # w^(m-1)
    dfact = 1.0  # (2m-1)!!
    for m in range(nmax + 1):
        if m > 0:
            wm1 = wm
            wm = wm * w
            dfact *= 2 * m - 1
        ns = [n for n in range(max(m, 2), nmax + 1) if alpha[:, n, m].any() or beta[:, n, m].any()]
        if not ns:
            continue
        prev2 = None
        prev = dfact * wm
        if with_jacobian:
            dprev2 = None
            dprev = [dfact * m * wm1, 1j * dfact * m * wm1, np.zeros(npts, np.complex128)]
        for n in range(m, ns[-1] + 1):
            if n == m:
                cur = prev
                dcur = dprev if with_jacobian else None
            else:
                a_, b_ = 2 * n - 1, n + m - 1
                cur = a_ * z * prev
                if prev2 is not None:
                    cur = cur - b_ * r2 * prev2
                cur = cur / (n - m)
                if with_jacobian:
                    dcur = []
                    for k, uk in enumerate((x, y, z)):
                        term = a_ * z * dprev[k]
                        if k == 2:
                            term = term + a_ * prev
                        if prev2 is not None:
                            term = term - b_ * (2 * uk * prev2 + r2 * dprev2[k])
                        dcur.append(term / (n - m))
                prev2, prev = prev, cur
                if with_jacobian:
                    dprev2, dprev = dprev, dcur
            if n in ns:
                c = _norm(n, m)
                for ax in range(3):
                    a, b = alpha[ax, n, m] * c, beta[ax, n, m] * c
                    if a == 0 and b == 0:
                        continue
                    disp[ax] += a * cur.real + b * cur.imag
                    if with_jacobian:
                        for k in range(3):
                            grad[ax, k] += a * dcur[k].real + b * dcur[k].imag
    # d = R0 * b(p / R0): the gradient d(d)/dp = db/du needs no rescaling.
    return disp * r0, grad


def displacement_at_mm(
    coeffs: GradientCoefficients, points_ras_mm: np.ndarray, with_jacobian: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """GNL displacement (3, ...) in RAS mm at scanner points (3, ...) RAS mm.

    With ``with_jacobian`` also the determinant (...) of the map p -> p + d(p) there.
    """
    pts = np.asarray(points_ras_mm, dtype=np.float64)
    shape = pts.shape[1:]
    flat = pts.reshape(3, -1)
    disp = np.empty_like(flat)
    jac = np.empty(flat.shape[1]) if with_jacobian else None
    if coeffs.is_zero:
        disp[:] = 0.0
        if with_jacobian:
            jac[:] = 1.0
        return disp.reshape(pts.shape), (jac.reshape(shape) if with_jacobian else None)
    for start in range(0, flat.shape[1], _CHUNK):
        sl = slice(start, start + _CHUNK)
        lai = flat[:, sl] * _RAS2LAI[:, None]
        d_lai, g_lai = _eval_lai(coeffs, lai, with_jacobian)
        disp[:, sl] = d_lai * _RAS2LAI[:, None]
        if with_jacobian:
            # det(I + F G F) = det(I + G) for the reflection F = diag(-1, 1, -1)
            mat = np.moveaxis(g_lai, 2, 0) + np.eye(3)
            jac[sl] = np.linalg.det(mat)
    return disp.reshape(pts.shape), (jac.reshape(shape) if with_jacobian else None)


def voxel_centres_mm(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """Scanner RAS mm coordinates (3, X, Y, Z) of every voxel centre."""
    idx = np.indices(tuple(shape), dtype=np.float64).reshape(3, -1)
    aff = np.asarray(affine, dtype=np.float64)
    return (aff[:3, :3] @ idx + aff[:3, 3:4]).reshape((3, *shape))


def displacement_field_mm(
    coeffs: GradientCoefficients, shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """GNL displacement (3, X, Y, Z) float32, RAS mm, at each voxel centre of the grid.

    The scanner records the signal from true position ``p`` at ``p + d(p)``.
    """
    disp, _ = displacement_at_mm(coeffs, voxel_centres_mm(shape, affine))
    return disp.astype(np.float32)


def jacobian_determinant(
    coeffs: GradientCoefficients, shape: tuple[int, int, int], affine: np.ndarray
) -> np.ndarray:
    """Determinant (X, Y, Z) float32 of the Jacobian of p -> p + d(p) at each voxel centre.

    Above 1 the scanner stretches a region (its intensity per voxel drops), below 1 it
    compresses it. Exactly 1 for a coil without non-linear terms.
    """
    _, jac = displacement_at_mm(coeffs, voxel_centres_mm(shape, affine), with_jacobian=True)
    return jac.astype(np.float32)


def _sample(image: np.ndarray, affine: np.ndarray, pts_mm: np.ndarray, order: int) -> np.ndarray:
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    flat = pts_mm.reshape(3, -1)
    vox = inv[:3, :3] @ flat + inv[:3, 3:4]
    out = ndimage.map_coordinates(
        np.asarray(image, dtype=np.float32), vox, order=order, mode="constant", cval=0.0
    )
    return out.reshape(pts_mm.shape[1:])


def undistorted_positions_mm(
    coeffs: GradientCoefficients, points_ras_mm: np.ndarray, iterations: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """Invert the distortion: true positions ``p`` (3, ...) RAS mm with ``p + d(p) = q`` for
    recorded positions ``q`` (3, ...), and the Jacobian determinant (...) at ``p``.

    Fixed-point iteration ``p <- q - d(p)``: it contracts by |grad d| (< 0.2 inside a head
    FOV), so 6 iterations leave an error far below 0.001 mm.
    """
    q = np.asarray(points_ras_mm, dtype=np.float64)
    if coeffs.is_zero:
        return q.copy(), np.ones(q.shape[1:])
    p = q.copy()
    for _ in range(iterations):
        d, _ = displacement_at_mm(coeffs, p)
        p = q - d
    _, jac = displacement_at_mm(coeffs, p, with_jacobian=True)
    return p, jac


def distort(
    image: np.ndarray,
    affine: np.ndarray,
    coeffs: GradientCoefficients,
    order: int = 1,
    iterations: int = 6,
) -> np.ndarray:
    """Forward model: the image (X, Y, Z) the scanner records, on the same grid, from the
    true image ``image`` (X, Y, Z) with voxel-to-scanner ``affine`` (mm).

    The signal at true ``p`` lands at ``q = p + d(p)`` spread over ``J(p)`` times the volume,
    so ``recorded(q) = true(p) / J(p)``, with ``p`` from :func:`undistorted_positions_mm`.
    """
    if coeffs.is_zero:
        return np.asarray(image, dtype=np.float32).copy()
    q = voxel_centres_mm(np.shape(image), affine)
    p, jac = undistorted_positions_mm(coeffs, q, iterations)
    values = _sample(image, affine, p, order)
    return (values / np.clip(jac, *_JAC_CLIP)).astype(np.float32)


def unwarp(
    image: np.ndarray,
    affine: np.ndarray,
    coeffs: GradientCoefficients,
    order: int = 1,
    with_displacement: bool = False,
):
    """Correct a recorded image (X, Y, Z) for GNL, as gradunwarp does (with Jacobian).

    ``corrected(p) = recorded(p + d(p)) * J(p)``. Returns ``(corrected, jacobian)``, both
    float32 (X, Y, Z) on the input grid; ``jacobian`` is the determinant used (unclipped);
    with ``with_displacement`` also the displacement (3, X, Y, Z) mm, so a caller that needs
    it does not evaluate the spherical harmonics twice (the stage's most costly step).
    """
    p = voxel_centres_mm(np.shape(image), affine)
    d, jac = displacement_at_mm(coeffs, p, with_jacobian=True)
    values = _sample(image, affine, p + d, order)
    corrected = (values * np.clip(jac, *_JAC_CLIP)).astype(np.float32)
    if with_displacement:
        return corrected, jac.astype(np.float32), d.reshape((3, *np.shape(image)))
    return corrected, jac.astype(np.float32)


# ----------------------------------------------------------------------------- stage


def _region(image: np.ndarray) -> np.ndarray:
    """Brain-ish voxels: above 10% of the 99th percentile."""
    return image > 0.1 * np.percentile(image, 99)


def _field_qc(image: np.ndarray, dispmag: np.ndarray, jac: np.ndarray) -> dict:
    region = _region(image)
    if not region.any():
        region = np.ones_like(image, dtype=bool)
    return {
        "max_disp_mm": float(dispmag[region].max()),
        "mean_disp_mm": float(dispmag[region].mean()),
        "jacobian_min": float(jac[region].min()),
        "jacobian_max": float(jac[region].max()),
    }


def run_gradunwarp_stage(
    scan_7t: str | Path,
    coef_7t: str | Path | None,
    scan_1p5t: str | Path,
    coef_1p5t: str | Path | None,
    out_7t_unwarped: str | Path,
    out_1p5t_jacobian: str | Path,
    out_1p5t_dispmag: str | Path,
    out_qc_json: str | Path,
    subject: str = "?",
) -> dict:
    """File-level GNL stage for one subject.

    Writes the GNL-corrected 7T (copied unchanged when ``coef_7t`` is None), the 1.5T
    Jacobian determinant and displacement magnitude (mm) on the 1.5T grid (1 and 0 when
    ``coef_1p5t`` is None, with ``gnl_present_1p5T: false`` in the QC), and a QC json with,
    per field, max/mean displacement (mm) and Jacobian range inside the brain-ish region
    (> 10% of the 99th percentile) and seconds. Returns the QC dict. ``subject`` names the
    subject in the QC json and in errors (a coefficient file that does not parse is a
    :class:`~sr7t.errors.ScanError` naming subject and file).
    """
    t0 = time.perf_counter()
    qc: dict = {"subject": subject}

    def coefficients(path, field):
        try:
            return read_coefficients(path)
        except CoefficientFileError as exc:
            raise ScanError(
                subject, path, f"{field} gradient coefficient file {exc.problem}"
            ) from None

    img7, aff7 = load_volume(scan_7t, subject)
    if coef_7t:
        c7 = coefficients(coef_7t, "7T")
        corrected, jac7, d7 = unwarp(img7, aff7, c7, with_displacement=True)
        save_volume(out_7t_unwarped, corrected, aff7)
        qc["gnl_present_7T"] = True
        qc["coef_7T"] = str(coef_7t)
        qc["7T"] = _field_qc(img7, np.linalg.norm(d7, axis=0), jac7)
    else:
        Path(out_7t_unwarped).parent.mkdir(parents=True, exist_ok=True)
        if str(scan_7t).endswith(".nii.gz") and str(out_7t_unwarped).endswith(".nii.gz"):
            shutil.copyfile(scan_7t, out_7t_unwarped)
        else:
            save_volume(out_7t_unwarped, img7, aff7)
        qc["gnl_present_7T"] = False
        qc["coef_7T"] = None
    t1 = time.perf_counter()

    img15, aff15 = load_volume(scan_1p5t, subject)
    if coef_1p5t:
        c15 = coefficients(coef_1p5t, "1.5T")
        disp15, jac15 = displacement_at_mm(
            c15, voxel_centres_mm(img15.shape, aff15), with_jacobian=True
        )
        dispmag15 = np.linalg.norm(disp15, axis=0).astype(np.float32)
        jac15 = jac15.astype(np.float32)
        qc["gnl_present_1p5T"] = True
        qc["coef_1p5T"] = str(coef_1p5t)
        qc["1p5T"] = _field_qc(img15, dispmag15, jac15)
    else:
        # No coefficient file: neutral maps, and the QC (and the model's flag channel) says so.
        dispmag15 = np.zeros(img15.shape, np.float32)
        jac15 = np.ones(img15.shape, np.float32)
        qc["gnl_present_1p5T"] = False
        qc["coef_1p5T"] = None
    save_volume(out_1p5t_jacobian, jac15, aff15)
    save_volume(out_1p5t_dispmag, dispmag15, aff15)
    t2 = time.perf_counter()
    qc["seconds_7T"] = t1 - t0
    qc["seconds_1p5T"] = t2 - t1
    qc["seconds"] = t2 - t0
    write_json(out_qc_json, qc)
    return qc
