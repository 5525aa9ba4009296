import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_phantom import CHANNELS, phantom_arrays  # noqa: E402

from sr7t.models.diffusion import Denoiser, alpha_sigma  # noqa: E402
from sr7t.models.predict import check_input_spacing, predict_volume  # noqa: E402

torch.set_num_threads(1)
META = {
    "kind": "teacher",
    "channels": CHANNELS,
    "use_guidance": True,
    "slice_axis": [1],
    "context_slices": 1,
    "sampling_steps": 3,
    "residual_scale": 0.5,
    "train_slice_mm": [3.0, 6.0],
    "trained_slice_mm": [4.0, 6.0],
}


class PlanOracle(nn.Module):
    """Predicts x0 = 0.2 * (centre t1 plane) + guidance channel 0, exactly, at every step."""

    size_multiple = 4

    def __init__(self, context):
        super().__init__()
        self.c = context
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x_t, cond, t):
        x0 = 0.2 * cond[:, self.c : self.c + 1] + cond[:, 2 * self.c + 1 : 2 * self.c + 2]
        a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
        return (a * x_t - x0) / s


@pytest.fixture(scope="module")
def condition():
    cond, _, _ = phantom_arrays(0, shape=(13, 10, 11))  # odd sizes: padding needed
    return cond


@pytest.mark.parametrize("axes", [[1], [0], [0, 1]])
def test_plan_is_followed_exactly(condition, axes):
    meta = {**META, "slice_axis": axes}
    out = predict_volume(PlanOracle(1), meta, condition, batch_size=4, progress=False)
    t1, bias = condition[0], condition[1]
    expected = t1 + 0.5 * (0.2 * t1 + bias)
    assert out.shape == t1.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_input_contrast_models_are_mapped_to_the_7t_contrast(condition):
    """A model trained in the input's contrast gets its ``contrast_map`` (here: x -> 2x on
    [0, 10]) after the residual is added; a 7T-contrast model does not."""
    cmap = {"from": [0.0, 10.0], "to": [0.0, 20.0]}
    plain_out = predict_volume(PlanOracle(1), META, condition, progress=False)
    meta = {**META, "output_contrast": "input", "contrast_map": cmap}
    mapped = predict_volume(PlanOracle(1), meta, condition, progress=False)
    np.testing.assert_allclose(mapped, 2 * np.clip(plain_out, 0, 10), atol=1e-5)
    same = predict_volume(
        PlanOracle(1), {**meta, "output_contrast": "7T"}, condition, progress=False
    )
    np.testing.assert_array_equal(same, plain_out)


ARCH = {"channels": [8, 16, 16], "attention_levels": [False, False, True]}
ARCH |= {"num_res_blocks": 1, "norm_num_groups": 8}


def random_denoiser(n_condition: int = 3 + 4) -> Denoiser:
    """A small real UNet, seeded, whose output layer is not zero (so it does something)."""
    torch.manual_seed(0)
    model = Denoiser(n_condition, ARCH)
    for p in model.unet.out.parameters():
        nn.init.normal_(p, std=0.05)
    return model


def test_real_model_shape_finite_deterministic(condition):
    model = random_denoiser()
    a = predict_volume(model, META, condition, progress=False, device="cpu")
    b = predict_volume(model, META, condition, steps=3, batch_size=3, progress=False)
    assert a.shape == condition.shape[1:] and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-6)  # same noise whatever the batching
    np.testing.assert_array_equal(a, predict_volume(model, META, condition, progress=False))
    no_guide = Denoiser(3, ARCH)
    c = predict_volume(no_guide, {**META, "use_guidance": False}, condition, progress=False)
    assert c.shape == condition.shape[1:] and np.isfinite(c).all()


@pytest.mark.parametrize("thick_axis", [2, 0])
def test_a_region_is_the_whole_volume_prediction_inside_it(condition, thick_axis):
    """Only the planes through the box are run, each whole: the box of a whole-volume
    prediction (to float rounding: batches group other planes), noise-started, with both
    plane axes and the thick axis anywhere."""
    model = random_denoiser()
    meta = {**META, "slice_axis": [0, 1], "sampling_start": "noise"}
    kw = {"progress": False, "thick_axis": thick_axis, "batch_size": 3}
    whole = predict_volume(model, meta, condition, **kw)
    region = (slice(2, 9), slice(3, 7), slice(4, 10))
    part = predict_volume(model, meta, condition, region=region, **kw)
    assert part.shape == (7, 4, 6)
    np.testing.assert_allclose(part, whole[region], atol=1e-6)
    assert not np.allclose(part, whole[slice(3, 10), slice(3, 7), slice(4, 10)])


