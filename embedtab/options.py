"""How an option is declared: once, as a field of its command's options dataclass.

    @dataclass
    class TextOptions(EncodeOptions):
        limit: Limit | None = option(None, "Encode only the first N rows of the input (a trial run).", recipe=IF_SET)

The field is the option: its name is the long flag with `_` for `-` (`--limit`), its annotation the
type (a bounded type of embedtab.bounds is checked when the options are made), and `option()`
keeps its default and, in the field's metadata:

    help      the one help text: the CLI shows it (`help_of`), the API and pipeline files name it
    recipe    True: recorded in the artifact's recipe (a new value needs --force); IF_SET: recorded
              only when not the default, so artifacts made before the option stay up to date;
              False: how the work is done, not what it makes (devices, batch sizes, --force)
    pipeline  True, or why the option does not belong in a pipeline file
    aliases   other names it is accepted under (`text_column` for `text_columns`: the CLI's flag)
    required  the commands require it, though the field has a default (to keep the order of a
              base class's fields)

The Python API and pipeline files accept every field by its name (embedtab.stages); the CLI is
written by hand and takes defaults and help from here (`default_of`, `help_of`), and
tests/test_options_declared_once.py fails when the three disagree. This module imports nothing
heavy: the CLI reads the declarations to draw its help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

IF_SET = "if set"

# The help of options that several commands share (each options class declares its own field).
FORCE = "Replace an existing artifact made from other inputs or options."
DASK_SCHEDULER = "Run on an existing Dask cluster, e.g. tcp://10.0.0.5:8786; default: local."
TRUST_WORKFLOW = "Load the workflow without checking the recorded sha256s (loading runs code from workflow.pkl)."


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Any = None,
    recipe: bool | str = False,
    pipeline: bool | str = True,
    aliases: Iterable[str] = (),
    required: bool = False,
) -> Any:
    """A dataclass field with its declaration (see the module docstring); `factory` instead of a
    mutable default."""
    metadata = {"help": help, "recipe": recipe, "pipeline": pipeline, "aliases": tuple(aliases), "required": required}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def declared(cls: type) -> dict[str, dataclasses.Field]:
    """The options of an options class, in order: field name -> field."""
    return {f.name: f for f in dataclasses.fields(cls)}


def _field(cls: type, name: str) -> dataclasses.Field:
    try:
        return declared(cls)[name]
    except KeyError:
        raise KeyError(f"{cls.__name__} declares no option {name!r}") from None


def default_of(cls: type, name: str) -> Any:
    """The declared default of an option (the CLI's default for its flag). KeyError when the
    option has none: it is required."""
    found = _field(cls, name)
    if found.default is not dataclasses.MISSING:
        return found.default
    if found.default_factory is not dataclasses.MISSING:
        return found.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default: it is required")


def has_default(cls: type, name: str) -> bool:
    found = _field(cls, name)
    return found.default is not dataclasses.MISSING or found.default_factory is not dataclasses.MISSING


def help_of(cls: type, name: str) -> str:
    """The declared help text of an option."""
    return _field(cls, name).metadata.get("help", "")


def meta(cls: type, name: str, key: str) -> Any:
    """One entry of an option's declaration (recipe, pipeline, aliases, required)."""
    return _field(cls, name).metadata.get(key, {"aliases": (), "pipeline": True}.get(key, False))


def recipe_of(options: Any) -> dict[str, Any]:
    """The declared recipe options of an options object, by name (IF_SET ones only when set)."""
    recipe = {}
    for name, found in declared(type(options)).items():
        kind = found.metadata.get("recipe", False)
        value = getattr(options, name)
        if kind is True or (kind == IF_SET and value not in (None, "") and value != default_of(type(options), name)):
            recipe[name] = value
    return recipe


def names(cls: type) -> dict[str, str]:
    """Every name an option is accepted under (its field name and aliases) -> its field name."""
    accepted = {}
    for name, found in declared(cls).items():
        for alias in (name, *found.metadata.get("aliases", ())):
            accepted[alias] = name
    return accepted


def by_name(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` with every alias replaced by its field name; unknown names are left for the class
    to refuse (TypeError, as Python refuses any unexpected keyword argument)."""
    accepted = names(cls)
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = accepted.get(key, key)
        if name in out:
            given = " and ".join(k for k in values if accepted.get(k, k) == name)
            raise TypeError(f"{cls.__name__} got {name!r} twice (as {given})")
        out[name] = value
    return out
