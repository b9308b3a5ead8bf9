"""Reading a run config: YAML → `--set` overrides → typed validation (pydantic over the `spec`
dataclasses) → the semantic checks (`spec_checks.validate`). Every key is known: a typo is an error
naming the key, never a silently ignored setting.
"""

from __future__ import annotations

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
    if not data.get("protocols") or not isinstance(data["protocols"], list):
        raise SpecError(f"{source}: 'protocols' must be a non-empty list (e.g. nb201 and scaled)")
    if "seeds" in data and not isinstance(data["seeds"], list):
        data["seeds"] = [data["seeds"]]
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
        data = yaml.safe_load(path.read_text())
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


_ADAPTER = pydantic.TypeAdapter(RunSpec)
