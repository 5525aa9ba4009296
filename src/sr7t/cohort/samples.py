"""Cohort definitions: which subjects, which raw files, which split.

A cohort comes from the demo generator, a samples TSV or a BIDS folder (config
``cohorts.<name>.source``). Everything here runs at workflow-parse time, so it only reads
small text files and directory listings; scans are validated later, per subject, by ingest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sr7t import paths
from sr7t.cohort.anatomy import COLIN27_SUBJECT, INIA19_SUBJECT, installed_subjects
from sr7t.config import ConfigError, load_schema, validate

SUBJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SAMPLE_COLUMNS = ("subject", "scan_1p5T", "scan_7T", "coef_1p5T", "coef_7T")


@dataclass
class SubjectScans:
    """One subject's raw scans and coefficient files (absolute or relative to the working
    directory), and its split."""

    subject: str
    scan_1p5T: str
    scan_7T: str | None = None
    coef_1p5T: str | None = None
    coef_7T: str | None = None
    split: str = "train"

    @property
    def has_7t(self) -> bool:
        return bool(self.scan_7T)

    @property
    def inferring(self) -> bool:
        """Split "infer": a subject without a 7T, only super-resolved (no training, no score)."""
        return self.split == "infer"


@dataclass
class Cohort:
    name: str
    source: str
    subjects: dict[str, SubjectScans] = field(default_factory=dict)

    def in_split(self, split: str) -> list[str]:
        return [s for s, sub in self.subjects.items() if sub.split == split]


def demo_subject_ids(n_subjects: int, colin27: bool = False, inia19: bool = False) -> list[str]:
    """The demo's subject IDs: ``n_subjects`` MNI152-derived ``sub-NN``, then, when
    ``colin27``, the real-anatomy held-out test subject ``sub-colin27`` and, when ``inia19``,
    the other-anatomy validation subject ``sub-inia19``."""
    ids = [f"sub-{i:02d}" for i in range(1, n_subjects + 1)]
    return ids + [COLIN27_SUBJECT] * bool(colin27) + [INIA19_SUBJECT] * bool(inia19)


def read_samples(tsv: str | Path) -> list[SubjectScans]:
    """Read and validate a samples TSV (``sr7t/schemas/samples.schema.yaml``); relative
    paths resolve against the TSV's folder."""
    schema = load_schema("samples")
    tsv = Path(tsv)
    if not tsv.exists():
        raise ConfigError(f"samples sheet {tsv} does not exist")
    table = pd.read_csv(tsv, sep="\t", dtype=str, keep_default_na=False)
    unknown = [c for c in table.columns if c not in SAMPLE_COLUMNS]
    if unknown:
        raise ConfigError(f"{tsv}: unknown column(s) {unknown}; expected {list(SAMPLE_COLUMNS)}")
    subjects = []
    for i, row in table.iterrows():
        record = {k: (v if v != "" else None) for k, v in row.items()}
        validate(record, schema, what=f"{tsv} row {i + 2}")
        for key in ("scan_1p5T", "scan_7T", "coef_1p5T", "coef_7T"):
            if record.get(key):
                p = Path(record[key])
                record[key] = str(p if p.is_absolute() else tsv.parent / p)
        subjects.append(SubjectScans(**{k: record.get(k) for k in SAMPLE_COLUMNS}))
    ids = [s.subject for s in subjects]
    dupes = sorted({s for s in ids if ids.count(s) > 1})
    if dupes:
        raise ConfigError(f"{tsv}: duplicate subject IDs {dupes}")
    return subjects


def read_bids(root: str | Path, sessions: dict[str, str], coef_1p5T=None, coef_7T=None):
    """Subjects from a BIDS folder: ``sub-*/ses-*/anat/*_T1w.nii[.gz]``.

    ``sessions`` maps a session label (without ``ses-``) to a field ("1p5T" or "7T").
    """
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"BIDS root {root} is not a folder")
    found: dict[str, dict[str, str]] = {}
    for anat in sorted(root.glob("sub-*/ses-*/anat/*_T1w.nii*")):
        sub, ses = anat.parts[-4], anat.parts[-3].removeprefix("ses-")
        fld = sessions.get(ses)
        if fld is None:
            continue
        scans = found.setdefault(sub, {})
        if fld in scans:
            raise ConfigError(
                f"BIDS {sub}: more than one T1w for field {fld}: {scans[fld]}, {anat}"
            )
        scans[fld] = str(anat)
    subjects = []
    for sub, scans in sorted(found.items()):
        if "1p5T" not in scans:
            raise ConfigError(f"BIDS {sub}: no 1.5T T1w (sessions {sessions})")
        subjects.append(
            SubjectScans(sub, scans["1p5T"], scans.get("7T"), coef_1p5T=coef_1p5T, coef_7T=coef_7T)
        )
    if not subjects:
        raise ConfigError(f"BIDS root {root}: no sub-*/ses-*/anat/*_T1w.nii[.gz] for {sessions}")
    return subjects


