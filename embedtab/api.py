"""The Python API: an artifact directory as an object, with one method per command.

    import embedtab

    art = embedtab.Artifacts("artifacts")
    text = art.encode_text("sample_data/items.parquet", template="{title}. {brand}")
    pca = art.reduce("text", dims=64)                # -> embeddings "text-pca64" + its projection
    art.fit_workflow("configs/item.yaml", data="sample_data/items.parquet")
    table = art.lookup("text-pca64", workflow="item")
    table.vectors()                                  # numpy (cardinality, 64): row i = item id i

Every method takes the options of its command as keyword arguments, named as the long flags with
`_` for `-`: they are the fields of the command's options class (embedtab.stages lists them), so an
option declared there is accepted here with no other edit. Each method behaves as its command does
(up to date when nothing changed, incremental, resumable, the same errors:
`embedtab.errors.EmbedtabError` subclasses) and returns an `Artifact`. The CLI (embedtab/cli) is a
thin layer over this module; it only adds terminal output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from embedtab import tables
from embedtab.artifacts import (
    EMBEDDINGS_ERRORS,
    LOOKUP_TABLE,
    ArtifactRecord,
    ArtifactStore,
    lookup_dense_name,
)
from embedtab.errors import UsageError
from embedtab.reporting import SILENT, Reporter

Inputs = str | os.PathLike | Sequence[str | os.PathLike]


def _paths(inputs: Inputs) -> list[str]:
    return [str(inputs)] if isinstance(inputs, (str, os.PathLike)) else [str(i) for i in inputs]


@dataclass(frozen=True)
class Artifact:
    """One artifact as a command left it: its manifest record and whether this call rebuilt it."""

    store: ArtifactStore = field(repr=False)
    record: ArtifactRecord = field(repr=False)
    up_to_date: bool = False  # True: nothing changed, so nothing was done

    kind = property(lambda self: self.record.kind)
    name = property(lambda self: self.record.name)
    summary = property(lambda self: dict(self.record.summary))
    metadata = property(lambda self: dict(self.record.metadata))
    fingerprint = property(lambda self: self.record.fingerprint)

    @property
    def path(self) -> Path:
        return self.store.path(self.kind, self.name)

    def __repr__(self) -> str:
        state = "up to date" if self.up_to_date else "written"
        return f"<Artifact {self.kind}/{self.name} ({state}) at {self.path}>"

    def _verified(self) -> Path:
        return self.store.verify(self.record)  # a damaged artifact is refused, never read

    def table(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The data as one Arrow table: embeddings (id, embedding), a dataset's rows, a lookup's table."""
        folder = self._verified()
        if self.kind == "lookups":
            return tables.read_parts([folder / LOOKUP_TABLE], columns)
        if self.kind in ("embeddings", "datasets"):  # the data parts (sidecar files start with "_")
            parts = sorted((p for p in folder.glob("*.parquet") if not p.name.startswith("_")), key=lambda p: (len(p.name), p.name))
            return tables.read_parts(parts, columns)  # (part_2 before part_10)
        raise UsageError(f"{self.kind} artifacts are not tables; open {self.path} with the library that wrote it")

    def to_pandas(self) -> Any:
        return self.table().to_pandas()

    def vectors(self, source: str | None = None) -> np.ndarray:
        """The vectors as one float32 array: an embeddings artifact's rows in id order of its parts,
        or a lookup's dense table (row i = categorified id i; `source` picks one of several)."""
        folder = self._verified()
        if self.kind == "embeddings":
            return tables.read_vectors(folder)
        if self.kind == "lookups":
            name = lookup_dense_name(source)
            if not (folder / name).exists():
                sources = sorted(self.metadata.get("dims", {}))
                hint = f"pass one of {sources}" if sources else "it holds one table: give no source"
                raise UsageError(f"lookup {self.name!r} has no dense table {name}; {hint}")
            return np.load(folder / name)
        raise UsageError(f"{self.kind} artifacts hold no vectors")

    def errors(self) -> pa.Table:
        """Encode only: the items that were skipped, with the reason."""
        path = self._verified() / EMBEDDINGS_ERRORS
        return tables.read_parts([path]) if path.exists() else pa.table({})


class Reduced(NamedTuple):
    embeddings: Artifact
    projection: Artifact


class ShardJob(NamedTuple):
    """What an `encode_*(shard="i/n")` call returns while other jobs' shards are still missing."""

    summary: dict[str, Any]
    missing_shards: list[int]


