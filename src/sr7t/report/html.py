"""The cohort's self-contained HTML report: it only assembles what the stages wrote.

What the report shows, in which section, with which caption, from which of its declared
inputs, is one list: :data:`REPORT_SPEC` (as fMRIPrep's reports spec). Each entry names the
report stage's input(s) it reads and its kind: ``image`` (a PNG, a stage's reportlet or drawn
here from a table), ``images`` (one PNG per model or subject), ``table`` or ``html``. Adding a
figure is one entry here plus one declared input (``sr7t.stages`` and the ``report`` rule). An
entry whose input was not given is skipped with a one-line note, never a crash. The page is a
Jinja2 template (``report.html.j2``); figures are embedded as base64 PNG so the single file
can be mailed or archived. Every file it reads is an input its rule declares.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from markupsafe import Markup, escape

from sr7t import paths
from sr7t.evaluate.compare import compare_to_teacher
from sr7t.evaluate.run import BASELINE_ORDER, read_metrics
from sr7t.preprocess.qc import KEY_COLUMNS

KINDS = ("image", "images", "table", "html")


@dataclass(frozen=True)
class ReportContext:
    """What the report knows besides its input files."""

    cohort: str
    ui_url: str | None = None  # config tracking.ui_url (sr7t.report.runs.ui_base)
    own_runs: dict[str, dict] = field(default_factory=dict)  # label -> run record (this job)
    left_out: dict[str, str] = field(default_factory=dict)  # subject -> its bad-input error


@dataclass(frozen=True)
class Reportlet:
    """One item of the report.

    ``section``: the heading it goes under (sections appear in the order of their first
    entry); ``title``: its own sub-heading ("" for none); ``sources``: the report stage's
    input names it reads; ``kind``: one of :data:`KINDS`; ``caption``: what it shows and how
    to read it; ``build(ctx, *files)``: its content from those inputs (one path, or a list for
    a list input) -- PNG bytes (``image``), ``[(label, PNG bytes)]`` (``images``), or HTML
    (``table``, ``html``); None: nothing to show, then ``empty`` is said (if not None). Without
    ``build`` an ``image`` is the PNG file of its one source and ``images`` its PNG files,
    labelled by the path's wildcards."""

    section: str
    title: str
    sources: tuple[str, ...]
    kind: str
    caption: str = ""
    build: Callable[..., Any] | None = None
    empty: str | None = None


def write_report(
    cohort: str,
    out_html: str | Path,
    inputs: Mapping[str, str | Path | list],
    *,
    ui_url: str | None = None,
    own_runs: Mapping[str, dict] | None = None,
    left_out: Mapping[str, str] | None = None,
) -> Path:
    """Write the report of ``cohort`` to ``out_html`` from the report stage's declared
    ``inputs`` (input name -> path, or list of paths), as :data:`REPORT_SPEC` lists them.
    ``ui_url``: the MLflow UI's base URL (None: :func:`sr7t.report.runs.ui_base`'s default);
    ``own_runs``: runs known to the report job itself (label -> run record: its own, the
    workflow's parent run); ``left_out``: subjects left out for bad input -> their error."""
    ctx = ReportContext(cohort, ui_url, dict(own_runs or {}), dict(left_out or {}))
    cohort_line = _cohort_line(inputs.get("manifest"))
    if ctx.left_out:
        cohort_line += f"; {len(ctx.left_out)} left out for bad input (see Warnings and errors)"
    context = {
        "cohort": cohort,
        "written": f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M}",
        "cohort_line": cohort_line,
        "sections": assemble(REPORT_SPEC, inputs, ctx),
    }
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(_environment().get_template("report.html.j2").render(context))
    return out_html


