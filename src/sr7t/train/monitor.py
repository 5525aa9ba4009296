"""What a training job shows while and after it trains: sample images and volume scores.

Both run on the validation subjects with the EMA weights, in the same units, mask and
normalisation as the evaluation stage (:mod:`sr7t.evaluate.run`), so a stage's own numbers
and ``eval/metrics.tsv`` can be compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sr7t.data.slices import T1_CHANNEL, Subject
from sr7t.models.diffusion import Denoiser


def volume_scores(
    model: Denoiser,
    meta: dict,
    subjects: list[Subject],
    slice_mm: list[float],
    batch_size: int = 16,
    split: str = "val",
) -> dict[str, float]:
    """Whole-volume PSNR/SSIM in the brain mask and seconds per volume, mean over ``subjects``,
    at each input slice spacing. Keys ``<split>_psnr_<r>mm``, ``<split>_ssim_<r>mm``,
    ``seconds_per_volume_<r>mm``."""
    from sr7t.evaluate.metrics import all_metrics
    from sr7t.evaluate.run import predict_scaled, scaled_reference

    out: dict[str, float] = {}
    for res in slice_mm:
        psnr, ssim, seconds = [], [], []
        for s in subjects:
            scaled, _, sec, _ = predict_scaled(
                meta["kind"], model, meta, s, res, batch_size, progress=False
            )
            m = all_metrics(scaled, scaled_reference(s), s.mask)
            psnr.append(m["psnr"])
            ssim.append(m["ssim"])
            seconds.append(sec)
        out[f"{split}_psnr_{res:g}mm"] = float(np.mean(psnr))
        out[f"{split}_ssim_{res:g}mm"] = float(np.mean(ssim))
        out[f"seconds_per_volume_{res:g}mm"] = float(np.mean(seconds))
    return out


def save_sample_figure(
    model: Denoiser,
    meta: dict,
    subject: Subject,
    slice_mm: float,
    step: int,
    out_png: str | Path,
) -> Path:
    """One validation plane (the middle one along the first model axis) at input spacing
    ``slice_mm``: the 1.5T input, the model's sample, the 7T target and |sample - target|."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sr7t.evaluate.run import degrade_condition
    from sr7t.models.predict import input_order, predict_plane

    cond, effective = degrade_condition(subject, slice_mm, input_order(meta))
    axis = int(meta["slice_axis"][0])
    index = subject.t1.shape[axis] // 2
    sample = predict_plane(
        model,
        meta,
        cond,
        axis,
        index,
        slice_mm=effective,
        inplane_mm=float(np.max(subject.native_spacing_mm[:2])),
    )
    t1 = np.take(cond[subject.channels.index(T1_CHANNEL)], index, axis=axis)
    target = np.take(subject.target, index, axis=axis)
    mask = np.take(subject.mask, index, axis=axis)
    panels = [
        (f"1.5T input ({effective:g} mm slices)", t1, "gray", (0, 1.2)),
        (f"{meta['kind']} sample, step {step}", sample, "gray", (0, 1.2)),
        ("7T target", target, "gray", (0, 1.2)),
        ("|sample - target|", np.abs(sample - target) * mask, "magma", (0, 0.3)),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.6), dpi=80)
    for ax, (title, img, cmap, lim) in zip(axes, panels, strict=True):
        # image axes (A, Z): show z upwards
        ax.imshow(np.rot90(img), cmap=cmap, vmin=lim[0], vmax=lim[1])
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"validation subject {subject.name}", fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png
