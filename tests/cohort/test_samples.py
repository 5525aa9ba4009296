import pytest

from sr7t.cohort.samples import load_cohort, read_bids, read_samples
from sr7t.config import ConfigError


def write_tsv(path, rows):
    path.write_text("\n".join("\t".join(r) for r in rows) + "\n")
    return path


def test_samples_paths_resolve_relative_to_the_sheet(tmp_path):
    tsv = write_tsv(
        tmp_path / "s.tsv",
        [("subject", "scan_1p5T", "scan_7T"), ("a", "raw/a_15.nii.gz", "/abs/a_7.nii.gz")],
    )
    (sub,) = read_samples(tsv)
    assert sub.scan_1p5T == str(tmp_path / "raw/a_15.nii.gz")
    assert sub.scan_7T == "/abs/a_7.nii.gz"
    assert sub.coef_1p5T is None


@pytest.mark.parametrize("bad", ["../etc", "a/b", ""])
def test_subject_ids_with_path_separators_are_refused(tmp_path, bad):
    tsv = write_tsv(tmp_path / "s.tsv", [("subject", "scan_1p5T"), (bad or " ", "x.nii")])
    with pytest.raises(ConfigError, match="subject"):
        read_samples(tsv)


def test_unknown_column_and_duplicates_are_refused(tmp_path):
    tsv = write_tsv(tmp_path / "s.tsv", [("subject", "scan15"), ("a", "x")])
    with pytest.raises(ConfigError, match="unknown column"):
        read_samples(tsv)
    tsv = write_tsv(tmp_path / "d.tsv", [("subject", "scan_1p5T"), ("a", "x"), ("a", "y")])
    with pytest.raises(ConfigError, match="duplicate"):
        read_samples(tsv)


def test_bids_layout_maps_sessions_to_fields(tmp_path):
    for sub in ("sub-01", "sub-02"):
        for ses in ("15T", "7T"):
            d = tmp_path / sub / f"ses-{ses}" / "anat"
            d.mkdir(parents=True)
            (d / f"{sub}_ses-{ses}_T1w.nii.gz").write_bytes(b"")
    subs = read_bids(tmp_path, {"15T": "1p5T", "7T": "7T"})
    assert [s.subject for s in subs] == ["sub-01", "sub-02"]
    assert subs[0].scan_7T.endswith("sub-01_ses-7T_T1w.nii.gz")


def test_demo_cohort_splits_and_unknown_split_subject():
    cfg = {
        "source": "demo",
        "demo": {"n_subjects": 4, "colin27": False, "inia19": False},
        "split": {"val": ["sub-03"], "test": []},
    }
    cohort = load_cohort("d", cfg, "results/d/raw")
    assert cohort.in_split("val") == ["sub-03"]
    assert cohort.in_split("test") == ["sub-04"]  # the last subject is held out by default
    assert cohort.in_split("train") == ["sub-01", "sub-02"]
    cfg["split"]["test"] = ["sub-99"]
    with pytest.raises(ConfigError, match="sub-99"):
        load_cohort("d", cfg, "results/d/raw")
