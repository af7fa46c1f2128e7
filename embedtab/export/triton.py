"""`embedtab export triton`: a versioned Triton model repository from an artifact directory.

The repository is itself an artifact, exports/<name>/ (recorded, checked and shown by `status` like
any other), laid out as Triton reads it:

    nvt_<workflow>/               a fitted workflow as merlin-systems' TransformWorkflow model
                                  (raw columns in, the transformed columns out; targets left out)
    lookup_<lookup>/              ids (INT64) -> vectors (FP32, n x dim), present (BOOL): the rows of
                                  the lookup's dense table (table_model.py)
    decode_<workflow>_<column>/   ids -> raw ids, known (BOOL), for the id space of each exported
                                  lookup (table_model.py too)
    <model>/config.pbtxt          one per model; <model>/<version>/ the files of each version

Each export that has something new to serve adds a version (one above the newest) to every model and
keeps the `keep` newest, so a daily update is loaded by a server polling the repository while
yesterday's version serves until then. A model whose interface changed (its config.pbtxt) keeps only
the new version: Triton reads one config for all versions of a model. What each version holds (the
artifacts and their fingerprints) is in the record's metadata.

Before anything is exported every input artifact is verified (sha256), and refused when it is stale:
a lookup built before its workflow was refit would answer with another id space's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedtab.artifacts import LOOKUP_TABLE, ArtifactRecord, ArtifactStore, Driver, Made, RunMode, lookup_dense_name
from embedtab.errors import DataError, UsageError
from embedtab.export.options import ExportOptions
from embedtab.options import recipe_of
from embedtab.reporting import SILENT, Reporter

_HERE = Path(__file__).parent
_MAX_VERSION = 2**63 - 1  # Triton reads version folders as int64


@dataclass
class ExportResult:
    record: ArtifactRecord
    up_to_date: bool


@dataclass
class Model:
    name: str
    artifact: ArtifactRecord
    write: Any  # (model folder, version folder) -> config.pbtxt text; writes the version's files


# ----------------------------------------------------------------------------- what to export
def _selected(store: ArtifactStore, kind: str, names: list[str], warn: Any) -> list[ArtifactRecord]:
    if names:
        return [store.require(kind, name) for name in names]
    found = sorted((r for r in store.records() if r.kind == kind), key=lambda r: r.name)
    if kind == "lookups":  # every lookup that can be served: one table (a single source, or --concat)
        for record in [r for r in found if not r.metadata.get("dim")]:
            warn(f"lookups/{record.name} is not exported: it holds one table per source (built without --concat); see --lookup")
        found = [r for r in found if r.metadata.get("dim")]
    return found


def _refuse_stale(store: ArtifactStore, records: list[ArtifactRecord]) -> None:
    """A stale input serves what its inputs no longer say (a lookup from before its workflow's
    refit answers in the old id space): refused by name, with the change."""
    manifest = store.read_manifest()
    for record in records:
        reasons = store.upstream_changes(record, manifest)
        if reasons:
            raise DataError(f"{record.kind}/{record.name} is stale ({'; '.join(reasons)}): rerun its command before exporting it")


def _model_name(*parts: str) -> str:
    # tritonclient.http sends '+' as %2B, which Triton does not decode: such a model is unreachable
    return "_".join(parts).replace("+", "_")


def _models(store: ArtifactStore, lookups: list[ArtifactRecord], workflows: list[ArtifactRecord]) -> list[Model]:
    models = [Model(_model_name("nvt", r.name), r, _workflow_writer(store, r)) for r in workflows]
    spaces: dict[tuple[str, str], ArtifactRecord] = {}
    for record in lookups:
        models.append(Model(_model_name("lookup", record.name), record, _lookup_writer(store, record)))
        spaces.setdefault((record.params["workflow"], record.metadata["column"]), record)
    for (workflow, column), record in spaces.items():
        models.append(Model(_model_name("decode", workflow, column), record, _decoder_writer(store, record)))
    names = [m.name for m in models]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise UsageError(f"two artifacts would serve as model {clash[0]!r} ('+' becomes '_' in model names): rename one")
    return models


# ----------------------------------------------------------------------------- the models
def _config(name: str, inputs: list[tuple[str, str, str]], outputs: list[tuple[str, str, str]]) -> str:
    """A Python-backend config.pbtxt; tensors as (name, TYPE_..., dims)."""

    def tensors(kind: str, specs: list[tuple[str, str, str]]) -> str:
        return "\n".join(f'{kind} {{ name: "{n}" data_type: {t} dims: [ {d} ] }}' for n, t, d in specs)

    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
        f"{tensors('input', inputs)}\n{tensors('output', outputs)}\n"
        "instance_group [ { kind: KIND_CPU count: 1 } ]\n"
    )


def _link(source: str | Path, target: str | Path) -> None:
    """Between versions of one export (never with another artifact, whose files an in-place edit
    would damage too): files are replaced, not edited, so a hard link is a copy that costs nothing."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _lookup_writer(store: ArtifactStore, record: ArtifactRecord) -> Any:
    if not record.metadata.get("dim"):
        raise UsageError(
            f"lookups/{record.name} holds one table per source (built without --concat): export a lookup "
            "of one source each, or rebuild it with --concat"
        )

    def write(model: Path, version: Path) -> str:
        import pyarrow.parquet as pq

        folder = store.path("lookups", record.name)
        shutil.copyfile(folder / lookup_dense_name(), version / "vectors.npy")
        np.save(version / "present.npy", pq.read_table(folder / LOOKUP_TABLE, columns=["present"]).column(0).to_numpy())
        shutil.copyfile(_HERE / "table_model.py", version / "model.py")
        return _config(model.name, [("ids", "TYPE_INT64", "-1")], [("vectors", "TYPE_FP32", "-1, -1"), ("present", "TYPE_BOOL", "-1")])

    return write


