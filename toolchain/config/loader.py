"""YAML loading that keeps line numbers, so every error names file, line and field."""

from __future__ import annotations

import difflib
import os
import re
import stat
import typing
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml

from toolchain.config.recipe import NAME_PATTERN
from toolchain.errors import CompressionError, ConfigError, MissingInputError, UnknownTargetError

M = TypeVar("M", bound=pydantic.BaseModel)

#: Where target profiles live; ``TOOLCHAIN_TARGETS`` overrides it (tests use that).
TARGETS_DIR = Path(os.environ.get("TOOLCHAIN_TARGETS", Path(__file__).resolve().parents[2] / "targets"))


MAX_BYTES = 1 << 20  # a recipe or profile is a few hundred bytes; 1 MB is already absurd
MAX_NODES = 10_000  # YAML nodes in one file
#: The only tags a file may carry (explicitly or resolved): plain scalars, mappings and sequences.
TAGS = {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp")}
NAME = re.compile(NAME_PATTERN)
NAME_RULE = "letters, digits, '.', '_' and '-', at most 64, starting with a letter or digit"


def check_target_name(name: object) -> str:
    """Target names become file and folder names (see ``NAME_RULE``)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise UnknownTargetError(
            f"{_short(name)} is not a target name ({NAME_RULE}); known: {', '.join(list_targets())}"
        )
    return name


def set_targets_dir(path: Path) -> None:
    """Resolve target profiles in ``path`` instead of the shipped ``targets/`` (``--targets-dir``)."""
    global TARGETS_DIR
    if not Path(path).is_dir():
        raise ConfigError(f"--targets-dir {path}: not a folder")
    TARGETS_DIR = Path(path)


class _PyParser(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser):
    """PyYAML's own scanner and parser, in Python (where PyYAML was built without libyaml)."""

    def __init__(self, stream):
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)


#: libyaml's scanner and parser (about six times faster); the composition below stays PyYAML's, in Python.
_PARSER = yaml.cyaml.CParser if yaml.__with_libyaml__ else _PyParser


class _Strict(yaml.composer.Composer, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
    """PyYAML's safe loader, stricter: no anchors or aliases, no duplicate keys, only plain tags, bounded size.
    Mixed with a parser class (``_PARSER``) into ``_Loader``."""

    def __init__(self, text: str, path: Path):
        self._parser.__init__(self, text)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self.path, self.nodes = path, 0

    def _fail(self, mark, message: str):
        raise ConfigError(f"{self.path}:{mark.line + 1}: {message}")

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            self._fail(
                event.start_mark, "YAML anchors and aliases (&name, *name) are not allowed in recipes and profiles"
            )
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self._fail(event.start_mark, f"more than {MAX_NODES:,} YAML nodes: this is not a recipe")
        node = super().compose_node(parent, index)
        if node.tag not in TAGS:
            self._fail(
                node.start_mark,
                f"tag {node.tag!r} is not allowed (only plain strings, numbers, booleans, null, mappings and lists)",
            )
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    self._fail(key.start_mark, "a key must be a plain name, not a list or mapping")
                if key.value in seen:
                    self._fail(key.start_mark, f"duplicate key {key.value!r}")
                seen.add(key.value)
        return node

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, IndexError, KeyError, OverflowError, AttributeError):
            # e.g. ``!!int`` on an empty value; ``!!timestamp not-a-date`` (PyYAML's regex fails: AttributeError)
            tag = node.tag.rsplit(":", 1)[-1]
            self._fail(node.start_mark, f"cannot read {_short(getattr(node, 'value', ''))} as {tag}")


def loader_class(parser: type) -> type:
    """The strict loader over ``parser`` (its scanner and parser: libyaml's or PyYAML's own)."""
    return type("_Loader", (_Strict, parser), {"_parser": parser})


_Loader = loader_class(_PARSER)