def test_wrong_channel_count_is_refused(condition):
    with pytest.raises(ValueError, match="channels"):
        predict_volume(PlanOracle(1), META, condition[:3], progress=False)


def test_check_input_spacing():
    assert check_input_spacing(META, 4.0) is None
    assert check_input_spacing(META, 6.0) is None
    for mm in (2.0, 3.0, 8.0):
        msg = check_input_spacing(META, mm)
        assert msg.startswith("WARNING") and f"{mm:g} mm" in msg and "[4, 6]" in msg


def test_an_input_already_at_the_output_resolution_is_returned_as_it_is():
    """Nothing to super-resolve (slice and in-plane spacing at the grid's own): the network is
    not run, the 1.5T channel comes back (in the output contrast); a thick input is sampled."""
    from sr7t.models.predict import nothing_to_resolve

    cond, _, _ = phantom_arrays(0)
    meta = {**META, "spacing_mm_seen": [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0]]}
    model = PlanOracle(1)
    assert nothing_to_resolve(meta, 2.0, 2.0) and nothing_to_resolve(meta, 1.0, 2.04)
    assert not nothing_to_resolve(meta, 2.0, 2.5) and not nothing_to_resolve(meta, 4.0, 2.0)
    assert not nothing_to_resolve(meta, None, None)
    same = predict_volume(model, meta, cond, slice_mm=2.0, inplane_mm=2.0, progress=False)
    np.testing.assert_array_equal(same, cond[CHANNELS.index("t1_1p5T")])
    thick = predict_volume(model, meta, cond, slice_mm=4.0, inplane_mm=2.0, progress=False)
    assert not np.allclose(thick, same)
    mapped = {**meta, "output_contrast": "input", "contrast_map": {"from": [0, 1], "to": [0, 2]}}
    out = predict_volume(model, mapped, cond, slice_mm=2.0, inplane_mm=2.0, progress=False)
    expected = 2 * np.clip(cond[CHANNELS.index("t1_1p5T")], 0, 1)  # the map clamps at its ends
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


class OOMWhenMoreThan(nn.Module):
    """PlanOracle that runs out of (GPU) memory on batches of more than ``limit`` planes."""

    size_multiple = 4

    def __init__(self, context, limit):
        super().__init__()
        self.inner, self.limit, self.batches = PlanOracle(context), limit, []

    def forward(self, x_t, cond, t):
        if x_t.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.batches.append(x_t.shape[0])
        return self.inner(x_t, cond, t)


def test_inference_batches_planes_adaptively_after_out_of_memory(caplog):
    """Out of memory at 8 planes: halved until it fits, and the same result as a batch that
    fitted at once; one plane that does not fit is one line naming what to try."""
    from sr7t.errors import USER_ERRORS, InferenceOOM

    cond, _, _ = phantom_arrays(0)
    fits = predict_volume(PlanOracle(1), META, cond, batch_size=2, progress=False)
    model = OOMWhenMoreThan(1, limit=2)
    with caplog.at_level("WARNING"):
        adaptive = predict_volume(model, META, cond, batch_size=8, progress=False)
    np.testing.assert_array_equal(adaptive, fits)
    assert max(model.batches) == 2
    assert "out of memory at 8 planes per batch: going on with 4" in caplog.text
    with pytest.raises(InferenceOOM, match=r"^out of GPU memory predicting one \d+ x \d+ plane"):
        predict_volume(OOMWhenMoreThan(1, limit=0), META, cond, batch_size=4, progress=False)
    assert issubclass(InferenceOOM, USER_ERRORS)


class NoiseEcho(PlanOracle):
    """PlanOracle plus half the noisy input: its output depends on where DDIM starts."""

    def forward(self, x_t, cond, t):
        return super().forward(x_t, cond, t) + 0.5 * x_t


def test_sampling_starts_where_the_plan_says():
    """``zero`` (the path towards the posterior mean) starts DDIM from zeros, as a
    deterministic model does; ``noise`` from the seed's draw; the plan's own by default."""
    cond, _, _ = phantom_arrays(0)
    model = NoiseEcho(1)

    def run(meta, **kw):
        return predict_volume(model, meta, cond, progress=False, **kw)

    zero = run({**META, "sampling_start": "zero"})
    np.testing.assert_array_equal(zero, run({**META, "deterministic": True}))
    np.testing.assert_array_equal(zero, run({**META, "sampling_start": "noise"}, start="zero"))
    noise = run({**META, "sampling_start": "noise"})
    assert not np.allclose(noise, zero)
    np.testing.assert_array_equal(noise, run(META, seed=0))  # bundles from before: noise
    assert not np.allclose(noise, run(META, seed=1))