def _decoder_writer(store: ArtifactStore, record: ArtifactRecord) -> Any:
    def write(model: Path, version: Path) -> str:
        import pyarrow as pa
        import pyarrow.parquet as pq

        column = record.metadata["column"]
        raw = pq.read_table(store.path("lookups", record.name) / LOOKUP_TABLE, columns=[column]).column(0)
        known = raw.is_valid().to_numpy(zero_copy_only=False)
        text = pa.types.is_string(raw.type) or pa.types.is_large_string(raw.type)
        values = np.array([v if v is not None else ("" if text else 0) for v in raw.to_pylist()], dtype=str if text else np.int64)
        np.save(version / "raw.npy", values)
        np.save(version / "known.npy", known)
        shutil.copyfile(_HERE / "table_model.py", version / "model.py")
        kind = "TYPE_STRING" if text else "TYPE_INT64"
        return _config(model.name, [("ids", "TYPE_INT64", "-1")], [("raw", kind, "-1"), ("known", "TYPE_BOOL", "-1")])

    return write


def _workflow_writer(store: ArtifactStore, record: ArtifactRecord) -> Any:
    def write(model: Path, version: Path) -> str:
        """merlin-systems writes the model (its name and version fixed) in a scratch folder; it is
        moved into place under this model's name."""
        from embedtab.workflow.merlin import load_workflow, quiet_merlin

        with quiet_merlin():  # (Merlin's import-time notices about TensorFlow)
            try:
                from merlin.schema import Tags
                from merlin.systems.dag.ensemble import Ensemble
                from merlin.systems.dag.ops.workflow import TransformWorkflow
            except ImportError:
                raise UsageError("exporting workflows needs merlin-systems: pip install 'embedtab[serve]'") from None

        workflow, _ = load_workflow(store, record.name)
        targets = workflow.output_schema.select_by_tag(Tags.TARGET).column_names
        inputs = workflow.input_schema.excluding_by_name(targets)
        with tempfile.TemporaryDirectory(dir=model.parent) as scratch, quiet_merlin():
            op = TransformWorkflow(workflow, label_columns=targets or None)
            try:
                Ensemble(inputs.column_names >> op, inputs).export(scratch)
            except Exception as exc:  # noqa: BLE001 - merlin-systems' own errors, named by workflow
                raise DataError(f"workflows/{record.name}: merlin-systems cannot export it ({type(exc).__name__}: {exc})") from None
            made = Path(scratch) / "0_transformworkflowtriton"
            version.rmdir()
            shutil.move(str(made / "1"), str(version))
            config = (made / "config.pbtxt").read_text()
        return config.replace('name: "0_transformworkflowtriton"', f'name: "{model.name}"', 1)

    return write


# ----------------------------------------------------------------------------- versions
def _versions(folder: Path) -> dict[str, list[int]]:
    """model -> its version numbers, in a repository folder."""
    found: dict[str, list[int]] = {}
    for model in sorted(folder.iterdir()) if folder.is_dir() else []:
        if model.is_dir():
            found[model.name] = sorted(int(v.name) for v in model.iterdir() if v.is_dir() and v.name.isdigit())
    return found


