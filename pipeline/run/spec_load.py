"""Reading a run config: YAML → `--set` overrides → typed validation (pydantic over the `spec`
dataclasses) → the semantic checks (`spec_checks.validate`). Every key is known: a typo is an error
naming the key, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pydantic
import yaml

from pipeline.run.spec import RunSpec, SpecError
from pipeline.run.spec_checks import validate


def spec_from_dict(data: dict[str, Any], source: str = "config") -> RunSpec:
    """Typed validation (pydantic, over these dataclasses) then the semantic checks of `validate`."""
    if not isinstance(data, dict):
        raise SpecError(f"{source}: the top level must be a mapping of keys to values")
    data = dict(data)
    if "name" not in data:
        raise SpecError(f"{source}: missing key 'name' (the run's name, e.g. name: cpu)")
    if data.get("lr_transfer") is None and (not data.get("protocols") or not isinstance(data["protocols"], list)):
        raise SpecError(f"{source}: 'protocols' must be a non-empty list (e.g. nb201 and scaled)")
    if "seeds" in data and not isinstance(data["seeds"], list):
        data["seeds"] = [data["seeds"]]
    problem = _scalar_problem(data, RunSpec, "")
    if problem:
        raise SpecError(f"{source}: {problem}")
    try:
        spec = _ADAPTER.validate_python(data)
    except pydantic.ValidationError as error:
        raise SpecError(f"{source}: {_first_problem(error)}") from None
    validate(spec)
    return spec


def _first_problem(error: pydantic.ValidationError) -> str:
    """One line for the first problem pydantic found: the dotted key, what is wrong, what was given."""
    problem = error.errors()[0]
    path = [str(part) for part in problem["loc"] if not _is_type_tag(part)]
    key = ".".join(path)
    if problem["type"] == "unexpected_keyword_argument":
        known = _known_keys(path[:-1])
        return f"unknown key {key}; known keys: {', '.join(known)}"
    if problem["type"] == "missing_argument":
        return f"missing key {key}"
    given = problem.get("input")
    shown = repr(given) if not isinstance(given, dict | list) else type(given).__name__
    return f"key {key}: {problem['msg'].lower()}, got {shown}"


def _is_type_tag(part: object) -> bool:
    """pydantic names union members in `loc` (`float`, `str`, `function-after[...]`); they are not keys."""
    return isinstance(part, str) and (part in ("float", "int", "str", "bool", "none") or "[" in part)


def _known_keys(path: list[str]) -> list[str]:
    kind: Any = RunSpec
    for part in path:
        if part.isdigit():
            continue
        hint = typing.get_type_hints(kind)[part]
        inner = [a for a in typing.get_args(hint) if isinstance(a, type)] or [hint]
        kind = next((a for a in inner if hasattr(a, "__dataclass_fields__")), inner[0])
    return sorted(f.name for f in fields(kind))


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> RunSpec:
    """Read a YAML run config, apply CLI overrides (dotted keys allowed: cells.count=10), validate."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"config file {path} not found; shipped configs are in configs/")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset {error.start}); save it as UTF-8"
        ) from None
    except OSError as error:
        raise SpecError(f"{path}: cannot read it ({error.strerror})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except DuplicateKeyError as error:
        raise SpecError(f"{path}: {error}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"{path}: not valid YAML{where}; check indentation and colons") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the top level must be a mapping of keys to values")
    for dotted, value in (overrides or {}).items():
        apply_override(data, dotted, value)
    return spec_from_dict(data, str(path))


def apply_override(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `dotted` (e.g. `cells.count`, `protocols.1.base_lr`) in the parsed YAML; a number reaches
    into a list. Raises SpecError naming the part of the path that does not fit."""
    target: Any = data
    *parents, leaf = dotted.split(".")
    walked = []
    for part in [*parents, leaf]:
        if not part:
            raise SpecError(f"--set {dotted}: empty key part; write keys like cells.count or protocols.1.base_lr")
    for part in parents:
        walked.append(part)
        if isinstance(target, list):
            target = target[_list_index(target, part, dotted)]
        elif isinstance(target, dict):
            if target.get(part) is None:
                target[part] = {}
            target = target[part]
        else:
            break
        if not isinstance(target, dict | list):
            raise SpecError(f"--set {dotted}: {'.'.join(walked)} is a value, not a mapping or list")
    if isinstance(target, list):
        target[_list_index(target, leaf, dotted)] = value
    else:
        target[leaf] = value


def _list_index(items: list[Any], part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(items):
        raise SpecError(f"--set {dotted}: {part!r} is not an index of a list of {len(items)} item(s) (0-based)")
    return int(part)


INT64_MAX = 2**63 - 1
"""The largest integer the results store (SQLite), torch seeds and numpy hold."""


def _scalar_problem(value: Any, hint: Any, key: str) -> str | None:
    """What pydantic's lax mode would let through: `true` for an integer or a number (read as 1), an
    integer for a yes/no key, and integers beyond 64 bits (they fail in the store after training).
    Walks the parsed YAML along RunSpec's type hints; None when every value fits."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            return None  # pydantic names the wrong type
        hints, prefix = typing.get_type_hints(hint), f"{key}." if key else ""
        for name, item in value.items():
            if name in hints:
                problem = _scalar_problem(item, hints[name], f"{prefix}{name}")
                if problem:
                    return problem
        return None
    args = typing.get_args(hint) or (hint,)
    members = [a for a in args if a is not type(None)]
    if typing.get_origin(hint) is tuple or any(typing.get_origin(a) is tuple for a in members):
        if isinstance(value, list):
            inner = next((typing.get_args(a)[0] for a in [hint, *members] if typing.get_origin(a) is tuple), Any)
            for i, item in enumerate(value):
                problem = _scalar_problem(item, inner, f"{key}.{i}")
                if problem:
                    return problem
        return None
    members = [typing.get_args(a)[0] if typing.get_origin(a) is tuple else a for a in members]
    for member in members:
        if dataclasses.is_dataclass(member) and isinstance(value, dict):
            return _scalar_problem(value, member, key)
    numeric = int in members or float in members
    if isinstance(value, bool) and numeric and bool not in members:
        return f"key {key}: expected {'an integer' if int in members else 'a number'}, got {str(value).lower()}"
    if isinstance(value, int) and not isinstance(value, bool) and bool in members and not numeric:
        return f"key {key}: expected true or false, got {value}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
        return f"key {key}: {value} is out of range (an integer must fit in 64 bits: at most {INT64_MAX})"
    return None


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names one key twice: YAML would keep the last silently."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, but a key given twice in one mapping is an error, not the last value silently."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in seen and key != "<<":
            raise DuplicateKeyError(f"key {key!r} appears twice (lines {seen[key]} and {line}); keep one")
        seen[key] = line
    return loader.construct_mapping(node, deep=True)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)

_ADAPTER = pydantic.TypeAdapter(RunSpec)
