"""YAML loading that keeps line numbers, so every error names file, line and field."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from toolchain.errors import ConfigError, UnknownTargetError

M = TypeVar("M", bound=pydantic.BaseModel)

#: Where target profiles live; ``TOOLCHAIN_TARGETS`` overrides it (tests use that).
TARGETS_DIR = Path(os.environ.get("TOOLCHAIN_TARGETS", Path(__file__).resolve().parents[2] / "targets"))


def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map each key path (``("quantize", "mode")``) to its 1-based line in the file."""
    out = {} if out is None else out
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            out[sub] = key.start_mark.line + 1
            _line_map(value, sub, out)
            out[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, path + (i,), out)
    return out


def _read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top level, got {type(data).__name__}")
    return data, _line_map(node)


def _message(err: dict) -> str:
    kind, inp = err["type"], err.get("input")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"{inp!r} is not one of {expected}"
    return f"{err['msg']} (got {inp!r})" if not isinstance(inp, (dict, list)) else err["msg"]


def validate_file(model: type[M], path: Path, data: dict, lines: dict[tuple, int]) -> M:
    try:
        return model.model_validate(data, context={"base_dir": path.parent})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper() and "[" in p))
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
        field = ".".join(str(p) for p in loc) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{path}:{line}: {field}: {_message(err)}{more}") from None


def load_recipe(path: str | Path):
    from toolchain.config.recipe import Recipe

    path = Path(path)
    data, lines = _read_yaml(path)
    recipe = validate_file(Recipe, path, data, lines)
    recipe = recipe.model_copy(update={"source": path, "lines": lines})
    for i, name in enumerate(recipe.targets):
        if name not in list_targets():
            line = lines.get(("targets", i), 1)
            known = ", ".join(list_targets())
            raise UnknownTargetError(f"{path}:{line}: targets.{i}: unknown target {name!r} (known: {known})")
    return recipe


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def load_target(name: str):
    from toolchain.config.target import Target

    path = TARGETS_DIR / f"{name}.yaml"
    if not path.exists():
        raise UnknownTargetError(f"unknown target {name!r} (known: {', '.join(list_targets())})")
    data, lines = _read_yaml(path)
    target = validate_file(Target, path, data, lines)
    if target.name != name:
        raise ConfigError(f"{path}:{lines.get(('name',), 1)}: name: {target.name!r} must match the file name {name!r}")
    return target
