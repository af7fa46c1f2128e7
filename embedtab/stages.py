"""The stage registry: every command that makes artifacts, declared once.

For each command (`encode text`, `encode image`, `reduce`, `apply`, `fit-workflow`, `transform`,
`lookup`, `export triton`) it holds:

    options   its options dataclass, whose fields are the one declaration of every option (name =
              long flag, type, default, help, recipe or not: see embedtab.options)
    main      the field its main argument fills (the value of the command key in a pipeline file)
    runner    (module, function) run as function(store, options, reporter, mode), imported on first use
    edges     what it makes and what it needs, (kind, name) artifacts computed from its options
    cli       the hand-written CLI command that runs it, and `cli_flags`: fields that command spells
              otherwise (`reduce SOURCE --apply PROJECTION`)

embedtab.pipeline reads commands, options, order and runners from here, and embedtab.api builds
every command's options by keyword through `Command.make`, so an option declared in its dataclass
reaches pipeline files and the API with no other edit. The CLI is written by hand (see
tests/test_options_declared_once.py, which fails when it disagrees with these declarations).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtab.encode.options import ImageOptions, TextOptions
from embedtab.export.options import ExportOptions
from embedtab.lookup_options import LookupOptions
from embedtab.options import by_name
from embedtab.reduce.options import ApplyOptions, ReduceOptions
from embedtab.workflow.options import FitOptions, TransformOptions

Key = tuple[str, str]  # (kind, name) of an artifact
Edges = tuple[list[Key], list[Key]]  # (what a stage makes, what it needs)


@dataclass(frozen=True)
class Command:
    command: str
    options: type
    main: str
    runner: tuple[str, str]
    edges: Callable[[Any], Edges]
    cli: tuple[str, ...]
    cli_flags: Mapping[str, str] = field(default_factory=dict)
    made: str = "record"  # the runner's result attribute holding the main artifact's record

    def make(self, main: Any, values: Mapping[str, Any]) -> Any:
        """The options from the main argument and the others by name (field names or their
        aliases). An unknown name is a TypeError, as for any Python call."""
        values = by_name(self.options, values)
        if self.main in values:
            raise TypeError(f"{self.command}: {self.main!r} is given twice (it is the main argument)")
        return self.options(**{self.main: main}, **values)

    def run(self, store: Any, options: Any, reporter: Any, mode: Any = None) -> Any:
        """The runner's result (the same core function as the command's); `mode`: the run's RunMode."""
        module, function = self.runner
        return getattr(importlib.import_module(module), function)(store, options, reporter, mode)

    def outcome(self, result: Any) -> tuple[Any, bool, Any]:
        """(main record, up to date, the projection's record for reduce, else None) of a result."""
        return getattr(result, self.made), result.up_to_date, getattr(result, "projection", None)


# ----------------------------------------------------------------------------- edges
def _encoded(options: Any) -> Edges:
    return [("embeddings", options.name)], []


def _reduced(options: ReduceOptions) -> Edges:
    # (a str once the options are made: ReduceOptions.__post_init__)
    fit_on: list[Key] = (
        [("embeddings", options.fit_on)] if isinstance(options.fit_on, str) and options.fit_on and not options.fit_on.isdigit() else []
    )
    name = options.output_name
    return [("embeddings", name), ("projections", name)], [("embeddings", options.source), *fit_on]


def _applied(options: ApplyOptions) -> Edges:
    return [("embeddings", options.output_name)], [("projections", options.projection), ("embeddings", options.source)]


def _fitted(options: FitOptions) -> Edges:
    from embedtab.workflow.config import load_config

    config = load_config(options.config)  # (ConfigError: the file's problem)
    name = options.name or config.name or Path(options.config).stem
    return [("workflows", name)], [("workflows", v.workflow) for v in config.vocabulary_sources() if v.workflow]


def _transformed(options: TransformOptions) -> Edges:
    external = "/" in options.workflow  # (a folder, with --trust-workflow)
    needs = [] if external else [("workflows", options.workflow)]
    return [("datasets", options.name or Path(options.workflow).name)], needs


ALL = "*"  # a need of every artifact of a kind that the pipeline makes (embedtab.pipeline expands it)


def _exported(options: ExportOptions) -> Edges:
    # (with no names it serves every lookup / workflow there is: it runs after all of them)
    needs: list[Key] = []
    for kind, names in (("lookups", options.lookups), ("workflows", options.workflows)):
        needs.extend([(kind, n) for n in names] or [(kind, ALL)])
    return [("exports", options.name)], needs


def _looked_up(options: LookupOptions) -> Edges:
    needs = [*(("embeddings", e) for e in options.embeddings), ("workflows", options.workflow)]
    return [("lookups", options.output_name)], needs


# ----------------------------------------------------------------------------- runners without one of their own
@dataclass
class Applied:
    record: Any
    up_to_date: bool


def apply_projection(store: Any, options: ApplyOptions, reporter: Any, mode: Any = None) -> Applied:
    """`apply`: embedtab.reduce.apply with its options object."""
    from embedtab.reduce import apply

    return Applied(*apply(store, options.projection, options.source, options.name, options.force, reporter, mode))


# ----------------------------------------------------------------------------- the registry
COMMANDS: dict[str, Command] = {
    c.command: c
    for c in (
        Command("encode text", TextOptions, "inputs", ("embedtab.encode", "run_text"), _encoded, ("encode", "text")),
        Command("encode image", ImageOptions, "inputs", ("embedtab.encode", "run_image"), _encoded, ("encode", "image")),
        Command("reduce", ReduceOptions, "source", ("embedtab.reduce", "run"), _reduced, ("reduce",), made="embeddings"),
        Command(
            "apply",
            ApplyOptions,
            "projection",
            ("embedtab.stages", "apply_projection"),
            _applied,
            ("reduce",),
            cli_flags={"projection": "--apply"},
        ),
        Command("fit-workflow", FitOptions, "config", ("embedtab.workflow.stage", "fit"), _fitted, ("fit-workflow",)),
        Command("transform", TransformOptions, "workflow", ("embedtab.workflow.stage", "transform"), _transformed, ("transform",)),
        Command("lookup", LookupOptions, "embeddings", ("embedtab.lookup", "run"), _looked_up, ("lookup",)),
        Command("export triton", ExportOptions, "name", ("embedtab.export.triton", "run"), _exported, ("export", "triton")),
    )
}