class Lopsided(PlanOracle):
    """PlanOracle plus a tenth of the centre t1 plane one row and one column on: a model that
    is not flip-symmetric, so each test-time flip changes its output."""

    def forward(self, x_t, cond, t):
        t1 = cond[:, self.c : self.c + 1]
        extra = 0.1 * (torch.roll(t1, -1, dims=-2) + torch.roll(t1, -1, dims=-1))
        a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
        return super().forward(x_t, cond, t) - extra / s


@pytest.mark.parametrize("flips", [1, 2, 4])
def test_test_time_flips_average_the_flipped_planes(condition, flips):
    """With ``test_time_flips`` 2 the in-plane row offset is averaged with its mirror image, with
    4 the thick-axis one too (inside a one-voxel border, where no padding is reached)."""
    meta = {**META, "test_time_flips": flips}
    out = predict_volume(Lopsided(1), meta, condition, batch_size=4, progress=False)
    t1, bias = condition[0], condition[1]

    def shifted(axis, by):
        return np.roll(t1, -by, axis=axis)

    rows = [shifted(0, 1)] if flips == 1 else [shifted(0, 1), shifted(0, -1)]
    cols = [shifted(2, 1)] if flips < 4 else [shifted(2, 1), shifted(2, -1)]
    extra = 0.1 * (np.mean(rows, axis=0) + np.mean(cols, axis=0))
    expected = t1 + 0.5 * (0.2 * t1 + bias + extra)
    inner = (slice(1, -1), slice(None), slice(1, -1))
    np.testing.assert_allclose(out[inner], expected[inner], atol=1e-5)


def test_a_flip_count_other_than_1_2_4_is_refused():
    from sr7t.models.predict import test_time_flips

    assert test_time_flips({}) == 1  # bundles from before flips: none
    with pytest.raises(ValueError, match="test_time_flips must be 1, 2 or 4, got 3"):
        test_time_flips({"test_time_flips": 3})


@pytest.mark.parametrize("axes", [[1], [0, 1]])
def test_tiles_of_a_pointwise_model_are_the_whole_plane_prediction(axes):
    """A model pointwise in the condition and the starting noise (:class:`NoiseEcho`), on
    planes larger than the tile (and one smaller, padded), noise-started: the blended tiles
    equal the whole-plane prediction, so each tile starts from its crop of the plane's noise."""
    cond, _, _ = phantom_arrays(1, shape=(30, 9, 23))
    meta = {**META, "slice_axis": axes, "sampling_start": "noise"}
    whole = predict_volume(NoiseEcho(1), meta, cond, batch_size=4, progress=False)
    tiled = predict_volume(
        NoiseEcho(1), {**meta, "inference_tile": 12}, cond, batch_size=4, progress=False
    )
    assert tiled.shape == whole.shape
    np.testing.assert_allclose(tiled, whole, atol=1e-5)


def test_with_tiles_a_voxel_sees_only_its_tiles():
    """A real UNet (group norms, attention) on tiles: changing the image further than a tile
    from a corner leaves the corner's prediction as it was; on whole planes it does not."""
    cond, _, _ = phantom_arrays(2, shape=(40, 6, 40))
    far = cond.copy()
    far[:, 28:, :, 28:] += 0.5
    model = random_denoiser()
    corner = (slice(0, 8), slice(None), slice(0, 8))
    for tile, same in ((16, True), (0, False)):
        meta = {**META, "inference_tile": tile}
        a = predict_volume(model, meta, cond, progress=False)[corner]
        b = predict_volume(model, meta, far, progress=False)[corner]
        assert np.allclose(a, b, atol=1e-6) == same, f"tile {tile}"


def test_an_inference_tile_must_be_a_multiple_of_4():
    from sr7t.models.predict import inference_tile, with_tile

    assert inference_tile({}) is None  # bundles from before tiles: whole planes
    assert inference_tile(with_tile({"inference_tile": 64}, 0)) is None
    assert with_tile({"x": 1}, None) == {"x": 1}
    with pytest.raises(ValueError, match="multiple of 4, got 30"):
        with_tile({}, 30)


