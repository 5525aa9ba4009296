"""Gradient nonlinearity: field vs gradunwarp's reference, Jacobian, forward model, stage."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
import pytest
from gradunwarp.core import coeffs as gcoeffs
from gradunwarp.core.unwarp_resample import eval_spherical_harmonics
from gradunwarp.core.utils import CoordsVector
from scipy import ndimage

from sr7t.cohort.demo import dummy_coefficient_file
from sr7t.io import load_volume, read_json, save_volume
from sr7t.preprocess import gnl

RAS2LAI = np.array([-1.0, 1.0, -1.0])[:, None]
HEAD_SHAPE = (36, 44, 36)


def head_affine(voxel=4.0, origin=(-70.0, -96.0, -60.0)) -> np.ndarray:
    a = np.diag([voxel, voxel, voxel, 1.0])
    a[:3, 3] = origin
    return a


@pytest.fixture(scope="module")
def dummy():
    return gnl.read_coefficients(dummy_coefficient_file())


@pytest.fixture(scope="module")
def strong(tmp_path_factory):
    """The dummy coil x10: a few mm over a head, as in the demo cohort."""
    path = tmp_path_factory.mktemp("coef") / "strong.grad"
    gnl.write_scaled_coefficients(dummy_coefficient_file(), path, 10.0)
    return gnl.read_coefficients(path)


def gradunwarp_displacement_ras(path, points_ras):
    """gradunwarp's own evaluation (siemens_B) at RAS points, mapped back to RAS."""
    ref = gcoeffs.get_coefficients("siemens", str(path))
    lai = points_ras * RAS2LAI
    dv, _ = eval_spherical_harmonics(ref, "siemens", CoordsVector(*lai))
    return np.stack([dv.x, dv.y, dv.z]) * RAS2LAI


@pytest.mark.parametrize("which", ["dummy", "strong"])
def test_field_matches_gradunwarp_reference(which, dummy, strong):
    coeffs = {"dummy": dummy, "strong": strong}[which]
    shape, affine = (18, 22, 18), head_affine(8.0, (-70.0, -96.0, -60.0))
    ours = gnl.displacement_field_mm(coeffs, shape, affine)
    pts = gnl.voxel_centres_mm(shape, affine).reshape(3, -1)
    ref = gradunwarp_displacement_ras(coeffs.path, pts).reshape(ours.shape)
    assert np.abs(ours - ref).max() < 0.01
    assert np.abs(ref).max() > (2.0 if which == "strong" else 0.2)  # not a trivial comparison
    # off-isocentre points too (up to 200 mm, where higher orders dominate)
    rng = np.random.default_rng(1)
    pts = rng.uniform(-200, 200, (3, 3000))
    ours, _ = gnl.displacement_at_mm(coeffs, pts)
    assert np.abs(ours - gradunwarp_displacement_ras(coeffs.path, pts)).max() < 0.01


def test_jacobian_matches_finite_differences_of_reference(strong):
    rng = np.random.default_rng(2)
    pts = rng.uniform(-120, 120, (3, 500))
    _, jac = gnl.displacement_at_mm(strong, pts, with_jacobian=True)
    h = 0.05
    grad = np.zeros((500, 3, 3))
    for k in range(3):
        step = np.zeros((3, 1))
        step[k] = h
        plus = gradunwarp_displacement_ras(strong.path, pts + step)
        minus = gradunwarp_displacement_ras(strong.path, pts - step)
        grad[:, :, k] = ((plus - minus) / (2 * h)).T
    ref = np.linalg.det(grad + np.eye(3))
    assert np.abs(jac - ref).max() < 1e-4
    assert jac.min() < 0.97 and jac.max() > 1.03  # the strong coil really compresses/stretches


