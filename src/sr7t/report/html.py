"""The cohort's self-contained HTML report: it only assembles what the stages wrote.

Sections: how to read it, results (metrics table and figure, each model's example slice),
models, preprocessing QC (table and each subject's reportlets), provenance, warnings. The page
is a Jinja2 template (``report.html.j2``); figures are embedded as base64 PNG so the single file
can be mailed or archived. Every file it reads is an input its rule declares.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from pathlib import Path

import pandas as pd
from markupsafe import Markup

from sr7t.evaluate.compare import compare_to_teacher
from sr7t.evaluate.run import BASELINE_ORDER, read_metrics
from sr7t.preprocess.qc import KEY_COLUMNS

# Each subject's reportlets, in this order, with their captions.
SUBJECT_FIGURES = {
    "reg_png": "registered 1.5T on its 7T (checkerboard: edges should continue).",
    "guidance_png": (
        "what the model sees: the 1.5T, its N4 bias field and GNL maps (all on the 7T grid), "
        "and the corrected 7T target."
    ),
}


def write_report(
    cohort: str,
    out_html: str | Path,
    *,
    metrics: str | Path,
    figure: str | Path,
    summary: str | Path,
    preprocess_qc: str | Path,
    manifest: str | Path,
    subject_figures: dict[str, dict[str, str | Path]],
    model_summaries: dict[str, str | Path],
    examples: dict[str, str | Path],
) -> Path:
    """Write the report of ``cohort`` to ``out_html`` from the evaluation's ``metrics``,
    ``figure`` and ``summary``, the ``preprocess_qc`` table, the ``manifest``, each subject's
    reportlets (``subject_figures``: subject -> {``reg_png``, ``guidance_png``} -> PNG), each
    model's training summary (model -> json) and example slice (model -> PNG)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    table = read_metrics(metrics)
    qc = pd.read_csv(preprocess_qc, sep="\t")
    subjects = pd.read_csv(manifest, sep="\t").drop_duplicates("subject")

    results = table.groupby(["model", "input", "resolution_mm"])[
        ["psnr", "ssim", "hfen", "striping", "seconds"]
    ]
    tissue_cols = [c for c in table.columns if c.startswith(("dice_", "volerr_"))]
    tissue = table.dropna(subset=tissue_cols[:1]) if tissue_cols else table.iloc[:0]
    comparison = compare_to_teacher(table)
    warnings = table[table["warning"].astype(str) != ""]
    flagged = qc[qc.get("qc_failed", pd.Series(False, index=qc.index)).astype(bool)]
    speed = _quality_vs_speed(table)
    context = {
        "cohort": cohort,
        "written": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}",
        "n_subjects": len(subjects),
        "splits": ", ".join(
            f"{k} {v}" for k, v in subjects["split"].value_counts().sort_index().items()
        ),
        "headline": _headline(pd.read_csv(summary, sep="\t", keep_default_na=False)),
        "results_table": _table(
            results.mean().reset_index(),
            floats={"psnr": 2, "ssim": 4, "hfen": 3, "striping": 2, "seconds": 2},
        ),
        "metrics_png": _b64(Path(figure).read_bytes()),
        "examples": [
            (m, _b64(Path(examples[m]).read_bytes())) for m in sorted(examples, key=_model_order)
        ],
        "speed_png": _b64(speed) if speed else None,
        "tissue_table": None
        if tissue.empty
        else _table(
            tissue.groupby("model")[tissue_cols].mean().reset_index(),
            floats=dict.fromkeys(tissue_cols, 3),
        ),
        "comparison_table": None
        if comparison is None
        else _table(
            comparison,
            floats={"psnr": 2, "delta_psnr_db": 2, "ssim": 4, "delta_ssim": 4, "seconds": 2}
            | {"params_ratio": 3, "speedup": 1},
        ),
        "metrics_table": _table(
            table, floats={"psnr": 2, "ssim": 4, "nmse": 4, "seconds": 2, "data_range": 3}
        ),
        "models_table": _models_table(model_summaries, sorted(table["model"].unique())),
        "qc_key_table": _table(qc[[c for c in KEY_COLUMNS if c in qc.columns]]),
        "qc_table": _table(qc),
        "subject_figures": [
            (
                subject,
                [
                    (_b64(Path(figs[key]).read_bytes()), caption)
                    for key, caption in SUBJECT_FIGURES.items()
                    if key in figs
                ],
            )
            for subject, figs in sorted(subject_figures.items())
        ],
        "versions_table": _table(pd.DataFrame(_versions().items(), columns=["package", "version"])),
        "warnings_table": None
        if warnings.empty
        else _table(warnings[["model", "resolution_mm", "subject", "warning"]]),
        "flagged_table": None if flagged.empty else _table(flagged),
    }
    env = Environment(
        loader=PackageLoader("sr7t", "report"),
        autoescape=select_autoescape(["j2"], default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(env.get_template("report.html.j2").render(context))
    return out_html


def _model_order(model: str) -> tuple:
    """Baselines first, then the teacher, the students by stage, the rest by name."""
    if model in BASELINE_ORDER:
        return (0, BASELINE_ORDER[model], model)
    if model == "teacher":
        return (1, 0, model)
    if model.startswith("student_stage"):
        return (2, int(model.removeprefix("student_stage") or 0), model)
    return (3, 0, model)


def _models_table(summaries: dict[str, str | Path], models: list[str]) -> Markup | None:
    rows = []
    for model in models:
        if model in summaries:
            s = json.loads(Path(summaries[model]).read_text())
            rows.append(
                {"model": model} | {k: v for k, v in s.items() if isinstance(v, int | float | str)}
            )
    return _table(pd.DataFrame(rows)) if rows else None


def _headline(summary: pd.DataFrame) -> list[dict] | None:
    """The top lines: what the best learned model gains over B-spline, with its 95 % CI, per
    input kind; None when no learned model was compared with B-spline."""
    gains = summary[
        (summary["kind"] == "gain")
        & (summary["metric"] == "psnr")
        & (summary["resolution_mm"] < 0)
        & (summary["model"] != "trilinear")
    ]
    if gains.empty:
        return None
    lines = []
    for kind, part in gains.groupby("input"):
        best = part.sort_values("mean").iloc[-1]
        verdict = (
            "better than"
            if best["ci_lo"] > 0
            else ("worse than" if best["ci_hi"] < 0 else "not distinguishable from")
        )
        lines.append(
            {
                "input": kind,
                "model": str(best["model"]),
                "verdict": verdict,
                "mean": float(best["mean"]),
                "ci_lo": float(best["ci_lo"]),
                "ci_hi": float(best["ci_hi"]),
                "n": int(best["n"]),
            }
        )
    return lines


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


def _table(df: pd.DataFrame, floats: dict[str, int] | None = None) -> Markup:
    """``df`` as an HTML table (pandas escapes the cells), marked safe for the template."""
    floats = floats or {}
    fmt = {c: (lambda v, n=n: f"{v:.{n}f}") for c, n in floats.items() if c in df.columns}
    return Markup(
        df.to_html(index=False, border=0, formatters=fmt, float_format=lambda v: f"{v:.4g}")
    )


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode()
