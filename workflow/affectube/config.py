"""params.yaml: loading, ``key=value`` overrides, schema validation with defaults.

``params.yaml`` is the only configuration. Snakemake reads it as its configfile and
validates it with ``snakemake.utils.validate`` against ``schemas/params.schema.yaml``;
the package validates it the same way (with defaults filled in) when a command reads
it directly, so a wrong value fails with one line naming the key and the allowed range.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from affectube.errors import ConfigError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "params.schema.yaml"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def load_params(path: str | Path = "params.yaml", overrides: Iterable[str] = ()) -> dict:
    """Read params.yaml, apply ``section.key=value`` overrides, validate, fill defaults."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    for item in overrides:
        apply_override(cfg, item)
    return validate(cfg, source=str(path))


def apply_override(cfg: dict, item: str) -> None:
    """Apply one ``a.b.c=value`` override (value parsed as YAML), like ``dvc exp run -S``."""
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part} is not a section")
    node[parts[-1]] = yaml.safe_load(raw)


def validate(cfg: dict, source: str = "params.yaml", schema: dict | None = None) -> dict:
    """Validate against the schema, filling defaults; raise ConfigError naming the key."""
    import jsonschema

    schema = schema or load_schema()
    cfg = copy.deepcopy(cfg)
    validator_cls = _with_defaults(jsonschema.Draft202012Validator)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key, message = _describe(err)
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {key}: {message}{more}")
    return cfg


def _describe(err) -> tuple[str, str]:
    """(dotted key, one-line message) of a jsonschema error; unknown keys are named with a suggestion."""
    import difflib

    if err.validator in ("oneOf", "anyOf") and err.context:
        # name the branch that fits the value's type (e.g. "5000 is greater than the maximum of 1280"
        # rather than "5000 is not valid under any of the given schemas")
        fitting = [e for e in err.context if e.validator != "type"]
        if fitting:
            return _describe(min(fitting, key=lambda e: len(e.absolute_path)))
        types = [str(e.validator_value) for e in err.context]
        return ".".join(str(p) for p in err.absolute_path), f"{err.instance!r} is not of type {' or '.join(types)}"
    path = [str(p) for p in err.absolute_path]
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = list(err.schema.get("properties", {}))
        unknown = [k for k in err.instance if k not in allowed]
        if unknown and allowed:
            name = str(unknown[0])
            close = difflib.get_close_matches(name, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            return ".".join([*path, name]), f"unknown key ({hint}allowed: {', '.join(allowed)})"
    if err.validator == "required" and isinstance(err.instance, dict):
        missing = [k for k in err.validator_value if k not in err.instance]
        if missing:
            return ".".join([*path, str(missing[0])]), "missing (this key is required)"
    message = err.message.replace("\n", " ")
    if len(message) > 300:
        message = message[:300] + "..."
    return ".".join(path) or "(top level)", message


def _with_defaults(base):
    """A validator class that fills in ``default`` values of object properties."""
    import jsonschema

    validate_props = base.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def parse_cfg(value: str) -> dict:
    """Parse the ``--cfg`` argument rules pass: a JSON object, or ``@path`` to a JSON/YAML file."""
    if value.startswith("@"):
        text = Path(value[1:]).read_text()
        return yaml.safe_load(text) or {}
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--cfg: not a JSON object: {exc}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a value")
    parser.add_argument("--print", action="store_true", help="print the validated params with defaults")


def run(args: argparse.Namespace) -> int:
    cfg = load_params(args.params, args.set)
    if args.print:
        print(yaml.safe_dump(cfg, sort_keys=False))
    else:
        print(f"{args.params}: OK")
    return 0
