"""benchmarks/variant_diff.py: two configs paired over seed and cell."""

import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import variant_diff  # noqa: E402

CELLS = [("sub-05", "sim", ax, mm) for ax in "xyz" for mm in (2.5, 4.0)]


def table(path, model, psnr):
    rows = [
        {
            "model": model,
            "subject": s,
            "input": i,
            "axis": a,
            "resolution_mm": r,
            "psnr": psnr + k * 0.01,
            "psnr_linear": psnr,
            "ssim": 0.9,
        }
        for k, (s, i, a, r) in enumerate(CELLS)
    ]
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return str(path)


def test_pairs_each_seed_with_the_baseline_and_prints_the_difference(tmp_path, capsys):
    base = table(tmp_path / "b.tsv", "bspline", 20.0)
    runs = [
        ("old", 0, "m0", table(tmp_path / "o0.tsv", "m0", 21.0)),
        ("old", 1, "m1", table(tmp_path / "o1.tsv", "m1", 21.5)),
        ("new", 0, "n0", table(tmp_path / "n0.tsv", "n0", 21.25)),
        ("new", 1, "n1", table(tmp_path / "n1.tsv", "n1", 21.75)),
    ]
    t = variant_diff.paired_table(runs, base)
    assert sorted(set(t["model"])) == ["bspline", "new", "old"]
    assert len(t[t["model"] == "bspline"]) == 2 * len(CELLS)  # once per seed
    args = [a for r in runs for a in ("--run", r[0], str(r[1]), r[2], r[3])]
    assert variant_diff.main([*args, "--bspline", base, "--compare", "new", "old"]) == 0
    out = capsys.readouterr().out
    assert "new - old (n=12): psnr +0.250 [+0.250, +0.250]" in out
    assert "old - bspline (n=12): psnr +1.250" in out  # seeds +1.0 and +1.5


def test_a_run_without_its_model_or_any_baseline_is_named(tmp_path):
    path = table(tmp_path / "a.tsv", "m0", 21.0)
    with pytest.raises(ValueError, match="no table has bspline rows"):
        variant_diff.paired_table([("a", 0, "m0", path)])
    with pytest.raises(ValueError, match="has no rows of model 'zz'"):
        variant_diff.paired_table([("a", 0, "zz", path)], table(tmp_path / "b.tsv", "bspline", 1))


def test_subject_keeps_only_that_validation_subjects_rows(tmp_path, capsys):
    """Two validation anatomies: the new config gains 0.5 dB on sub-inia19 and nothing on
    sub-05; --subject reads each alone, and an absent subject is refused by name."""

    def two_subjects(path, model, psnr, inia_extra):
        rows = [
            {
                "model": model,
                "subject": s,
                "input": "sim",
                "axis": a,
                "resolution_mm": mm,
                "psnr": psnr + (inia_extra if s == "sub-inia19" else 0.0),
                "psnr_linear": psnr,
                "ssim": 0.9,
            }
            for s in ("sub-05", "sub-inia19")
            for a in "xyz"
            for mm in (2.5, 4.0)
        ]
        pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
        return str(path)

    base = two_subjects(tmp_path / "b.tsv", "bspline", 20.0, 0.0)
    old = two_subjects(tmp_path / "o.tsv", "m0", 21.0, 0.0)
    new = two_subjects(tmp_path / "n.tsv", "n0", 21.0, 0.5)
    args = ["--run", "old", "0", "m0", old, "--run", "new", "0", "n0", new, "--bspline", base]
    for subject, gain in (("sub-05", "+0.000"), ("sub-inia19", "+0.500")):
        assert variant_diff.main([*args, "--compare", "new", "old", "--subject", subject]) == 0
        assert f"new - old (n=6): psnr {gain} [{gain}, {gain}]" in capsys.readouterr().out
    assert variant_diff.main([*args, "--compare", "new", "old"]) == 0
    assert "new - old (n=12): psnr +0.250" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        variant_diff.main([*args, "--subject", "sub-99"])
    assert "no rows of subject(s) ['sub-99']" in capsys.readouterr().err