def _ramps(shape=(30, 28, 9)):
    """Condition channels (t1, bias, ...) that are smooth in space: a cubic spline rotates
    them without loss away from the edges."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    cond = np.stack([1 + 0.3 * x - 0.2 * y + 0.1 * z, 0.2 * y + 0.1 * x * y] + [0 * x] * 3)
    return cond.astype(np.float32)


@pytest.mark.parametrize("thick_axis", [2, 0])
def test_rotations_of_a_pointwise_model_are_its_plain_prediction(thick_axis):
    """The plan oracle is pointwise, so a member on the input rotated about the thick axis,
    rotated back, is the plain prediction (to interpolation error away from the edges); the
    corners no rotated member covers keep the plain prediction exactly."""
    cond = _ramps() if thick_axis == 2 else np.moveaxis(_ramps(), 3, 1).copy()
    meta = {**META, "slice_axis": [0, 1]}
    kw = {"progress": False, "batch_size": 8, "thick_axis": thick_axis}
    plain = predict_volume(PlanOracle(1), meta, cond, **kw)
    rotated = predict_volume(PlanOracle(1), {**meta, "test_time_rotations": 3}, cond, **kw)
    assert rotated.shape == plain.shape and rotated.dtype == np.float32
    inner = [slice(8, -8)] * 3
    inner[thick_axis] = slice(None)
    np.testing.assert_allclose(rotated[tuple(inner)], plain[tuple(inner)], atol=2e-3)
    corner = [0, 0, 0]
    np.testing.assert_array_equal(rotated[tuple(corner)], plain[tuple(corner)])


def test_rotations_see_other_plane_directions(condition):
    """A model that is not rotation-equivariant (it looks one row along its planes) gives
    another result with rotated members than without."""
    meta = {**META, "slice_axis": [0, 1]}
    big, _, _ = phantom_arrays(0, shape=(26, 24, 9))
    plain = predict_volume(Lopsided(1), meta, big, progress=False)
    rotated = predict_volume(Lopsided(1), {**meta, "test_time_rotations": 2}, big, progress=False)
    assert np.abs(rotated - plain)[8:-8, 8:-8].max() > 1e-3


def test_a_region_with_rotations_is_the_whole_volume_prediction_inside_it():
    """With rotated members only the planes through the rotated box are run: inside the box
    the result is the whole-volume one (to the spline's reach across the box edge)."""
    model = random_denoiser()
    cond, _, _ = phantom_arrays(0, shape=(34, 30, 12))
    meta = {**META, "slice_axis": [0, 1], "test_time_rotations": 2}
    whole = predict_volume(model, meta, cond, progress=False, batch_size=8)
    region = (slice(10, 22), slice(9, 19), slice(2, 10))
    part = predict_volume(model, meta, cond, progress=False, batch_size=8, region=region)
    assert part.shape == (12, 10, 8)
    np.testing.assert_allclose(part, whole[region], atol=2e-3)
    plain = predict_volume(model, {**meta, "test_time_rotations": 1}, cond, progress=False)
    assert np.abs(part - plain[region]).max() > 1e-3


def test_a_rotation_count_below_1_is_refused():
    from sr7t.models.predict import test_time_rotations, with_rotations

    assert test_time_rotations({}) == 1  # bundles from before rotations: none
    assert with_rotations({"a": 1}, None) == {"a": 1}
    assert test_time_rotations(with_rotations({}, 3)) == 3
    with pytest.raises(ValueError, match="test_time_rotations must be at least 1, got 0"):
        with_rotations({}, 0)


def test_a_corner_region_turned_out_of_the_grid_keeps_the_plain_prediction():
    """A box in the grid's corner lies outside the grid turned by 45 degrees: the rotated
    member adds nothing there and the plain prediction is returned."""
    cond, _, _ = phantom_arrays(0, shape=(30, 30, 9))
    meta = {**META, "slice_axis": [0, 1]}
    region = (slice(0, 3), slice(0, 3), slice(None))
    rotated = predict_volume(
        Lopsided(1), {**meta, "test_time_rotations": 2}, cond, progress=False, region=region
    )
    plain = predict_volume(Lopsided(1), meta, cond, progress=False, region=region)
    assert rotated.shape == (3, 3, 9)
    np.testing.assert_array_equal(rotated, plain)


class CountingOracle(PlanOracle):
    """:class:`PlanOracle` that counts its calls."""

    def __init__(self, context):
        super().__init__(context)
        self.calls = 0

    def forward(self, x_t, cond, t):
        self.calls += 1
        return super().forward(x_t, cond, t)


def test_steps_replaced_by_with_steps_run_that_many_network_passes(condition):
    """``with_steps`` (a teacher scored in other steps than the ones its students distil)
    changes the sampler's schedule only: the oracle's x0 at every step gives the same image."""
    from sr7t.models.predict import with_steps

    assert with_steps({"sampling_steps": 3}, None) == {"sampling_steps": 3}
    counts = {}
    for steps in (1, 5):
        model = CountingOracle(1)
        out = predict_volume(
            model, with_steps(META, steps), condition, batch_size=64, progress=False
        )
        counts[steps] = model.calls
        t1, bias = condition[0], condition[1]
        np.testing.assert_allclose(out, t1 + 0.5 * (0.2 * t1 + bias), atol=1e-5)
    assert counts == {1: 1, 5: 5}  # one batch of every plane, one pass per step
    with pytest.raises(ValueError, match="sampling steps must be at least 1, got 0"):
        with_steps(META, 0)
