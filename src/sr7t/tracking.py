"""MLflow tracking: one experiment per cohort, one parent run per workflow invocation, one
child run per job (rule + wildcards).

The workflow engine calls :func:`start_workflow` once (Snakemake ``onstart``), which creates a
parent run per cohort and exports their ids in ``SR7T_MLFLOW_PARENTS`` so every job process,
local or SLURM, inherits them; each job wraps its work in :func:`job_run`; ``onsuccess`` /
``onerror`` call :func:`end_workflow`.

Tracking never decides whether a stage's outputs are valid: when the store is unreachable or an
MLflow call fails, one warning goes to stderr and the tracker becomes a no-op, so the stage goes
on and its outputs are still written.

Store: ``MLFLOW_TRACKING_URI`` (environment) wins over the config's ``tracking.uri``, which wins
over the embedded default ``sqlite:///<abs results_dir>/mlflow/mlflow.db``. A tracking server
URI (``http://host:port``) is used unchanged.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import re
import resource
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import yaml

from sr7t.config import config_hash
from sr7t.paths import tracking_db

ENV_PARENTS = "SR7T_MLFLOW_PARENTS"  # JSON map cohort -> parent run id
ENV_URI = "SR7T_MLFLOW_URI"  # the store that holds those parent runs
ENV_CONFIG_HASH = "SR7T_CONFIG_HASH"
ENV_DISABLED = "SR7T_MLFLOW_DISABLED"  # set when start_workflow found the store unavailable
ENV_PREFIX = "SR7T_MLFLOW_EXPERIMENT_PREFIX"  # config tracking.experiment_prefix, for the jobs
DEFAULT_PREFIX = "sr7t"

# mlflow.utils.validation limits (MLflow 3.x); kept here so importing this module stays cheap.
MAX_PARAM_VALUE_CHARS = 6000
MAX_TAG_VALUE_CHARS = 8000
MAX_KEY_CHARS = 250
MAX_BATCH = 100

# HTTP limits used unless the user set the MLflow variables: the first contact fails fast (a
# closed port or a dead host must not stall a job), later calls ride out a short server hiccup.
_HTTP_FIRST = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
_HTTP_STEADY = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
# MLflow's SQLite sessions already wait up to 20 s on a lock (PRAGMA busy_timeout); past that,
# a couple of retries with backoff, so the worst case stays about a minute, not forever.
_LOCKED_BACKOFF_S = (0.5, 2.0)

_UNAVAILABLE: dict[str, str] = {}  # uri -> reason, once per process: one warning, then no-op

T = TypeVar("T")


# --------------------------------------------------------------------------- small pure helpers


def resolve_tracking_uri(config_uri: str | None, results_dir: str | Path = "results") -> str:
    """The tracking URI to use.

    ``MLFLOW_TRACKING_URI`` from the environment wins, then ``config_uri`` (config key
    ``tracking.uri``; None or "" = default), then the embedded SQLite store
    ``sqlite:///<absolute results_dir>/mlflow/mlflow.db``.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if env:
        return env
    if config_uri:
        return str(config_uri)
    return f"sqlite:///{tracking_db(results_dir).absolute()}"


def experiment_name(cohort: str, prefix: str | None = None) -> str:
    """MLflow experiment of a cohort: ``"<prefix>/<cohort>"``.

    ``prefix`` None: the workflow's (``SR7T_MLFLOW_EXPERIMENT_PREFIX``, exported by
    :func:`start_workflow` from config ``tracking.experiment_prefix``), else ``sr7t``.
    """
    if prefix is None:
        prefix = os.environ.get(ENV_PREFIX) or DEFAULT_PREFIX
    return f"{prefix}/{cohort}"