def _carry_over(previous: Path, staging: Path, configs: dict[str, str], keep: int, damaged: set[str]) -> dict[str, list[int]]:
    """The earlier versions of each model still exported with the same interface and intact (none
    of `damaged`, the damaged files' model/version), linked into staging; the `keep` newest versions
    (the new one included) remain. Returns model -> versions."""
    kept: dict[str, list[int]] = {}
    earlier = _versions(previous)
    for model, config in configs.items():
        new = [int(v.name) for v in (staging / model).iterdir() if v.name.isdigit()]
        old = [v for v in earlier.get(model, []) if f"{model}/{v}" not in damaged]
        same = old and (previous / model / "config.pbtxt").read_text() == config and f"{model}/config.pbtxt" not in damaged
        older = sorted(old)[-(keep - 1) :] if same and keep > 1 else []
        for number in older:
            source, target = previous / model / str(number), staging / model / str(number)
            shutil.copytree(source, target, copy_function=_link, ignore=shutil.ignore_patterns("__pycache__"))
        kept[model] = sorted(older + new)
    return kept


def _damaged_versions(store: ArtifactStore, record: ArtifactRecord | None) -> set[str]:
    """model/version (and model/config.pbtxt) of every damaged file of the export as it stands."""
    if record is None:
        return set()
    found = set()
    for problem in store.damaged_files(record):
        parts = problem.split(" ")[0].split("/")
        found.add("/".join(parts[:2]))
    return found


def _next_version(store: ArtifactStore, name: str, asked: int | None) -> int:
    """Above every version the repository holds or its record knows (a folder deleted by hand does
    not send the numbers back), and within Triton's int64."""
    record = store.get("exports", name)
    held = max((v for vs in _versions(store.path("exports", name)).values() for v in vs), default=0) if record else 0
    newest = max(held, int(record.metadata.get("version", 0)) if record else 0)
    if asked is None and newest >= _MAX_VERSION:
        raise UsageError(f"exports/{name} is at version {newest}, Triton's last: export under another --name")
    if asked is not None and asked <= newest:
        raise UsageError(
            f"exports/{name} already has version {newest}: a new version must be above it (Triton serves the highest); "
            f"give --version {newest + 1} or leave it out"
        )
    return asked or newest + 1


# ----------------------------------------------------------------------------- run
def run(store: ArtifactStore, options: ExportOptions, reporter: Reporter = SILENT, mode: RunMode | None = None) -> ExportResult:
    options.check()
    lookups = _selected(store, "lookups", list(options.lookups), reporter.warn)
    workflows = _selected(store, "workflows", list(options.workflows), reporter.warn)
    if not lookups and not workflows:
        raise UsageError(f"nothing to export: {store.root} has no lookups and no workflows")
    _refuse_stale(store, [*lookups, *workflows])
    models = _models(store, lookups, workflows)
    driver = Driver(store, mode)
    plan = driver.plan(
        "exports",
        options.name,
        "export triton",
        recipe_of(options),  # lookups, workflows
        input_artifacts=[*workflows, *lookups],
        force=options.force,
        packages=("numpy", "pyarrow", "merlin-systems"),
        refresh=True,
        warn=reporter.warn,
    )
    version = _next_version(store, options.name, options.version) if not plan.up_to_date else 0

    def make(staging: list[Path]) -> list[Made]:
        started = time.time()
        configs: dict[str, str] = {}
        with reporter.progress(f"exporting version {version}", total=len(models), unit="models") as advance:
            for model in models:
                folder = staging[0] / model.name
                (folder / str(version)).mkdir(parents=True)
                configs[model.name] = model.write(folder, folder / str(version))
                (folder / "config.pbtxt").write_text(configs[model.name])
                advance(1)
        earlier = store.get("exports", options.name)
        kept = _carry_over(store.path("exports", options.name), staging[0], configs, options.keep, _damaged_versions(store, earlier))
        return [
            Made(_metadata(store, options.name, version, models, kept), {"version": version, "seconds": round(time.time() - started, 3)})
        ]

    built = driver.build([plan], make)
    return ExportResult(built.record, built.up_to_date)


def _metadata(store: ArtifactStore, name: str, version: int, models: list[Model], kept: dict[str, list[int]]) -> dict[str, Any]:
    """The new version's models with the artifacts (and fingerprints) they serve, and the earlier
    versions' records as far as they are kept."""
    earlier = store.get("exports", name)
    versions = {
        str(version): {m.name: {"artifact": f"{m.artifact.kind}/{m.artifact.name}", "fingerprint": m.artifact.fingerprint} for m in models}
    }
    for number, held in ((earlier.metadata.get("versions") or {}) if earlier else {}).items():
        still = {model: served for model, served in held.items() if int(number) in kept.get(model, [])}
        if still:
            versions[number] = still
    return {"version": version, "models": {model: numbers for model, numbers in kept.items()}, "versions": versions}
