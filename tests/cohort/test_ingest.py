import numpy as np
import pandas as pd
import pytest

from sr7t.cohort.ingest import build_manifest, ingest_subject
from sr7t.errors import ScanError
from sr7t.io import load_volume, save_volume


def run_ingest(tmp_path, s15, s7, require_7t=True):
    outs = {"1p5T": tmp_path / "out/a_1p5T.nii.gz", "7T": tmp_path / "out/a_7T.nii.gz"}
    return ingest_subject(
        "a", {"1p5T": s15, "7T": s7}, {}, outs, tmp_path / "out/rows.tsv", require_7t
    ), outs


def test_ingest_reorients_to_ras_and_keeps_raw_untouched(tmp_path, phantom):
    # an LAS scan: flip x in the affine and the data, so world coordinates are unchanged
    aff = np.diag([-2.0, 2.0, 3.0, 1.0])
    aff[:3, 3] = (30, -20, -40)
    raw15 = save_volume(tmp_path / "raw15.nii.gz", phantom, aff)
    raw7 = save_volume(tmp_path / "raw7.nii.gz", phantom, np.diag([2.0, 2.0, 2.0, 1.0]))
    before = raw15.read_bytes()
    table, outs = run_ingest(tmp_path, raw15, raw7)
    assert raw15.read_bytes() == before
    data, affine = load_volume(outs["1p5T"])
    assert affine[0, 0] > 0  # RAS+
    # the same world point holds the same value: voxel (i,j,k) of raw -> (X-1-i, j, k)
    np.testing.assert_allclose(data[::-1], phantom, rtol=1e-6)
    assert list(table["orientation_in"]) == ["LAS", "RAS"]
    assert table.loc[table.field == "1p5T", "spacing_mm"].item() == "2,2,3"


@pytest.mark.parametrize(
    "corrupt, problem",
    [
        (lambda v: np.where(v > 0.5, np.nan, v), "NaN"),
        (lambda v: np.zeros_like(v), "empty"),
        (lambda v: v[..., 0], "not 3-D"),
    ],
)
def test_bad_scan_names_subject_and_file_and_writes_nothing(tmp_path, phantom, corrupt, problem):
    good = save_volume(tmp_path / "good.nii.gz", phantom, np.eye(4) * 2 + np.diag([0, 0, 0, -1]))
    bad = save_volume(tmp_path / "bad.nii.gz", corrupt(phantom).astype(np.float32), np.eye(4))
    with pytest.raises(ScanError, match=rf"subject a: .*bad.nii.gz: .*{problem}"):
        run_ingest(tmp_path, good, bad)
    assert not (tmp_path / "out").exists()


def test_unreadable_and_missing_partner(tmp_path, phantom):
    junk = tmp_path / "junk.nii.gz"
    junk.write_bytes(b"not a nifti")
    good = save_volume(tmp_path / "good.nii.gz", phantom, np.eye(4))
    with pytest.raises(ScanError, match="junk.nii.gz: cannot be read"):
        run_ingest(tmp_path, good, junk)
    with pytest.raises(ScanError, match="no 7T partner"):
        run_ingest(tmp_path, good, None)


def test_absurd_spacing_is_refused(tmp_path, phantom):
    scan = save_volume(tmp_path / "m.nii.gz", phantom, np.diag([1000.0, 1000.0, 1000.0, 1.0]))
    with pytest.raises(ScanError, match="spacing"):
        run_ingest(tmp_path, scan, scan)


def test_manifest_has_splits(tmp_path, phantom):
    s = save_volume(tmp_path / "s.nii.gz", phantom, np.eye(4))
    run_ingest(tmp_path, s, s)
    table = build_manifest([tmp_path / "out/rows.tsv"], {"a": "test"}, tmp_path / "m.tsv")
    assert set(table["split"]) == {"test"}
    assert len(pd.read_csv(tmp_path / "m.tsv", sep="\t")) == 2


def test_missing_raw_file_is_one_line_naming_subject_role_and_file(tmp_path, phantom):
    good = save_volume(tmp_path / "good.nii.gz", phantom, np.eye(4) * 2 + np.diag([0, 0, 0, -1]))
    gone = tmp_path / "gone_7T.nii.gz"
    with pytest.raises(ScanError) as err:
        run_ingest(tmp_path, good, gone)
    assert str(err.value) == f"subject a: 7T scan file {gone} does not exist"
    outs = {"1p5T": tmp_path / "out/a_1p5T.nii.gz"}
    with pytest.raises(ScanError) as err:
        ingest_subject("a", {"1p5T": good}, {"1p5T": tmp_path / "x.grad"}, outs, "r.tsv", False)
    assert str(err.value) == (
        f"subject a: 1.5T gradient coefficient file {tmp_path / 'x.grad'} does not exist"
    )
    assert not (tmp_path / "out").exists()


