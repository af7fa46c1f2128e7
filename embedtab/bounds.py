"""The bounds of the commands' options, checked when an options object is made.

Every command-line option reaches the core as a field of an options dataclass (TextOptions,
ImageOptions, ReduceOptions, FitOptions, TransformOptions, LookupOptions), whether it came from
the CLI, the Python API (`embedtab.Artifacts`) or a pipeline file (`embedtab run`). A bounded field
is annotated with one of the types below, and the class's `__post_init__` calls `check(self)`,
so an impossible value is refused before any input is read, any model loaded or any process
started: one UsageError (exit 2) that starts with the field's name (`workers: must be an integer
from 0 to 8 ... (got 100000)`), which the CLI shows as the flag (`--workers: ...`) and a pipeline
file with its file and line.

The values are validated by pydantic (types, `Field` constraints, `ByteSize`), with the allowed
range said in words by the `Allowed` entry of the annotation, which also carries pydantic's rules.
They are made on first use, so a module that declares options imports no pydantic (`embedtab
--help` reads the options' defaults and stays fast).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from embedtab.errors import UsageError

if TYPE_CHECKING:
    from pydantic import TypeAdapter

MAX_WORKERS = 64  # image decoding processes, whatever the machine
WORKERS_PER_CORE = 4  # ... and no more than this many per core it may use
MAX_TEXT_BATCH = 65_536
MAX_IMAGE_BATCH = 8_192  # 8192 preprocessed 224 px images are 4.9 GB of float32
MAX_SHARD_SIZE = 1 << 20  # one work shard's inputs and vectors are held in memory
MAX_SHARDS = 10_000  # --shard i/n: jobs of one encode
MAX_PIXELS = 1_000_000_000  # --max-pixels: a decoded RGB image of 3 GB
DEFAULT_MAX_PIXELS = 50_000_000  # ... and its default (also the encoders' own, embedtab.encode.protocol.Settings)
MAX_DIMS = 65_536
MAX_SEED = 2**32 - 1
MIN_PART_SIZE = 1_000_000  # 1MB: smaller Dask partitions only multiply the tasks (a csv would split per byte)


@dataclasses.dataclass(frozen=True)
class Allowed:
    """What a bounded option accepts, in words (a function when it depends on the machine), and
    the pydantic rules that check it (`rules()`: validators and `Field` constraints), made only
    when pydantic builds a validator for the annotation."""

    text: str | Callable[[], str]
    rules: Callable[[], tuple[Any, ...]] | None = None

    def __str__(self) -> str:
        return self.text() if callable(self.text) else self.text

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        rules = self.rules() if self.rules is not None else ()
        arguments = (source, *rules)  # (named: mypy reads a starred subscript as 3.11 syntax, even in parentheses)
        return handler.generate_schema(Annotated[arguments]) if rules else handler(source)


def _rules(
    before: Callable[[Any], Any] | None = None, at_most: Callable[[], int] | None = None, **constraints: Any
) -> Callable[[], tuple[Any, ...]]:
    """The pydantic rules of a bounded type: a validator run before the type's own (`before`),
    `Field` constraints (ge, le, gt, allow_inf_nan) and an upper bound known only when checked."""

    def make() -> tuple[Any, ...]:
        from pydantic import AfterValidator, BeforeValidator, Field

        rules: list[Any] = [BeforeValidator(before)] if before is not None else []
        rules.append(Field(**{k: v for k, v in constraints.items() if v is not None}))
        if at_most is not None:
            rules.append(AfterValidator(_at_most(at_most)))
        return tuple(rules)

    return make


# ----------------------------------------------------------------------------- the machine
def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's share)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_workers() -> int:
    return min(MAX_WORKERS, WORKERS_PER_CORE * usable_cores())


def machine_memory() -> int:
    """Bytes of RAM this process may use: the machine's, or its cgroup's limit when lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def human_size(value: int) -> str:
    return f"{value / 1e9:,.1f} GB" if value >= 1e9 else f"{value / 1e6:,.0f} MB"


