"""`embedtab run pipeline.yaml`: the chain of stages from one file, executed make-like.

A pipeline file lists stages; each stage is one command with the options it has on the command
line (or in the Python API), its main argument given as the command key's value:

    stages:
      - encode text: sample_data/items.parquet
        template: "{title}. {description}"
      - reduce: text
        dims: 64
      - fit-workflow: configs/item.yaml
        data: sample_data/items.parquet
      - lookup: text-pca64
        workflow: item

Commands, their options (every field of a command's options class, by its name or a declared
alias, with `-` or `_`), their runners and the artifacts each makes and needs come from the stage
registry, embedtab.stages. Dependencies come from artifact names (a `reduce: text` needs the stage
that makes embeddings `text`), not from the order in the file. Every stage already knows when it
is up to date, so the runner only orders them, skips the dependents of a failed stage, and reports.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import os
import re
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtab import bounds
from embedtab import stages as registry
from embedtab.artifacts import MANIFEST, ArtifactStore, DryRunStop, RunMode, check_name
from embedtab.errors import ConfigError, EmbedtabError, UsageError
from embedtab.options import declared, meta
from embedtab.options import names as option_names
from embedtab.reporting import SILENT, Reporter
from embedtab.yamlfile import clip, shown

COMMANDS = tuple(registry.COMMANDS)  # what a stage can be: the registry of embedtab.stages


@dataclass
class Stage:
    index: int  # position in the file
    command: str
    options: Any  # the command's options dataclass
    outputs: list[tuple[str, str]]  # (kind, name) it makes
    needs: list[tuple[str, str]]  # (kind, name) it reads
    line: int | None = None

    @property
    def name(self) -> str:
        return self.outputs[0][1]

    @property
    def key(self) -> str:
        return f"{self.outputs[0][0]}/{self.outputs[0][1]}"

    def describe(self) -> str:
        return f"{self.command} -> {', '.join(f'{k}/{n}' for k, n in self.outputs)}"


@dataclass
class Pipeline:
    path: Path
    stages: list[Stage]  # in dependency order
    producers: dict[tuple[str, str], Stage]

    def upstream(self, stage: Stage) -> list[Stage]:
        return [self.producers[need] for need in stage.needs if need in self.producers]

    def select(self, names: list[str]) -> list[Stage]:
        """The stages named (by artifact name or kind/name) and everything they need, in order."""
        wanted: set[int] = set()
        todo = [self.find(name) for name in names]
        while todo:
            stage = todo.pop()
            if stage.index not in wanted:
                wanted.add(stage.index)
                todo.extend(self.upstream(stage))
        return [s for s in self.stages if s.index in wanted]

    def find(self, name: str) -> Stage:
        matches = [s for s in self.stages if name == s.name or name in (f"{k}/{n}" for k, n in s.outputs)]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise ConfigError(f"{self.path}: no stage makes {shown(name)}; stages: {clip(', '.join(s.key for s in self.stages), 200)}")
        raise ConfigError(
            f"{self.path}: {shown(name)} names several stages ({clip(', '.join(s.key for s in matches), 200)}); use kind/name"
        )


# ----------------------------------------------------------------------------- loading
def _fail(path: Path, text: str, loc: tuple[Any, ...], message: str) -> ConfigError:
    from embedtab.yamlfile import yaml_line

    line = yaml_line(text, loc)
    return ConfigError(f"{path}{f':{line}' if line else ''}: {message}")


@functools.cache
def _is_list_field(cls: type, name: str) -> bool:
    hint = typing.get_type_hints(cls)[name]
    return any(
        origin in (list, collections.abc.Sequence)
        for origin in [typing.get_origin(hint), *(typing.get_origin(a) for a in typing.get_args(hint))]
    )


@functools.cache
def _adapter(cls: type) -> Any:
    """pydantic's validator for an options class, built once (building one per stage made a long
    pipeline file take seconds to load)."""
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def _stage_options(path: Path, text: str, index: int, raw: Any) -> tuple[str, Any]:
    from pydantic import ValidationError

    where = ("stages", index)
    if not isinstance(raw, dict):
        raise _fail(path, text, where, f"stage {index + 1} must be a mapping such as `- reduce: text`")
    commands = [key for key in raw if key in COMMANDS]
    if len(commands) != 1:
        found = f"found {', '.join(map(repr, commands))}" if commands else f"{shown(next(iter(raw), None))} is not a command"
        raise _fail(path, text, where, f"stage {index + 1} needs exactly one command key ({', '.join(COMMANDS)}); {found}")
    command = commands[0]
    cls, main = registry.COMMANDS[command].options, registry.COMMANDS[command].main
    values: dict[str, Any] = {main: raw[command]}
    accepted = option_names(cls)  # every option's field name and aliases (embedtab.options), `-` or `_`
    field_of = lambda key: accepted.get(str(key).replace("-", "_"), str(key).replace("-", "_"))  # noqa: E731
    for key, value in raw.items():
        if key == command:
            continue
        name = field_of(key)
        if name in accepted and meta(cls, name, "pipeline") is not True:
            raise _fail(path, text, (*where, key), f"{command}: {shown(key)} does not belong in a pipeline ({meta(cls, name, 'pipeline')})")
        if name == main or name not in accepted:
            options = ", ".join(k for k in declared(cls) if k != main and meta(cls, k, "pipeline") is True)
            raise _fail(path, text, (*where, key), f"{command}: unknown option {shown(key)} (options: {options})")
        values[name] = value
    for name, value in list(values.items()):
        if isinstance(value, str) and _is_list_field(cls, name):
            values[name] = [value]  # one input or one embeddings name, written without a list

    def key_of(field_name: str) -> Any:
        return command if field_name == main else next((k for k in raw if k != command and field_of(k) == field_name), field_name)

    try:
        options = _adapter(cls).validate_python(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field_name = str(error["loc"][0]) if error["loc"] else main
        message = bounds.explain(cls, field_name, values.get(field_name), error)
        raise _fail(path, text, (*where, key_of(field_name)), f"{command}: {message}") from None
    except UsageError as exc:  # the options' own checks (embedtab.bounds and the choices), as the CLI makes them
        message = clip(exc, 300)
        named = re.match(r"([a-z_]+): |(?:invalid )?--([a-z-]+)", message)
        field_name = (named[1] or named[2].replace("-", "_")) if named else main
        raise _fail(path, text, (*where, key_of(field_name)), f"{command}: {message}") from None
    for name in declared(cls):
        if meta(cls, name, "required") and getattr(options, name) is None:  # (the commands require it too)
            raise _fail(path, text, where, f"{command}: give the {name} ({meta(cls, name, 'help').rstrip('.')})")
    return command, options


def _edges(command: str, options: Any, path: Path, text: str, index: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(outputs, needs) of a stage, from its options: the names the command would use (embedtab.stages)."""
    try:
        return registry.COMMANDS[command].edges(options)
    except ConfigError as exc:  # (a workflow config that cannot be read)
        raise _fail(path, text, ("stages", index, command), str(exc)) from None


