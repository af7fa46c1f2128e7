"""The one way embedtab reads a YAML file (workflow configs, pipeline files): bounded in size,
nesting depth and alias expansion before anything builds or walks the document.

libyaml's parser is a loop, but composing a document (the C composer and PyYAML's pure-Python
one alike) recurses once per level: a 50 KB file of `- - - ... x`, of `[[[...`, or of indented
`a:` lines is enough to overflow the C stack (a segmentation fault, no message). So the file is
first walked as PyYAML's event stream (`yaml.parse`), which needs no recursion, counting the open
collections -- block or flow, sequences and mappings alike -- and what every anchor expands to;
only a document within the limits is then loaded.

The document is composed once: read_yaml hands back its text as a YamlText that keeps the node
tree, so yaml_line (the line of a value, for messages) looks lines up in it instead of composing
the file again for every stage of a long pipeline. Building the values from the nodes refuses what
PyYAML would take silently or crash on: a mapping key given twice, a scalar that cannot be built
(an integer of more than 4,300 digits, a date such as 2020-13-45). Every error is one line naming
the file and the line, and values echoed in messages are cut short (shown, clip).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from embedtab.errors import ConfigError

MAX_BYTES = 128 << 10  # the shipped configs are 1-2 KB; libyaml parses 128 KiB in ~0.3 s
MAX_DEPTH = 64  # nested collections (the top-level mapping or list is the first level)
MAX_VALUES = 100_000  # values once aliases are expanded ("billion laughs" stop here)
SHOWN = 40  # characters of a value from a config that a message echoes


def clip(text: Any, limit: int = 80) -> str:
    """Text for a message: one line, at most `limit` characters (cut with an ellipsis)."""
    try:
        text = " ".join(str(text).split())
    except ValueError:  # (an int too long for str())
        return "<a number too long to show>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: Any, limit: int = SHOWN) -> str:
    """A value from a config file or the command line as messages echo it: its repr, one line, cut
    to `limit` characters (a 100 KB name is echoed as its first few dozen characters)."""
    try:
        text = repr(value)
    except ValueError:  # (an int too long for repr())
        return "<a number too long to show>"
    return clip(text, limit)


def names(values: Any, limit: int = 12) -> str:
    """Names for a message (columns, keys): `a, b, c`, each cut to SHOWN characters, at most
    `limit` of them (`… and 3 more`)."""
    values = list(values)
    text = ", ".join(clip(v, SHOWN) for v in values[:limit])
    return text + (f", … and {len(values) - limit:,} more" if len(values) > limit else "")


class YamlText(str):
    """The text of a YAML file read_yaml accepted, keeping the composed node tree (`tree`) that
    yaml_line looks lines up in: equal to, and usable as, the plain text."""

    tree: Any = None


class _Refused(Exception):
    """A document that composes but cannot be built: (line, message) for the ConfigError."""

    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else None
        self.message = message


_KINDS = {"int": "integer", "float": "number", "timestamp": "date", "binary": "binary value", "bool": "boolean"}


def _loader() -> type:
    """The loader class: libyaml's parser where present (much faster), PyYAML's safe constructor,
    refusing duplicate keys and scalars that cannot be built (one line each, see _Refused)."""
    global _LOADER
    if _LOADER is None:
        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        merge = "tag:yaml.org,2002:merge"

        class Loader(base):  # type: ignore[misc, valid-type]
            def construct_object(self, node: Any, deep: bool = False) -> Any:
                try:
                    value = super().construct_object(node, deep=deep)
                except (ValueError, OverflowError) as exc:  # (a YAMLError is PyYAML's own report: kept)
                    raise _scalar_refused(node, exc) from None
                # 0x... of thousands of digits: int() reads it (no limit in base 16), str() and repr() would not
                if type(value) is int and value.bit_length() > 14_000 and abs(value) >= 10 ** _max_digits():
                    digits = int(value.bit_length() * 0.30103) + 1
                    raise _Refused(node.start_mark, f"an integer of about {digits:,} digits is too long (at most {_max_digits():,} digits)")
                return value

            def construct_mapping(self, node: Any, deep: bool = False) -> Any:
                if isinstance(node, yaml.MappingNode):
                    seen: dict[Any, Any] = {}
                    for key_node, _ in node.value:
                        key = "<<" if key_node.tag == merge else self.construct_object(key_node, deep=True)
                        try:
                            first = seen.setdefault(key, key_node)
                        except TypeError:  # (unhashable: PyYAML says so below)
                            continue
                        if first is not key_node:
                            raise _Refused(
                                key_node.start_mark,
                                f"duplicate key {shown(key)} (first on line {first.start_mark.line + 1}); give each key once",
                            )
                return super().construct_mapping(node, deep=deep)

        _LOADER = Loader
    return _LOADER


_LOADER: type | None = None


def _max_digits() -> int:
    """Python's limit on the decimal digits int() reads and str() writes (sys.set_int_max_str_digits)."""
    import sys

    return (sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 0) or 4300


