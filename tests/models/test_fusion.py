import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from sr7t.models.fusion import FUSIONS, fuse, fusion_plan, with_fusion


@pytest.fixture(scope="module")
def truth():
    return gaussian_filter(np.random.default_rng(0).random((28, 30, 26)), 1.0)


def rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.mark.parametrize("mode", FUSIONS)
def test_identical_orientations_fuse_to_themselves(truth, mode):
    np.testing.assert_allclose(fuse([truth, truth], [0, 1], mode, 2.0), truth, atol=1e-12)
    np.testing.assert_allclose(fuse([truth], [1], mode, 2.0), truth, atol=1e-12)


def test_mean_is_the_voxelwise_mean(truth):
    other = truth[::-1].copy()
    np.testing.assert_allclose(fuse([truth, other], [0, 1]), (truth + other) / 2)


@pytest.mark.parametrize("mode", ["axis", "fba"])
def test_each_orientation_gives_the_axis_it_resolves(truth, mode):
    """Planes along axis 0 resolve axis 1 (here: blurred along 0 only) and vice versa: the
    frequency-wise fusions come closer to the truth than the mean, and the axis fusion with
    the orientations swapped comes further."""
    along0 = gaussian_filter1d(truth, 1.5, axis=0)  # what planes along axis 0 give
    along1 = gaussian_filter1d(truth, 1.5, axis=1)
    mean = rmse(fuse([along0, along1], [0, 1]), truth)
    assert rmse(fuse([along0, along1], [0, 1], mode, 4.0), truth) < 0.8 * mean
    if mode == "axis":
        assert rmse(fuse([along0, along1], [1, 0], mode, 4.0), truth) > mean


def test_the_thick_axis_alone_is_half_from_each(truth):
    """A frequency along the thick axis only (f0 = f1 = 0) has no in-plane direction: the
    axis fusion takes the mean there."""
    a = np.broadcast_to(np.sin(np.arange(26) / 3.0), truth.shape).copy()
    b = 3.0 * a
    np.testing.assert_allclose(fuse([a, b], [0, 1], "axis", 2.0), 2.0 * a, atol=1e-10)


def test_plans_and_refusals():
    assert fusion_plan({}) == ("mean", 1.0)  # bundles from before the fusion: the mean
    assert fusion_plan({"fusion": "fba"}) == ("fba", 4.0)
    assert fusion_plan(with_fusion({"fusion": "fba", "fusion_power": 7}, "axis")) == ("axis", 2.0)
    assert with_fusion({"x": 1}, None) == {"x": 1}
    with pytest.raises(ValueError, match="fusion must be one of"):
        with_fusion({}, "median")
    with pytest.raises(ValueError, match="fusion_power must be >= 0"):
        with_fusion({}, "axis", -1.0)
    with pytest.raises(ValueError, match="axis fusion needs plane axes 0 and 1"):
        fuse([np.zeros((4, 4, 4))] * 2, [1, 1], "axis")
    with pytest.raises(ValueError, match="2 predictions for plane axes"):
        fuse([np.zeros((4, 4, 4))] * 2, [1], "mean")
