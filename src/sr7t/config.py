"""Config validation against workflow/schemas/config.schema.yaml, defaults filled in.

Snakemake's own ``validate`` would work too; this one is importable without Snakemake and
names the offending key by its full path, e.g. ``config: teacher.lr: 'fast' is not of type
'number'``.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import jsonschema
import yaml


class ConfigError(ValueError):
    """A config or sample sheet that does not match its schema."""


def load_schema(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text())


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


def config_hash(config: dict) -> str:
    """First 12 hex digits of the SHA-256 of the canonical JSON of ``config``."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
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
