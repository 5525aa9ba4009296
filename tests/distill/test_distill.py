import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_phantom import tiny_config, write_phantom_npz  # noqa: E402

from sr7t.distill.stage import distill_stage, parent_target, per_stage  # noqa: E402
from sr7t.models.bundle import load_bundle  # noqa: E402
from sr7t.models.diffusion import alpha_sigma, q_sample  # noqa: E402
from sr7t.train.teacher import train_teacher  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill")
    files = write_phantom_npz(root / "npz", 3)
    # the teacher's own inference plan: 1 step (its students still distil its 4)
    cfg = tiny_config(teacher={"channels": [8, 16], "train_steps": 6, "inference_steps": 1})
    train_teacher(files[:2], [], cfg, root / "teacher.pt", root / "ck_teacher")
    return files, cfg, root


def test_two_stages_halve_steps_and_shrink(teacher):
    files, cfg, root = teacher
    log = []
    s1 = distill_stage(
        root / "teacher.pt",
        files[:2],
        files[2:],
        cfg,
        1,
        root / "s1.pt",
        root / "ck1",
        metrics_cb=lambda rec, step: log.append(rec),
    )
    assert {"loss_v", "loss_feature", "loss_data"} <= set(s1["final_losses"])
    assert s1["val_loss"] is not None and torch.isfinite(torch.tensor(s1["val_loss"]))
    cfg2 = tiny_config(
        distill={
            "channels": [[8, 8], [8, 8]],
            "steps_per_stage": [6, 4],
            "attention_levels": [[False, False], [False, True]],
            "data_weight": [0.0, 0.5],
            "test_time_flips": [1, 4],
            "test_time_rotations": [1, 2],
            "on_path": [True, False],
            "data_weight_power": [0.0, 1.0],
        }
    )
    s2 = distill_stage(root / "s1.pt", files[:2], [], cfg2, 2, root / "s2.pt", root / "ck2")
    t, tm = load_bundle(root / "teacher.pt", "cpu")
    m1, meta1 = load_bundle(root / "s1.pt", "cpu")
    m2, meta2 = load_bundle(root / "s2.pt", "cpu")
    assert (tm["sampling_steps"], meta1["sampling_steps"], meta2["sampling_steps"]) == (4, 2, 1)
    assert meta1["param_count"] < tm["param_count"]
    assert meta1["kind"] == "student_stage1" and meta1["parent"] == "teacher"
    assert meta2["kind"] == "student_stage2" and meta2["parent"] == "student_stage1"
    assert meta1["channels"] == tm["channels"] and meta1["residual_scale"] == tm["residual_scale"]
    # where sampling starts is the teacher's plan (the schema's default), kept down the chain
    assert tm["sampling_start"] == meta1["sampling_start"] == meta2["sampling_start"] == "zero"
    assert s2["steps"] == 4 and s1["sampling_steps"] == 2
    assert meta2["architecture"]["attention_levels"] == [False, True]
    # stage 1: the schema's default data weight (the workflow's too); stage 2: its own entry
    assert meta1["data_weight"] == 1.0 and meta2["data_weight"] == 0.5
    assert meta1["data_weight_power"] == 0.0 and meta2["data_weight_power"] == 1.0
    # stage 1 trained on its own sampler's inputs (the default), stage 2 on noised 7T
    assert meta1["on_path"] is True and meta2["on_path"] is False
    assert torch.isfinite(torch.tensor(s2["final_loss"]))
    # test-time flips are each stage's own plan (the teacher's and stage 1's: the default)
    assert (tm["test_time_flips"], meta1["test_time_flips"], meta2["test_time_flips"]) == (1, 1, 4)
    rotations = [m["test_time_rotations"] for m in (tm, meta1, meta2)]
    assert rotations == [1, 1, 2]  # the same: each stage's own plan
    steps = [m["inference_steps"] for m in (tm, meta1, meta2)]
    assert steps == [1, None, None]  # the teacher's own; a student samples its sampling_steps
    assert meta1["architecture"]["attention_levels"] == tm["architecture"]["attention_levels"]
    # the cost of each stage travels with it: fewer steps and a narrower net, fewer MACs
    assert meta2["macs_per_slice"] < meta1["macs_per_slice"] < tm["macs_per_slice"]


