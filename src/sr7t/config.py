"""The config: one schema with every default, resolved once, carried everywhere.

Defaults live only in ``sr7t/schemas/config.schema.yaml`` (shipped with the package).
:func:`resolve` fills them into a partial config and checks it (the workflow does so at start,
tests and stage functions called by hand do the same), so a stage run outside the workflow
builds exactly what the workflow builds. The workflow writes the resolved config of each
cohort beside its results (``results/<cohort>/config.resolved.yaml``, :func:`write_resolved`)
and every model bundle carries it (``meta["config"]``).

Snakemake's own ``validate`` would work too; this one is importable without Snakemake and
names the offending key by its full path, e.g. ``config: teacher.lr: 'fast' is not of type
'number'``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config or sample sheet that does not match its schema."""


def load_schema(name_or_path: str | Path) -> dict:
    """A schema shipped with the package (``"config"``, ``"samples"``) or a schema file."""
    if str(name_or_path) in ("config", "samples"):
        return copy.deepcopy(_packaged_schema(str(name_or_path)))
    return yaml.safe_load(Path(name_or_path).read_text())


@cache
def _packaged_schema(name: str) -> dict:
    text = resources.files("sr7t").joinpath("schemas", f"{name}.schema.yaml").read_text()
    return yaml.safe_load(text)


def resolve(cfg: dict | None = None, check: bool = True) -> dict:
    """``cfg`` with every schema default filled in, validated (and, with ``check``, through
    :func:`check_models`); a new dict, ``cfg`` is left alone.

    ``cfg`` may be partial: ``resolve({})`` is the default config of every section. Only the
    workflow needs ``cohorts`` (:func:`resolve_workflow_config`). Raises :class:`ConfigError`.
    """
    schema = _packaged_schema("config")
    partial = {k: v for k, v in schema.items() if k != "required"}
    resolved = validate(cfg or {}, partial)
    if check:
        check_models(resolved)
    return resolved


def resolve_workflow_config(cfg: dict) -> dict:
    """The workflow's config (cohorts required), resolved and checked."""
    resolved = validate(cfg, _packaged_schema("config"))
    check_models(resolved)
    return resolved


def bundle_config(meta: dict) -> dict:
    """The resolved config a model bundle carries (``meta["config"]``). Bundles written before
    it was carried whole hold only their data and model sections: the others are the schema's
    defaults (what those models' workflows used unless their config said otherwise)."""
    carried = meta.get("config") or {}
    if "preprocess" in carried:
        return carried
    return {**resolve({}, check=False), **carried}


def write_resolved(cfg: dict, path: str | Path) -> Path:
    """Write a resolved config as YAML (the file every model rule reads and each bundle
    carries)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    plain = json.loads(json.dumps(cfg, default=str))
    path.write_text(
        "# The whole resolved config (schema defaults filled in) that made these results.\n"
        + yaml.safe_dump(plain, sort_keys=False)
    )
    return path


def read_resolved(path: str | Path) -> dict:
    """A config written by :func:`write_resolved`, checked again against the schema."""
    return resolve(yaml.safe_load(Path(path).read_text()) or {})


def validate(instance: dict, schema: dict, what: str = "config") -> dict:
    """Validate ``instance`` against ``schema``; return a copy with schema defaults filled in.

    Raises :class:`ConfigError` listing every problem with its key path.
    """
    filled = copy.deepcopy(instance)
    validator_cls = _with_defaults(jsonschema.Draft202012Validator)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{what}: {_where(e)}: {_message(e)}" for e in errors]
        raise ConfigError("\n".join(lines))
    return filled


# Keys of ``distill`` that hold one value per stage (or one for all), and whether a single
# value is itself a list (a per-level list: then the per-stage form is a list of lists).
PER_STAGE_KEYS = {
    "steps_per_stage": False,
    "channels": True,
    "attention_levels": True,
    "feature_weight": False,
    "data_weight": False,
    "test_time_flips": False,
    "test_time_rotations": False,
    "on_path": False,
    "parent_steps": False,
    "data_weight_power": False,
}


def _is_per_stage_list(value, nested: bool) -> bool:
    if not isinstance(value, list | tuple):
        return False
    return not nested or bool(value and isinstance(value[0], list | tuple))


def per_stage(value, stage: int, nested: bool):
    """Pick stage ``stage`` (1-based) from a per-stage list, or return the shared value.

    A per-stage list of one entry holds for every stage. ``nested``: a single value is itself
    a list (per level), so only a list of lists is per stage.
    """
    if _is_per_stage_list(value, nested):
        if len(value) == 1:
            return value[0]
        if stage > len(value):
            raise ValueError(f"stage {stage} has no entry in {value}")
        return value[stage - 1]
    return value


def check_models(config: dict) -> None:
    """Cross-key checks the schema cannot express; raises :class:`ConfigError`.

    - Every per-stage key of ``distill`` (:data:`PER_STAGE_KEYS`) is one value for every
      stage, or a list of 1 or ``distill.stages`` entries (a later ``--configfile`` that
      changes the number of stages must change them all).
    - The teacher's ``attention_levels`` and each distillation stage's ``channels`` and
      ``attention_levels`` need one entry per level of the teacher (a later ``--configfile``
      that changes the number of levels must change them all).
    """
    teacher, distill = config.get("teacher") or {}, config.get("distill") or {}
    levels = len(teacher.get("channels") or [])
    n_stages = int(distill.get("stages", 0))
    problems = []
    if len(teacher.get("attention_levels") or []) != levels:
        problems.append(
            f"teacher.attention_levels {teacher.get('attention_levels')} needs {levels} "
            f"entries, one per level of teacher.channels {teacher.get('channels')}"
        )
    counts_ok = True
    if n_stages > 0:  # with no stages nothing reads them
        for key, nested in PER_STAGE_KEYS.items():
            value = distill.get(key)
            if _is_per_stage_list(value, nested) and len(value) not in (1, n_stages):
                counts_ok = False
                problems.append(
                    f"distill.{key} has {len(value)} entries for {n_stages} stages "
                    f"(needs 1 or {n_stages})"
                )
    for k in range(1, n_stages + 1) if counts_ok else ():
        for key in ("channels", "attention_levels"):
            value = distill.get(key)
            if value is None:
                continue
            chosen = per_stage(value, k, nested=True)
            if len(chosen) != levels:
                problems.append(
                    f"distill.{key} for stage {k} is {chosen}: needs {levels} entries, one "
                    f"per level of teacher.channels {teacher.get('channels')}"
                )
    if problems:
        raise ConfigError("config: " + "\nconfig: ".join(problems))


def config_hash(config: dict) -> str:
    """First 12 hex digits of the SHA-256 of the config's canonical JSON (sorted keys, no
    spaces): the ``config_hash`` tag of every MLflow run."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _where(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top level)"


def _message(error) -> str:
    if error.validator == "additionalProperties":
        return f"{error.message} (a misspelt key? see README § Config)"
    return error.message


def _with_defaults(validator_class):
    """A validator that fills ``default`` values of object properties before validating them."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})
