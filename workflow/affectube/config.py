"""params.yaml: loading, ``key=value`` overrides, schema validation with defaults.

``params.yaml`` is the only configuration. Snakemake reads it as its configfile and
validates it with ``snakemake.utils.validate`` against ``schemas/params.schema.yaml``;
the package validates it the same way (with defaults filled in) when a command reads
it directly, so a wrong value fails with one line naming the key and the allowed range.
"""

from __future__ import annotations

import argparse
import copy
import functools
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from affectube.errors import ConfigError

SCHEMA_PATH = Path(__file__).parent / "schemas" / "params.schema.yaml"


def load_schema() -> dict:
    """The params schema (a fresh copy: callers may modify it). Parsed once per version of the
    file: :func:`sections` runs per video in the faces stage and per call of library functions."""
    return copy.deepcopy(_parsed_schema(SCHEMA_PATH.stat().st_mtime_ns))


@functools.lru_cache(maxsize=2)
def _parsed_schema(mtime_ns: int) -> dict:
    del mtime_ns  # the cache key: an edited schema is read again
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def load_params(path: str | Path = "params.yaml", overrides: Iterable[str] = ()) -> dict:
    """Read params.yaml, apply ``section.key=value`` overrides, validate, fill defaults."""
    path = Path(path)
    cfg = _read_yaml(path)
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


def apply_overrides(cfg: dict, overrides: dict) -> dict:
    """Apply an experiment's ``{section.key: value}`` overrides to ``cfg`` in place; return it."""
    for key, value in (overrides or {}).items():
        apply_override(cfg, f"{key}={json.dumps(value)}")
    return cfg


def validate(cfg: dict, source: str = "params.yaml", schema: dict | None = None, experiments: bool = True) -> dict:
    """Validate against the schema, filling defaults; raise ConfigError naming the key.

    ``experiments``: also expand ``experiments`` (:func:`experiment_variants`) and validate the
    params of every variant, so a bad override fails here, naming the entry and the key.
    """
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
    if experiments and isinstance(cfg.get("experiments"), dict):
        for variant in experiment_variants(cfg["experiments"], source):
            resolved = apply_overrides(copy.deepcopy(cfg), variant.overrides)
            bad = sorted(validator.iter_errors(resolved), key=lambda e: list(e.absolute_path))
            if bad:
                key, message = _describe(bad[0])
                fixed = [k for k in variant.overrides if k not in variant.grid]
                part = next((p for p, keys in (("grid", variant.grid), ("set", fixed))
                             if variant.grid and any(key == k or key.startswith(f"{k}.") for k in keys)), None)
                if part:  # name the grid (or set) key that gave the bad value
                    raise ConfigError(f"{source}: experiments.{variant.entry}.{part}.{key}: {message} (variant {variant.name})")
                where = f"experiments.{variant.entry}" + (f" (variant {variant.name})" if variant.grid else "")
                raise ConfigError(f"{source}: {where}: {key}: {message}")
    return cfg


def sections(raw: dict, *names: str, source: str = "--cfg") -> dict:
    """The params sections ``names`` of ``raw`` (a stage's ``--cfg``), each validated against its
    schema with the schema's defaults filled in: every stage's ``run()`` reads its params through
    this, then indexes them directly (no defaults in code). A missing section is ``{}`` (all
    defaults); other keys of ``raw`` are left out. Raises ConfigError naming ``source`` and the key."""
    mtime_ns = SCHEMA_PATH.stat().st_mtime_ns
    schema = _parsed_schema(mtime_ns)  # read only here: validate() copies what it fills, never the schema
    out = {}
    for name in names:
        if name not in schema["properties"]:
            raise ConfigError(f"{source}: no params section {name!r} in the schema")
        section = raw.get(name) or {}
        key = _content_key(section)
        cache_key = None if key is None else (mtime_ns, name, key)
        filled = _SECTION_CACHE.get(cache_key) if cache_key is not None else None
        if filled is None:
            sub = {"$schema": schema.get("$schema"), **schema["properties"][name]}
            filled = validate(section, source=f"{source} {name}", schema=sub, experiments=False)
            if cache_key is not None:  # only valid sections are cached: a bad one raises, naming `source`, every time
                if len(_SECTION_CACHE) >= _SECTION_CACHE_MAX:
                    _SECTION_CACHE.clear()
                _SECTION_CACHE[cache_key] = filled
        out[name] = copy.deepcopy(filled)  # callers may modify their sections
    return out


