"""Links from the report to the MLflow runs that made its inputs.

Each tracked stage whose run the report links to (training, distillation, evaluation) writes
where its run lives into a small declared file (``mlflow_run.json``: tracking URI, experiment
id and name, run id and name, parent run id), so the report links runs without reading the
tracking store. With tracking off or unreachable the file says so (``run_id`` null and the
``reason``), and so does the report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

DEFAULT_UI_URL = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default


def write_run_record(tracker: Any, out_json: str | Path) -> dict[str, Any]:
    """Write where ``tracker``'s run lives (:meth:`sr7t.tracking.JobTracker.describe`) to
    ``out_json``; a tracker that cannot say (tracking off) gives ``run_id`` null."""
    record = None
    describe = getattr(tracker, "describe", None)
    if callable(describe):
        record = describe()
    if not isinstance(record, dict):
        record = {"run_id": None, "reason": "tracking disabled"}
    out_json = Path(out_json)
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def ui_base(ui_url: str | None, tracking_uri: str | None) -> str:
    """The MLflow UI's base URL: config ``tracking.ui_url``; else the tracking URI when it is
    a server; else :data:`DEFAULT_UI_URL` (``mlflow ui --backend-store-uri <uri>``)."""
    if ui_url:
        return str(ui_url).rstrip("/")
    if tracking_uri and str(tracking_uri).startswith(("http://", "https://")):
        return str(tracking_uri).rstrip("/")
    return DEFAULT_UI_URL


def run_url(base: str, experiment_id: str, run_id: str) -> str:
    return f"{base}/#/experiments/{quote(str(experiment_id))}/runs/{quote(str(run_id))}"


def runs_table(
    records: Mapping[str, str | Path | dict], ui_url: str | None = None
) -> dict[str, Any]:
    """The report's MLflow section from ``records`` (stage label -> ``mlflow_run.json``, or
    a record as :func:`write_run_record` writes it):
    ``{"rows": DataFrame (stage, experiment, run name, run id, url) or None, "note": str,
    "store": the tracking URI(s) or ""}``. ``note`` is one line when no run was tracked."""
    rows, reasons, stores = [], set(), set()
    for label, path in records.items():
        record = path if isinstance(path, dict) else json.loads(Path(path).read_text())
        if not record.get("run_id"):
            reasons.add(str(record.get("reason") or "tracking disabled"))
            continue
        stores.add(str(record.get("tracking_uri", "")))
        base = ui_base(ui_url, record.get("tracking_uri"))
        rows.append(
            {
                "stage": label,
                "experiment": record.get("experiment", ""),
                "run name": record.get("run_name", ""),
                "run id": record["run_id"],
                "url": run_url(base, record.get("experiment_id", "0"), record["run_id"]),
            }
        )
    if not records:
        note = "No stage recorded an MLflow run."
    elif not rows:
        note = f"MLflow tracking was off or unreachable: {'; '.join(sorted(reasons))}."
    elif reasons:
        note = f"Some stages ran without tracking: {'; '.join(sorted(reasons))}."
    else:
        note = ""
    return {
        "rows": pd.DataFrame(rows) if rows else None,
        "note": note,
        "store": ", ".join(sorted(s for s in stores if s)),
    }
