"""Uncertainty of the evaluation's means: percentile bootstrap over evaluation units.

A unit is one scored volume (by default a subject x reslicing axis x input resolution).
Model comparisons are paired: both models are scored on the same units, and the bootstrap
resamples the per-unit differences, so the between-subject spread that both share cancels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

UNIT_COLS = ("subject", "axis", "resolution_mm")


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_boot: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``.

    Inputs: 1-D values (any units); ``n_boot`` resamples; ``ci`` the coverage in (0, 1);
    ``seed`` for the resampling (the same seed gives the same interval). Returns
    ``(mean, lo, hi)`` in the values' units; a single value gives a zero-width interval.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if not 0 < ci < 1:
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    tail = 100.0 * (1.0 - ci) / 2.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(v.mean()), float(lo), float(hi)


def _check_columns(table: pd.DataFrame, cols: Sequence[str]) -> None:
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}; it has {list(table.columns)}")


def _per_unit(table: pd.DataFrame, model: str, metric: str, unit_cols: list[str]) -> pd.DataFrame:
    rows = table.loc[table["model"] == model, [*unit_cols, metric]]
    if rows.duplicated(subset=unit_cols).any():
        raise ValueError(f"model {model!r} has more than one row for some unit {unit_cols}")
    return rows


def paired_diff_ci(
    table: pd.DataFrame,
    model: str,
    baseline: str,
    metric: str,
    unit_cols: Sequence[str] = UNIT_COLS,
    **kw,
) -> dict[str, float]:
    """Bootstrap CI of the mean per-unit difference ``metric(model) - metric(baseline)``.

    Inputs: a long table with a ``model`` column, the ``unit_cols`` and ``metric``; the two
    model names; ``kw`` passed to :func:`bootstrap_ci` (``n_boot``, ``ci``, ``seed``). Only
    units scored for both models are paired. Returns ``mean``, ``lo``, ``hi`` (metric's
    units) and ``n`` (paired units). Raises ValueError when no unit has both models.
    """
    unit_cols = list(unit_cols)
    _check_columns(table, ["model", *unit_cols, metric])
    paired = _per_unit(table, model, metric, unit_cols).merge(
        _per_unit(table, baseline, metric, unit_cols),
        on=unit_cols,
        suffixes=("_model", "_baseline"),
    )
    if paired.empty:
        raise ValueError(f"no unit {unit_cols} is scored for both {model!r} and {baseline!r}")
    diff = paired[f"{metric}_model"] - paired[f"{metric}_baseline"]
    mean, lo, hi = bootstrap_ci(diff.to_numpy(), **kw)
    return {"mean": mean, "lo": lo, "hi": hi, "n": int(len(diff))}


def summarise(
    table: pd.DataFrame,
    metric: str,
    by: Sequence[str] = ("model",),
    **kw,
) -> pd.DataFrame:
    """Mean of ``metric`` with a bootstrap CI for each group of ``by``.

    Inputs: a long table, a metric column, the grouping columns, ``kw`` passed to
    :func:`bootstrap_ci`. Returns one row per group: the ``by`` columns, then ``mean``,
    ``ci_lo``, ``ci_hi`` (metric's units) and ``n`` (rows in the group).
    """
    by = list(by)
    _check_columns(table, [*by, metric])
    rows = []
    for key, group in table.groupby(by, sort=True):
        mean, lo, hi = bootstrap_ci(group[metric].to_numpy(), **kw)
        keys = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip(by, keys, strict=True)),
                "mean": mean,
                "ci_lo": lo,
                "ci_hi": hi,
                "n": int(len(group)),
            }
        )
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_lo", "ci_hi", "n"])