# ----------------------------------------------------------------------------- validators
def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):  # (pydantic would read true as 1)
        raise ValueError("a number, not true or false")
    return value


def _byte_size(value: Any) -> int:
    """Bytes, or a size such as 256MB, 4GB, 4GiB (pydantic's ByteSize)."""
    from pydantic import ByteSize, TypeAdapter

    _no_bool(value)
    if isinstance(value, str) and not value.isascii():  # (ByteSize reads '٣GB' as 3 GB)
        raise ValueError("digits 0-9 and a unit")
    return int(TypeAdapter(ByteSize).validate_python(value.strip() if isinstance(value, str) else value))


def _at_most(limit: Callable[[], int]) -> Callable[[int], int]:
    def check(value: int) -> int:
        if value > limit():
            raise ValueError("too large")
        return value

    return check


def integer(low: int, high: int | None = None) -> Any:
    """An int from low to high (inclusive; no upper bound when high is None)."""
    words = f"an integer from {low:,} to {high:,}" if high is not None else f"an integer of {low:,} or more"
    return Annotated[int, Allowed(words, _rules(_no_bool, ge=low, le=high))]


# ----------------------------------------------------------------------------- the bounded types
Workers = Annotated[
    int,
    Allowed(
        lambda: (
            f"an integer from 0 to {max_workers()} ({WORKERS_PER_CORE} per core of this machine, at most {MAX_WORKERS}; "
            "0 decodes in the main process)"
        ),
        _rules(_no_bool, max_workers, ge=0),
    ),
]
TextBatch = integer(1, MAX_TEXT_BATCH)
ImageBatch = integer(1, MAX_IMAGE_BATCH)
ShardSize = integer(1, MAX_SHARD_SIZE)
MaxErrors = integer(0)
MaxPixels = integer(1, MAX_PIXELS)
Rows = integer(1)  # a number of rows: 1 or more
Dims = integer(1, MAX_DIMS)
Seed = integer(0, MAX_SEED)
ModelVersion = integer(1, 2**63 - 1)  # Triton's model versions are positive int64
Versions = integer(1, 1000)  # how many versions a model repository keeps
PartSize = Annotated[
    int,
    Allowed(
        lambda: f"a byte size from 1MB to this machine's memory ({human_size(machine_memory())}), e.g. 256MB",
        _rules(_byte_size, machine_memory, ge=MIN_PART_SIZE),
    ),
]
Share = Annotated[float, Allowed("a share between 0 and 1, e.g. 0.95", _rules(_no_bool, ge=0, le=1, allow_inf_nan=False))]
Variance = Annotated[float, Allowed("a share in (0, 1], e.g. 0.95", _rules(_no_bool, gt=0, le=1, allow_inf_nan=False))]
Name = Annotated[str, Allowed("a non-empty name", _rules(min_length=1, max_length=1000))]


def _input_paths(value: Any) -> list[str]:
    """One path or several (str or os.PathLike), none of them empty."""
    items = [value] if isinstance(value, (str, os.PathLike)) else value
    if isinstance(items, (bytes, dict)) or not hasattr(items, "__iter__"):
        raise ValueError("paths")
    paths = [os.fspath(item) if isinstance(item, os.PathLike) else item for item in items]
    if not paths or not all(isinstance(p, str) and p.strip() for p in paths):
        raise ValueError("paths")
    return paths


Paths = Annotated[list[str], Allowed("one or more files, globs or folders, none of them empty", _rules(_input_paths, min_length=1))]

# A Dask scheduler: scheme://host:port, checked before anything connects (distributed raised
# ValueError/TypeError from deep inside, after a 10 s wait, for a malformed one). tls:// and
# wss:// need a security context embedtab does not pass (distributed fails with a TypeError).
_SCHEDULER = re.compile(r"(tcp|ucx)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.-]{0,252}):([0-9]{1,5})")