# Validated sections by content: the faces stage validates its sections per video (track_video,
# build_detector), and a validation (a validator class built, the section copied, every key
# checked) costs milliseconds, as much as decoding a short clip's frames.
_SECTION_CACHE: dict = {}
_SECTION_CACHE_MAX = 256


def _content_key(value: Any):
    """A hashable key of a params value that tells apart everything validation tells apart (types
    included: ``1``, ``1.0``, ``True`` and ``[1]``, ``(1,)`` differ); None for anything else (not cached)."""
    if type(value) is float:
        return ("float", repr(value))  # -0.0 and 0.0, nan
    if value is None or type(value) in (bool, int, str):
        return (type(value).__name__, value)
    if type(value) is dict:
        items = []
        for k, v in value.items():
            kk, vv = _content_key(k), _content_key(v)
            if kk is None or vv is None:
                return None
            items.append((kk, vv))
        return ("dict", tuple(items))
    if type(value) in (list, tuple):
        items = tuple(_content_key(v) for v in value)
        return None if any(i is None for i in items) else (type(value).__name__, items)
    return None


# ---------------------------------------------------------------- experiments
# The ONE place where ``experiments`` entries become the experiments the DAG runs and the report
# compares: a plain entry ``name: {section.key: value, ...}`` is one experiment; a grid entry
# ``name: {grid: {section.key: [v1, v2, ...], ...}, set: {section.key: value}}`` is one experiment
# per combination of the grid's values (keys in alphabetical order, values in list order), named
# ``name-key=value-key=value`` (see :func:`variant_name`).

MAX_NAME = 150  # characters of an expanded name (a path component of several results files)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


@dataclass(frozen=True)
class Variant:
    """One experiment: its name, the ``experiments`` entry it comes from, its overrides."""

    name: str
    entry: str
    overrides: dict = field(default_factory=dict)  # section.key -> value (a grid's `set` plus its combination)
    grid: dict = field(default_factory=dict)  # grid key -> this combination's value ({} for a plain entry)


def experiment_variants(experiments: dict | None, source: str = "params.yaml") -> list[Variant]:
    """Every experiment of the ``experiments`` section, grid entries expanded (in entry order)."""
    out: list[Variant] = []
    for entry, spec in (experiments or {}).items():
        if isinstance(spec, dict) and "grid" in spec:
            out += _expand_grid(str(entry), spec, source)
        elif spec is None or isinstance(spec, dict):
            out.append(Variant(str(entry), str(entry), dict(spec or {})))
        else:
            raise ConfigError(f"{source}: experiments.{entry}: expected a mapping of overrides or a grid, got {spec!r}")
    seen: dict[str, Variant] = {}
    for v in out:
        if v.name in seen:
            other = seen[v.name]
            what = "the plain entry" if not other.grid else f"a variant of grid entry {other.entry!r}"
            raise ConfigError(f"{source}: experiments.{v.entry}: variant name {v.name!r} is already {what}: rename one of them")
        seen[v.name] = v
    return out


def expand_experiments(experiments: dict | None, source: str = "params.yaml") -> dict[str, dict]:
    """Experiment name -> its overrides (``section.key: value``), grid entries expanded."""
    return {v.name: v.overrides for v in experiment_variants(experiments, source)}


def variant_name(entry: str, values: dict) -> str:
    """``entry-key=value-...`` for a grid combination: keys sorted, each named by its last part
    (the full ``section.key`` when two keys share it), values rendered by :func:`value_label`."""
    labels = key_labels(values)
    return entry + "".join(f"-{labels[k]}={value_label(values[k])}" for k in sorted(values))


def key_labels(keys: Iterable[str]) -> dict[str, str]:
    """``section.key`` -> ``key``, or the full ``section.key`` where two of ``keys`` share the last part."""
    keys = list(keys)
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    return {k: s if list(short.values()).count(s) == 1 else k for k, s in short.items()}


