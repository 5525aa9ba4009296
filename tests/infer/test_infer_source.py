"""Where an inference cohort's model comes from: the config check, and MLflow registered models
round-tripped through a real local SQLite store (register as training does, fetch by name)."""

from __future__ import annotations

import pytest

from sr7t import tracking
from sr7t.config import ConfigError, resolve
from sr7t.infer.source import fetch_registered, model_source, parse_registered

CONFIG = resolve({})  # distill.stages 2: the final model is student_stage2


def test_model_source_checks_the_key_and_names_its_path(tmp_path):
    trains = {"demo": True, "routine": False}
    spec = model_source("routine", {"model": {"from_cohort": "demo"}}, CONFIG, trains, True)
    assert spec == {"source": "cohort", "cohort": "demo", "model": "student_stage2"}
    # a mixed cohort infers with its own final student by default
    assert model_source("demo", {}, CONFIG, trains, False)["cohort"] == "demo"
    with pytest.raises(ConfigError, match=r"cohorts\.routine\.model: required"):
        model_source("routine", {}, CONFIG, trains, True)
    with pytest.raises(ConfigError, match=r"cohorts\.routine\.model\.from_cohort: .*trains no"):
        model_source("routine", {"model": {"from_cohort": "routine"}}, CONFIG, trains, True)
    bad_stage = {"from_cohort": "demo", "name": "student_stage3"}
    with pytest.raises(ConfigError, match=r"cohorts\.routine\.model\.name: student_stage3"):
        model_source("routine", {"model": bad_stage}, CONFIG, trains, True)
    with pytest.raises(ConfigError, match=r"cohorts\.routine\.model\.bundle: .* does not exist"):
        model_source("routine", {"model": {"bundle": str(tmp_path / "no.pt")}}, CONFIG, trains, 1)
    assert parse_registered("models:/sr7t-demo/3") == ("sr7t-demo", "3")
    assert parse_registered("sr7t-demo") == ("sr7t-demo", None)


@pytest.fixture
def store(tmp_path, monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", tracking.ENV_PARENTS, tracking.ENV_URI):
        monkeypatch.delenv(name, raising=False)
    return f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"


def test_registered_model_round_trips_by_name_and_version(tmp_path, store):
    versions = []
    for i in (1, 2):
        bundle = tmp_path / f"run{i}" / "model.pt"
        bundle.parent.mkdir()
        bundle.write_bytes(f"bundle {i}".encode())
        with tracking.job_run("distill_stage", "demo", {"k": "2"}, results_dir=tmp_path) as t:
            versions.append(t.register_model(bundle, "sr7t-demo", {"model": "student_stage2"}))
    assert versions == ["1", "2"]
    latest = fetch_registered("sr7t-demo", store, tmp_path / "latest.pt")
    assert latest["version"] == "2" and (tmp_path / "latest.pt").read_bytes() == b"bundle 2"
    first = fetch_registered("models:/sr7t-demo/1", store, tmp_path / "v1.pt")
    assert first["version"] == "1" and (tmp_path / "v1.pt").read_bytes() == b"bundle 1"
    with pytest.raises(ValueError, match="no version"):
        fetch_registered("nobody", store, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=r"models:/sr7t-demo/9"):
        fetch_registered("models:/sr7t-demo/9", store, tmp_path / "x.pt")


def test_final_model_of_a_workflow_is_registered(tmp_path, store):
    """The stage runner registers the final student under tracking.register_model."""
    from sr7t import stages

    bundle = tmp_path / "model.pt"
    bundle.write_bytes(b"final")
    whole = resolve({"tracking": {"register_model": "m-{cohort}"}})  # 2 stages
    with tracking.job_run("distill_stage", "tiny", {}, results_dir=tmp_path) as t:
        job = stages.Job({"cohort": "tiny", "k": "2"}, tracker=t, config=whole)
        stages._register_if_final(str(bundle), "student_stage1", job)  # not the final one
        stages._register_if_final(str(bundle), "student_stage2", job)
    got = fetch_registered("m-tiny", store, tmp_path / "back.pt")
    assert got["version"] == "1" and (tmp_path / "back.pt").read_bytes() == b"final"