def assemble(
    spec: tuple[Reportlet, ...], inputs: Mapping[str, Any], ctx: ReportContext
) -> list[dict]:
    """The report's sections: ``[{"title", "items": [{"title", "kind", "caption", "content"
    or "note"}]}]`` in the order of ``spec``. An entry whose input is absent (not given, or its
    file missing) becomes a one-line note; one whose build gives None shows its ``empty`` text
    (or nothing)."""
    sections: dict[str, list[dict]] = {}
    for entry in spec:
        if entry.kind not in KINDS:
            raise ValueError(f"report entry {entry.title or entry.sources}: kind {entry.kind!r}")
        items = sections.setdefault(entry.section, [])
        item = {"title": entry.title, "kind": entry.kind, "caption": entry.caption}
        missing = [k for k in entry.sources if not _present(inputs.get(k))]
        if missing:
            what = entry.title or entry.caption.split(".")[0] or entry.section
            given = ", ".join(f"<code>{escape(k)}</code>" for k in missing)
            note = f"Not available: {escape(what)} (the report's input {given} was not given)."
            items.append(item | {"note": Markup(note)})
            continue
        files = [inputs[k] for k in entry.sources]
        content = (entry.build or _default_build(entry.kind))(ctx, *files)
        if content is None:
            if entry.empty is not None:
                items.append(item | {"kind": "html", "caption": "", "content": entry.empty})
            continue
        if entry.kind == "image":
            content = _b64(content)
        elif entry.kind == "images":
            content = [(label, _b64(png)) for label, png in content]
            if not content:
                continue
        items.append(item | {"content": content})
    return [{"title": title, "items": items} for title, items in sections.items() if items]


def _present(value) -> bool:
    if value is None:
        return False
    if isinstance(value, list | tuple):
        return all(Path(v).is_file() for v in value)
    return Path(value).exists()


def _default_build(kind: str) -> Callable[..., Any]:
    if kind == "image":
        return lambda ctx, png: Path(png).read_bytes()
    if kind == "images":
        return lambda ctx, pngs: [(Path(p).parent.name, Path(p).read_bytes()) for p in pngs]
    raise ValueError(f"a {kind} entry needs a build function")