def _scalar_refused(node: Any, exc: Exception) -> _Refused:
    kind = _KINDS.get(str(node.tag).rsplit(":", 1)[-1], "value")
    value = node.value if isinstance(node.value, str) else ""
    digits = sum(c.isdigit() for c in value)
    if kind == "integer" and "digits" in str(exc):  # Python's limit on int() of a string
        return _Refused(node.start_mark, f"an integer of {digits:,} digits is too long (at most {_max_digits():,} digits)")
    return _Refused(node.start_mark, f"{shown(value)} is not a valid {kind} ({clip(exc, 80)})")


def read_text(path: str | Path, what: str) -> str:
    """The text of a YAML file, read no further than the size limit (a FIFO or /dev/zero too)."""
    path = Path(path)
    limit = f"a {what} may be at most {MAX_BYTES >> 10} KiB"
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(f"{path} is {size / 2**10:,.0f} KiB; {limit}")
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{what} {clip(path, 200)} does not exist") from None
    except (OSError, ValueError) as exc:  # (ValueError: a NUL in the path)
        raise ConfigError(f"cannot read {what} {clip(path, 200)}: {clip(getattr(exc, 'strerror', None) or exc, 80)}") from None
    if len(data) > MAX_BYTES:  # (not a regular file: no size to tell in advance)
        raise ConfigError(f"{path} is more than {MAX_BYTES >> 10} KiB; {limit}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None


def file_problem(path: str | Path) -> str | None:
    """Why `path`, a file a config names (a side table, a vocabulary table), cannot be read as a
    table -- "does not exist", "is not a regular file" (a directory, /dev/zero, a FIFO) -- or None
    when it is a regular file. Never raises (a name too long for the system is a problem too)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "does not exist"
    except (OSError, ValueError) as exc:  # (ValueError: a NUL in the path)
        return f"cannot be read ({clip(getattr(exc, 'strerror', None) or exc, 60)})"
    return None if stat.S_ISREG(mode) else "is not a regular file"


def check_structure(text: str, source: str, what: str) -> None:
    """Refuse YAML nested more than MAX_DEPTH collections deep, or holding more than MAX_VALUES
    values once its aliases are expanded, from the event stream alone (no recursion). Errors name
    the file and the line; syntax errors are reported as load_text reports them."""
    import yaml

    # One frame per open collection: [values it holds so far, height of its deepest child, anchor].
    stack: list[list[Any]] = []
    anchors: dict[str, tuple[int, int] | None] = {}  # anchor -> (values, height); None while still open

    def too_deep(event: Any, aliased: bool = False) -> ConfigError:
        how = " once YAML aliases are expanded" if aliased else ""
        return ConfigError(
            f"{source}:{event.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep{how}; a {what} may nest at most {MAX_DEPTH}"
        )

    def too_many(event: Any) -> ConfigError:
        return ConfigError(
            f"{source}:{event.start_mark.line + 1}: holds more than {MAX_VALUES:,} values once YAML "
            f"aliases are expanded; a {what} is far smaller"
        )

    def add(event: Any, values: int, height: int) -> None:
        if not stack:
            if values > MAX_VALUES:
                raise too_many(event)
            return
        frame = stack[-1]
        frame[0] += values
        frame[1] = max(frame[1], height)
        if frame[0] > MAX_VALUES:
            raise too_many(event)

    for event in yaml.parse(text, Loader=_loader()):
        if isinstance(event, yaml.CollectionStartEvent):
            if len(stack) >= MAX_DEPTH:
                raise too_deep(event)
            if event.anchor is not None:
                anchors[event.anchor] = None
            stack.append([1, 0, event.anchor])
        elif isinstance(event, yaml.CollectionEndEvent):
            values, height, anchor = stack.pop()
            if anchor is not None:
                anchors[anchor] = (values, height + 1)
            add(event, values, height + 1)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                anchors[event.anchor] = (1, 0)
            add(event, 1, 0)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                continue  # an undefined alias: loading says so
            target = anchors[event.anchor]
            if target is None:  # an alias inside its own anchor: it expands without end
                raise too_many(event)
            values, height = target
            if len(stack) + height > MAX_DEPTH:
                raise too_deep(event, aliased=True)
            add(event, values, height)


def _syntax_error(source: str, exc: Exception, what: str, text: str = "") -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None)
    character = getattr(exc, "character", None)
    if line is None and isinstance(character, int):  # a ReaderError (control character, NUL): no mark, but the
        at = text.find(chr(character))  # first such character in the text is the one refused
        line = text.count("\n", 0, at) + 1 if at >= 0 else None
        problem = f"character U+{character:04X} is not allowed in YAML"
    if "maximum nesting depth" in str(problem or ""):  # libyaml >= 0.2.5's own guard (at 1000 levels),
        where = f":{line}" if line else ""  # met while it scans ahead of the events
        return ConfigError(f"{source}{where}: nested more than {MAX_DEPTH} levels deep; a {what} may nest at most {MAX_DEPTH}")
    where = f" line {line}" if line else ""
    return ConfigError(f"{source}:{where} is not valid YAML ({clip(problem or exc)})")


def _compose(text: str) -> Any:
    """The node tree of a document check_structure let through (None for an empty one)."""
    loader = _loader()(text)
    try:
        return loader.get_single_node()
    finally:
        loader.dispose()


def _build(tree: Any) -> Any:
    """The value of a composed document (duplicate keys and unbuildable scalars refused)."""
    if tree is None:
        return None
    loader = _loader()("")
    try:
        return loader.construct_document(tree)
    finally:
        loader.dispose()


def load_document(text: str, source: str, what: str) -> tuple[Any, YamlText]:
    """(value, text keeping its node tree) of a YAML document: bounded (check_structure), composed
    once, built; every problem is a ConfigError naming `source` and the line."""
    import yaml

    try:
        check_structure(text, source, what)
        tree = _compose(text)
        value = _build(tree)
    except _Refused as exc:
        raise ConfigError(f"{source}{f':{exc.line}' if exc.line else ''}: {exc.message}") from None
    except yaml.YAMLError as exc:
        raise _syntax_error(source, exc, what, text) from None
    except RecursionError:  # (cannot happen within MAX_DEPTH; kept as the last line of defence)
        raise ConfigError(f"{source}: nested too deeply to be a {what}") from None
    kept = YamlText(text)
    kept.tree = tree
    return value, kept


def load_text(text: str, source: str, what: str) -> Any:
    """The value of a YAML document (see load_document)."""
    return load_document(text, source, what)[0]


def read_yaml(path: str | Path, what: str = "workflow config") -> tuple[Any, YamlText]:
    """(parsed value, text) of a small YAML file embedtab reads (workflow configs, pipeline files),
    bounded in size, nesting and alias expansion before anything walks it. The text keeps the
    composed document, so yaml_line on it composes nothing again."""
    text = read_text(path, what)
    return load_document(text, str(path), what)


def _key_matches(node: Any, part: Any) -> bool:
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        return False
    if isinstance(part, str):
        return node.value == part
    try:  # a key YAML resolves to something else (`1:`, `on:` read as True)
        return yaml.SafeLoader("").construct_object(node, deep=True) == part
    except Exception:  # (only a lookup for a message: never an error of its own)
        return False


def yaml_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the value at `loc` (mapping keys and list indexes) in YAML `text`, for
    messages; None when it cannot be found. Text from read_yaml keeps its node tree, so a lookup
    walks only the path (a pipeline of thousands of stages loads in linear time); plain text is
    composed once more (bounded: check_structure first)."""
    import yaml

    tree = getattr(text, "tree", None)
    if tree is None:
        try:
            check_structure(text, "", "")
            tree = _compose(text)
        except (yaml.YAMLError, ConfigError):
            return None
    node = tree
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            # the last match: the key that counts once `<<:` merges are flattened in front
            match = next(((k, v) for k, v in reversed(node.value) if _key_matches(k, part)), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
