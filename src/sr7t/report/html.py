"""The cohort's self-contained HTML report: it only assembles what the stages wrote.

Sections: how to read it, results (metrics table and figure, example slices), models,
preprocessing QC (table and each subject's registration figure), warnings.
Figures are embedded as base64 PNG so the single file can be mailed or archived.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from sr7t import paths
from sr7t.evaluate.compare import compare_to_teacher
from sr7t.evaluate.run import read_metrics
from sr7t.io import load_volume

HOW_TO_READ = """
<p>Each model super-resolves the held-out (<em>test</em>) subjects, scored once. Two kinds of
input (<code>input</code> column): <code>sim</code>, the subject's undistorted 1.5T-contrast
truth with Rician noise, acquired with thick slices along x, y or z (<code>axis</code>) at
each spacing, or left at the grid's resolution (<code>iso</code>: the model must not make it
worse); <code>pipeline</code>, the real 1.5T as the workflow preprocessed it (thick along z).
Every output is compared with the <strong>undistorted 7T truth</strong> (where the cohort
has one; else the processed 7T) inside the true brain mask, on the same grid and region,
after its own monotone intensity map to the truth (isotonic regression fitted in the brain:
contrast is factored out, the question is resolution); the truth is scaled to its in-brain
99th percentile and PSNR uses data range 1. <code>psnr_linear</code>/<code>ssim_linear</code>
use a linear map instead. HFEN (lower is better) measures lost fine structure,
<code>striping</code> the slice-to-slice variation across the thick axis relative to the
truth's (1 = truth-like). <code>trilinear</code> and <code>bspline</code> interpolate the
input; <code>regression</code> is a deterministic UNet with the final student's architecture
and training budget: a learned model is only useful where it beats them.
<code>teacher</code> is the diffusion model; <code>student_stage&lt;k&gt;</code> the k-th
distilled student (half the sampling steps of stage k&minus;1). Confidence intervals are 95 %
percentile bootstraps over subject &times; axis &times; spacing units (paired for gains).
<code>seconds</code> is the wall time per scored region on the evaluating machine.</p>
<p>Preprocessing QC: similarity after registration should exceed similarity before;
N4 should lower the white-matter coefficient of variation (CoV). For the demo cohort the
columns ending in <code>_truth</code> compare each stage with the known synthetic truth.</p>
"""

STUDENTS_VS_TEACHER = """
<p>What distillation buys and what it costs, per input slice spacing (mean over held-out
subjects): <code>delta_psnr_db</code> is the model's PSNR minus the teacher's (the goal is
above &minus;0.5 dB), <code>params_ratio</code> its parameters over the teacher's (goal: at
most 0.25), <code>speedup</code> the teacher's seconds per volume over the model's (goal: at
least 10). <code>sampling_steps</code> is the number of network evaluations per slice;
<code>macs_per_slice</code> the multiply-accumulates they take together. PSNR and SSIM reward
the posterior mean (the average of the plausible 7T images): a sampler with fewer steps sits
closer to it and can score above the teacher while showing less fine texture, so compare
the example slices too.</p>
"""

CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:0.5em 0}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f0f0f0} h2{border-bottom:2px solid #ddd;padding-bottom:3px}
img{max-width:100%} .warn{color:#a40000} figure{margin:1em 0}
figcaption{font-size:13px;color:#555}
"""


