"""Ingestion: validate each raw scan, write a canonical (RAS+) float32 copy, record it.

Raw inputs are only ever read. A bad scan raises :class:`sr7t.errors.ScanError` naming
the subject and file; the workflow runs one ingest job per subject, so with
``--keep-going`` the other subjects go on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nibabel as nib
import pandas as pd
from nibabel.affines import voxel_sizes

from sr7t.errors import ScanError
from sr7t.io import load_volume, save_volume

MANIFEST_COLUMNS = [
    "subject",
    "field",
    "split",
    "source",
    "sha256_12",
    "shape",
    "spacing_mm",
    "orientation_in",
    "coef_file",
    "ingested",
]


def ingest_subject(
    subject: str,
    scans: dict[str, str | None],
    coefs: dict[str, str | None],
    outputs: dict[str, str],
    out_rows: str | Path,
    require_7t: bool,
    split: str = "train",
) -> pd.DataFrame:
    """Validate and copy one subject's scans.

    ``scans`` and ``coefs`` map field ("1p5T", "7T") to a raw path or None; ``outputs`` maps
    field to the canonical copy to write. Writes ``out_rows`` (TSV, one row per scan, the
    manifest's columns without ``split``) and returns it. ``split`` words a missing partner.
    """
    check_raw_files(subject, scans, coefs, require_7t, split)
    rows = []
    checked = {}
    fields = [fld for fld, src in scans.items() if src]
    # Everything is validated before anything is written, so a bad partner leaves no half
    # subject: the cheap checks above, then each scan read in full.
    for fld in fields:
        src, coef = Path(scans[fld]), coefs.get(fld)
        data, affine = load_volume(src, subject)
        checked[fld] = (src, data, affine, coef)
    for fld, (src, data, affine, coef) in checked.items():
        save_volume(outputs[fld], data, affine)
        rows.append(
            {
                "subject": subject,
                "field": fld,
                "source": str(src),
                "sha256_12": _sha256_12(src),
                "shape": "x".join(str(n) for n in data.shape),
                "spacing_mm": ",".join(f"{v:.4g}" for v in voxel_sizes(affine)),
                "orientation_in": "".join(nib.aff2axcodes(nib.load(str(src)).affine)),
                "coef_file": coef or "",
                "ingested": str(outputs[fld]),
            }
        )
    table = pd.DataFrame(rows, columns=[c for c in MANIFEST_COLUMNS if c != "split"])
    Path(out_rows).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_rows, sep="\t", index=False)
    return table


def check_raw_files(
    subject: str,
    scans: dict[str, str | None],
    coefs: dict[str, str | None],
    require_7t: bool,
    split: str = "train",
) -> None:
    """The checks that need no scan read in full (the workflow runs them at start, for every
    subject, :func:`preflight`): a 1.5T scan and, when ``require_7t``, a 7T partner are named;
    every named file exists; each coefficient file parses. Raises :class:`ScanError` (its one
    line names subject and file); ``split`` only words the missing-partner error."""
    if not scans.get("1p5T"):
        raise ScanError(subject, "(sample sheet)", "has no 1.5T scan")
    if require_7t and not scans.get("7T"):
        need = "training" if split == "train" else f"its split ({split})"
        raise ScanError(subject, str(scans["1p5T"]), f"has no 7T partner, which {need} needs")
    fields = [fld for fld, src in scans.items() if src]
    for fld in fields:
        for role, raw in ((f"{_label(fld)} scan", scans[fld]), (_coef_role(fld), coefs.get(fld))):
            if raw and not Path(raw).is_file():
                raise RawFileError(subject, role, raw, "does not exist")
    for fld in fields:
        if coefs.get(fld):
            from sr7t.preprocess.gnl import CoefficientFileError, read_coefficients

            try:
                read_coefficients(coefs[fld])
            except CoefficientFileError as exc:
                raise RawFileError(subject, _coef_role(fld), coefs[fld], exc.problem) from None


def preflight(cohort) -> dict[str, str]:
    """Each subject of ``cohort`` (:class:`sr7t.cohort.samples.Cohort`) whose raw input fails
    :func:`check_raw_files`, with its one-line error. The workflow leaves these subjects out of
    the manifest and everything downstream, and still runs their ingest job, which fails with
    the same line. A demo cohort's files do not exist before its job writes them: not checked
    (its generator makes them whole)."""
    if cohort.source == "demo":
        return {}
    bad = {}
    for sid, sub in sorted(cohort.subjects.items()):
        fields = ("1p5T",) if sub.inferring else ("1p5T", "7T")
        scans = {f: getattr(sub, f"scan_{f}") for f in fields}
        coefs = {f: getattr(sub, f"coef_{f}") for f in fields}
        try:
            check_raw_files(sid, scans, coefs, require_7t=not sub.inferring, split=sub.split)
        except ScanError as exc:
            bad[sid] = str(exc)
    return bad


class RawFileError(ScanError):
    """A raw file named by the cohort that is missing or unusable; one line:
    ``subject <id>: <role> file <path> <problem>``."""

    def __init__(self, subject: str, role: str, path: str | Path, problem: str):
        super().__init__(subject, path, problem)
        self.role = role
        problem = " ".join(str(problem).split())  # one line, whatever the parser said
        self.args = (f"subject {subject}: {role} file {path} {problem}",)


def _label(field: str) -> str:
    return {"1p5T": "1.5T"}.get(field, field)


def _coef_role(field: str) -> str:
    return f"{_label(field)} gradient coefficient"


def build_manifest(row_files: list[str | Path], splits: dict[str, str], out: str | Path):
    """Concatenate per-subject rows into ``manifest.tsv`` with each subject's split."""
    table = pd.concat([pd.read_csv(f, sep="\t", dtype=str) for f in row_files], ignore_index=True)
    table["split"] = table["subject"].map(splits).fillna("train")
    table = table[MANIFEST_COLUMNS].sort_values(["subject", "field"])
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, sep="\t", index=False)
    return table


def _sha256_12(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]
