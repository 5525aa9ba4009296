import copy

import pytest
import yaml

from sr7t.config import (
    ConfigError,
    check_models,
    config_hash,
    load_schema,
    read_resolved,
    resolve,
    validate,
    write_resolved,
)
from tests.conftest import REPO

SCHEMA = load_schema("config")


def default_config():
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def test_default_and_tiny_configs_validate_and_get_defaults():
    cfg = validate(default_config(), SCHEMA)
    # the demo's value (2) is kept, not replaced by the schema's default (8)
    assert cfg["teacher"]["sampling_steps"] == 2
    tiny = yaml.safe_load((REPO / "config/tiny.yaml").read_text())
    filled = validate(tiny, SCHEMA)
    # defaults fill keys the tiny config leaves out, nested ones too
    assert filled["tracking"]["uri"] is None
    assert filled["preprocess"]["register"]["transforms"] == ["Rigid", "Affine"]
    assert filled["teacher"]["ema_decay"] == 0.995


def test_misspelt_key_is_named_with_its_path():
    cfg = default_config()
    cfg["teacher"]["learning_rate"] = 1e-3
    with pytest.raises(ConfigError, match=r"teacher: .*learning_rate.*misspelt"):
        validate(cfg, SCHEMA)


def test_wrong_type_is_named_with_its_path():
    cfg = default_config()
    cfg["cohorts"]["demo"]["demo"]["n_subjects"] = "six"
    with pytest.raises(ConfigError, match=r"cohorts\.demo\.demo\.n_subjects: 'six' is not of type"):
        validate(cfg, SCHEMA)


def test_config_hash_is_stable_and_sensitive():
    cfg = default_config()
    again = copy.deepcopy(cfg)
    assert config_hash(cfg) == config_hash(again)
    again["teacher"]["lr"] = 1.0
    assert config_hash(cfg) != config_hash(again)


@pytest.mark.parametrize(
    "name, key, expected",
    [
        ("gpu.yaml", ("distill", "stages"), 4),
        ("ablation_no_guidance.yaml", ("teacher", "use_guidance"), False),
    ],
)
def test_other_configs_validate_on_top_of_the_default(name, key, expected):
    cfg = default_config()
    extra = yaml.safe_load((REPO / "config" / name).read_text())
    for k, value in extra.items():
        cfg[k] = {**cfg.get(k, {}), **value} if isinstance(value, dict) else value
    assert validate(cfg, SCHEMA)[key[0]][key[1]] == expected


def _merged(name):
    """``name`` on top of config.yaml, merged the way Snakemake merges --configfile."""

    def merge(a, b):
        out = dict(a)
        for k, v in b.items():
            both = isinstance(v, dict) and isinstance(out.get(k), dict)
            out[k] = merge(out[k], v) if both else v
        return out

    extra = yaml.safe_load((REPO / "config" / name).read_text())
    return validate(merge(default_config(), extra), SCHEMA)


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "config").glob("*.yaml")))
def test_every_shipped_config_passes_the_cross_key_checks(name):
    """Each shipped config on top of config.yaml (as ``--configfile`` merges it): per-level
    lists agree and every per-stage list has 1 or ``distill.stages`` entries."""
    check_models(_merged(name))


def test_per_stage_list_of_wrong_length_is_named_with_its_key_path():
    cfg = validate(default_config(), SCHEMA)
    cfg["distill"] = {**cfg["distill"], "stages": 4, "data_weight": [1.0, 0.5]}
    cfg["distill"]["steps_per_stage"] = [100]  # one entry: every stage
    cfg["distill"]["feature_weight"] = 0.1
    cfg["distill"]["test_time_flips"] = 4  # one value: every stage
    cfg["distill"]["channels"] = [[8, 16, 16]] * 4
    with pytest.raises(ConfigError) as err:
        check_models(cfg)
    assert str(err.value) == "config: distill.data_weight has 2 entries for 4 stages (needs 1 or 4)"
    cfg["distill"]["data_weight"] = [0.5]
    check_models(cfg)
    cfg["distill"]["channels"] = [[8, 16, 16]] * 3
    with pytest.raises(ConfigError, match=r"distill\.channels has 3 entries for 4 stages"):
        check_models(cfg)


def test_model_levels_that_disagree_are_named():
    cfg = validate(default_config(), SCHEMA)
    check_models(cfg)
    cfg["teacher"] = {**cfg["teacher"], "channels": [8, 16]}  # two levels, attention has three
    cfg["distill"] = {**cfg["distill"], "stages": 2}  # the demo's one-entry lists serve both
    with pytest.raises(ConfigError) as err:
        check_models(cfg)
    text = str(err.value)
    assert "teacher.attention_levels" in text and "distill.channels for stage 1" in text
    assert "distill.attention_levels for stage 2" in text


def test_resolve_fills_every_default_from_the_schema_alone():
    """Defaults live only in the schema: a partial config gets them, and an empty one is the
    schema's default of every section (what a stage called by hand builds)."""
    empty = resolve({})
    assert "cohorts" not in empty
    assert empty["teacher"]["sampling_steps"] == 8 and empty["distill"]["grad_clip"] == 1.0
    assert empty["preprocess"]["register"]["interpolation_order"] == 3
    partial = resolve({"teacher": {"lr": 1e-3}})
    assert partial["teacher"]["lr"] == 1e-3 and partial["teacher"]["ema_decay"] == 0.995
    with pytest.raises(ConfigError, match=r"teacher: .*learning_rate"):
        resolve({"teacher": {"learning_rate": 1e-3}})


def test_resolved_config_round_trips(tmp_path):
    cfg = validate(default_config(), SCHEMA)
    path = write_resolved(cfg, tmp_path / "config.resolved.yaml")
    assert read_resolved(path) == cfg
    assert config_hash(read_resolved(path)) == config_hash(cfg)