def write_report(results_root: str | Path, cohort: str, out_html: str | Path) -> Path:
    """Assemble ``report/index.html`` for ``cohort`` from the files under ``results_root``."""
    root = Path(results_root)

    def p(name, **kw):
        return paths.path(name, root, cohort=cohort, **kw)

    metrics = read_metrics(p("metrics"))
    qc = pd.read_csv(p("preprocess_qc"), sep="\t")
    manifest = pd.read_csv(p("manifest"), sep="\t")
    parts = [
        f"<h1>sr7t report: cohort <code>{html.escape(cohort)}</code></h1>",
        f"<p>Written {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. "
        f"{manifest['subject'].nunique()} subjects; splits: "
        f"{_split_counts(manifest)}.</p>",
        "<h2>How to read this report</h2>",
        HOW_TO_READ,
    ]

    parts.append("<h2>Results on held-out subjects</h2>")
    summary_file = p("eval_summary")
    if summary_file.exists():
        gains = pd.read_csv(summary_file, sep="\t", keep_default_na=False)
        parts.append(_headline(gains))
    summary = (
        metrics.groupby(["model", "input", "resolution_mm"])[
            ["psnr", "ssim", "hfen", "striping", "seconds"]
        ]
        .mean()
        .reset_index()
    )
    parts.append(
        _table(
            summary,
            floats={"psnr": 2, "ssim": 4, "hfen": 3, "striping": 2, "seconds": 2},
        )
    )
    parts.append(
        _figure(
            p("eval_figure").read_bytes(),
            "PSNR and SSIM against input slice "
            "spacing, mean over held-out subjects; dashed lines are baselines.",
        )
    )
    example = _example_slices(root, cohort, metrics)
    if example:
        parts.append(
            _figure(
                example,
                "One held-out subject, a coronal slice, at the coarsest "
                "input resolution: input (trilinear), each learned model, the 7T.",
            )
        )
    speed = _quality_vs_speed(metrics)
    if speed:
        parts.append(
            _figure(
                speed,
                "Quality against speed: mean PSNR over the simulated inputs against seconds "
                "per scored region (log scale), every model.",
            )
        )
    tissue_cols = [c for c in metrics.columns if c.startswith(("dice_", "volerr_"))]
    tissue = metrics.dropna(subset=tissue_cols[:1]) if tissue_cols else metrics.iloc[:0]
    if not tissue.empty:
        parts.append("<h3>Tissue agreement</h3>")
        parts.append(
            "<p>GM/WM/CSF segmented with ANTs Atropos (3-class k-means) on every output and on "
            "the truth, inside the brain mask, on one cell per subject (thick along z, the "
            "middle spacing): Dice (higher is better) and relative volume error.</p>"
        )
        parts.append(
            _table(
                tissue.groupby("model")[tissue_cols].mean().reset_index(),
                floats={c: 3 for c in tissue_cols},
            )
        )
    comparison = compare_to_teacher(metrics)
    if comparison is not None:
        parts.append("<h3>Students against the teacher</h3>")
        parts.append(STUDENTS_VS_TEACHER)
        floats = {"psnr": 2, "delta_psnr_db": 2, "ssim": 4, "delta_ssim": 4, "seconds": 2}
        floats |= {"params_ratio": 3, "speedup": 1}
        parts.append(_table(comparison, floats=floats))
    parts.append(
        "<details><summary>Every row of metrics.tsv</summary>"
        + _table(metrics, floats={"psnr": 2, "ssim": 4, "nmse": 4, "seconds": 2, "data_range": 3})
        + "</details>"
    )

    parts.append("<h2>Models</h2>")
    rows = []
    for model in sorted(metrics["model"].unique()):
        sfile = p("model_summary", model=model)
        if sfile.exists():
            s = json.loads(sfile.read_text())
            rows.append(
                {"model": model} | {k: v for k, v in s.items() if isinstance(v, (int, float, str))}
            )
    if rows:
        parts.append(_table(pd.DataFrame(rows)))

    from sr7t.preprocess.qc import KEY_COLUMNS

    parts.append("<h2>Preprocessing QC</h2>")
    parts.append(_table(qc[[c for c in KEY_COLUMNS if c in qc.columns]]))
    parts.append(
        "<details><summary>Every column of preprocess.tsv</summary>" + _table(qc) + "</details>"
    )
    for subject in sorted(manifest["subject"].unique()):
        for name, caption in (
            ("reg_qc_png", "registered 1.5T on its 7T (checkerboard: edges should continue)."),
            (
                "dataset_qc_png",
                "what the model sees: the 1.5T, its N4 bias field and GNL "
                "maps (all on the 7T grid), and the corrected 7T target.",
            ),
        ):
            png = p(name, subject=subject)
            if png.exists():
                parts.append(_figure(png.read_bytes(), f"{subject}: {caption}"))

    parts.append("<h2>Provenance</h2>")
    parts.append(_table(pd.DataFrame(_versions().items(), columns=["package", "version"])))

    parts.append("<h2>Warnings and errors</h2>")
    warnings = metrics[metrics["warning"].astype(str) != ""]
    flagged = qc[qc.get("qc_failed", pd.Series(False, index=qc.index)).astype(bool)]
    if warnings.empty and flagged.empty:
        parts.append("<p>None.</p>")
    if not warnings.empty:
        parts.append('<p class="warn">Inputs outside a model\'s trained range:</p>')
        parts.append(_table(warnings[["model", "resolution_mm", "subject", "warning"]]))
    if not flagged.empty:
        parts.append('<p class="warn">Subjects that failed a preprocessing QC check:</p>')
        parts.append(_table(flagged))

    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>sr7t {cohort}</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(doc)
    return out_html