def test_unwarp_matches_gradunwarp_unwarper_sampling(strong, tmp_path, monkeypatch):
    """End-to-end sign/frame check against gradunwarp's Unwarper (its fullWarp_abs output).

    gradunwarp interpolates a 60^3 grid whose spacing it takes as 600/60 mm while the grid
    is linspace(-300, 300, 60): it evaluates the field at (600/590) x + 5.08 mm (LAI). With
    that mapping modelled, its sampling positions equal ours within its linear interpolation.
    """
    from gradunwarp.core.gradient_unwarp import GradientUnwarpRunner

    logging.getLogger("gradunwarp").setLevel(logging.WARNING)
    monkeypatch.chdir(tmp_path)  # gradunwarp writes fullWarp_abs.nii.gz into the cwd
    shape, affine = (18, 22, 18), head_affine(8.0)
    vol = np.random.default_rng(0).random(shape).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, affine), "in.nii")

    class Args:
        infile, outfile, vendor, gradfile, nojac = "in.nii", "out.nii", "siemens", strong.path, True

    runner = GradientUnwarpRunner(Args())
    runner.run()
    full = nib.load("fullWarp_abs.nii.gz").get_fdata()
    voxel = 8.0
    vox_gu = np.stack(
        [
            (voxel * (shape[0] - 1) - full[..., 0]) / voxel,
            full[..., 1] / voxel,
            full[..., 2] / voxel,
        ]
    )
    p = gnl.voxel_centres_mm(shape, affine)
    s = 600.0 / 590.0
    d_lai, _ = gnl._eval_lai(
        strong, (s * p * RAS2LAI[..., None, None] - 300 + 300 * s).reshape(3, -1)
    )
    d_gu_model = d_lai.reshape(p.shape) * RAS2LAI[..., None, None]
    inv = np.linalg.inv(affine)
    vox_model = (
        np.einsum("ij,j...->i...", inv[:3, :3], p + d_gu_model) + inv[:3, 3, None, None, None]
    )
    assert np.abs(vox_model - vox_gu).max() * voxel < 0.15
    # the opposite sign would be far off
    vox_flip = (
        np.einsum("ij,j...->i...", inv[:3, :3], p - d_gu_model) + inv[:3, 3, None, None, None]
    )
    assert np.abs(vox_flip - vox_gu).max() * voxel > 3.0


def smooth_image(shape, seed=0, sigma=2.5):
    img = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), sigma)
    img = (img - img.min()) / np.ptp(img)
    return img.astype(np.float32)


def test_unwarp_inverts_distort(strong):
    affine = head_affine()
    truth = smooth_image(HEAD_SHAPE)
    recorded = gnl.distort(truth, affine, strong)
    corrected, jac = gnl.unwarp(recorded, affine, strong)
    inner = (slice(4, -4),) * 3  # away from the FOV edge, where signal leaves the grid
    err_before = np.abs(recorded - truth)[inner].mean()
    err_after = np.abs(corrected - truth)[inner].mean()
    assert err_after < 0.2 * err_before
    assert err_after < 0.01 * truth[inner].mean()
    assert jac.shape == HEAD_SHAPE and jac.dtype == np.float32


def test_distort_conserves_signal_and_moves_it_by_d(strong):
    """Jacobian modulation keeps a compact object's total signal; its centroid moves by d."""
    affine = head_affine(2.0, (-70.0, -90.0, -70.0))
    shape = (71, 91, 71)
    pts = gnl.voxel_centres_mm(shape, affine)
    centre = np.array([40.0, 30.0, 45.0])
    obj = np.exp(-(((pts - centre[:, None, None, None]) / 10.0) ** 2).sum(0)).astype(np.float32)
    recorded = gnl.distort(obj, affine, strong)
    assert abs(recorded.sum() / obj.sum() - 1) < 0.003
    moved = (pts * recorded).reshape(3, -1).sum(1) / recorded.sum()
    before = (pts * obj).reshape(3, -1).sum(1) / obj.sum()
    d_centre, _ = gnl.displacement_at_mm(strong, before[:, None])
    assert np.linalg.norm(d_centre) > 0.4
    np.testing.assert_allclose(moved - before, d_centre[:, 0], atol=0.05)


def test_zero_coefficients_give_identity(tmp_path):
    zero = gnl.write_scaled_coefficients(dummy_coefficient_file(), tmp_path / "zero.grad", 0.0)
    coeffs = gnl.read_coefficients(zero)
    assert coeffs.is_zero
    shape, affine = (10, 12, 9), head_affine(8.0)
    assert np.all(gnl.jacobian_determinant(coeffs, shape, affine) == 1.0)
    assert np.all(gnl.displacement_field_mm(coeffs, shape, affine) == 0.0)
    img = smooth_image(shape)
    np.testing.assert_allclose(gnl.unwarp(img, affine, coeffs)[0], img, atol=1e-6)