def load_cohort(name: str, cfg: dict, demo_raw_dir: str | Path | None = None) -> Cohort:
    """Resolve cohort ``name`` (its validated config ``cfg``) into its subjects and splits.

    ``demo_raw_dir``: where the workflow's ``demo_cohort`` rule writes a demo cohort (its
    subjects' raw files lie inside, :data:`sr7t.paths.DEMO_RAW`)."""
    ccfg = cfg
    source = ccfg["source"]
    if source == "demo":
        if demo_raw_dir is None:
            raise ValueError(f"cohort {name}: a demo cohort needs its raw folder")
        subjects = []
        demo = ccfg["demo"]
        ids = demo_subject_ids(demo["n_subjects"], demo["colin27"], demo["inia19"])
        for sid in installed_subjects(ids):
            scan = {
                f: str(paths.inside(demo_raw_dir, "demo_scan", subject=sid, field=f))
                for f in paths.FIELDS
            }
            coeffs = paths.inside(demo_raw_dir, "demo_coeffs_dir")
            subjects.append(
                SubjectScans(
                    sid,
                    scan["1p5T"],
                    scan["7T"],
                    str(coeffs / "scanner_1p5T.grad"),
                    str(coeffs / "scanner_7T.grad"),
                )
            )
    elif source == "samples":
        if not ccfg.get("samples"):
            raise ConfigError(f"cohorts.{name}: source 'samples' needs a 'samples' TSV path")
        subjects = read_samples(ccfg["samples"])
    else:
        if not ccfg.get("bids"):
            raise ConfigError(f"cohorts.{name}: source 'bids' needs a 'bids' section")
        b = ccfg["bids"]
        subjects = read_bids(b["root"], b["sessions"], b.get("coef_1p5T"), b.get("coef_7T"))
    cohort = Cohort(name, source, {s.subject: s for s in subjects})
    for sid in cohort.subjects:
        if not SUBJECT_RE.match(sid):
            raise ConfigError(
                f"cohort {name}: subject ID {sid!r} is not allowed (no path separators)"
            )
    _assign_splits(cohort, ccfg.get("split", {}))
    return cohort


def _assign_splits(cohort: Cohort, split_cfg: dict) -> None:
    explicit = set()
    for split in ("val", "test"):
        for sid in split_cfg.get(split, []):
            if sid not in cohort.subjects:
                raise ConfigError(f"cohorts.{cohort.name}.split.{split}: unknown subject {sid!r}")
            cohort.subjects[sid].split = split
            explicit.add(sid)
    # A split the config leaves empty gets the default held-out subjects, so evaluation never
    # scores a subject the model was trained on.
    for split, sids in _default_held_out(cohort).items():
        if not split_cfg.get(split):
            for sid in sids:
                if sid not in explicit:
                    cohort.subjects[sid].split = split
    colin27 = cohort.subjects.get(COLIN27_SUBJECT)
    if cohort.source == "demo" and colin27 is not None and colin27.split == "train":
        colin27.split = "test"  # the real-anatomy subject exists to be held out: never train
    inia19 = cohort.subjects.get(INIA19_SUBJECT)
    if cohort.source == "demo" and inia19 is not None and inia19.split == "train":
        inia19.split = "val"  # the other anatomy exists to check choices: never train
    for sid, sub in cohort.subjects.items():
        if not sub.has_7t and sid not in explicit:
            # No 7T: inference only. One the config holds out for val/test keeps its split,
            # and its ingest fails for want of a partner (sr7t.cohort.ingest.preflight).
            sub.split = "infer"
    with_7t = [s for s in cohort.subjects.values() if s.has_7t]
    if with_7t and not any(s.split == "train" for s in with_7t):
        # No subject with a 7T at all is an inference-only cohort (its model comes from
        # elsewhere: cohorts.<name>.model, sr7t.infer.source); 7T subjects all held out is not.
        raise ConfigError(
            f"cohort {cohort.name}: no training subject with a 7T scan left after the val/test "
            "split (a cohort without any 7T scan is inference-only: give cohorts."
            f"{cohort.name}.model)"
        )


def _default_held_out(cohort: Cohort) -> dict[str, list[str]]:
    """Default ``{"test": [...], "val": [...]}``. Demo: test = the last MNI subject and
    sub-colin27 (when present), val = the MNI subject before the last (when that still leaves
    one to train on) and sub-inia19 (when present). Other cohorts: test = the last subject
    (sorted) that has a 7T, no val (a subject without one is inference-only)."""
    ids = sorted(cohort.subjects)
    if cohort.source != "demo":
        ids = [s for s in ids if cohort.subjects[s].has_7t]
        return {"test": ids[-1:], "val": []}
    mni = [s for s in ids if s not in (COLIN27_SUBJECT, INIA19_SUBJECT)]
    test = mni[-1:] + ([COLIN27_SUBJECT] if COLIN27_SUBJECT in cohort.subjects else [])
    val = mni[-2:-1] if len(mni) >= 3 else []
    return {"test": test, "val": val + ([INIA19_SUBJECT] if INIA19_SUBJECT in ids else [])}


def usable_after(cohort: Cohort, left_out: dict[str, str]) -> None:
    """Check that ``cohort`` can still train and be scored without the subjects ``left_out``
    (subject -> its one-line error, :func:`sr7t.cohort.ingest.preflight`): a cohort with
    training subjects needs at least one training and one test subject whose input passed.
    Raises :class:`ConfigError` naming the split and the errors of the subjects left out."""
    if not cohort.in_split("train"):
        return  # inference only
    for split in ("train", "test"):
        if cohort.in_split(split) and all(s in left_out for s in cohort.in_split(split)):
            lines = "; ".join(left_out[s] for s in sorted(cohort.in_split(split)))
            raise ConfigError(
                f"cohort {cohort.name}: no {split} subject has usable input ({lines})"
            )