def _headline(summary: pd.DataFrame) -> str:
    """The top line: what the best learned model gains over B-spline, with its 95 % CI."""
    gains = summary[
        (summary["kind"] == "gain")
        & (summary["metric"] == "psnr")
        & (summary["resolution_mm"] < 0)
        & (summary["model"] != "trilinear")
    ]
    if gains.empty:
        return "<p>No learned model was scored against the B-spline baseline.</p>"
    lines = []
    for kind, part in gains.groupby("input"):
        best = part.sort_values("mean").iloc[-1]
        verdict = (
            "better than"
            if best["ci_lo"] > 0
            else ("worse than" if best["ci_hi"] < 0 else "not distinguishable from")
        )
        lines.append(
            f"<li><b>{html.escape(kind)} inputs</b>: the best learned model, "
            f"<code>{html.escape(str(best['model']))}</code>, is {verdict} B-spline "
            f"interpolation: {best['mean']:+.2f} dB PSNR (95 % CI {best['ci_lo']:+.2f} to "
            f"{best['ci_hi']:+.2f}, {int(best['n'])} subject x axis x spacing units, contrast "
            "factored out by an isotonic fit).</li>"
        )
    return "<p><b>Summary</b></p><ul>" + "".join(lines) + "</ul>"


def _quality_vs_speed(metrics: pd.DataFrame) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = metrics[metrics["input"] == "sim"] if "input" in metrics.columns else metrics
    if sim.empty:
        return None
    agg = sim.groupby("model")[["psnr", "seconds"]].mean()
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=90)
    for name, row in agg.iterrows():
        ax.scatter(max(row["seconds"], 1e-3), row["psnr"])
        ax.annotate(name, (max(row["seconds"], 1e-3), row["psnr"]), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per scored region")
    ax.set_ylabel("PSNR (dB, contrast-neutral)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _versions() -> dict[str, str]:
    """The package versions (and git commit) that produced the report."""
    import importlib.metadata as md
    import subprocess

    out = {}
    for name in ("sr7t", "torch", "monai", "antspyx", "nibabel", "snakemake", "mlflow"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    out["git commit"] = commit or "unknown"
    return out


def _split_counts(manifest: pd.DataFrame) -> str:
    counts = manifest.drop_duplicates("subject")["split"].value_counts().sort_index()
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _table(df: pd.DataFrame, floats: dict[str, int] | None = None) -> str:
    floats = floats or {}
    fmt = {c: (lambda v, n=n: f"{v:.{n}f}") for c, n in floats.items() if c in df.columns}
    return df.to_html(index=False, border=0, formatters=fmt, float_format=lambda v: f"{v:.4g}")


def _figure(png: bytes, caption: str) -> str:
    b64 = base64.b64encode(png).decode()
    return (
        f'<figure><img src="data:image/png;base64,{b64}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _example_slices(root: Path, cohort: str, metrics: pd.DataFrame) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    subject = sorted(metrics["subject"].unique())[0]
    # the coarsest input every model was trained for, thick along z (a resolution outside the
    # range is evaluated on purpose, but is not the one to show first)
    rows = metrics[(metrics["subject"] == subject) & (metrics["axis"].astype(str) == "z")]
    warned = set(rows.loc[rows["warning"].astype(str) != "", "resolution_mm"])
    in_range = [r for r in rows["resolution_mm"].unique() if r not in warned]
    if rows.empty:
        return None
    res = float(max(in_range or rows["resolution_mm"]))
    kind = "sim" if "sim" in set(rows["input"]) else "pipeline"
    label = f"{kind}-z-{res:g}mm"
    models = ["trilinear"] + [
        m for m in sorted(metrics["model"].unique()) if m not in ("trilinear", "bspline")
    ]
    panels = []
    for model in models:
        f = paths.path(
            "eval_prediction", root, cohort=cohort, model=model, subject=subject, cell=label
        )
        if f.exists():
            panels.append((model, load_volume(f)[0]))
    if not panels:
        return None
    y = panels[0][1].shape[1] // 2
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.2), dpi=90)
    for ax, (name, vol) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(np.rot90(vol[:, y, :]), cmap="gray", vmin=0, vmax=1.1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{subject}, {kind} input, {res:g} mm slices along z", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
