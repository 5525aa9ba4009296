"""sr7t.tracking against real MLflow stores: embedded SQLite, parallel writers, a real server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from sr7t import tracking
from sr7t.config import config_hash
from sr7t.paths import tracking_db
from sr7t.tracking import (
    end_workflow,
    experiment_name,
    flatten_params,
    job_run,
    resolve_tracking_uri,
    start_workflow,
)

ENV_VARS = (
    "MLFLOW_TRACKING_URI",
    tracking.ENV_PARENTS,
    tracking.ENV_URI,
    tracking.ENV_CONFIG_HASH,
    tracking.ENV_DISABLED,
    tracking.ENV_PREFIX,
)

CONFIG = {
    "cohorts": [{"name": "demo", "samples": "config/demo.tsv"}],
    "teacher": {"lr": 1e-4, "channels": [32, 64], "steps": 100},
    "tracking": {"uri": None},
    "notes": "x" * 7000,  # longer than MLflow's param limit: only in the YAML artifact
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No tracking variables from outside; whatever a test sets is undone afterwards."""
    for name in ENV_VARS:
        monkeypatch.setenv(name, "")  # records the original so teardown restores it
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its schema and no experiments, made once: creating the
    schema costs ~3 s of CPU, so tests that are not about it start from a copy."""
    db = tmp_path_factory.mktemp("template") / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()
    return db


def _seed(empty_store: Path, db: Path) -> Path:
    db.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store, db)
    return db


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runs(uri: str, cohort: str = "demo") -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment_name(cohort))
    assert exp is not None
    return client.search_runs([exp.experiment_id], max_results=1000)


def test_flatten_params_and_names():
    flat = flatten_params({"teacher": {"lr": 1e-4, "ch": [1, 2]}, "c": [{"name": "a"}], "s": "y"})
    assert flat == {"teacher.lr": "0.0001", "teacher.ch": "[1, 2]", "c.0.name": "a", "s": "y"}
    assert len(flatten_params({"long": "z" * 9000})["long"]) == 6000
    assert experiment_name("demo") == "sr7t/demo"
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
    assert len(config_hash(CONFIG)) == 12


def test_default_uri_and_env_wins(tmp_path, monkeypatch, empty_store):
    default = resolve_tracking_uri(None, tmp_path)
    assert default == f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    cfg_uri = f"sqlite:///{tmp_path / 'cfg' / 'mlflow.db'}"
    env_uri = f"sqlite:///{tmp_path / 'env' / 'mlflow.db'}"
    assert resolve_tracking_uri(cfg_uri, tmp_path) == cfg_uri
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env_uri)
    assert resolve_tracking_uri(cfg_uri, tmp_path) == env_uri

    _seed(empty_store, tmp_path / "env" / "mlflow.db")
    with job_run("n4", "demo", {"subject": "s1"}, results_dir=tmp_path, config_uri=cfg_uri) as t:
        t.log_metrics({"qc": 0.5})
    (run,) = _runs(env_uri)
    assert run.data.metrics["qc"] == 0.5
    assert not (tmp_path / "cfg").exists()
    assert not (tmp_path / "mlflow").exists()


def test_parent_and_three_children(tmp_path):
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(CONFIG))
    parents = start_workflow(["demo"], CONFIG, [str(cfg_file)], tmp_path)
    uri = resolve_tracking_uri(None, tmp_path)
    assert set(parents) == {"demo"}
    assert os.environ[tracking.ENV_URI] == uri

    fig = tmp_path / "qc.png"
    fig.write_bytes(b"\x89PNG fake bytes")
    for i, subject in enumerate(["s1", "s2", "s3"]):
        with job_run("register", "demo", {"subject": subject}, params={"reg": {"type": "affine"}},
                     results_dir=tmp_path) as t:  # fmt: skip
            for step in range(3):
                t.log_metrics({"similarity": i + step / 10}, step=step)
            t.log_figure(fig)
            t.set_tags({"note": "ok"})
    end_workflow("FINISHED")
    assert tracking.ENV_PARENTS not in os.environ

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("sr7t/demo")
    assert exp.artifact_location == (tmp_path / "mlflow/artifacts/sr7t/demo").as_uri()
    runs = _runs(uri)
    assert len(runs) == 4
    (parent,) = [r for r in runs if r.info.run_id == parents["demo"]]
    children = [r for r in runs if r.info.run_id != parents["demo"]]
    chash = config_hash(CONFIG)

    assert parent.info.status == "FINISHED"
    assert parent.info.run_name.startswith("workflow ")
    assert parent.data.tags["config_hash"] == chash
    assert parent.data.tags["cohort"] == "demo"
    assert {"host", "user", "invocation"} <= set(parent.data.tags)
    assert parent.data.params["teacher.lr"] == "0.0001"
    assert parent.data.params["cohorts.0.name"] == "demo"
    assert "notes" not in parent.data.params  # too long for a param
    logged = client.download_artifacts(parent.info.run_id, "config/config.yaml", str(tmp_path))
    assert yaml.safe_load(Path(logged).read_text()) == CONFIG
    files = [f.path for f in client.list_artifacts(parent.info.run_id, "config/files")]
    assert files == ["config/files/config.yaml"]

    assert sorted(r.data.tags["wildcard.subject"] for r in children) == ["s1", "s2", "s3"]
    for r in children:
        tags = r.data.tags
        assert tags["mlflow.parentRunId"] == parents["demo"]
        assert tags["rule"] == "register" and tags["cohort"] == "demo"
        assert tags["config_hash"] == chash and tags["note"] == "ok"
        assert r.info.run_name == f"register {tags['wildcard.subject']}"
        assert r.info.status == "FINISHED"
        assert r.data.params["reg.type"] == "affine"
        assert r.data.metrics["seconds"] >= 0
        assert r.data.metrics["peak_memory_mb"] > 10  # a Python process with mlflow loaded
        history = client.get_metric_history(r.info.run_id, "similarity")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2]
        assert [a.path for a in client.list_artifacts(r.info.run_id, "figures")] == [
            "figures/qc.png"
        ]
    if tracking._git_commit():
        assert parent.data.tags["git_commit"] == children[0].data.tags["git_commit"]


def test_experiment_prefix_names_the_experiment_of_parent_and_jobs(tmp_path, empty_store):
    _seed(empty_store, tracking_db(tmp_path))
    config = {**CONFIG, "tracking": {"uri": None, "experiment_prefix": "lab-x"}}
    parents = start_workflow(["demo"], config, [], tmp_path)
    with job_run("n4", "demo", {"subject": "s1"}, results_dir=tmp_path):
        pass
    end_workflow("FINISHED")

    uri = resolve_tracking_uri(None, tmp_path)
    client = MlflowClient(uri)
    assert client.get_experiment_by_name("sr7t/demo") is None
    exp = client.get_experiment_by_name("lab-x/demo")
    assert exp.artifact_location == (tmp_path / "mlflow/artifacts/lab-x/demo").as_uri()
    runs = client.search_runs([exp.experiment_id])
    assert {r.info.run_id for r in runs} >= {parents["demo"]} and len(runs) == 2
    (child,) = [r for r in runs if r.info.run_id != parents["demo"]]
    assert child.data.tags["mlflow.parentRunId"] == parents["demo"]


def test_failing_body_marks_child_failed_and_reraises(tmp_path, empty_store):
    _seed(empty_store, tracking_db(tmp_path))
    ran_after = False
    with pytest.raises(ValueError, match="not a number"):
        with job_run("teacher", "demo", {}, results_dir=tmp_path) as t:
            t.log_metrics({"loss": 1.0})
            raise ValueError("loss is not a number")
            ran_after = True  # pragma: no cover
    assert not ran_after
    (run,) = _runs(resolve_tracking_uri(None, tmp_path))
    assert run.info.status == "FAILED"
    assert run.info.run_name == "teacher"
    assert "mlflow.parentRunId" not in run.data.tags  # by hand: standalone run
    assert run.data.metrics["loss"] == 1.0 and "seconds" in run.data.metrics


def test_unreachable_server_warns_once_and_body_runs(tmp_path, capsys):
    uri = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.perf_counter()
    body_ran = False
    with job_run("n4", "demo", {"subject": "s1"}, results_dir=tmp_path, config_uri=uri) as t:
        t.log_metrics({"x": 1.0})
        t.log_params({"a": 1})
        t.log_artifact(__file__)
        body_ran = True
    elapsed = time.perf_counter() - t0
    assert body_ran and not t.active
    assert elapsed < 8, elapsed
    err = capsys.readouterr().err
    assert err.count("MLflow tracking unavailable") == 1
    assert f"MLflow tracking unavailable at {uri}:" in err
    assert "outputs are still written" in err

    # the workflow finding the store unavailable makes its jobs skip tracking at once
    uri2 = f"http://127.0.0.1:{_free_port()}"
    config = {**CONFIG, "tracking": {"uri": uri2}}
    assert start_workflow(["demo"], config, [], tmp_path) == {}
    assert capsys.readouterr().err.count(f"unavailable at {uri2}") == 1
    t0 = time.perf_counter()
    with job_run("n4", "demo", {"subject": "s1"}, results_dir=tmp_path, config_uri=uri2):
        pass
    assert time.perf_counter() - t0 < 1
    end_workflow("FAILED")


CHILD = textwrap.dedent(
    """
    import sys
    from sr7t.tracking import job_run
    i = int(sys.argv[1])
    with job_run("infer", "demo", {"subject": f"s{i}", "resolution_mm": "2"},
                 results_dir=sys.argv[2]) as t:
        for step in range(5):
            t.log_metrics({"psnr": 20 + i + step, "ssim": 0.5}, step=step)
        t.log_params({"i": i})
    assert t.active, "tracking was turned off"
    """
)


def test_parallel_children_all_land(tmp_path):
    parents = start_workflow(["demo"], CONFIG, [], tmp_path)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(i), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    end_workflow("FINISHED")
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert "locked" not in err and "unavailable" not in err, err
        assert "Creating initial MLflow database tables" not in err  # schema made once, up front

    runs = _runs(resolve_tracking_uri(None, tmp_path))
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents["demo"]]
    assert len(runs) == 9 and len(children) == 8
    assert sorted(int(r.data.params["i"]) for r in children) == list(range(8))
    for r in children:
        i = int(r.data.params["i"])
        assert r.info.status == "FINISHED"
        assert r.data.metrics["psnr"] == 20 + i + 4  # latest step
        assert r.data.tags["wildcard.resolution_mm"] == "2"


def test_real_tracking_server(tmp_path, monkeypatch):
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no huey workers
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed in finally
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", str(tmp_path / "art")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        uri = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "mlflow server did not come up"
            time.sleep(0.3)

        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        parents = start_workflow(["demo"], CONFIG, [], tmp_path)
        assert os.environ[tracking.ENV_URI] == uri
        art = tmp_path / "summary.json"
        art.write_text('{"psnr": 31.5}')
        with job_run("evaluate", "demo", {"model": "teacher"}, results_dir=tmp_path) as t:
            t.log_metrics({"psnr": 31.5})
            t.log_artifact(art)
        end_workflow("FINISHED")

        client = MlflowClient(uri)
        runs = _runs(uri)
        assert len(runs) == 2
        (child,) = [r for r in runs if r.info.run_id != parents["demo"]]
        assert child.data.tags["mlflow.parentRunId"] == parents["demo"]
        assert child.data.metrics["psnr"] == 31.5
        assert [a.path for a in client.list_artifacts(child.info.run_id)] == ["summary.json"]
        assert client.get_run(parents["demo"]).info.status == "FINISHED"
        assert not (tmp_path / "mlflow").exists()  # nothing went to the embedded store
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_locked_store_is_retried(tmp_path):
    """A real SQLite 'database is locked' is outlasted by the per-call backoff.

    MLflow's own sessions wait 20 s on a lock before failing, too long for a test, so the
    retried call here writes to a plain SQLite file with a short timeout while another
    connection holds it for 1 s.
    """
    import sqlite3
    import threading

    db_file = tmp_path / "contended.db"
    holder = sqlite3.connect(db_file, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(1.0, holder.execute, ["COMMIT"])

    class Writer:
        calls = 0

        def write(self, value: int) -> str:
            Writer.calls += 1
            with sqlite3.connect(db_file, timeout=0.05) as con:
                con.execute("INSERT INTO t VALUES (?)", (value,))
            return "written"

    release.start()
    try:
        assert tracking._RetryOnLock(Writer()).write(7) == "written"
    finally:
        release.join()
    assert Writer.calls >= 2  # it did meet the lock
    assert holder.execute("SELECT x FROM t").fetchall() == [(7,)]  # written once
    holder.close()


def test_a_job_says_where_its_run_lives_for_the_report(tmp_path, empty_store):
    """JobTracker.describe: what a stage writes to mlflow_run.json (the report's links)."""
    from sr7t.report.runs import runs_table, write_run_record

    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(CONFIG))
    _seed(empty_store, tracking_db(tmp_path))
    parents = start_workflow(["demo"], CONFIG, [str(cfg_file)], tmp_path)
    with job_run("teacher", "demo", {"cohort": "demo"}, results_dir=tmp_path) as t:
        record = write_run_record(t, tmp_path / "teacher" / "mlflow_run.json")
    end_workflow("FINISHED")
    (child,) = [r for r in _runs(resolve_tracking_uri(None, tmp_path)) if r.info.run_id == t.run_id]
    assert record["run_id"] == t.run_id and record["run_name"] == "teacher demo"
    assert record["experiment"] == "sr7t/demo"
    assert record["experiment_id"] == child.info.experiment_id
    assert record["parent_run_id"] == parents["demo"]
    rows = runs_table({"teacher (training)": tmp_path / "teacher" / "mlflow_run.json"})["rows"]
    assert rows["url"][0].endswith(f"/#/experiments/{child.info.experiment_id}/runs/{t.run_id}")


def test_an_untracked_job_says_so_in_its_run_record(tmp_path, monkeypatch):
    from sr7t.report.runs import write_run_record

    monkeypatch.setenv(tracking.ENV_URI, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv(tracking.ENV_DISABLED, "connection refused")
    with job_run("teacher", "demo", {}, results_dir=tmp_path) as t:
        record = write_run_record(t, tmp_path / "run.json")
    assert record["run_id"] is None and "connection refused" in record["reason"]
