"""The slice montage: every model on one cell, error after the metrics' fit, zoomed insets."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from sr7t.evaluate.montage import INPUT_NAME, draw_montage, inset_square, montage_panels


@pytest.fixture
def brain():
    """A folded 'cortex' (a sine-modulated shell) in a spherical mask, 32 x 24 x 28."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in (32, 24, 28)), indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2)
    mask = r < 0.9
    truth = 0.4 + 0.6 * (np.sin(14 * np.arctan2(z, x)) * (r > 0.6) > 0) + 0.2 * (r < 0.3)
    return truth.astype(np.float32) * mask, mask


def test_a_perfect_model_has_no_error_a_blurred_one_has(brain):
    truth, mask = brain
    blurred = gaussian_filter(truth, (0, 0, 2.0)).astype(np.float32)
    perfect = 3.0 * truth + 1.0  # any monotone intensity map of the truth is perfect
    spread = np.abs(blurred - truth) + 0.01
    m = montage_panels(
        blurred, {"perfect": perfect, "blurry": blurred}, truth, mask, {"blurry": spread}
    )
    assert [p.title for p in m.panels] == [INPUT_NAME, "perfect", "blurry", "truth"]
    by_name = {p.title: p for p in m.panels}
    assert np.abs(by_name["perfect"].error).max() < 1e-5
    assert by_name["blurry"].error[m.mask].mean() > 0.02
    np.testing.assert_allclose(by_name[INPUT_NAME].error, by_name["blurry"].error, atol=1e-6)
    assert by_name["truth"].error is None
    # the uncertainty panel only where a model drew samples
    assert by_name["blurry"].uncertainty is not None and by_name["perfect"].uncertainty is None
    assert by_name["blurry"].uncertainty.shape == m.mask.shape
    assert (by_name["blurry"].uncertainty[~m.mask] == 0).all()


def test_the_inset_sits_on_edges_inside_the_brain(brain):
    truth, mask = brain
    image = np.rot90(truth[:, 12, :])
    shown_mask = np.rot90(mask[:, 12, :])
    row, col, side = inset_square(image, shown_mask)
    assert side >= 6 and 0 <= row <= image.shape[0] - side and 0 <= col <= image.shape[1] - side
    assert shown_mask[row : row + side, col : col + side].mean() >= 0.6
    gy, gx = np.gradient(image)
    edge = np.hypot(gy, gx)[row : row + side, col : col + side].mean()
    assert edge > np.hypot(gy, gx)[shown_mask].mean()  # more edge than the brain on average


def test_every_panel_carries_the_same_zoomed_inset(brain):
    truth, mask = brain
    blurred = gaussian_filter(truth, (0, 0, 2.0)).astype(np.float32)
    spread = np.abs(blurred - truth) + 0.01
    m = montage_panels(blurred, {"a": blurred, "b": truth}, truth, mask, {"a": spread})
    fig = draw_montage(m)
    try:
        images = [ax for ax in fig.axes if ax.images and ax.child_axes]
        # 4 images + 3 error maps (not the truth's) + 1 uncertainty map
        assert len(images) == 4 + 3 + 1
        row, col, side = m.inset
        fig.canvas.draw()  # lays the axes out (equal aspect) so their scales are final
        for ax in images:
            (zoom,) = ax.child_axes
            assert zoom.get_xlim() == (col - 0.5, col + side - 0.5)
            assert zoom.get_ylim() == (row + side - 0.5, row - 0.5)
            # magnified 2-3x: one voxel's width on the page, in the inset over in the panel
            magnification = _voxel_width(zoom) / _voxel_width(ax)
            assert 2.0 <= magnification <= 3.2, magnification
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles == [INPUT_NAME, "a", "b", "truth"]
    finally:
        plt.close(fig)


def _voxel_width(ax) -> float:
    (x0, _), (x1, _) = ax.transData.transform([(0, 0), (1, 0)])
    return abs(x1 - x0)