def flatten_params(d: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> flat MLflow params: ``{"teacher": {"lr": 1e-4}}`` -> ``{"teacher.lr":
    "0.0001"}``.

    Lists of mappings are flattened by index (``cohorts.0.name``); other lists become JSON.
    Keys are made MLflow-safe (letters, digits, ``_-. /``) and values are truncated to MLflow's
    6000-character limit.
    """
    return {k: v[:MAX_PARAM_VALUE_CHARS] for k, v in _flatten(d, prefix).items()}


def _flatten(d: Any, prefix: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(d, Mapping):
        items = [(str(k), v) for k, v in d.items()]
    elif isinstance(d, list | tuple) and any(isinstance(v, Mapping) for v in d):
        items = [(str(i), v) for i, v in enumerate(d)]
    else:
        return {_safe_key(prefix or "value"): _param_str(d)}
    for key, value in items:
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, Mapping) or (
            isinstance(value, list | tuple) and any(isinstance(v, Mapping) for v in value)
        ):
            out.update(_flatten(value, full))
        else:
            out[_safe_key(full)] = _param_str(value)
    return out


def _param_str(value: Any) -> str:
    if isinstance(value, list | tuple):
        return json.dumps(list(value), default=str)
    return str(value)


def _safe_key(key: str) -> str:
    return re.sub(r"[^\w\-. /]", "_", key)[:MAX_KEY_CHARS]


def _warn(message: str) -> None:
    print(f"sr7t: {message}", file=sys.stderr, flush=True)


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    """HEAD of the git repository around the working directory, or None outside one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _git_dirty() -> bool | None:
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(out.stdout.strip())


def _peak_memory_mb() -> float:
    """Peak resident memory in MiB of this process or its largest finished child.

    ``ru_maxrss`` of RUSAGE_CHILDREN is the peak of the largest single descendant; adding it to
    our own peak would count two peaks that need not coincide, so the larger one is reported.
    """
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak = max(self_rss, child_rss)
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB here


def _parents_from_env() -> dict[str, str]:
    raw = os.environ.get(ENV_PARENTS, "")
    if not raw:
        return {}
    try:
        parents = json.loads(raw)
    except json.JSONDecodeError:
        _warn(f"{ENV_PARENTS} is not JSON ({raw[:80]!r}); job runs are not nested")
        return {}
    return {str(k): str(v) for k, v in parents.items()} if isinstance(parents, dict) else {}


def _artifact_location(uri: str, experiment: str) -> str | None:
    """Experiment artifact folder beside a SQLite store (absolute file URI); None otherwise,
    so a tracking server keeps its own ``--default-artifact-root``."""
    if not uri.startswith("sqlite:///"):
        return None
    db = uri[len("sqlite:///") :].split("?", 1)[0]
    if not db or db == ":memory:":
        return None
    return (Path(db).absolute().parent / "artifacts" / experiment).as_uri()


@contextmanager
def _env_defaults(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables the user has not set, for the duration of one MLflow call."""
    added = [k for k in values if k not in os.environ]
    for k in added:
        os.environ[k] = values[k]
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


@contextmanager
def _quiet_db_errors() -> Iterator[None]:
    """Drop MLflow's full-traceback ERROR log of a database error: a lock that a retry outlasts
    is no error, and one that persists gets our single warning instead."""
    logger = logging.getLogger("mlflow.store.db.utils")
    quiet = _BelowError()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _is_locked(exc: BaseException) -> bool:
    return "database is locked" in str(exc).lower()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:400]}"


# --------------------------------------------------------------------------- guarded store


class _Store:
    """An MlflowClient behind a guard: any failure prints one warning and disables it."""

    def __init__(self, uri: str):
        self.uri = uri
        self._client = None
        self._contacted = False
        self._is_http = uri.startswith(("http://", "https://"))

    @property
    def available(self) -> bool:
        return self.uri not in _UNAVAILABLE

    def disable(self, reason: str) -> None:
        if self.uri not in _UNAVAILABLE:
            _UNAVAILABLE[self.uri] = reason
            _warn(f"MLflow tracking unavailable at {self.uri}: {reason}; outputs are still written")

    def call(self, fn: Callable[[Any], T]) -> T | None:
        """Run ``fn(client)``; None (and tracking off for this URI) if it fails."""
        if not self.available:
            return None
        limits = (_HTTP_STEADY if self._contacted else _HTTP_FIRST) if self._is_http else {}
        try:
            with _env_defaults(limits), _quiet_db_errors():
                if self._client is None:
                    from mlflow import MlflowClient  # import late: mlflow takes ~2 s to import

                    self._client = _RetryOnLock(MlflowClient(tracking_uri=self.uri))
                result = fn(self._client)
        except Exception as exc:  # noqa: BLE001 - tracking must never stop a stage
            self.disable(_one_line(exc))
            return None
        self._contacted = True
        return result


class _RetryOnLock:
    """An MlflowClient whose every method retries a SQLite 'database is locked' failure.

    Retrying per MLflow call, not per block of calls, so a retry never repeats a call that
    already succeeded (a second parent run, say).
    """

    def __init__(self, client: Any):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            for pause in _LOCKED_BACKOFF_S:
                try:
                    return attr(*args, **kwargs)
                except Exception as exc:
                    if not _is_locked(exc):
                        raise
                    time.sleep(pause)
            return attr(*args, **kwargs)

        return call


def _get_or_create_experiment(client: Any, name: str, artifact_location: str | None) -> str:
    """Experiment id for ``name``, creating it (or restoring it if deleted); safe when several
    processes race to create it."""
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location)
        except Exception:
            exp = client.get_experiment_by_name(name)  # another process won the race
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    return exp.experiment_id


def _log_batch(
    client: Any,
    run_id: str,
    metrics: list | None = None,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    from mlflow.entities import Param, RunTag

    metrics = list(metrics or [])
    param_list = [Param(k, v) for k, v in (params or {}).items()]
    tag_list = [RunTag(k, v) for k, v in (tags or {}).items()]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    for i in range(0, len(param_list), MAX_BATCH):
        client.log_batch(run_id, params=param_list[i : i + MAX_BATCH])
    for i in range(0, len(tag_list), MAX_BATCH):
        client.log_batch(run_id, tags=tag_list[i : i + MAX_BATCH])


def _common_tags() -> dict[str, str]:
    tags = {"host": socket.gethostname(), "mlflow.user": getpass.getuser()}
    commit = _git_commit()
    if commit:
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    return tags


# --------------------------------------------------------------------------- workflow (parent)


def start_workflow(
    cohorts: list[str],
    config: Mapping[str, Any],
    config_files: list[str],
    results_dir: str | Path = "results",
) -> dict[str, str]:
    """Start one parent run per cohort for this workflow invocation.

    Creates (or reuses) each cohort's experiment ``<prefix>/<cohort>`` (config
    ``tracking.experiment_prefix``, default ``sr7t``; artifacts in
    ``<results_dir>/mlflow/artifacts/<experiment>`` for the embedded store), initialises the
    store's schema here so parallel jobs never race on it, tags each parent run (git commit,
    config hash, host, user, invocation), logs the whole config as ``config/config.yaml``, the
    config files under ``config/files/``, and every flattened config param short enough for
    MLflow. Exports ``SR7T_MLFLOW_PARENTS`` (JSON cohort -> run id), ``SR7T_MLFLOW_URI``,
    ``SR7T_MLFLOW_EXPERIMENT_PREFIX`` and ``SR7T_CONFIG_HASH`` for the jobs, which inherit
    the environment.

    Returns the cohort -> parent run id map; empty if tracking is unavailable (then jobs skip
    tracking too, saying so once each).
    """
    tracking_cfg = config.get("tracking") or {}
    uri = resolve_tracking_uri(tracking_cfg.get("uri"), results_dir)
    prefix = tracking_cfg.get("experiment_prefix") or DEFAULT_PREFIX
    os.environ[ENV_PREFIX] = prefix
    plain_config = json.loads(json.dumps(dict(config), default=str))
    chash = config_hash(plain_config)
    os.environ[ENV_CONFIG_HASH] = chash
    os.environ[ENV_URI] = uri
    os.environ[ENV_PARENTS] = "{}"
    os.environ.pop(ENV_DISABLED, None)

    store = _Store(uri)
    if store.call(lambda c: c.search_experiments(max_results=1)) is None:
        os.environ[ENV_DISABLED] = _UNAVAILABLE.get(uri, "unknown error")
        return {}

    now = dt.datetime.now(dt.UTC)
    tags = _common_tags()
    tags.update(
        {
            "kind": "workflow",
            "config_hash": chash,
            "user": getpass.getuser(),
            "invocation": shlex.join(sys.argv)[:MAX_TAG_VALUE_CHARS],
            "started_utc": now.isoformat(timespec="seconds"),
        }
    )
    dirty = _git_dirty()
    if dirty is not None:
        tags["git_dirty"] = str(dirty).lower()
    all_params = _flatten(plain_config, "")
    short_params = {k: v for k, v in all_params.items() if len(v) <= MAX_PARAM_VALUE_CHARS}
    config_yaml = yaml.safe_dump(plain_config, sort_keys=False)
    files = [Path(f) for f in config_files]

    def start_one(client: Any, cohort: str) -> str:
        name = experiment_name(cohort, prefix)
        exp_id = _get_or_create_experiment(client, name, _artifact_location(uri, name))
        run = client.create_run(
            exp_id,
            run_name=f"workflow {now:%Y-%m-%d %H:%M:%S} UTC",
            tags={**tags, "cohort": cohort},
        )
        run_id = run.info.run_id
        _log_batch(client, run_id, params=short_params)
        client.log_text(run_id, config_yaml, "config/config.yaml")
        for f in files:
            if f.is_file():
                client.log_artifact(run_id, str(f), "config/files")
        return run_id

    parents: dict[str, str] = {}
    for cohort in cohorts:
        run_id = store.call(lambda c, cohort=cohort: start_one(c, cohort))
        if run_id is None:
            os.environ[ENV_DISABLED] = _UNAVAILABLE.get(uri, "unknown error")
            break
        parents[cohort] = run_id
    os.environ[ENV_PARENTS] = json.dumps(parents)
    return parents


def end_workflow(status: str = "FINISHED") -> None:
    """End the parent runs listed in ``SR7T_MLFLOW_PARENTS`` with ``status`` ("FINISHED",
    "FAILED" or "KILLED"), then forget them so later runs in this process are not nested."""
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"status must be FINISHED, FAILED or KILLED, not {status!r}")
    parents = _parents_from_env()
    uri = os.environ.get(ENV_URI) or resolve_tracking_uri(None)
    if parents and not os.environ.get(ENV_DISABLED):
        store = _Store(uri)
        for run_id in parents.values():
            store.call(lambda c, r=run_id: c.set_terminated(r, status))
    os.environ.pop(ENV_PARENTS, None)


# --------------------------------------------------------------------------- jobs (children)


class JobTracker:
    """Logs one job's metrics, params, tags and artifacts to its MLflow run.

    Every method is a no-op once tracking is unavailable (``run_id`` is then None for a run
    that never started). Bad values (a non-numeric metric, a missing file) are skipped with a
    warning rather than raised: tracking must never fail a stage.
    """

    def __init__(self, store: _Store | None, run_id: str | None):
        self._store = store
        self.run_id = run_id

    @property
    def active(self) -> bool:
        return self._store is not None and self.run_id is not None and self._store.available

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Numeric metrics (any float-convertible value); ``step`` e.g. the epoch."""
        if not self.active:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            try:
                batch.append(Metric(_safe_key(str(key)), float(value), ts, int(step or 0)))
            except (TypeError, ValueError):
                _warn(f"metric {key!r}={value!r} is not a number; not logged")
        self._call(lambda c: _log_batch(c, self.run_id, metrics=batch))

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params, nested mappings flattened to ``a.b`` keys, values capped at 6000 chars."""
        if self.active:
            flat = flatten_params(params)
            self._call(lambda c: _log_batch(c, self.run_id, params=flat))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.active:
            clean = {_safe_key(str(k)): str(v)[:MAX_TAG_VALUE_CHARS] for k, v in tags.items()}
            self._call(lambda c: _log_batch(c, self.run_id, tags=clean))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Copy a file (or folder) into the run's artifacts, under ``artifact_path``."""
        if not self.active:
            return
        if not Path(path).exists():
            _warn(f"artifact {path} does not exist; not logged")
            return
        self._call(lambda c: c.log_artifact(self.run_id, str(path), artifact_path))

    def log_figure(self, path: str | Path) -> None:
        """A figure file (PNG/SVG/HTML) under the run's ``figures/``."""
        self.log_artifact(path, "figures")

    def register_model(
        self, path: str | Path, name: str, tags: Mapping[str, Any] | None = None
    ) -> str | None:
        """Log the bundle ``path`` under the run's ``model/`` artifacts and register it as a
        new version of the MLflow registered model ``name`` (created when new); returns the
        version, or None when tracking is unavailable (one warning, as every tracking call).
        :func:`sr7t.infer.source.fetch_registered` downloads it again by name."""
        if not self.active:
            return None
        clean = {_safe_key(str(k)): str(v)[:MAX_TAG_VALUE_CHARS] for k, v in (tags or {}).items()}

        def register(client: Any) -> str:
            from mlflow.exceptions import MlflowException

            client.log_artifact(self.run_id, str(path), "model")
            try:
                client.create_registered_model(name)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
            source = f"{client.get_run(self.run_id).info.artifact_uri}/model"
            version = client.create_model_version(name, source, run_id=self.run_id, tags=clean)
            return str(version.version)

        assert self._store is not None
        return self._store.call(register)

    def describe(self) -> dict[str, Any]:
        """Where this job's run lives, for a link to it: ``tracking_uri``, ``experiment_id``,
        ``experiment``, ``run_id``, ``run_name``, ``parent_run_id`` (None when not nested);
        or ``{"run_id": None, "reason": ...}`` when tracking is off or unreachable."""
        if not self.active:
            reason = "tracking disabled"
            if self._store is not None:
                reason = _UNAVAILABLE.get(self._store.uri, "tracking unavailable")
            return {"run_id": None, "reason": reason}
        assert self._store is not None

        def look_up(client: Any) -> dict[str, Any]:
            run = client.get_run(self.run_id)
            experiment = client.get_experiment(run.info.experiment_id)
            return {
                "tracking_uri": self._store.uri,
                "experiment_id": run.info.experiment_id,
                "experiment": experiment.name,
                "run_id": self.run_id,
                "run_name": run.info.run_name,
                "parent_run_id": run.data.tags.get("mlflow.parentRunId"),
            }

        found = self._store.call(look_up)
        return found or {"run_id": None, "reason": _UNAVAILABLE.get(self._store.uri, "unknown")}

    def _call(self, fn: Callable[[Any], Any]) -> None:
        assert self._store is not None
        self._store.call(fn)