def load(path: str | os.PathLike[str], store: ArtifactStore) -> Pipeline:
    """Read and check a pipeline file completely before anything runs: commands, options and their
    types, artifact names (made by a stage or already in `store`), no two stages making one
    artifact, no cycles. Errors are ConfigError with the file and line."""
    from embedtab.yamlfile import read_yaml

    path = Path(path)
    raw, text = read_yaml(path, "pipeline file")
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list) or not raw["stages"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty `stages:` list")
    for key in raw:
        if key not in ("stages", "description"):
            raise _fail(path, text, (key,), f"unknown top-level key {shown(key)} (allowed: stages, description)")
    stages: list[Stage] = []
    producers: dict[tuple[str, str], Stage] = {}
    from embedtab.yamlfile import yaml_line

    for index, entry in enumerate(raw["stages"]):
        command, options = _stage_options(path, text, index, entry)
        outputs, needs = _edges(command, options, path, text, index)
        stage = Stage(index, command, options, outputs, needs, yaml_line(text, ("stages", index)))
        for output in outputs:
            try:
                check_name(output[1])  # (a name the command makes up from a long one: refused here, with the line)
            except UsageError as exc:
                raise _fail(path, text, ("stages", index), f"{command}: {exc}") from None
            if output in producers:
                other = producers[output]
                raise _fail(
                    path,
                    text,
                    ("stages", index),
                    f"{output[0]}/{clip(output[1], 40)} is already made by stage {other.index + 1} "
                    f"(line {other.line}); give one of them another name",
                )
            producers[output] = stage
        stages.append(stage)
    _resolve_needs(stages, producers, store, path, text)
    return Pipeline(path, _ordered(stages, producers, path), producers)


def _resolve_needs(stages: list[Stage], producers: dict[tuple[str, str], Stage], store: ArtifactStore, path: Path, text: str) -> None:
    """Every need is made by a stage of the file or already held by `store` (ConfigError with the
    line otherwise); a need of every artifact of a kind becomes those the pipeline makes."""
    for stage in stages:  # "every artifact of a kind": those the pipeline makes
        stage.needs = [
            key for need in stage.needs for key in (sorted(k for k in producers if k[0] == need[0]) if need[1] == registry.ALL else [need])
        ]
    existing = {(r.kind, r.name) for r in store.records()} if store.manifest_path.exists() else set()
    for stage in stages:
        for need in stage.needs:
            if need not in producers and need not in existing:
                try:
                    unrecorded = store.unrecorded_folder(*need) is not None
                except UsageError:  # (an invalid name: it cannot be on disk either)
                    unrecorded = False
                held = (
                    f" holds it only unrecorded (not in {MANIFEST}; rebuild it with its command and --force)"
                    if unrecorded
                    else " does not hold"
                )
                raise _fail(
                    path,
                    text,
                    ("stages", stage.index, stage.command),
                    f"{stage.command} needs {need[0]}/{clip(need[1], 40)}, which no stage makes and {store.root}{held}",
                )


def _ordered(stages: list[Stage], producers: dict[tuple[str, str], Stage], path: Path) -> list[Stage]:
    """Dependency order; among stages that are ready, the order of the file."""
    from graphlib import CycleError, TopologicalSorter

    graph = {s.index: {producers[n].index for n in s.needs if n in producers} for s in stages}
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        cycle = " -> ".join(stages[i].key for i in exc.args[1])
        raise ConfigError(f"{path}: the stages depend on each other in a circle: {cycle}") from None
    order: list[int] = []

    def visit(index: int) -> None:  # depth first, in file order: each stage right after what it needs
        if index not in order:
            for up in sorted(graph[index]):
                visit(up)
            order.append(index)

    for stage in stages:
        visit(stage.index)
    return [stages[i] for i in order]


# ----------------------------------------------------------------------------- running
@dataclass
class StageReport:
    stage: str  # kind/name of its main artifact
    command: str
    status: str  # ran | up to date | failed | skipped | (dry run) up to date | run | stale | needs --force
    why: str = ""
    duration_s: float = 0.0
    rows: int | None = None
    items_per_s: float | None = None
    error: str | None = None
    exit_code: int | None = None  # a failed stage's: 2 for a usage problem (needs --force, an unrecorded folder), else 1
    line: int | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # what its artifact's manifest records as summary (ran stages)
    lines: list[str] = field(default_factory=list)  # what its own command prints about it (ran stages)


@dataclass
class RunReport:
    pipeline: str
    stages: list[StageReport] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(s.status in ("failed", "skipped") for s in self.stages)


def _execute(store: ArtifactStore, stage: Stage, reporter: Reporter, mode: RunMode) -> tuple[Any, bool, dict[str, Any], list[str]]:
    """Run one stage through the same core function as its command, in the run's mode: (main
    record, up to date, and, when it ran, its summary and the lines its command prints about it)."""
    command = registry.COMMANDS[stage.command]
    record, up_to_date, projection = command.outcome(command.run(store, stage.options, reporter, mode))
    if up_to_date:
        return record, True, {}, []
    return record, False, *_described(stage.command, record, projection)


def _described(command: str, record: Any, projection: Any) -> tuple[dict[str, Any], list[str]]:
    """(summary, lines) of a stage that ran: its record's summary (for reduce with the projection's
    dims, backend and explained variance) and its command's closing lines."""
    from embedtab import summaries

    summary = dict(record.summary)
    if projection is not None:
        info = projection.metadata
        summary.update(
            {
                **projection.summary,
                "dims": info.get("dims"),
                "backend": info.get("backend"),
                "explained_variance_ratio_total": info.get("explained_variance_ratio_total"),
            }
        )
    try:
        lines = summaries.of_stage(command, record, projection)
    except (KeyError, TypeError, ValueError):  # a record this version did not write: no lines, never a failed stage
        lines = []
    return summary, lines


def _rows(record: Any) -> int | None:
    from embedtab.status import row_count

    return row_count(record)


def run(
    store: ArtifactStore,
    pipeline: Pipeline,
    only: collections.abc.Sequence[str] = (),
    force: collections.abc.Sequence[str] = (),
    dry_run: bool = False,
    reporter: Reporter = SILENT,
    on_stage: Callable[[Stage], None] | None = None,
    on_done: Callable[[Stage, StageReport], None] | None = None,
) -> RunReport:
    """Run (or with `dry_run`, plan) the pipeline's stages in order. A failed stage is reported and
    its dependents skipped; stages that do not depend on it still run. KeyboardInterrupt stops the
    run (what finished is kept: it is published). `on_stage` is called before a stage runs,
    `on_done` after it ran, was found up to date, failed or was skipped (not in a dry run)."""
    for option, names in (("only", only), ("force", force)):  # every stage named must exist before anything runs
        for name in names:
            try:
                pipeline.find(name)
            except ConfigError as exc:
                raise ConfigError(f"{option}: {exc}") from None
    stages = pipeline.select(list(only)) if only else pipeline.stages
    for name in force:
        target = pipeline.find(name)
        target.options = dataclasses.replace(target.options, force=True)
    report = RunReport(str(pipeline.path))
    _run_stages(store, pipeline, stages, dry_run, reporter, on_stage, on_done, report)
    return report


def _run_stages(
    store: ArtifactStore,
    pipeline: Pipeline,
    stages: list[Stage],
    dry_run: bool,
    reporter: Reporter,
    on_stage: Callable[[Stage], None] | None,
    on_done: Callable[[Stage, StageReport], None] | None,
    report: RunReport,
) -> None:
    outcome: dict[int, str] = {}
    for stage in stages:
        blocked = [up for up in pipeline.upstream(stage) if outcome.get(up.index) in ("failed", "skipped")]
        if blocked:
            outcome[stage.index] = "skipped"
            report.stages.append(StageReport(stage.key, stage.command, "skipped", f"{blocked[0].key} failed", line=stage.line))
            if on_done is not None and not dry_run:
                on_done(stage, report.stages[-1])
            continue
        if dry_run:
            outcome[stage.index] = _plan_only(store, pipeline, stage, outcome, report)
            continue
        if on_stage is not None:
            on_stage(stage)
        result = _run_one(store, stage, reporter)
        outcome[stage.index] = result.status
        report.stages.append(result)
        if on_done is not None:
            on_done(stage, result)


def _run_one(store: ArtifactStore, stage: Stage, reporter: Reporter) -> StageReport:
    """Run one stage; its report (a failure is reported, not raised: the stages beside it go on)."""
    started = time.time()
    try:
        # make-like: a stage whose options are unchanged rebuilds when what it reads changed
        record, up_to_date, summary, lines = _execute(store, stage, reporter, RunMode(follow_inputs=True))
    except EmbedtabError as exc:
        reporter.warn(f"{stage.key} failed: {exc}")
        return StageReport(
            stage.key,
            stage.command,
            "failed",
            duration_s=round(time.time() - started, 3),
            error=str(exc),
            exit_code=exc.exit_code,
            line=stage.line,
        )
    duration = time.time() - started
    rows = _rows(record)
    speed = record.summary.get("items_per_s") if stage.command.startswith("encode") and not up_to_date else None
    if speed is None and rows and not up_to_date and duration > 0:
        speed = rows / duration
    return StageReport(
        stage.key,
        stage.command,
        "up to date" if up_to_date else "ran",
        duration_s=round(duration, 3),
        rows=rows,
        items_per_s=round(speed, 1) if speed else None,
        line=stage.line,
        summary=summary,
        lines=lines,
    )


def _plan_only(store: ArtifactStore, pipeline: Pipeline, stage: Stage, outcome: dict[int, str], report: RunReport) -> str:
    """A stage's verdict without running it: its own plan when everything it reads is current, else
    'stale' because of the upstream stage that will run first."""
    changing = [up for up in pipeline.upstream(stage) if outcome.get(up.index) not in ("up to date",)]
    if changing:
        new = all(store.get(kind, name) is None for kind, name in stage.outputs)
        status, why = ("run", "new") if new else ("stale", f"{changing[0].key} will be rebuilt first")
        unrecorded = [f"{k}/{n}" for k, n in stage.outputs if store.unrecorded_folder(k, n) is not None]
        if unrecorded and not stage.options.force:  # what its plan will refuse (see ArtifactStore.plan)
            status, why = "needs --force", f"{unrecorded[0]} is on disk but not in {MANIFEST}"
        report.stages.append(StageReport(stage.key, stage.command, status, why, line=stage.line))
        return status
    mode = RunMode(dry_run=True, follow_inputs=True)  # collects the verdicts of the stage's plans
    try:
        _execute(store, stage, SILENT, mode)  # stops at its plan (DryRunStop) when it would change anything
    except DryRunStop:
        pass
    except EmbedtabError as exc:
        report.stages.append(StageReport(stage.key, stage.command, "failed", error=str(exc), exit_code=exc.exit_code, line=stage.line))
        return "failed"
    verdicts = [v for v in mode.verdicts if v.state != "up to date"]
    if not verdicts:
        report.stages.append(StageReport(stage.key, stage.command, "up to date", line=stage.line))
        return "up to date"
    order = ("needs --force", "stale", "run")
    first = min(verdicts, key=lambda v: order.index(v.state))
    report.stages.append(StageReport(stage.key, stage.command, first.state, first.why, line=stage.line))
    return first.state