@pytest.mark.parametrize(
    "name, text",
    [
        ("garbage.grad", "this is not a coefficient file\n"),
        ("nor0.grad", " 1 A( 3, 0)  -0.0100000  z\n"),
        ("noterms.grad", "0.25 m = R0, lnorm = 4\n"),
        ("binary.grad", None),
        ("unknown_vendor.coef", "alpha_z 3 0 0.1\n"),
        ("avanto_bad.coef", "alpha_q 3 0 0.1\n"),
        ("avanto_badnum.coef", "alpha_z 3 0 zero\n"),
        ("wrong.txt", "0.25 m = R0\n"),
    ],
)
def test_broken_coefficient_file_names_the_file(tmp_path, name, text):
    path = tmp_path / name
    if text is None:
        path.write_bytes(b"\xff\xfe\x00\x81" * 50)
    else:
        path.write_text(text)
    with pytest.raises(gnl.CoefficientFileError) as err:
        gnl.read_coefficients(path)
    assert str(path) in str(err.value)
    assert isinstance(err.value, ValueError)


def test_missing_coefficient_file(tmp_path):
    with pytest.raises(gnl.CoefficientFileError, match="does not exist"):
        gnl.read_coefficients(tmp_path / "nope.grad")


def test_write_scaled_grad_round_trips(tmp_path, dummy):
    src = dummy_coefficient_file()
    text = src.read_text().replace(
        " 1  A( 3, 0)", " 0  A( 1, 0)            0.5000000          z\n 1  A( 3, 0)"
    )
    src2 = tmp_path / "with_linear.grad"
    src2.write_text(text)
    base = gnl.read_coefficients(src2)
    dst = gnl.write_scaled_coefficients(src2, tmp_path / "scaled.grad", 2.5)
    scaled = gnl.read_coefficients(dst)
    np.testing.assert_allclose(scaled.alpha[:, 2:], 2.5 * base.alpha[:, 2:], atol=1e-8)
    np.testing.assert_allclose(scaled.beta[:, 2:], 2.5 * base.beta[:, 2:], atol=1e-8)
    np.testing.assert_array_equal(scaled.alpha[:, :2], base.alpha[:, :2])  # linear term kept
    assert scaled.alpha[2, 1, 0] == 0.5 and scaled.r0_mm == base.r0_mm == 250.0
    # gradunwarp itself reads the written file, with the same numbers
    ref = gcoeffs.get_coefficients("siemens", str(dst))
    np.testing.assert_allclose(ref.alpha_x[: scaled.nmax + 1, : scaled.nmax + 1], scaled.alpha[0])
    # the displacement is linear in the coefficients
    pts = np.random.default_rng(0).uniform(-100, 100, (3, 200))
    d1, _ = gnl.displacement_at_mm(gnl.read_coefficients(src), pts)
    d2, _ = gnl.displacement_at_mm(
        gnl.read_coefficients(gnl.write_scaled_coefficients(src, tmp_path / "x3.grad", 3.0)), pts
    )
    np.testing.assert_allclose(d2, 3 * d1, atol=1e-6)


def test_coef_format_matches_gradunwarp(tmp_path, monkeypatch):
    src = tmp_path / "avanto_test.coef"
    src.write_text(
        "# a Siemens .coef file\n"
        "alpha_x 3 1 0.012\nalpha_y 3 0 -0.01\nalpha_z 5 3 0.02\n"
        "beta_x 3 1 0.011\nbeta_y 5 1 -0.03\nbeta_z 3 3 0.004\n"
    )
    ours = gnl.read_coefficients(src)
    monkeypatch.chdir(tmp_path)  # gradunwarp matches the vendor prefix on the path it gets
    ref = gcoeffs.get_coefficients("siemens", src.name)
    assert ours.r0_mm == ref.R0_m * 1000
    n = ours.nmax + 1
    for i, ax in enumerate("xyz"):
        np.testing.assert_array_equal(ours.alpha[i], getattr(ref, f"alpha_{ax}")[:n, :n])
        np.testing.assert_array_equal(ours.beta[i], getattr(ref, f"beta_{ax}")[:n, :n])
    dst = gnl.write_scaled_coefficients(src, tmp_path / "avanto_half.coef", 0.5)
    np.testing.assert_allclose(gnl.read_coefficients(dst).alpha, 0.5 * ours.alpha)
    with pytest.raises(gnl.CoefficientFileError, match="R0"):
        gnl.write_scaled_coefficients(src, tmp_path / "mine.coef", 0.5)
    assert not (tmp_path / "mine.coef").exists()