def test_student_of_same_width_starts_as_its_parent(teacher):
    files, cfg, root = teacher
    cfg0 = tiny_config(distill={"channels": [8, 16]})
    cfg0["distill"]["steps_per_stage"] = 0  # below the schema's minimum: not one step
    distill_stage(root / "teacher.pt", files[:1], [], cfg0, 1, root / "same.pt", root / "ck0")
    parent, _ = load_bundle(root / "teacher.pt", "cpu")
    student, meta = load_bundle(root / "same.pt", "cpu")
    assert meta["sampling_steps"] == 2
    for a, b in zip(parent.parameters(), student.parameters(), strict=True):
        assert torch.equal(a, b)


def test_student_starts_from_the_init_model_when_given(teacher):
    """init_model: the student starts as the regression UNet's weights (the same
    architecture by construction), not from scratch or its parent; another width raises."""
    from sr7t.train.regression import train_regression

    files, cfg, root = teacher
    cfg_r = tiny_config(distill={"channels": [8, 8], "steps_per_stage": 2})
    train_regression(files[:2], [], cfg_r, root / "reg.pt", root / "ck_reg")  # as the teacher
    cfg0 = tiny_config(distill={"channels": [8, 8]})
    cfg0["distill"]["steps_per_stage"] = 0  # not one step: the weights as started
    args = (files[:1], [], cfg0, 1, root / "warm.pt", root / "ck_warm")
    distill_stage(root / "teacher.pt", *args, init_model=root / "reg.pt")
    reg, _ = load_bundle(root / "reg.pt", "cpu")
    student, meta = load_bundle(root / "warm.pt", "cpu")
    assert meta["init"] == "regression" and meta["parent"] == "teacher"
    for a, b in zip(reg.parameters(), student.parameters(), strict=True):
        assert torch.equal(a, b)
    cold = tiny_config(distill={"channels": [8, 16]})
    cold["distill"]["steps_per_stage"] = 0
    with pytest.raises(ValueError, match="cannot start from the regression model"):
        distill_stage(
            root / "teacher.pt",
            files[:1],
            [],
            cold,
            1,
            root / "x.pt",
            root / "ckx",
            init_model=root / "reg.pt",
        )


def test_parent_target_of_perfect_parent_is_x0():
    x0 = torch.randn(4, 1, 8, 8)

    class Oracle(torch.nn.Module):
        def feature_layers(self):
            return [self.lin]

        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Identity()

        def forward(self, x_t, cond, t):
            a, s = (v.view(-1, 1, 1, 1) for v in alpha_sigma(t))
            self.lin(x_t)
            return (a * x_t - x0) / s

    n = 4
    t = torch.tensor([1.0, 0.75, 0.5, 0.25])
    x_t = q_sample(x0, t, torch.randn_like(x0))
    v, x0_target, feats = parent_target(Oracle(), x_t, None, t, n)
    torch.testing.assert_close(x0_target, x0, atol=1e-4, rtol=0)
    a, s = (z.view(-1, 1, 1, 1) for z in alpha_sigma(t))
    torch.testing.assert_close(a * x_t - s * v, x0, atol=1e-4, rtol=0)
    assert len(feats) == 1 and feats[0].shape == x_t.shape


