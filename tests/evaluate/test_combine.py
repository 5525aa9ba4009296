"""combine_metrics: the stress input kinds get their own summary rows and their own row of the
figure (gain over B-spline per stress), and leave the main protocol's rows as they were."""

import zlib

import numpy as np
import pandas as pd
from PIL import Image

from sr7t.evaluate.run import METRIC_COLUMNS, combine_metrics


def _table(with_stress: bool) -> pd.DataFrame:
    rows = []
    kinds = [("sim", r) for r in (2.5, 4.0)]
    if with_stress:
        kinds += [("stress-gauss", 4.0), ("stress-thick8", 8.0)]
    for model, offset in (("bspline", 0.0), ("student_stage1", 1.0)):
        for kind, res in kinds:
            for subject in ("sub-06", "sub-colin27"):
                for axis in "xyz":
                    row = dict.fromkeys(METRIC_COLUMNS, np.nan)
                    row |= {"model": model, "input": kind, "subject": subject, "axis": axis}
                    row |= {"resolution_mm": res, "input_slice_mm": res, "warning": ""}
                    # each row's own draw, whatever rows come beside it
                    rng = np.random.default_rng(
                        zlib.crc32(f"{model}{kind}{subject}{axis}".encode())
                    )
                    row |= {"psnr": 25 + offset + rng.normal(0, 0.1), "ssim": 0.8 + offset / 50}
                    row |= {"hfen": 0.3, "reference": "truth"}
                    rows.append(row)
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def test_stress_kinds_are_summarised_apart_and_drawn_in_their_own_row(tmp_path):
    heights = {}
    for with_stress in (False, True):
        tsv = tmp_path / f"in_{with_stress}.tsv"
        _table(with_stress).to_csv(tsv, sep="\t", index=False)
        out = tmp_path / str(with_stress)
        out.mkdir()
        combine_metrics([str(tsv)], out / "m.tsv", out / "fig.png", out / "s.tsv")
        summary = pd.read_csv(out / "s.tsv", sep="\t")
        heights[with_stress] = Image.open(out / "fig.png").size[1]
        gains = summary[(summary["kind"] == "gain") & (summary["metric"] == "psnr")]
        pooled = gains[gains["resolution_mm"] < 0].set_index("input")["mean"]
        assert pooled["sim"] > 0.9
        if with_stress:
            assert set(pooled.index) == {"sim", "stress-gauss", "stress-thick8"}
            assert gains[gains["input"] == "stress-thick8"]["n"].iloc[0] == 6
        else:
            main = summary
    # the main protocol's summary does not change when stress rows come along
    again = summary[summary["input"] == "sim"].reset_index(drop=True)
    pd.testing.assert_frame_equal(again, main.reset_index(drop=True))
    assert heights[True] > heights[False]  # one more row of panels