def value_label(value: Any) -> str:
    """A short, path-safe rendering of a value: ``frozen``, ``0.001``, ``true``; a mapping of
    weights ``{ccc: 1.0, mse: 0.5}`` -> ``ccc+mse0.5`` (weight 1 left out); a list -> ``a+b``."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float):
        text = repr(value).removesuffix(".0")
    elif isinstance(value, dict):
        text = "+".join(f"{k}" if v == 1 and not isinstance(v, bool) else f"{k}{value_label(v)}" for k, v in sorted(value.items()))
    elif isinstance(value, (list, tuple)):
        text = "+".join(value_label(v) for v in value)
    else:
        text = str(value)
    return _UNSAFE.sub("_", text)


def _expand_grid(entry: str, spec: dict, source: str) -> list[Variant]:
    where = f"{source}: experiments.{entry}"
    unknown = [k for k in spec if k not in ("grid", "set")]
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key of a grid entry (allowed: grid, set)")
    grid, fixed = spec.get("grid"), spec.get("set") or {}
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"{where}.grid: expected a mapping section.key -> [values] with at least one key")
    if not isinstance(fixed, dict):
        raise ConfigError(f"{where}.set: expected a mapping section.key -> value")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}.grid.{key}: expected a non-empty list of values, got {values!r}")
    both = [k for k in grid if k in fixed]
    if both:
        raise ConfigError(f"{where}.set.{both[0]}: also a grid key; give it in one place only")
    keys = sorted(grid)
    variants: dict[str, Variant] = {}
    for combo in itertools.product(*(grid[k] for k in keys)):
        values = dict(zip(keys, combo))
        name = variant_name(entry, values)
        if name in variants:
            raise ConfigError(f"{where}.grid: combinations {variants[name].grid} and {values} get the same name {name!r} "
                              "(repeated or indistinguishable values)")
        if len(name) > MAX_NAME:
            raise ConfigError(f"{where}.grid: variant name {name!r} is {len(name)} characters long (at most {MAX_NAME}): "
                              "use a shorter entry name or split the grid")
        variants[name] = Variant(name, entry, {**fixed, **values}, values)
    return list(variants.values())


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
    if err.validator == "pattern" and "propertyNames" in err.absolute_schema_path:
        # a key name that does not fit: name the key itself, not the mapping holding it
        if path == ["experiments"]:
            return f"experiments.{err.instance}", "experiment names may use letters, digits, '_' and '-' only"
        if path[:1] == ["experiments"]:
            return ".".join([*path, str(err.instance)]), (
                "an experiment may override finetune.* and pretrain.* keys only "
                "(data, decode, faces, crop and clips are shared by all experiments: set them in their own section)")
        return ".".join([*path, str(err.instance)]), f"key name does not match {err.validator_value!r}"
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


def merge_params(base: dict, over: dict) -> dict:
    """Deep-merge ``over`` into ``base`` in place, as Snakemake merges a ``--configfile`` over its
    ``configfile:`` (nested mappings merge key by key, anything else is replaced); returns ``base``."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_params(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of params sections, got {type(data).__name__}")
    return data


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--merge", action="append", default=[], metavar="FILE",
                        help="override file merged over the params, as `snakemake --configfile FILE` does (repeatable)")
    parser.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE", help="override a value")
    parser.add_argument("--print", action="store_true", help="print the validated params with defaults")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="write the merged params (validated; without the schema defaults) to FILE, e.g. params.yaml for DVC")


def run(args: argparse.Namespace) -> int:
    from affectube.io import atomic_path

    raw = _read_yaml(Path(args.params))
    for extra in args.merge:
        merge_params(raw, _read_yaml(Path(extra)))
    for item in args.set:
        apply_override(raw, item)
    sources = " + ".join([args.params, *args.merge]) + (" (with -S overrides)" if args.set else "")
    cfg = validate(copy.deepcopy(raw), source=sources)
    if args.out:
        header = (f"# Merged by `python -m affectube params` from {sources}; edit the sources, not this file\n"
                  "# (or edit it and keep it: it is a complete params file).\n")
        with atomic_path(args.out) as tmp:
            Path(tmp).write_text(header + yaml.safe_dump(raw, sort_keys=False, width=120))
        print(f"{args.out}: written ({sources})")
    if args.print:
        print(yaml.safe_dump(cfg, sort_keys=False))
    elif not args.out:
        print(f"{sources}: OK")
    return 0