def test_parent_target_of_one_step_is_the_parents_own_estimate():
    """parent_steps 1: the target is the parent's own x0 (and v) at (x_t, t), one step of the
    student's size; 2 differs (the parent's second step sees its first step's output)."""
    from sr7t.models.diffusion import Denoiser

    torch.manual_seed(0)
    arch = {
        "channels": [8, 8],
        "attention_levels": [False, False],
        "num_res_blocks": 1,
        "norm_num_groups": 4,
    }
    parent = Denoiser(2, arch).eval()
    with torch.no_grad():  # MONAI zeroes the output layer: give it an answer to compare
        for p in parent.parameters():
            p.normal_(0.0, 0.2)
    x_t, cond = torch.zeros(3, 1, 8, 8), torch.randn(3, 2, 8, 8)
    t = torch.ones(3)
    v1, x0_1, feats = parent_target(parent, x_t, cond, t, 1, parent_steps=1)
    with torch.no_grad():
        v_own = parent(x_t, cond, t)
    torch.testing.assert_close(v1, v_own, atol=1e-5, rtol=0)
    torch.testing.assert_close(x0_1, -v_own, atol=1e-5, rtol=0)  # v = -x0 at t = 1, x_t = 0
    _, x0_2, _ = parent_target(parent, x_t, cond, t, 1, parent_steps=2)
    assert not torch.allclose(x0_1, x0_2) and len(feats) == len(parent.feature_layers())


def test_spacing_weighted_mean():
    """distill.data_weight_power: each example's mean error weighted by (slice_mm / 4) ** p
    above 4 mm, by 1 below; p = 0 is the plain mean to the bit."""
    from sr7t.distill.stage import spacing_weighted_mean

    err = torch.rand(3, 1, 4, 4)
    mm = torch.tensor([2.0, 4.0, 8.0])
    assert torch.equal(spacing_weighted_mean(err, mm, 0), torch.mean(err))
    per = err.mean(dim=(1, 2, 3))
    expect = (per[0] + per[1] + 4.0 * per[2]) / 3  # 2 mm: weight 1, not 1/4
    torch.testing.assert_close(spacing_weighted_mean(err, mm, 2.0), expect)
    # at the reference spacing every weight is one, whatever the power
    same = torch.full((3,), 4.0)
    torch.testing.assert_close(spacing_weighted_mean(err, same, 3.0), torch.mean(err))


def test_per_stage_values():
    assert per_stage([16, 32], 2, nested=True) == [16, 32]
    assert per_stage([[16, 32], [8, 16]], 2, nested=True) == [8, 16]
    assert per_stage([0.1, 0.3], 2, nested=False) == 0.3
    assert per_stage(0.2, 5, nested=False) == 0.2
    assert per_stage([0.1], 2, nested=False) == 0.1  # one entry: every stage
    assert per_stage([[8, 16]], 3, nested=True) == [8, 16]
    with pytest.raises(ValueError):
        per_stage([0.1, 0.2], 3, nested=False)


class Planner(torch.nn.Module):
    """A student (``(v, features)`` as :class:`StudentWithAdapters`) whose x0 is always
    ``0.5 * cond[:, :1]``, whatever its input."""

    def __init__(self):
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x_t, cond, t):
        self.batches.append(x_t.shape[0])
        x0 = 0.5 * cond[:, :1]
        a, s = (w.view(-1, 1, 1, 1) for w in alpha_sigma(t))
        return (a * x_t - x0) / s, []


@pytest.mark.parametrize("start", ["zero", "noise"])
def test_on_path_inputs_are_where_the_students_sampler_stands(start):
    from contextlib import nullcontext
    from types import SimpleNamespace

    from sr7t.distill.stage import DistillTrainer

    trainer = SimpleNamespace(sampling_start=start, autocast=nullcontext)
    cond = torch.randn(6, 3, 8, 8)
    noise = torch.randn(6, 1, 8, 8)
    i = torch.tensor([4, 3, 2, 1, 4, 1])
    planner = Planner()
    x = DistillTrainer.path_inputs(trainer, planner, cond, noise, i, 4)
    # each step runs on the examples that still need it: i < 4, i < 3, i < 2
    assert planner.batches == [4, 3, 2]
    x0 = 0.5 * cond[:, :1]
    a, s = (w.view(-1, 1, 1, 1) for w in alpha_sigma(i.float() / 4))
    # from noise DDIM keeps the noise it started with: alpha_t x0 + sigma_t noise
    expected = a * x0 if start == "zero" else a * x0 + s * noise
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=0)