def _environment():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(
        loader=PackageLoader("sr7t", "report"),
        autoescape=select_autoescape(["j2"], default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _cohort_line(manifest) -> str:
    if not _present(manifest):
        return ""
    subjects = pd.read_csv(manifest, sep="\t").drop_duplicates("subject")
    splits = ", ".join(f"{k} {v}" for k, v in subjects["split"].value_counts().sort_index().items())
    return f"{len(subjects)} subjects; splits: {splits}."


# ------------------------------------------------------------------------------ the builders


def _how_to_read(ctx) -> Markup:
    return Markup(_environment().get_template("how_to_read.html.j2").render())


def _summary(ctx, summary) -> Markup:
    """The plain-words top lines (:func:`_headline`), or why there are none."""
    table = pd.read_csv(summary, sep="\t", keep_default_na=False)
    lines = _headline(table)
    if lines is None:
        return Markup("<p>No learned model was scored against the B-spline baseline.</p>")
    items = []
    for h in lines:
        baseline = "B-spline interpolation"
        if h["trilinear_psnr"] is not None and h["trilinear_psnr"] > h["bspline_psnr"]:
            baseline += (
                f" (trilinear scored higher here, {h['trilinear_psnr']:.2f} dB against "
                f"{h['bspline_psnr']:.2f} dB; the gains are paired against B-spline)"
            )
        elif h["bspline_psnr"] is not None:
            baseline += ", the stronger interpolation baseline"
        items.append(
            f"<li><b>{escape(h['input'])} inputs</b>: the best learned model, "
            f"<code>{escape(h['model'])}</code>, is {h['verdict']} {baseline}: "
            f"{h['mean']:+.2f} dB PSNR (95 % CI {h['ci_lo']:+.2f} to {h['ci_hi']:+.2f}, "
            f"{h['n']} subject &times; axis &times; spacing units, contrast factored out by an "
            "isotonic fit).</li>"
        )
    return Markup("<ul>" + "".join(items) + "</ul>")


def _results_table(ctx, metrics) -> Markup:
    table = read_metrics(metrics)
    cols = [c for c in ("psnr", "ssim", "hfen", "striping", "seconds") if c in table.columns]
    results = table.groupby(["model", "input", "resolution_mm"])[cols].mean().reset_index()
    return _table(results, floats={"psnr": 2, "ssim": 4, "hfen": 3, "striping": 2, "seconds": 2})


def _speed(ctx, metrics) -> bytes | None:
    return _quality_vs_speed(read_metrics(metrics))


def _examples(ctx, pngs) -> list[tuple[str, bytes]]:
    by_model = {paths.match("eval_example_png", f)["model"]: f for f in pngs}
    return [(m, Path(by_model[m]).read_bytes()) for m in sorted(by_model, key=_model_order)]


def _subject_images(template: str) -> Callable[..., list[tuple[str, bytes]]]:
    def build(ctx, pngs):
        by_subject = {paths.match(template, f)["subject"]: f for f in pngs}
        return [(s, Path(by_subject[s]).read_bytes()) for s in sorted(by_subject)]

    return build


def _tissue_table(ctx, metrics) -> Markup | None:
    table = read_metrics(metrics)
    cols = [c for c in table.columns if c.startswith(("dice_", "volerr_"))]
    tissue = table.dropna(subset=cols[:1]) if cols else table.iloc[:0]
    if tissue.empty:
        return None
    return _table(tissue.groupby("model")[cols].mean().reset_index(), floats=dict.fromkeys(cols, 3))


def _comparison_table(ctx, metrics) -> Markup | None:
    comparison = compare_to_teacher(read_metrics(metrics))
    if comparison is None:
        return None
    floats = {"psnr": 2, "delta_psnr_db": 2, "ssim": 4, "delta_ssim": 4, "seconds": 2}
    return _table(comparison, floats=floats | {"params_ratio": 3, "speedup": 1})


def _every_row(ctx, metrics) -> Markup:
    table = _table(
        read_metrics(metrics),
        floats={"psnr": 2, "ssim": 4, "nmse": 4, "seconds": 2, "data_range": 3},
    )
    return (
        Markup("<details><summary>Every row of metrics.tsv</summary>")
        + table
        + Markup("</details>")
    )


def _qc_key_table(ctx, qc) -> Markup:
    table = pd.read_csv(qc, sep="\t")
    return _table(table[[c for c in KEY_COLUMNS if c in table.columns]])


def _qc_every_column(ctx, qc) -> Markup:
    table = _table(pd.read_csv(qc, sep="\t"))
    return (
        Markup("<details><summary>Every column of preprocess.tsv</summary>")
        + table
        + Markup("</details>")
    )


def _runs(ctx, records) -> Markup:
    """The MLflow runs: one row per stage with a link for ``mlflow ui``."""
    from sr7t.report.runs import runs_table

    labelled: dict[str, Any] = {}
    for f in sorted(records):
        for template, what in (("model_run", "training"), ("eval_run", "evaluation")):
            try:
                labelled[f"{paths.match(template, f)['model']} ({what})"] = f
            except ValueError:
                continue
            break
        else:
            labelled[Path(f).parent.name] = f
    labelled = dict(sorted(labelled.items(), key=lambda kv: (_run_order(kv[0]), kv[0])))
    labelled |= ctx.own_runs
    runs = runs_table(labelled, ctx.ui_url)
    html = Markup("")
    if runs["note"]:
        html += Markup("<p>") + runs["note"] + Markup("</p>")
    if runs["rows"] is not None:
        rows = runs["rows"]
        rows["run id"] = [
            Markup('<a href="{}"><code>{}</code></a>').format(url, rid)
            for url, rid in zip(rows.pop("url"), rows["run id"], strict=True)
        ]
        html += Markup("<p>Tracking store: <code>") + runs["store"] + Markup("</code>.</p>")
        html += Markup(rows.to_html(index=False, border=0, escape=False))
    return html


def _run_order(label: str) -> tuple:
    model, _, what = label.partition(" (")
    return (what, _model_order(model))


def _versions_table(ctx) -> Markup:
    return _table(pd.DataFrame(_versions().items(), columns=["package", "version"]))


def _config(ctx, config) -> Markup:
    text = Path(config).read_text()
    return (
        Markup(f"<details><summary>The resolved config (<code>{escape(Path(config).name)}")
        + Markup("</code>)</summary><pre>")
        + text
        + Markup("</pre></details>")
    )


def _warnings(ctx, metrics) -> Markup | None:
    table = read_metrics(metrics)
    warnings = table[table["warning"].astype(str) != ""]
    if warnings.empty:
        return None
    return _table(warnings[["model", "resolution_mm", "subject", "warning"]])


def _left_out(ctx) -> Markup | None:
    if not ctx.left_out:
        return None
    rows = sorted(ctx.left_out.items())
    return _table(pd.DataFrame(rows, columns=["subject", "error"]))


def _flagged(ctx, qc) -> Markup | None:
    table = pd.read_csv(qc, sep="\t")
    flagged = table[table.get("qc_failed", pd.Series(False, index=table.index)).astype(bool)]
    return None if flagged.empty else _table(flagged)


# ------------------------------------------------------------------------ the one list

RESULTS = "Results on held-out subjects"
TRAINING = "Training and distillation"
QC = "Preprocessing QC"

REPORT_SPEC: tuple[Reportlet, ...] = (
    Reportlet("Summary", "", ("summary",), "html", build=_summary),
    Reportlet("How to read this report", "", (), "html", build=_how_to_read),
    Reportlet(
        RESULTS,
        "",
        ("metrics",),
        "table",
        "Mean scores per model, input kind and input slice spacing (contrast-neutral).",
        _results_table,
    ),
    Reportlet(
        RESULTS,
        "",
        ("figure",),
        "image",
        "PSNR and SSIM against input slice spacing, mean over held-out subjects with 95 % "
        "bootstrap CIs; dashed lines are baselines.",
    ),
    Reportlet(
        RESULTS,
        "",
        ("metrics",),
        "image",
        "Quality against speed: mean PSNR over the simulated inputs against seconds per "
        "scored region (log scale), every model.",
        _speed,
    ),
    Reportlet(
        RESULTS,
        "Slice montage",
        ("montage",),
        "image",
        "One held-out subject, one cell (title): the 1.5T input as the models get it (linear "
        "interpolation of the acquired slices, which is also the trilinear baseline), each "
        "model's output and the truth; below, each one's absolute error after its own "
        "isotonic intensity fit to the truth (as the metrics), on one scale; where a model "
        "drew several samples, their per-voxel standard deviation. The inset in each panel "
        "magnifies the outlined square.",
    ),
    Reportlet(
        RESULTS,
        "",
        ("examples",),
        "images",
        "one held-out subject's coronal slice (the cell in the title): its input "
        "(trilinear), the model's output and the 7T.",
        _examples,
    ),
    Reportlet(
        RESULTS,
        "Tissue agreement",
        ("metrics",),
        "table",
        "GM/WM/CSF segmented with ANTs Atropos (3-class k-means) on every output and on the "
        "truth, inside the brain mask, on one cell per subject (thick along z, the middle "
        "spacing): Dice (higher is better) and relative volume error.",
        _tissue_table,
    ),
    Reportlet(
        RESULTS,
        "Students against the teacher",
        ("metrics",),
        "table",
        "What distillation buys and what it costs, per input slice spacing (mean over "
        "held-out subjects): delta_psnr_db is the model's PSNR minus the teacher's (the goal "
        "is above -0.5 dB), params_ratio its parameters over the teacher's (goal: at most "
        "0.25), speedup the teacher's seconds per volume over the model's (goal: at least "
        "10). sampling_steps is the number of network evaluations per slice; macs_per_slice "
        "the multiply-accumulates they take together. PSNR and SSIM reward the posterior "
        "mean (the average of the plausible 7T images): a sampler with fewer steps sits "
        "closer to it and can score above the teacher while showing less fine texture, so "
        "compare the slices too.",
        _comparison_table,
    ),
    Reportlet(RESULTS, "", ("metrics",), "html", build=_every_row),
    Reportlet(
        TRAINING,
        "",
        ("training_curves",),
        "image",
        "Training and distillation curves: each model's training loss (and its parts, and "
        "the validation loss where measured) against the training step, log scale; the "
        "distillation stages in the order of the chain, each starting from its parent.",
    ),
    Reportlet(
        TRAINING,
        "Models",
        ("summaries",),
        "table",
        "Each model's training summary.",
        lambda ctx, files: _models_table(files),
    ),
    Reportlet(
        QC,
        "",
        ("preprocess_qc",),
        "table",
        "The key QC numbers per subject.",
        _qc_key_table,
    ),
    Reportlet(QC, "", ("preprocess_qc",), "html", build=_qc_every_column),
    Reportlet(
        QC,
        "",
        ("reg_png",),
        "images",
        "registered 1.5T on its 7T (checkerboard: edges should continue).",
        _subject_images("reg_qc_png"),
    ),
    Reportlet(
        QC,
        "",
        ("guidance_png",),
        "images",
        "what the model sees: the 1.5T, its N4 bias field and GNL maps (all on the 7T grid), "
        "and the corrected 7T target.",
        _subject_images("dataset_qc_png"),
    ),
    Reportlet(
        "MLflow runs",
        "",
        ("runs",),
        "html",
        "Each stage's MLflow run; the links open in the MLflow UI (start it with "
        "<code>mlflow ui --backend-store-uri</code> and the tracking store below; config "
        "<code>tracking.ui_url</code> sets another address).",
        _runs,
    ),
    Reportlet("Provenance", "", (), "table", "Package versions and git commit.", _versions_table),
    Reportlet("Provenance", "", ("config",), "html", build=_config),
    Reportlet(
        "Warnings and errors",
        "",
        ("metrics",),
        "table",
        "Inputs outside a model's trained range:",
        _warnings,
        empty="No input was outside a model's trained range.",
    ),
    Reportlet(
        "Warnings and errors",
        "",
        ("preprocess_qc",),
        "table",
        "Subjects that failed a preprocessing QC check:",
        _flagged,
        empty="No subject failed a preprocessing QC check.",
    ),
    Reportlet(
        "Warnings and errors",
        "",
        (),
        "table",
        "Subjects left out for bad input (a missing file or 7T partner, a coefficient file "
        "that does not parse): no output and no score; their ingest job failed with this line.",
        _left_out,
        empty="Every subject passed the raw-input check.",
    ),
)


def _model_order(model: str) -> tuple:
    """Baselines first, then the teacher, the students by stage, the rest by name."""
    if model in BASELINE_ORDER:
        return (0, BASELINE_ORDER[model], model)
    if model == "teacher":
        return (1, 0, model)
    if model.startswith("student_stage"):
        return (2, int(model.removeprefix("student_stage") or 0), model)
    return (3, 0, model)


def _models_table(files: list[str]) -> Markup | None:
    by_model = {paths.match("model_summary", f)["model"]: f for f in files}
    rows = []
    for model in sorted(by_model, key=_model_order):
        s = json.loads(Path(by_model[model]).read_text())
        rows.append(
            {"model": model} | {k: v for k, v in s.items() if isinstance(v, int | float | str)}
        )
    return _table(pd.DataFrame(rows)) if rows else None


def _headline(summary: pd.DataFrame) -> list[dict] | None:
    """The top lines: what the best learned model gains over B-spline, with its 95 % CI, per
    input kind, and both interpolation baselines' pooled PSNR (which one is the stronger);
    None when no learned model was compared with B-spline."""
    gains = summary[
        (summary["kind"] == "gain")
        & (summary["metric"] == "psnr")
        & (summary["resolution_mm"] < 0)
        & ~summary["model"].isin(list(BASELINE_ORDER))
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
                "bspline_psnr": _pooled_psnr(summary, kind, "bspline"),
                "trilinear_psnr": _pooled_psnr(summary, kind, "trilinear"),
            }
        )
    return lines


def _pooled_psnr(summary: pd.DataFrame, kind: str, model: str) -> float | None:
    """``model``'s mean PSNR over every spacing of input ``kind`` (None: not scored)."""
    row = summary[
        (summary["kind"] == "score")
        & (summary["metric"] == "psnr")
        & (summary["resolution_mm"] < 0)
        & (summary["input"] == kind)
        & (summary["model"] == model)
    ]
    return None if row.empty else float(row["mean"].iloc[0])


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