def _scheduler_address(value: Any) -> str:
    found = _SCHEDULER.fullmatch(value.strip()) if isinstance(value, str) else None
    if found is None or not 1 <= int(found[3]) <= 65535:
        raise ValueError("not a scheduler address")
    return value.strip()


SchedulerAddress = Annotated[
    str, Allowed("a Dask scheduler address: tcp:// or ucx://, a host and a port, e.g. tcp://10.0.0.5:8786", _rules(_scheduler_address))
]


def scheduler_from_environment(variable: str = "DASK_SCHEDULER_ADDRESS") -> str | None:
    """The scheduler address Dask's own variable names, checked like the option (None when unset)."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return None
    try:
        return _scheduler_address(text)
    except ValueError:
        raise UsageError(problem(f"${variable}", "a Dask scheduler address such as tcp://10.0.0.5:8786", text)) from None


# ----------------------------------------------------------------------------- checking
def _allowed_in(hint: Any) -> Allowed | None:
    """The Allowed entry of an annotation (also inside `X | None`)."""
    if typing.get_origin(hint) is Annotated:
        return next((m for m in hint.__metadata__ if isinstance(m, Allowed)), None)
    for arg in typing.get_args(hint):
        found = _allowed_in(arg)
        if found is not None:
            return found
    return None


@functools.cache
def _bounded(cls: type) -> tuple[tuple[str, TypeAdapter, Allowed], ...]:
    from pydantic import TypeAdapter

    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in dataclasses.fields(cls):
        allowed = _allowed_in(hints.get(f.name))
        if allowed is not None:
            out.append((f.name, TypeAdapter(hints[f.name]), allowed))
    return tuple(out)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def problem(name: str, allowed: Allowed | str, value: Any) -> str:
    """The one line for a bad value: `name: must be <allowed> (got <value>)`."""
    return f"{name}: must be {allowed} (got {_shown(value)})"


def explain(cls: type, name: str, value: Any, error: Mapping[str, Any]) -> str:
    """The line for pydantic's `error` about field `name` of `cls` (validating a whole options
    class, as pipeline files do): problem() for a value out of bounds; pydantic's own message for
    a value of the wrong type, with the bounds when the field has them."""
    allowed = next((a for field_name, _, a in _bounded(cls) if field_name == name), None)
    if allowed is None:
        return f"{name}: {error['msg']}"
    if error["type"].endswith(("_parsing", "_type")):
        return f"{name}: {error['msg']} (must be {allowed})"
    return problem(name, allowed, value)


def check(options: Any) -> None:
    """Validate every bounded field of an options dataclass (and store the value pydantic made of
    it: a byte size given as "256MB" becomes its int). UsageError `field: ...` for the first bad one."""
    from pydantic import ValidationError

    cls: type = type(options)
    for name, adapter, allowed in _bounded(cls):
        value = getattr(options, name)
        try:
            setattr(options, name, adapter.validate_python(value))
        except ValidationError:
            raise UsageError(problem(name, allowed, value)) from None


def byte_size(value: Any) -> int | None:
    """A size given as bytes or text (256MB, 4GiB) as an int; None when it is neither."""
    from pydantic import ValidationError

    try:
        return _byte_size(value)
    except (ValueError, ValidationError):
        return None


def seconds_from_environment(variable: str, default: float, high: float) -> float:
    """A number of seconds from an environment variable (EMBEDTAB_LOCK_TIMEOUT, ...), 0 to `high`:
    a value that is not such a number is one line naming the variable, never a silent default."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        value = float(text) if text.isascii() else float("nan")  # (float() reads Arabic-Indic digits too)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= high:  # (NaN fails both)
        raise UsageError(problem(f"${variable}", f"a number of seconds from 0 to {high:,.0f}", text))
    return value