def test_stage_with_and_without_coefficients(tmp_path, strong):
    affine7, affine15 = head_affine(), head_affine(5.0, (-72.0, -98.0, -62.0))
    shape15 = (29, 36, 29)
    truth = smooth_image(HEAD_SHAPE, seed=3) + 0.1
    save_volume(tmp_path / "7T.nii.gz", gnl.distort(truth, affine7, strong), affine7)
    save_volume(tmp_path / "15.nii.gz", smooth_image(shape15, seed=4) + 0.1, affine15)
    out = {k: tmp_path / f"{k}.nii.gz" for k in ("unw", "jac", "disp")}

    qc = gnl.run_gradunwarp_stage(
        tmp_path / "7T.nii.gz", strong.path, tmp_path / "15.nii.gz", strong.path,
        out["unw"], out["jac"], out["disp"], tmp_path / "qc.json", subject="sub-x",
    )  # fmt: skip
    assert read_json(tmp_path / "qc.json") == qc
    assert qc["gnl_present_7T"] and qc["gnl_present_1p5T"]
    unw, aff = load_volume(out["unw"])
    raw, _ = load_volume(tmp_path / "7T.nii.gz")
    inner = (slice(4, -4),) * 3
    assert np.abs(unw - truth)[inner].mean() < 0.3 * np.abs(raw - truth)[inner].mean()
    np.testing.assert_allclose(aff, affine7)
    jac, aff15 = load_volume(out["jac"])
    disp, _ = load_volume(out["disp"])
    np.testing.assert_allclose(aff15, affine15)
    assert jac.shape == disp.shape == shape15
    np.testing.assert_allclose(jac, gnl.jacobian_determinant(strong, shape15, affine15), rtol=1e-6)
    ref = np.linalg.norm(gnl.displacement_field_mm(strong, shape15, affine15), axis=0)
    np.testing.assert_allclose(disp, ref, atol=1e-4)
    assert 1.0 < qc["1p5T"]["max_disp_mm"] <= disp.max() + 1e-6
    assert qc["1p5T"]["jacobian_min"] < 1 < qc["1p5T"]["jacobian_max"]
    assert qc["seconds"] > 0

    qc = gnl.run_gradunwarp_stage(
        tmp_path / "7T.nii.gz", None, tmp_path / "15.nii.gz", None,
        out["unw"], out["jac"], out["disp"], tmp_path / "qc.json",
    )  # fmt: skip
    assert qc["gnl_present_1p5T"] is False and qc["gnl_present_7T"] is False
    np.testing.assert_array_equal(load_volume(out["unw"])[0], raw)
    # constant maps: nibabel directly, since load_volume rejects a constant image as empty
    jac = nib.load(out["jac"]).get_fdata()
    disp = nib.load(out["disp"]).get_fdata()
    assert np.all(jac == 1.0) and np.all(disp == 0.0)


def test_stage_with_a_broken_coefficient_file_names_subject_and_file(tmp_path):
    from sr7t.errors import ScanError

    affine7 = head_affine()
    save_volume(tmp_path / "7T.nii.gz", smooth_image(HEAD_SHAPE, seed=3) + 0.1, affine7)
    bad = tmp_path / "scanner.grad"
    bad.write_text("not a gradient file\n")
    out = {k: tmp_path / f"{k}.nii.gz" for k in ("unw", "jac", "disp")}
    with pytest.raises(ScanError) as err:
        gnl.run_gradunwarp_stage(
            tmp_path / "7T.nii.gz", bad, tmp_path / "7T.nii.gz", None,
            out["unw"], out["jac"], out["disp"], tmp_path / "qc.json", subject="sub-x",
        )  # fmt: skip
    assert str(err.value).startswith(f"subject sub-x: {bad}: 7T gradient coefficient file ")
    assert not (tmp_path / "qc.json").exists()