@contextmanager
def job_run(
    rule: str,
    cohort: str,
    wildcards: Mapping[str, Any],
    params: Mapping[str, Any] | None = None,
    results_dir: str | Path = "results",
    config_uri: str | None = None,
) -> Iterator[JobTracker]:
    """One MLflow child run around one job; yields a :class:`JobTracker`.

    The run is nested under the cohort's parent run from ``SR7T_MLFLOW_PARENTS`` (and goes to
    the store that holds it); without one (a job run by hand) it is a standalone run in the
    cohort's experiment. Run name ``"<rule> <wildcard values>"``; tags rule, cohort,
    ``wildcard.<name>``, git commit, config hash (``SR7T_CONFIG_HASH``), host, SLURM job id.
    On exit logs ``seconds`` (wall time of the body) and ``peak_memory_mb`` (MiB, see
    :func:`_peak_memory_mb`) and ends the run FINISHED, or FAILED (KILLED on Ctrl-C) if the body
    raised; the exception is re-raised. If tracking is unavailable the body still runs.
    """
    wildcards = {str(k): str(v) for k, v in dict(wildcards).items()}
    parent_id = _parents_from_env().get(cohort)
    # inside a workflow, the store it chose (and that holds the parents) wins
    uri = os.environ.get(ENV_URI) or resolve_tracking_uri(config_uri, results_dir)

    disabled = os.environ.get(ENV_DISABLED)
    store = _Store(uri)
    run_id = None
    if disabled and uri == os.environ.get(ENV_URI):
        store.disable(f"{disabled} (found by the workflow at start)")
    else:
        run_id = store.call(lambda c: _start_job(c, uri, rule, cohort, wildcards, parent_id))
    tracker = JobTracker(store, run_id)
    if params and run_id:
        tracker.log_params(params)

    t0 = time.perf_counter()
    status = "FINISHED"
    try:
        yield tracker
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except SystemExit as exc:
        status = "FINISHED" if exc.code in (None, 0) else "FAILED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        if tracker.active:
            seconds = time.perf_counter() - t0
            tracker.log_metrics({"seconds": seconds, "peak_memory_mb": _peak_memory_mb()})
            store.call(lambda c: c.set_terminated(run_id, status))


def _start_job(
    client: Any,
    uri: str,
    rule: str,
    cohort: str,
    wildcards: dict[str, str],
    parent_id: str | None,
) -> str:
    name = experiment_name(cohort)
    exp_id = _get_or_create_experiment(client, name, _artifact_location(uri, name))
    tags = _common_tags()
    tags.update({"kind": "job", "rule": rule, "cohort": cohort})
    tags.update({_safe_key(f"wildcard.{k}"): v for k, v in wildcards.items()})
    if os.environ.get(ENV_CONFIG_HASH):
        tags["config_hash"] = os.environ[ENV_CONFIG_HASH]
    if os.environ.get("SLURM_JOB_ID"):
        tags["slurm_job_id"] = os.environ["SLURM_JOB_ID"]
    if parent_id:
        tags["mlflow.parentRunId"] = parent_id
    run_name = " ".join([rule, *wildcards.values()])
    return client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id
