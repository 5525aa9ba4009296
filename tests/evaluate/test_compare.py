import pandas as pd
import pytest

from sr7t.evaluate.compare import compare_to_teacher


def _rows(model, psnr, seconds, params, steps, subjects=("a", "b")):
    return [
        {
            "model": model,
            "resolution_mm": res,
            "subject": s,
            "psnr": psnr + res + (0.5 if s == "b" else 0.0),
            "ssim": 0.9,
            "seconds": seconds,
            "sampling_steps": steps,
            "params": params,
            "macs_per_slice": params * steps,
        }
        for res in (3.0, 6.0)
        for s in subjects
    ]


def test_deltas_ratios_and_speedups():
    metrics = pd.DataFrame(
        _rows("teacher", 20.0, 40.0, 400, 8)
        + _rows("student_stage2", 19.6, 4.0, 100, 2)
        + _rows("trilinear", 15.0, 0.01, 0, 0)
    )
    table = compare_to_teacher(metrics).set_index(["model", "resolution_mm"])
    assert "trilinear" not in table.index.get_level_values("model")
    s = table.loc[("student_stage2", 6.0)]
    assert s["psnr"] == pytest.approx(19.6 + 6.0 + 0.25)  # mean over the two subjects
    assert s["delta_psnr_db"] == pytest.approx(-0.4)
    assert s["params_ratio"] == pytest.approx(0.25) and s["speedup"] == pytest.approx(10.0)
    assert table.loc[("teacher", 3.0)]["delta_psnr_db"] == 0.0


def test_no_teacher_no_table():
    assert compare_to_teacher(pd.DataFrame(_rows("trilinear", 15.0, 0.01, 0, 0))) is None
