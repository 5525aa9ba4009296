"""benchmarks/gain_bands.py: a model's error per band of one axis."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gain_bands  # noqa: E402


def test_an_error_shows_in_its_own_band_along_the_chosen_axis():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.1, 1.0, size=(16, 12, 10)).astype(np.float32)
    mask = np.ones(reference.shape, bool)
    assert np.allclose(gain_bands.band_errors(reference, reference, mask, 0, 4), 0.0, atol=1e-8)
    pred = reference.copy()
    pred[4:8] += rng.normal(0.0, 0.2, size=pred[4:8].shape).astype(np.float32)  # band 1 of x
    along_x = gain_bands.band_errors(pred, reference, mask, 0, 4)
    assert along_x.argmax() == 1 and along_x[1] > 20 * max(along_x[[0, 2, 3]].max(), 1e-9)
    along_y = gain_bands.band_errors(pred, reference, mask, 1, 4)
    assert along_y.max() < 2 * along_y.min()  # the same error in every band of y


def test_only_main_protocol_cells_are_taken():
    with pytest.raises(SystemExit):
        gain_bands.main(["--cell", "stress-gap-x-4mm", "--bspline", "b"])
