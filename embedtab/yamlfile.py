"""The one way embedtab reads a YAML file (workflow configs, pipeline files): bounded in size,
nesting depth and alias expansion before anything builds or walks the document.

libyaml's parser is a loop, but composing a document (the C composer and PyYAML's pure-Python
one alike) recurses once per level: a 50 KB file of `- - - ... x`, of `[[[...`, or of indented
`a:` lines is enough to overflow the C stack (a segmentation fault, no message). So the file is
first walked as PyYAML's event stream (`yaml.parse`), which needs no recursion, counting the open
collections -- block or flow, sequences and mappings alike -- and what every anchor expands to;
only a document within the limits is then loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedtab.errors import ConfigError

MAX_BYTES = 128 << 10  # the shipped configs are 1-2 KB; libyaml parses 128 KiB in ~0.3 s
MAX_DEPTH = 64  # nested collections (the top-level mapping or list is the first level)
MAX_VALUES = 100_000  # values once aliases are expanded ("billion laughs" stop here)


def _clip(value: Any, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _loader() -> type:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where present: much faster


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
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:  # (not a regular file: no size to tell in advance)
        raise ConfigError(f"{path} is more than {MAX_BYTES >> 10} KiB; {limit}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None


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
        return ConfigError(f"{source}:{event.start_mark.line + 1}: nested more than {MAX_DEPTH} levels deep{how}; "
                           f"a {what} may nest at most {MAX_DEPTH}")

    def too_many(event: Any) -> ConfigError:
        return ConfigError(f"{source}:{event.start_mark.line + 1}: holds more than {MAX_VALUES:,} values once YAML "
                           f"aliases are expanded; a {what} is far smaller")

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


def _syntax_error(source: str, exc: Exception, what: str) -> ConfigError:
    mark = getattr(exc, "problem_mark", None)
    if "maximum nesting depth" in str(getattr(exc, "problem", "")):  # libyaml >= 0.2.5's own guard (at 1000 levels),
        line = f":{mark.line + 1}" if mark else ""                    # met while it scans ahead of the events
        return ConfigError(f"{source}{line}: nested more than {MAX_DEPTH} levels deep; a {what} may nest at most {MAX_DEPTH}")
    where = f" line {mark.line + 1}" if mark else ""
    return ConfigError(f"{source}:{where} is not valid YAML ({_clip(getattr(exc, 'problem', None) or exc)})")


def load_text(text: str, source: str, what: str) -> Any:
    """The value of a YAML document, after check_structure let it through."""
    import yaml

    try:
        check_structure(text, source, what)
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError as exc:
        raise _syntax_error(source, exc, what) from None
    except RecursionError:  # (cannot happen within MAX_DEPTH; kept as the last line of defence)
        raise ConfigError(f"{source}: nested too deeply to be a {what}") from None


def read_yaml(path: str | Path, what: str = "workflow config") -> tuple[Any, str]:
    """(parsed value, text) of a small YAML file embedtab reads (workflow configs, pipeline files),
    bounded in size, nesting and alias expansion before anything walks it."""
    text = read_text(path, what)
    return load_text(text, str(path), what), text


def yaml_line(text: str, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the value at `loc` (mapping keys and list indexes) in YAML `text`, for
    messages; None when it cannot be found. Only called on errors, on text read_yaml accepted, so
    composing again is fine (and bounded)."""
    import yaml

    try:
        check_structure(text, "", "")
        node = yaml.compose(text, Loader=_loader())
    except (yaml.YAMLError, ConfigError):
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