def test_coefficient_file_that_does_not_parse_fails_ingest(tmp_path, phantom):
    good = save_volume(tmp_path / "good.nii.gz", phantom, np.eye(4) * 2 + np.diag([0, 0, 0, -1]))
    coef = tmp_path / "scanner.grad"
    coef.write_text("this is not a Siemens gradient file\n")
    outs = {"1p5T": tmp_path / "out/a_1p5T.nii.gz"}
    with pytest.raises(ScanError) as err:
        ingest_subject("a", {"1p5T": good}, {"1p5T": coef}, outs, tmp_path / "r.tsv", False)
    text = str(err.value)
    assert text.startswith(f"subject a: 1.5T gradient coefficient file {coef} ")
    assert "\n" not in text
    assert not (tmp_path / "out").exists()


def test_subject_without_7t_is_ingested_when_not_required(tmp_path, phantom):
    good = save_volume(tmp_path / "good.nii.gz", phantom, np.eye(4) * 2 + np.diag([0, 0, 0, -1]))
    table, outs = run_ingest(tmp_path, good, None, require_7t=False)
    assert list(table["field"]) == ["1p5T"] and outs["1p5T"].exists()


def test_ingest_stages_one_line_error_and_1p5t_only(tmp_path, phantom, monkeypatch, capsys):
    """The ingest stages as the workflow runs them (sr7t.stages.run): a subject without a 7T
    is ingested for inference; a missing raw file is one line naming subject and file."""
    import contextlib

    import sr7t.tracking
    from sr7t import stages

    class NoTracker:
        def __getattr__(self, name):
            return lambda *a, **k: None

    monkeypatch.setattr(
        sr7t.tracking, "job_run", lambda *a, **k: contextlib.nullcontext(NoTracker())
    )
    good = save_volume(tmp_path / "good.nii.gz", phantom, np.eye(4) * 2 + np.diag([0, 0, 0, -1]))
    out, rows = tmp_path / "out/c_1p5T.nii.gz", tmp_path / "out/rows.tsv"
    outputs = {"scan_1p5T": out, "rows": rows}
    raw = {"scan_1p5T": str(good)}
    assert stages.run("ingest_infer", {}, outputs, raw, {"subject": "c"}) == 0
    assert out.exists() and list(pd.read_csv(rows, sep="\t")["field"]) == ["1p5T"]
    missing = tmp_path / "gone.nii.gz"
    raw = {"scan_1p5T": str(good), "scan_7T": str(missing)}
    outputs["scan_7T"] = tmp_path / "b7.nii.gz"
    assert stages.run("ingest", {"scan_1p5T": good}, outputs, raw, {"subject": "b"}) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"sr7t ingest: subject b: 7T scan file {missing} does not exist"


def test_preflight_names_each_bad_subject_and_usable_after_checks_what_is_left(tmp_path, phantom):
    """The workflow's check at start (no scan read in full): a missing file, a coefficient
    file that does not parse, a held-out subject without a 7T partner; an inference subject
    needs no partner. Without usable training or test subjects the cohort stops at start."""
    from sr7t.cohort.ingest import preflight
    from sr7t.cohort.samples import Cohort, SubjectScans, usable_after
    from sr7t.config import ConfigError

    good = str(save_volume(tmp_path / "good.nii.gz", phantom, np.eye(4)))
    junk = tmp_path / "junk.grad"
    junk.write_text("not a gradient file\n")
    subs = [
        SubjectScans("a", good, good),
        SubjectScans("b", good, str(tmp_path / "gone.nii.gz")),
        SubjectScans("c", good, None, split="infer"),
        SubjectScans("d", good, good, coef_7T=str(junk)),
        SubjectScans("e", good, None, split="test"),
        SubjectScans("f", good, good, split="test"),
    ]
    cohort = Cohort("x", "samples", {s.subject: s for s in subs})
    bad = preflight(cohort)
    assert sorted(bad) == ["b", "d", "e"]
    assert bad["b"] == f"subject b: 7T scan file {tmp_path / 'gone.nii.gz'} does not exist"
    assert bad["d"].startswith(f"subject d: 7T gradient coefficient file {junk} ")
    assert bad["e"] == f"subject e: {good}: has no 7T partner, which its split (test) needs"
    assert all("\n" not in line for line in bad.values())
    usable_after(cohort, bad)  # a (train) and f (test) remain
    with pytest.raises(ConfigError, match=r"no test subject has usable input \(subject e"):
        usable_after(cohort, bad | {"f": "subject f: broken"})
    assert preflight(Cohort("demo", "demo", {"a": SubjectScans("a", "/nowhere")})) == {}
