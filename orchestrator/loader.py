"""YAML -> plain data that remembers where every value came from. Core: parses text, no file I/O
beyond :func:`load_file`.

A marketer's YAML is read with a deliberately small set of implicit types, so that what looks
like text stays text:

* ``yes``/``no``/``on``/``off`` stay strings (only ``true``/``false`` are booleans);
* ``21:00`` stays the string ``"21:00"`` (YAML 1.1 would read it as the number 1260);
* ``1h``, ``23.5h`` and ``10%`` stay strings for the spec to parse.

Mappings load as :class:`LocatedDict` and sequences as :class:`LocatedList`; both keep the
line and column of each entry so later stages can point at the exact spot of a mistake.
Duplicate keys are an error instead of a silent overwrite.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import JourneyError, Location

Position = tuple[int, int]  # 1-based line, column


class LocatedDict(dict[str, Any]):
    """A dict that knows the position of itself, of each key and of each value."""

    position: Position = (0, 0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_positions: dict[str, Position] = {}
        self.value_positions: dict[str, Position] = {}


class LocatedList(list[Any]):
    position: Position = (0, 0)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.item_positions: list[Position] = []


def _pos(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML-1.2-like scalars and position-keeping containers."""

    yaml_implicit_resolvers: dict[str, list[tuple[str, re.Pattern[str]]]] = {}


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9_]*)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?\.[0-9]+(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""]
)


def _construct_mapping(loader: _Loader, node: MappingNode) -> LocatedDict:
    result = LocatedDict()
    result.position = _pos(node)
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, (str, int, float, bool)) or isinstance(key, bool):
            raise ConstructorError(
                None, None, "a key must be plain text", key_node.start_mark
            )
        key = str(key)
        if key in result:
            line, _ = result.key_positions[key]
            raise ConstructorError(
                None,
                None,
                f"duplicate key '{key}' (first defined on line {line}); each key may appear once",
                key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_positions[key] = _pos(key_node)
        result.value_positions[key] = _pos(value_node)
    return result


def _construct_sequence(loader: _Loader, node: SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.position = _pos(node)
    result.item_positions = [_pos(child) for child in node.value]
    return result


def _construct_timestamp_as_text(loader: _Loader, node: ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)  # type: ignore[arg-type]
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)  # type: ignore[arg-type]
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _construct_timestamp_as_text)  # type: ignore[arg-type]


def load_text(text: str, path: str) -> Any:
    """Parse one YAML document; syntax errors become a :class:`JourneyError` with a location."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader derives from SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "cannot parse"
        if exc.context and "duplicate" not in problem:
            problem = f"{exc.context}, {problem}"
        loc = Location(path, mark.line + 1, mark.column + 1) if mark else Location(path)
        raise JourneyError(f"YAML syntax: {problem}", loc) from None
    except yaml.reader.ReaderError as exc:
        # A control character: no mark, only an offset; its str() spans two lines.
        pos = min(max(exc.position, 0), len(text))
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise JourneyError(
            f"YAML syntax: unacceptable character {char}: {exc.reason}", Location(path, line, col)
        ) from None
    except yaml.YAMLError as exc:
        raise JourneyError(f"YAML syntax: {' '.join(str(exc).split())}", Location(path)) from None
    except RecursionError:
        raise JourneyError(
            "YAML nesting too deep; a journey needs only a few levels of lists and mappings",
            Location(path),
        ) from None


def load_file(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JourneyError("file not found", Location(str(path))) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JourneyError(f"cannot read file: {exc}", Location(str(path))) from None
    return load_text(text, str(path))


def locate(data: Any, loc: tuple[str | int, ...], path: str) -> Location:
    """The position of the deepest part of ``loc`` (a pydantic error path) found in ``data``."""
    best: Position = getattr(data, "position", (1, 1))
    node = data
    for part in loc:
        if isinstance(node, LocatedDict) and isinstance(part, str) and part in node:
            best = node.value_positions.get(part, best)
            node = node[part]
        elif isinstance(node, LocatedDict) and isinstance(part, str):
            # A key pydantic complains about that is present under an alias, or missing.
            break
        elif isinstance(node, LocatedList) and isinstance(part, int) and 0 <= part < len(node):
            best = node.item_positions[part]
            node = node[part]
        else:
            break
    return Location(path, best[0], best[1])


def key_location(data: Any, loc: tuple[str | int, ...], path: str) -> Location:
    """Like :func:`locate` but points at the key itself when the last part is a key."""
    parent = data
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return locate(data, loc, path)
    last = loc[-1] if loc else None
    if isinstance(parent, LocatedDict) and isinstance(last, str) and last in parent.key_positions:
        line, col = parent.key_positions[last]
        return Location(path, line, col)
    return locate(data, loc, path)
