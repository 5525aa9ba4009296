"""CPU rehearsal of the full-size GPU config (config/gpu.yaml merged onto config/config.yaml
as Snakemake merges ``--configfile``): the trainers' own builders make the 18.5 M-parameter
teacher and every distillation stage's student; one forward + backward on a 32x32 patch
(every parameter gets a gradient, as DDP requires); per-stage lists resolve for all four
stages; stages 2-4 start from their parent; bundles save and load to the same outputs.
"""

import copy
import sys
from pathlib import Path

import torch
import yaml
from snakemake.utils import update_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_phantom import write_phantom_npz  # noqa: E402

from sr7t.config import resolve  # noqa: E402
from sr7t.distill.stage import DistillTrainer  # noqa: E402
from sr7t.models.bundle import load_bundle, save_bundle  # noqa: E402
from sr7t.models.diffusion import param_count  # noqa: E402
from sr7t.train.loop import BatchShard  # noqa: E402
from sr7t.train.teacher import TeacherTrainer  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PATCH = 32  # a multiple of the 4-level UNet's size multiple (8)
STUDENT = {"channels": [32, 64, 64, 128], "attention_levels": [False, False, True, True]}


def gpu_config() -> dict:
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config/gpu.yaml").read_text()))
    return resolve(cfg)


def test_gpu_config_validates_and_every_stage_has_its_entries():
    cfg = gpu_config()
    d = cfg["distill"]
    assert cfg["data"]["patch_size"] == 128 and d["stages"] == 4
    for key in ("steps_per_stage", "channels", "attention_levels", "feature_weight"):
        value = d[key]
        per_stage = isinstance(value, list) and (
            key not in ("channels", "attention_levels") or isinstance(value[0], list)
        )
        assert not per_stage or len(value) in (1, d["stages"]), (key, value)
    assert d["data_weight"] == 1.0  # the default's two-entry list is replaced, not kept


def _batch(trainer, n: int = 1) -> tuple[dict, int]:
    ds = trainer.make_dataset(trainer.train_subjects, 0, 100)
    batch = torch.utils.data.default_collate([ds[i] for i in range(n)])
    return batch, ds.n_condition


def _meta(trainer, model) -> dict:
    return {**trainer.meta(), "architecture": model.arch, "param_count": param_count(model)}


def _same_outputs(a, b, n_condition: int) -> bool:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, PATCH, PATCH, generator=g)
    cond = torch.randn(1, n_condition, PATCH, PATCH, generator=g)
    t = torch.tensor([0.7])
    with torch.no_grad():
        return torch.equal(a.eval()(x, cond, t), b.eval()(x, cond, t))


def _backward_reaches_every_parameter(trainer, module, batch) -> float:
    loss, _ = trainer.loss(module, batch, BatchShard(0, 0))
    loss.backward()
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing[:5]
    assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)
    return float(loss.detach())


def test_full_size_teacher_and_distillation_chain(tmp_path):
    torch.manual_seed(0)
    cfg = copy.deepcopy(gpu_config())
    cfg["data"].update(patch_size=PATCH, num_workers=0)
    files = write_phantom_npz(tmp_path / "npz", 1)

    teacher_trainer = TeacherTrainer(files, [], cfg, tmp_path / "ck_t", device="cpu")
    batch, n_cond = _batch(teacher_trainer)
    assert batch["cond"].shape == (1, n_cond, PATCH, PATCH)
    teacher = teacher_trainer.build_trainable(n_cond)
    n_teacher = param_count(teacher)
    assert 18.3e6 < n_teacher < 18.7e6, n_teacher  # README: 18.5 M
    assert teacher.arch["channels"] == [64, 128, 128, 256] and teacher.size_multiple == 8
    assert torch.isfinite(
        torch.tensor(_backward_reaches_every_parameter(teacher_trainer, teacher, batch))
    )
    save_bundle(tmp_path / "teacher.pt", teacher, _meta(teacher_trainer, teacher))
    parent = load_bundle(tmp_path / "teacher.pt", device="cpu")
    assert _same_outputs(teacher, parent[0], n_cond)
    assert teacher_trainer.sampling_steps == 64

    steps = []
    for k in range(1, 5):
        st = DistillTrainer(parent, k, files, [], cfg, tmp_path / f"ck{k}", device="cpu")
        trainable = st.build_trainable(n_cond)
        student = st.denoiser(trainable)
        assert {key: student.arch[key] for key in STUDENT} == STUDENT, k
        assert student.arch["norm_num_groups"] == 32
        assert st.sampling_steps == 64 >> k and (st.feature_weight, st.data_weight) == (0.1, 1.0)
        steps.append(st.total_steps)
        if k == 1:  # the one change of width: from scratch, feature adapters to 64..256
            n_student = param_count(student)
            assert 4.4e6 < n_student < 4.8e6 and 0.24 < n_student / n_teacher < 0.26
            assert [type(a).__name__ for a in trainable.adapters] == ["Conv2d"] * 5
            _backward_reaches_every_parameter(st, trainable, batch)
            trainable.zero_grad(set_to_none=True)
            save_bundle(tmp_path / "s1.pt", student, _meta(st, student))
            loaded = load_bundle(tmp_path / "s1.pt", device="cpu")
            assert _same_outputs(student, loaded[0], n_cond)
            assert loaded[1]["sampling_steps"] == 32 and loaded[1]["parent"] == "teacher"
            parent = loaded
        else:  # same width as the parent: starts as the parent, identity adapters
            for (name, a), b in zip(
                parent[0].state_dict().items(), student.state_dict().values(), strict=True
            ):
                assert torch.equal(a, b), (k, name)
            assert all(isinstance(a, torch.nn.Identity) for a in trainable.adapters)
            parent = (student, _meta(st, student))
    assert steps == [30000, 10000, 10000, 10000]