def _short(value: object, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 4] + "...'"


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


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ConfigError(f"{path}:1: the file is UTF-16 text; save it as UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


def _read_bytes(path: Path) -> bytes:
    """At most ``MAX_BYTES`` of a regular file. Opened without blocking (a FIFO cannot hang it) and checked on the
    open file (``stat`` says 0 bytes for a device or a FIFO); reads one byte past the limit, never more."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise MissingInputError(f"{path}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"{path}: is a folder, not a YAML file")
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file (a device, FIFO or socket): a recipe or profile is a file")
        if st.st_size > MAX_BYTES:
            raise ConfigError(
                f"{path}: {st.st_size:,} bytes is too large for a recipe or profile (at most {MAX_BYTES:,})"
            )
        try:
            raw = f.read(MAX_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise ConfigError(f"{path}: it grew past {MAX_BYTES:,} bytes while read: too large for a recipe or profile")
    return raw


def _read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    text = _decode(path, _read_bytes(path))
    loader = None
    try:
        loader = _Loader(text, path)
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(f"{path}:1: the file is empty")
        data = loader.construct_document(node)
        lines = _line_map(node)
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, other controls)
        line = text[: exc.position].count("\n") + 1
        raise ConfigError(f"{path}:{line}: character #x{exc.character:04x} is not allowed in YAML") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top level, got {type(data).__name__}")
    return data, lines


def _models(annotation) -> list[type[pydantic.BaseModel]]:
    """The models a field's type can hold, through Optional, unions, Annotated, lists and dicts."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _keys_at(model: type[pydantic.BaseModel], loc: tuple) -> list[str]:
    """The keys allowed in the mapping at ``loc`` (a key path as pydantic reports it), walking the model's fields."""
    models = [model]
    for part in loc:
        fields = [m.model_fields[part] for m in models if isinstance(part, str) and part in m.model_fields]
        if fields:
            models = [m for f in fields for m in _models(f.annotation)]
        elif isinstance(part, str):  # a tagged union's tag (compress steps: 'qat') or a dict key: keep what it tags
            tagged = [
                m
                for m in models
                if any(part in typing.get_args(f.annotation) for f in m.model_fields.values() if f.is_required())
            ]
            models = tagged or models
    return sorted({name for m in models for name, f in m.model_fields.items() if not f.exclude})


def _message(err: dict, model: type[pydantic.BaseModel] | None = None, loc: tuple = ()) -> str:
    kind, inp = err["type"], err.get("input")
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(loc[-1]), _keys_at(model, loc[:-1]), n=1) if model and loc else []
        return f"unknown key (did you mean {close[0]!r}?)" if close else "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "")
        return f"{_short(inp)} is not one of {expected}"
    if kind == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME_PATTERN:
        return f"{_short(inp)} is not a name: {NAME_RULE}"
    msg = err["msg"].removeprefix("Value error, ")  # a validator's own sentence
    return f"{msg} (got {_short(inp)})" if not isinstance(inp, (dict, list)) else msg


def validate_file(model: type[M], path: Path, data: dict, lines: dict[tuple, int]) -> M:
    try:
        return model.model_validate(data, context={"base_dir": path.parent})
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p[:1].isupper() and "[" in p))
        line = next((lines[loc[:n]] for n in range(len(loc), -1, -1) if loc[:n] in lines), 1)
        field = ".".join(str(p) for p in loc) or "(top level)"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{path}:{line}: {field}: {_message(err, model, loc)}{more}") from None


def load_recipe(path: str | Path):
    from toolchain.config.recipe import Recipe

    path = Path(path)
    data, lines = _read_yaml(path)
    recipe = validate_file(Recipe, path, data, lines)
    recipe = recipe.model_copy(update={"source": path, "lines": lines})
    known = list_targets()
    for i, name in enumerate(recipe.targets):
        line = lines.get(("targets", i), 1)
        if name in recipe.targets[:i]:
            raise ConfigError(f"{path}:{line}: targets.{i}: {name!r} is listed twice (each target builds once)")
        if name not in known:
            raise UnknownTargetError(f"{path}:{line}: targets.{i}: unknown target {name!r} (known: {', '.join(known)})")
    if recipe.compress and recipe.model.kind != "keras":
        from toolchain.config.recipe import KIND_NAMES

        raise CompressionError(
            f"{path}:{lines.get(('compress',), 1)}: compress: {KIND_NAMES[recipe.model.kind]} model is used as "
            "trained: compression steps (distillation, self-distillation too) fine-tune a Keras model"
        )
    if recipe.search is not None:
        _check_search(recipe, known)
    return recipe


def _check_search(recipe, known: list[str]) -> None:
    """Each value of the space (each end of a range) makes a valid recipe, one dimension at a time; the searched
    targets exist. Errors name the line of the dimension."""
    from toolchain.config.search import corners, variant

    s, path = recipe.search, recipe.source
    for i, name in enumerate(s.targets or []):
        line = recipe.lines.get(("search", "targets", i), 1)
        if name not in known:
            raise UnknownTargetError(
                f"{path}:{line}: search.targets.{i}: unknown target {name!r} (known: {', '.join(known)})"
            )
        if name in s.targets[:i]:
            raise ConfigError(f"{path}:{line}: search.targets.{i}: {name!r} is listed twice")
    for dim, value in corners(s):
        line = recipe.lines.get(("search", "space", dim), 1)
        try:
            variant(recipe, {dim: value}, recipe.name, recipe.targets)
        except KeyError as exc:
            raise ConfigError(f"{path}:{line}: search.space.{dim}: {exc.args[0]}") from None
        except pydantic.ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise ConfigError(
                f"{path}:{line}: search.space.{dim}: the value {_short(value)} makes {field} invalid: {_message(err)}"
            ) from None


def list_targets() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def load_target(name: str):
    from toolchain.config.target import Target

    path = TARGETS_DIR / f"{check_target_name(name)}.yaml"
    if not path.is_file():
        raise UnknownTargetError(f"unknown target {name!r} (known: {', '.join(list_targets())})")
    data, lines = _read_yaml(path)
    target = validate_file(Target, path, data, lines)
    if target.name != name:
        raise ConfigError(f"{path}:{lines.get(('name',), 1)}: name: {target.name!r} must match the file name {name!r}")
    return target
