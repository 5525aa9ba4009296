import numpy as np
import pandas as pd
import pytest

from sr7t.evaluate.stats import bootstrap_ci, paired_diff_ci, summarise


def test_bootstrap_ci_contains_the_mean_and_is_deterministic_per_seed():
    v = np.random.default_rng(0).normal(30.0, 2.0, size=40)
    mean, lo, hi = bootstrap_ci(v)
    assert mean == pytest.approx(v.mean())
    assert lo < mean < hi
    assert bootstrap_ci(v, seed=5) == bootstrap_ci(v, seed=5)
    assert bootstrap_ci(v, seed=5) != bootstrap_ci(v, seed=6)


def test_bootstrap_ci_is_wider_for_fewer_samples_and_its_width_follows_the_se():
    v = np.random.default_rng(1).normal(0.0, 1.0, size=400)
    _, lo_all, hi_all = bootstrap_ci(v)
    _, lo_few, hi_few = bootstrap_ci(v[:25])
    assert hi_few - lo_few > 2 * (hi_all - lo_all)
    # 95% percentile interval of a mean ~ 2 * 1.96 * sd / sqrt(n)
    assert (hi_all - lo_all) == pytest.approx(2 * 1.96 * v.std() / np.sqrt(v.size), rel=0.15)


def test_bootstrap_ci_edge_cases():
    assert bootstrap_ci([2.5]) == (2.5, 2.5, 2.5)
    with pytest.raises(ValueError):
        bootstrap_ci([])
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], ci=1.5)


def _table():
    rows = []
    rng = np.random.default_rng(0)
    for subject in ("s1", "s2", "s3", "s4", "s5", "s6"):
        base = rng.normal(30, 3)  # between-subject spread, shared by both models
        for axis in ("z", "y"):
            for res in (2.0, 4.0):
                rows.append(("bspline", subject, axis, res, base + rng.normal(0, 0.1)))
                rows.append(("net", subject, axis, res, base + 1.0 + rng.normal(0, 0.1)))
    return pd.DataFrame(rows, columns=["model", "subject", "axis", "resolution_mm", "psnr"])


def test_paired_diff_ci_pairs_units_and_cancels_subject_spread():
    t = _table()
    d = paired_diff_ci(t, "net", "bspline", "psnr")
    assert d["n"] == 24
    assert d["lo"] < d["mean"] < d["hi"]
    assert d["mean"] == pytest.approx(1.0, abs=0.1)
    assert d["hi"] - d["lo"] < 0.2  # unpaired, the 3 dB subject spread would swamp it
    # only units scored for both models count
    partial = t[~((t["model"] == "net") & (t["subject"] == "s1"))]
    assert paired_diff_ci(partial, "net", "bspline", "psnr")["n"] == 20


def test_paired_diff_ci_errors_name_the_models():
    t = _table()
    t2 = t.copy()
    t2.loc[t2["model"] == "net", "subject"] += "_elsewhere"  # no subject in common
    with pytest.raises(ValueError, match="net.*bspline"):
        paired_diff_ci(t2, "net", "bspline", "psnr")
    with pytest.raises(ValueError, match="lacks columns"):
        paired_diff_ci(t, "net", "bspline", "psnr", unit_cols=("nope",))
    with pytest.raises(ValueError, match="more than one row"):
        paired_diff_ci(t, "net", "bspline", "psnr", unit_cols=("subject",))


def test_summarise_one_row_per_group():
    t = _table()
    s = summarise(t, "psnr", by=("model", "resolution_mm"), seed=1)
    assert list(s.columns) == ["model", "resolution_mm", "mean", "ci_lo", "ci_hi", "n"]
    assert len(s) == 4 and set(s["n"]) == {12}
    net2 = t[(t["model"] == "net") & (t["resolution_mm"] == 2.0)]["psnr"]
    row = s[(s["model"] == "net") & (s["resolution_mm"] == 2.0)].iloc[0]
    assert row["mean"] == pytest.approx(net2.mean())
    assert row["ci_lo"] < row["mean"] < row["ci_hi"]
    assert len(summarise(t, "psnr")) == 2
