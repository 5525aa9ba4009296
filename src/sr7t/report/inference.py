"""The report of an inference cohort: no truth, so no metrics. Per subject, its reportlet
(input above output), the model and any out-of-range warning; the model once; provenance.
It reads only the sidecars, reportlets and model description its rule declares."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

from sr7t.io import read_json


def write_inference_report(
    cohort: str,
    out_html: str | Path,
    *,
    model_info: str | Path,
    subjects: dict[str, dict[str, str]],
    left_out: dict[str, str] | None = None,
) -> Path:
    """Write ``out_html`` from ``model_info`` (the ``infer_model`` description) and, per
    subject, its derivative's ``sidecar`` (JSON), ``figure`` (PNG) and ``t1w`` path;
    ``left_out``: subjects left out for bad input -> their one-line error."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    from sr7t import __version__

    model = read_json(model_info)
    rows = []
    for subject, files in sorted(subjects.items()):
        side = read_json(files["sidecar"])
        rows.append(
            {
                "subject": subject,
                "file": Path(files["t1w"]).name,
                "source": side["Sources"][0],
                "geometry": side["InputGeometry"],
                "resolution": side["Resolution"],
                "mask": side["BrainMask"],
                "warnings": side["OutOfRangeWarnings"],
                "png": base64.b64encode(Path(files["figure"]).read_bytes()).decode(),
            }
        )
    env = Environment(
        loader=PackageLoader("sr7t", "report"),
        autoescape=select_autoescape(["j2"], default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    html = env.get_template("inference.html.j2").render(
        cohort=cohort,
        model=model,
        subjects=rows,
        left_out=sorted((left_out or {}).items()),
        n_warned=sum(bool(r["warnings"]) for r in rows),
        version=__version__,
        generated=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(html)
    return out_html