class Artifacts:
    """An artifact directory (created on first write). Pass a `Reporter` to see progress."""

    def __init__(self, root: str | os.PathLike = "artifacts", reporter: Reporter = SILENT):
        self.store = ArtifactStore(root)
        self.reporter = reporter

    @property
    def root(self) -> Path:
        return self.store.root

    def __repr__(self) -> str:
        return f"<Artifacts {self.root}: {len(self.store.records()) if self.root.exists() else 0} artifacts>"

    def _wrap(self, record: ArtifactRecord, up_to_date: bool) -> Artifact:
        return Artifact(self.store, record, up_to_date)

    # ------------------------------------------------------------------ reading
    def get(self, kind: str, name: str) -> Artifact:
        """An existing artifact (ArtifactNotFound, naming what there is, if it does not exist)."""
        return self._wrap(self.store.require(kind, name), True)

    def list(self, kind: str | None = None) -> list[Artifact]:
        if not self.root.exists():
            return []
        return [self._wrap(r, True) for r in self.store.records() if kind in (None, r.kind)]

    def status(self, verify: bool = False) -> dict[str, Any]:
        """What `embedtab status --json` prints: every artifact with its health."""
        from embedtab.status import collect

        return collect(self.store, verify=verify)

    def workflow(self, name: str, trust: bool = False) -> Any:
        """A fitted workflow as an `nvtabular.Workflow`, loaded only after its files check out."""
        from embedtab.workflow.stage import load_workflow, require_merlin

        require_merlin("loading a workflow")
        return load_workflow(self.store, name, trust)[0]

    # ------------------------------------------------------------------ commands
    def run_pipeline(
        self,
        pipeline: str | os.PathLike,
        *,
        only: Sequence[str] = (),
        force: Sequence[str] = (),
        dry_run: bool = False,
        on_stage: Any = None,
        on_done: Any = None,
    ) -> Any:
        """`embedtab run`: the stages of a pipeline file in dependency order; a `RunReport`.
        `on_stage(stage)` is called before each stage, `on_done(stage, stage_report)` after it."""
        from embedtab import pipeline as pipelines

        loaded = pipelines.load(pipeline, self.store)
        return pipelines.run(self.store, loaded, list(only), list(force), dry_run, self.reporter, on_stage, on_done)

    def _made(self, command: str, main: Any, options: dict[str, Any]) -> Any:
        """Run `command` (embedtab.stages) with its options built by keyword from `options`: every
        field of its options class, by its name or an alias. Paths may be given as `Path`s."""
        from embedtab.stages import COMMANDS

        stage = COMMANDS[command]
        values = {k: str(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}
        return stage.run(self.store, stage.make(main, values), self.reporter)

    def encode_text(self, inputs: Inputs, **options: Any) -> Artifact | ShardJob:
        """`embedtab encode text`. options: the fields of `embedtab.encode.TextOptions` (template,
        text_columns -- also text_column or columns --, name, id_column, model, limit, ...)."""
        return self._encoded(self._made("encode text", _paths(inputs), options))

    def encode_image(self, inputs: Inputs, *, model: str, **options: Any) -> Artifact | ShardJob:
        """`embedtab encode image`. options: the fields of `embedtab.encode.ImageOptions` (pretrained,
        image_column, image_root, workers, max_pixels, limit, ...)."""
        return self._encoded(self._made("encode image", _paths(inputs), {"model": model, **options}))

    def _encoded(self, result: Any) -> Artifact | ShardJob:
        if not result.sealed:
            return ShardJob(dict(result.summary), list(result.missing_shards))
        return self._wrap(result.record, result.up_to_date)

    def reduce(self, source: str, dims: int | None = None, **options: Any) -> Reduced:
        """`embedtab reduce`: fit PCA on `source`; (reduced embeddings, projection). options: the
        fields of `embedtab.reduce.ReduceOptions` (variance, name, whiten, normalize, fit_on, seed,
        memory: bytes or "4GB" of fitted rows kept for the transform instead of read again, ...)."""
        if dims is not None:
            options["dims"] = dims
        result = self._made("reduce", source, options)
        up_to_date = result.up_to_date
        return Reduced(self._wrap(result.embeddings, up_to_date), self._wrap(result.projection, up_to_date))

    def apply_projection(self, projection: str, source: str, name: str | None = None, **options: Any) -> Artifact:
        """`embedtab reduce SOURCE --apply PROJECTION`: new items into a saved projection's space.
        options: the fields of `embedtab.reduce.ApplyOptions` (force)."""
        if name is not None:
            options["name"] = name
        result = self._made("apply", projection, {"source": source, **options})
        return self._wrap(result.record, result.up_to_date)

    def fit_workflow(self, config: str | os.PathLike, data: Inputs, **options: Any) -> Artifact:
        """`embedtab fit-workflow` (needs the [merlin] extra). options: the fields of
        `embedtab.workflow.options.FitOptions` (name, part_size, dask_scheduler, force)."""
        result = self._made("fit-workflow", str(config), {"data": _paths(data), **options})
        return self._wrap(result.record, result.up_to_date)

    def transform(self, workflow: str, data: Inputs, **options: Any) -> Artifact:
        """`embedtab transform` (needs the [merlin] extra). options: the fields of
        `embedtab.workflow.options.TransformOptions` (name, mask, part_size, trust_workflow, ...)."""
        result = self._made("transform", workflow, {"data": _paths(data), **options})
        return self._wrap(result.record, result.up_to_date)

    def export_triton(self, name: str = "triton", **options: Any) -> Artifact:
        """`embedtab export triton`: a versioned Triton model repository at exports/<name>/. options:
        the fields of `embedtab.export.options.ExportOptions` (lookups, workflows, version, keep, force)."""
        result = self._made("export triton", name, options)
        return self._wrap(result.record, result.up_to_date)

    def lookup(self, embeddings: str | Sequence[str], **options: Any) -> Artifact:
        """`embedtab lookup`: row i of the table is the embedding of the item with categorified id i.
        options: the fields of `embedtab.lookup_options.LookupOptions` (workflow, column, concat,
        fill, min_coverage, min_reachable, ...)."""
        result = self._made("lookup", embeddings, options)
        return self._wrap(result.record, result.up_to_date)
