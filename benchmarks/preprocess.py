"""Preprocessing speed per subject: our stages vs the plain library defaults they replace.

Run after the demo (it reads one demo subject's ingested scans):

    .venv/bin/python benchmarks/preprocess.py [--results results --cohort demo --subject sub-01]

Prints one line per stage with both times and their ratio, measured side by side in one run
(machines are shared and noisy: compare ratios, not seconds across runs). Each side is run
``--repeat`` times and the median kept.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sr7t import paths
from sr7t.io import load_volume, save_volume


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--cohort", default="demo")
    ap.add_argument("--subject", default="sub-01")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(a.threads)

    import ants

    from sr7t.config import resolve
    from sr7t.io import read_json
    from sr7t.preprocess import gnl
    from sr7t.preprocess.masks import head_mask, to_ants
    from sr7t.preprocess.n4 import bias_field_correlation, n4_correct
    from sr7t.preprocess.register import (
        ants_linear_to_world,
        register_1p5t_to_7t,
        registration_error_mm,
    )

    n4_cfg = resolve({})["preprocess"]["n4"]

    def p(name, **kw):
        return paths.path(name, a.results, cohort=a.cohort, subject=a.subject, **kw)

    scan7, aff7 = load_volume(p("ingest_scan", field="7T"))
    scan15, aff15 = load_volume(p("ingest_scan", field="1p5T"))
    coef = paths.path("demo_coeffs_dir", a.results, cohort=a.cohort) / "scanner_7T.grad"
    rows = []

    # GNL: our unwarp (field + Jacobian + resampling) vs gradunwarp's command line
    coeffs = gnl.read_coefficients(coef)
    ours = timed(lambda: gnl.unwarp(scan7, aff7, coeffs), a.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        src = save_volume(Path(tmp) / "in.nii.gz", scan7, aff7)
        cli = [
            sys.executable,
            str(Path(sys.executable).parent / "gradient_unwarp.py"),
            str(src),
            str(Path(tmp) / "out.nii.gz"),
            "siemens",
            "-g",
            str(coef.resolve()),
        ]
        theirs = timed(
            lambda: subprocess.run(cli, cwd=tmp, check=True, capture_output=True), a.repeat
        )
    rows.append(
        (
            "gradunwarp (7T unwarp)",
            ours,
            "gradient_unwarp.py CLI",
            theirs,
            "same field: max difference < 0.01 mm (tests/preprocess/test_gnl.py)",
        )
    )

    # N4: ours (head mask, config defaults) vs ants.n4_bias_field_correction(img) defaults
    mask = head_mask(scan7, aff7).astype(bool)
    ours = timed(lambda: n4_correct(scan7, aff7, mask, threads=a.threads, **n4_cfg), a.repeat)
    img = to_ants(scan7, aff7)
    theirs = timed(lambda: ants.n4_bias_field_correction(img), a.repeat)
    truth_dir = paths.path("demo_truth_dir", a.results, cohort=a.cohort, subject=a.subject)
    brain = load_volume(truth_dir / "brainmask_7T.nii.gz")[0] > 0.5
    bias_true = load_volume(truth_dir / "bias_7T.nii.gz")[0]
    # accuracy on the distorted 7T (both sides alike): correlation of log bias with truth
    corr_ours = bias_field_correlation(n4_correct(scan7, aff7, mask, **n4_cfg)[1], bias_true, brain)
    bias_lib = ants.n4_bias_field_correction(img, return_bias_field=True).numpy()
    corr_lib = bias_field_correlation(bias_lib, bias_true, brain)
    rows.append(
        (
            "n4 (7T)",
            ours,
            "ants.n4_bias_field_correction defaults",
            theirs,
            f"log-bias corr with truth {corr_ours:.3f} vs {corr_lib:.3f}",
        )
    )

    # Registration: ours (Rigid, the demo config) vs ants.registration Affine defaults
    fixed, moving = to_ants(scan7, aff7), to_ants(scan15, aff15)
    ours = timed(
        lambda: register_1p5t_to_7t(
            scan15, aff15, scan7, aff7, transforms=("Rigid",), threads=a.threads, fixed_mask=mask
        ),
        a.repeat,
    )
    theirs = timed(lambda: ants.registration(fixed, moving, type_of_transform="Affine"), a.repeat)
    truth = np.asarray(read_json(truth_dir / "truth.json")["pose_7T_to_1p5T"])
    res = register_1p5t_to_7t(
        scan15, aff15, scan7, aff7, transforms=("Rigid",), threads=a.threads, fixed_mask=mask
    )
    err_ours = registration_error_mm(res.world_matrix, truth, brain, aff7)[0]
    lib = ants.registration(fixed, moving, type_of_transform="Affine")
    err_lib = registration_error_mm(
        ants_linear_to_world(lib["fwdtransforms"][0]), truth, brain, aff7
    )[0]
    rows.append(
        (
            "register (1.5T->7T)",
            ours,
            "ants.registration Affine defaults",
            theirs,
            f"mean error vs true pose {err_ours:.2f} vs {err_lib:.2f} mm",
        )
    )

    print(
        f"subject {a.subject} of {a.cohort}: 7T {scan7.shape}, 1.5T {scan15.shape}, "
        f"{a.threads} threads, median of {a.repeat}"
    )
    print(f"{'stage':24s} {'ours_s':>7s} {'lib_s':>7s} {'lib/ours':>8s}  library call; accuracy")
    for stage, o, lib, t, acc in rows:
        print(f"{stage:24s} {o:7.2f} {t:7.2f} {t / o:8.2f}  {lib}; {acc}")
    total = sum(r[1] for r in rows)
    print(
        f"{'one subject (7T unwarp + 7T N4 + register)':44s} {total:6.1f} s; "
        "the 1.5T's N4 and guidance maps add to it (see qc/preprocess.tsv seconds)"
    )


if __name__ == "__main__":
    main()
