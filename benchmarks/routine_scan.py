"""``sr7t predict`` on a real routine scan: a whole-head T1 at 2 x 2 x 3 mm, with skull.

The scan is ``KmeansTest_T1UCharRaw.nii.gz`` of Debian's ``insighttoolkit5-examples``
(``apt-get install insighttoolkit5-examples``; path in :data:`sr7t.cohort.anatomy.ROUTINE_T1_SCAN`).
It has no high-resolution truth: the figure is a visual check, input next to output.

    .venv/bin/python benchmarks/routine_scan.py \
        [--model results/demo/models/student_stage1/model.pt]
        [--out docs/routine_scan.png] [--out-nii PATH] [--steps N] [--device cuda]

Runs :func:`sr7t.predict.predict_scan` (brain mask ``auto``: a whole head gets the Colin27
template's brain mask), prints the seconds and the output grid, and writes a PNG: the input
resampled onto the output grid with nearest neighbour (its acquired voxels as they are) above
the output, on the axial, coronal and sagittal slices through the brain's centre, plus a
zoomed axial inset. When the package's own skull strip of the same scan
(``KmeansTest_T1RawSkullStrip.nii.gz``) is there, it also prints the Dice of the brain mask
used (the output's support) against it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sr7t.cohort.anatomy import ROUTINE_T1_PACKAGE, ROUTINE_T1_SCAN

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cohort import final_model_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SKULL_STRIP = ROUTINE_T1_SCAN.with_name("KmeansTest_T1RawSkullStrip.nii.gz")
ZOOM_MM = 48.0  # side of the zoomed inset's square
MARGIN_MM = 12.0  # around the brain in the whole-slice panels


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--scan", default=str(ROUTINE_T1_SCAN))
    ap.add_argument("--model", default=None, help="default: the demo's final model")
    ap.add_argument("--out", default=str(REPO / "docs/routine_scan.png"), help="the PNG")
    ap.add_argument("--out-nii", default=None, help="the output NIfTI (default: a temp folder)")
    ap.add_argument("--brain-mask", default="auto", help="as sr7t predict --brain-mask")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: model's)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=2, help="ITK and torch CPU threads")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(a.threads))

    scan = Path(a.scan)
    if not scan.is_file():
        sys.exit(
            f"routine_scan: {scan} not found: install the Debian package {ROUTINE_T1_PACKAGE} "
            f"(apt-get install {ROUTINE_T1_PACKAGE}) or pass --scan"
        )
    if a.model is None:
        a.model = str(REPO / "results/demo/models" / final_model_name() / "model.pt")
    if not Path(a.model).is_file():
        sys.exit(f"routine_scan: model bundle {a.model} not found (pass --model)")

    import torch

    from sr7t.io import load_volume
    from sr7t.predict import predict_scan

    torch.set_num_threads(a.threads)
    tmp = tempfile.TemporaryDirectory(prefix="sr7t_routine_")
    out_nii = Path(a.out_nii) if a.out_nii else Path(tmp.name) / "routine_sr.nii.gz"
    t0 = time.perf_counter()
    info = predict_scan(
        scan, out_nii, a.model, steps=a.steps, device=a.device, brain_mask=a.brain_mask
    )
    wall = time.perf_counter() - t0

    data, affine = load_volume(scan)
    out, out_affine = load_volume(out_nii)
    mask = out != 0
    spacing_in = np.round(info["input_spacing_mm"], 2).tolist()
    out_mm = np.round(np.sqrt((out_affine[:3, :3] ** 2).sum(0)), 3).tolist()
    print(
        f"routine scan {scan.name}: input {list(data.shape)} voxels of {spacing_in} mm "
        f"(thick axis {info['thick_axis']}) -> output {info['shape']} voxels of {out_mm} mm; "
        f"mask: {info.get('mask', '?')}; predict_scan {info['seconds']:.1f} s "
        f"(wall {wall:.1f} s)"
    )
    if info.get("warning"):
        print(f"warnings: {info['warning']}")
    dice = None
    if SKULL_STRIP.is_file() and scan.resolve() == ROUTINE_T1_SCAN.resolve():
        dice = _dice_vs_skull_strip(mask, out_affine)
        print(f"brain mask vs {SKULL_STRIP.name}: Dice {dice[0]:.3f}, brain covered {dice[1]:.1%}")

    title = (
        f"{scan.name} ({spacing_in} mm, with skull) -> sr7t predict "
        f"({Path(a.model).parent.name}, {out_mm[0]:g} mm), {info['seconds']:.0f} s"
    )
    path = save_side_by_side(a.out, data, affine, out, out_affine, mask, title)
    print(f"wrote {path}")
    return 0


def _dice_vs_skull_strip(mask: np.ndarray, grid: np.ndarray) -> tuple[float, float]:
    from sr7t.io import load_volume
    from sr7t.preprocess.register import resample_to_fixed

    strip, strip_affine = load_volume(SKULL_STRIP)
    truth = resample_to_fixed(strip > 0, strip_affine, mask.shape, grid, np.eye(4), 0) > 0.5
    both = float((mask & truth).sum())
    return 2.0 * both / (mask.sum() + truth.sum()), both / truth.sum()


def save_side_by_side(
    path, data, affine, out, out_affine, mask, title: str = "", zoom_mm: float = ZOOM_MM
) -> Path:
    """PNG: rows input (nearest neighbour onto the output grid) and output; columns the
    axial, coronal and sagittal slices through the centre of ``mask`` (cropped to it plus
    :data:`MARGIN_MM`) and a zoomed axial square of ``zoom_mm`` right of the centre. Arrays
    are RAS+ (x, y, z): the subject's right is on the right of each panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from sr7t.preprocess.register import resample_to_fixed

    nearest = resample_to_fixed(data, affine, out.shape, out_affine, np.eye(4), order=0)
    sp = np.sqrt((out_affine[:3, :3] ** 2).sum(0))
    idx = np.argwhere(mask)
    c = np.round(idx.mean(0)).astype(int)
    margin = np.round(MARGIN_MM / sp).astype(int)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, out.shape)
    box = [slice(a, b) for a, b in zip(lo, hi, strict=True)]
    half = np.round(0.5 * zoom_mm / sp).astype(int)
    zc = c.copy()
    zc[0] = min(c[0] + 2 * half[0], hi[0] - half[0])  # the subject's right hemisphere
    zoom = [slice(max(zc[d] - half[d], 0), zc[d] + half[d]) for d in range(2)]
    views = [  # name, 2-D cut (horizontal, vertical), aspect (vertical / horizontal mm)
        ("axial", (box[0], box[1], c[2]), sp[1] / sp[0]),
        ("coronal", (box[0], c[1], box[2]), sp[2] / sp[0]),
        ("sagittal", (c[0], box[1], box[2]), sp[2] / sp[1]),
        (f"axial, {zoom_mm:g} mm zoom", (zoom[0], zoom[1], c[2]), sp[1] / sp[0]),
    ]
    rows = [("input (nearest)", nearest, _window(nearest, mask)), ("sr7t output", out, None)]
    fig, axes = plt.subplots(2, 4, figsize=(16, 8.4), dpi=100)
    for r, (label, vol, win) in enumerate(rows):
        vmin, vmax = win or _window(vol, mask)
        for col, (name, cut, aspect) in enumerate(views):
            ax = axes[r, col]
            ax.imshow(vol[cut].T, cmap="gray", origin="lower", aspect=aspect, vmin=vmin, vmax=vmax)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(label, fontsize=12)
                x0, y0 = zoom[0].start - box[0].start, zoom[1].start - box[1].start
                w, h = zoom[0].stop - zoom[0].start, zoom[1].stop - zoom[1].start
                ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), w, h, fill=False, ec="y", lw=1))
            if r == 0:
                ax.set_title(name)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _window(vol: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    lo, hi = np.percentile(vol[mask], [0.5, 99.5])
    return float(lo), float(hi)


if __name__ == "__main__":
    sys.exit(main())
