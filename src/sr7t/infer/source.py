"""Where an inference cohort's model comes from: config ``cohorts.<name>.model``.

- ``{from_cohort: C, name: M}``: model ``M`` (default the final student) of cohort ``C``'s
  results, built by the workflow when missing (``C`` may be the cohort itself);
- ``{bundle: PATH}``: a model bundle file (``model.pt``);
- ``{mlflow: NAME}`` or ``{mlflow: "models:/NAME/VERSION"}``: an MLflow registered model, its
  latest version or the one named, from the workflow's tracking store (the workflow registers
  each cohort's final student, config ``tracking.register_model``).

:func:`model_source` checks the key at workflow start (one line naming the key path) and
returns the plain spec the ``infer_model`` rule passes on; :func:`fetch_registered` downloads
a registered version's bundle.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from sr7t.config import ConfigError

STAGE_RE = re.compile(r"^student_stage([1-9][0-9]*)$")


def final_model(config: dict) -> str:
    """Name of the final model of the workflow's chain: the last student (the teacher when
    there are no distillation stages)."""
    k = int(config["distill"]["stages"])
    return f"student_stage{k}" if k else "teacher"


def model_source(
    name: str, cohort_cfg: dict, config: dict, trains: dict[str, bool], inference_only: bool
) -> dict | None:
    """The checked model spec of cohort ``name`` (None: it infers nothing).

    ``trains``: cohort -> whether it has training subjects (so it makes models);
    ``inference_only``: the cohort has no subject with a 7T. Returns ``{"source": "cohort",
    "cohort", "model"}``, ``{"source": "bundle", "path"}`` or ``{"source": "mlflow", "uri"}``.
    Raises :class:`ConfigError` naming the key path.
    """
    key = f"cohorts.{name}.model"
    spec = cohort_cfg.get("model")
    if spec is None:
        if inference_only:
            raise ConfigError(
                f"config: {key}: required for an inference-only cohort (no subject has a 7T "
                "scan): {from_cohort: C, name: M}, {bundle: PATH} or {mlflow: NAME}"
            )
        spec = {"from_cohort": name}
    if "bundle" in spec:
        path = Path(spec["bundle"])
        if not path.is_file():
            raise ConfigError(f"config: {key}.bundle: model file {path} does not exist")
        return {"source": "bundle", "path": str(path)}
    if "mlflow" in spec:
        uri = spec["mlflow"]
        if uri.startswith("models:/") and not re.match(r"^models:/[^/]+(/[^/]+)?$", uri):
            raise ConfigError(f"config: {key}.mlflow: {uri!r} is not models:/<name>[/<version>]")
        return {"source": "mlflow", "uri": uri}
    other = spec["from_cohort"]
    if other not in trains:
        raise ConfigError(f"config: {key}.from_cohort: unknown cohort {other!r}")
    if not trains[other]:
        raise ConfigError(
            f"config: {key}.from_cohort: cohort {other!r} trains no model (no training subject)"
        )
    model = spec.get("name") or final_model(config)
    stage = STAGE_RE.match(model)
    if stage and int(stage.group(1)) > int(config["distill"]["stages"]):
        raise ConfigError(
            f"config: {key}.name: {model} but distill.stages is {config['distill']['stages']}"
        )
    if model == "regression" and not config["evaluate"]["regression_baseline"]:
        raise ConfigError(f"config: {key}.name: regression but evaluate.regression_baseline is off")
    return {"source": "cohort", "cohort": other, "model": model}


def describe(spec: dict) -> str:
    """One line saying where the model comes from."""
    if spec["source"] == "cohort":
        return f"model {spec['model']} of cohort {spec['cohort']}"
    if spec["source"] == "bundle":
        return f"bundle {spec['path']}"
    return f"MLflow registered model {spec['uri']}"


def parse_registered(uri: str) -> tuple[str, str | None]:
    """``"NAME"`` or ``"models:/NAME[/VERSION]"`` -> (name, version or None for the latest)."""
    if uri.startswith("models:/"):
        name, _, version = uri[len("models:/") :].partition("/")
        return name, (version if version and version != "latest" else None)
    return uri, None


def fetch_registered(uri: str, tracking_uri: str, dst: str | Path) -> dict:
    """Download the bundle of registered model ``uri`` (:func:`parse_registered`) from the
    MLflow store ``tracking_uri`` into ``dst`` (a ``model.pt``); returns its name, version,
    run id and source. Raises ``ValueError`` (one line) when it does not exist."""
    import tempfile

    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    name, version = parse_registered(uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if version is None:
            versions = client.search_model_versions(f"name='{name}'")
            if not versions:
                raise ValueError(f"MLflow registered model {name!r} has no version")
            mv = max(versions, key=lambda v: int(v.version))
        else:
            mv = client.get_model_version(name, version)
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(download_artifacts(artifact_uri=mv.source, dst_path=tmp))
            bundles = [local] if local.is_file() else sorted(local.rglob("*.pt"))
            if len(bundles) != 1:
                raise ValueError(
                    f"MLflow model {name} version {mv.version}: expected one .pt bundle in "
                    f"{mv.source}, found {[b.name for b in bundles]}"
                )
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundles[0], dst)
    except MlflowException as exc:
        message = " ".join(str(exc).split())[:300]
        raise ValueError(f"MLflow registered model {uri} at {tracking_uri}: {message}") from None
    return {"name": name, "version": str(mv.version), "run_id": mv.run_id, "source": mv.source}
