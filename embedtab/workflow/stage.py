"""`embedtab fit-workflow` and `embedtab transform`.

fit-workflow writes workflows/<name>/: exactly what `nvtabular.Workflow.save` writes (metadata.json,
workflow.pkl, categories/), so plain `nvtabular.Workflow.load` opens it.

Trust model: a fitted workflow is unpickled only after every file's recorded sha256 is verified
(see merlin.py, which loads workflows; vocabulary.py reads their category files without unpickling).

transform writes datasets/<name>/: NVTabular's parquet parts plus the Merlin schema.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from embedtab import bounds, tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore, owner_tag, workflow_vocabulary
from embedtab.bounds import PartSize
from embedtab.device import gpu_dataframes_available
from embedtab.errors import ArtifactNotFound, ConfigError, DataError, UsageError
from embedtab.fingerprint import columns_fingerprint, file_fingerprint, files_fingerprint, hash_value
from embedtab.reporting import SILENT, Reporter
from embedtab.workflow.config import NUMERIC_OPS, WorkflowConfig, load_config
from embedtab.workflow.merlin import categorify_paths as categorify_paths  # (re-exported)
from embedtab.workflow.merlin import external_folder, load_workflow, quiet_merlin, require_merlin
from embedtab.workflow.merlin import merlin_installed as merlin_installed  # (re-exported)
from embedtab.workflow.vocabulary import read_unique_file, vocabulary

_PACKAGES = ("nvtabular", "merlin-core", "pandas", "dask", "distributed", "pyarrow", "numpy")
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"  # the variable Dask itself reads for `scheduler-address`


@contextlib.contextmanager
def dask_cluster(address: str | None, reporter: Reporter) -> Iterator[str]:
    """Run on an existing Dask cluster when an address is given (option or DASK_SCHEDULER_ADDRESS)."""
    address = address or os.environ.get(SCHEDULER_ENV)
    if not address:
        yield "local"
        return
    from distributed import Client
    from merlin.core.utils import set_dask_client

    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise UsageError(f"cannot reach the Dask scheduler at {address} ({exc}); start one or drop --dask-scheduler") from None
    reporter.info(f"running on the Dask cluster at {address} ({len(client.scheduler_info()['workers'])} workers)")
    set_dask_client(client)
    try:
        yield address
    finally:
        set_dask_client(None)
        client.close()


def _dataset(paths: Sequence[Path], use_gpu: bool, part_size: int | None = None) -> Any:
    from merlin.io import Dataset

    suffixes = {p.suffix for p in paths}
    if len(suffixes) > 1:
        raise UsageError("inputs mix parquet and csv files; pass one format at a time")
    engine = "csv" if suffixes == {".csv"} else "parquet"
    kwargs: dict[str, Any] = {"engine": engine, "cpu": not use_gpu}
    if part_size:
        kwargs["part_size"] = part_size
    return Dataset([str(p) for p in paths], **kwargs)


def input_schema(paths: Sequence[Path]) -> dict[str, Any]:
    """Column -> numpy dtype of the first input file (all files must agree for NVTabular anyway)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    first = paths[0]
    try:
        if first.suffix == ".csv":
            with pacsv.open_csv(first) as reader:
                schema = reader.schema
        else:
            schema = pq.read_schema(first)
    except Exception as exc:  # noqa: BLE001 - any reader failure is "cannot read this file"
        raise DataError(f"{first}: cannot read ({str(exc).splitlines()[0]})") from None
    return {field.name: field.type.to_pandas_dtype() for field in schema}


def _count_rows(paths: Sequence[Path]) -> int | None:
    if any(p.suffix != ".parquet" for p in paths):
        return None
    return sum(tables.parquet_rows(p) for p in paths)


def check_config_against_data(config: WorkflowConfig, paths: Sequence[Path], config_path: str) -> None:
    """Missing columns and numeric ops on non-numeric columns, named by place in the config."""
    import numpy as np

    dtypes = input_schema(paths)
    raw_dtypes = dict(dtypes)
    base_dir = Path(config_path).resolve().parent
    for index, join in enumerate(config.joins):
        from embedtab.workflow.compile import side_table_path

        side = side_table_path(join, base_dir)
        if not side.is_file():
            raise ConfigError(f"{config_path}: joins[{index}].path: {side} does not exist")
        side_types = input_schema([side])
        missing = [c for c in join.keys + join.columns if c not in side_types]
        if missing:
            raise ConfigError(f"{config_path}: joins[{index}]: {', '.join(missing)} not in {side.name} (it has {', '.join(side_types)})")
        absent = [k for k in join.keys if k not in dtypes]
        if absent:
            raise ConfigError(f"{config_path}: joins[{index}].on: {', '.join(absent)} not in the data")
        dtypes.update({c: side_types[c] for c in join.columns})
    for index, group in enumerate(config.features):
        missing = [c for c in group.flat_columns() if c not in dtypes]
        if missing:
            raise ConfigError(
                f"{config_path}: features[{index}].columns: {', '.join(missing)} not in the data "
                f"({paths[0].name} has {', '.join(dtypes)})"
            )
        first = group.ops[0].op if group.ops else None
        if first in NUMERIC_OPS:

            def usable(column: str) -> bool:
                dtype = np.dtype(dtypes[column])
                return np.issubdtype(dtype, np.number) or (first == "time_features" and np.issubdtype(dtype, np.datetime64))

            wrong = [c for c in group.flat_columns() if not usable(c)]
            if wrong:
                raise ConfigError(
                    f"{config_path}: features[{index}].ops[0]: {first} needs numeric columns; "
                    + ", ".join(f"{c} is {np.dtype(dtypes[c])}" for c in wrong)
                )
    if config.masking is not None:
        from embedtab.workflow.masking import check_sentinels

        check_sentinels(config.masking.model_dump(), raw_dtypes, config_path)


def _check_groupby(config: WorkflowConfig, workflow_features: Any, paths: Sequence[Path], config_path: str) -> None:
    """Groupby columns must be outputs of the feature groups (checked on the schema, before fit)."""
    if config.groupby is None:
        return
    import nvtabular as nvt
    from merlin.io import Dataset

    schema = Dataset([str(paths[0])], engine="parquet" if paths[0].suffix == ".parquet" else "csv", cpu=True).schema
    outputs = nvt.Workflow(workflow_features).fit_schema(schema).output_schema.column_names
    spec = config.groupby
    missing = [c for c in [*spec.by, *spec.sort, *spec.aggs] if c not in outputs]
    if missing:
        raise ConfigError(f"{config_path}: groupby: {', '.join(missing)} not produced by the feature groups (they produce {', '.join(outputs)})")


class Vocabularies:
    """Resolves `categorify: {vocabulary: ...}` for the compiler and remembers what it handed out.

    `workflow:` sources are read from the source artifact's category file after its sha256 is
    checked (nothing unpickled); `table:` sources are the table's distinct values in order of
    first appearance, so appending rows to a catalog keeps every existing id.
    """

    def __init__(self, store: ArtifactStore, config: WorkflowConfig, base_dir: Path, dtypes: dict[str, Any], source: str):
        self.store, self.base_dir, self.dtypes, self.source = store, base_dir, dtypes, source
        self.used: dict[str, dict[str, Any]] = {}  # output column -> where its vocabulary came from
        self._expected: dict[str, tuple[Any, Any]] = {}  # column -> (values, ids) a workflow source gave
        self.records: list[ArtifactRecord] = []
        self.tables: list[Path] = []
        for spec in config.vocabulary_sources():  # known before the plan, so fingerprints cover them
            if spec.workflow is not None:
                if spec.workflow not in [r.name for r in self.records]:
                    try:
                        self.records.append(store.require("workflows", spec.workflow))
                    except ArtifactNotFound as exc:
                        raise ConfigError(f"{source}: categorify vocabulary: {exc}; fit workflow {spec.workflow!r} first") from None
            else:
                path = self.table_path(spec)
                if not path.is_file():
                    raise ConfigError(f"{source}: categorify vocabulary table {path} does not exist")
                if path not in self.tables:
                    self.tables.append(path)

    def table_path(self, spec: Any) -> Path:
        path = Path(spec.table)
        return path if path.is_absolute() else self.base_dir / path

    def __call__(self, spec: Any, name: str) -> Any:
        import pandas as pd

        column = spec.column or name
        if spec.workflow is not None:
            try:
                vocab, record = vocabulary(self.store, spec.workflow, column, trust=False)
            except UsageError as exc:
                raise ConfigError(f"{self.source}: vocabulary of {name!r}: {exc}") from None
            order = np.argsort(vocab.ids, kind="stable")
            values = vocab.values.take(pa.array(order))
            self._expected[name] = (values, vocab.ids[order])
            origin = {"workflow": spec.workflow, "column": column, "fingerprint": record.fingerprint}
        else:
            path = self.table_path(spec)
            try:
                table = tables.read_column(path, column)
            except DataError as exc:
                raise ConfigError(f"{self.source}: vocabulary of {name!r}: {exc}") from None
            values = pa.array(pd.Series(table.to_pandas()).dropna().drop_duplicates().to_numpy())
            origin = {"table": str(path), "column": column}
        self._check_type(name, values.type, origin)
        self.used[name] = {**origin, "size": len(values)}
        return pd.Series(values.to_pandas(), name=name)

    def _check_type(self, name: str, kind: pa.DataType, origin: dict[str, Any]) -> None:
        """An id vocabulary of strings never matches integer data (everything would be OOV)."""
        if name not in self.dtypes:
            return  # a derived column (after a rename or bucketize): NVTabular matches what it can
        data_numeric = np.issubdtype(np.dtype(self.dtypes[name]), np.number)
        vocab_numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if data_numeric != vocab_numeric:
            where = f"workflow {origin['workflow']!r}" if "workflow" in origin else origin["table"]
            raise ConfigError(
                f"{self.source}: the vocabulary of {name!r} from {where} ({origin['column']}) holds {kind} values, "
                f"the data's {name} is {np.dtype(self.dtypes[name])}; every value would be out of vocabulary"
            )

    def check_fitted(self, saved: Path) -> None:
        """Ids after the fit must be exactly the source workflow's (they differ if num_buckets does)."""
        for name, (values, ids) in self._expected.items():
            unique = saved / workflow_vocabulary(name)
            got = read_unique_file(unique, name, 1 << 62)
            same = len(got.ids) == len(ids) and np.array_equal(np.asarray(got.ids), np.asarray(ids)) and got.values.equals(values.cast(got.values.type))
            if not same:
                origin = self.used[name]
                raise ConfigError(
                    f"{self.source}: {name} would get other ids than in workflow {origin['workflow']!r}, whose "
                    f"vocabulary starts at id {int(ids[0]) if len(ids) else '?'} (num_buckets there reserves several "
                    "out-of-vocabulary ids); share vocabularies only from categorify ops without num_buckets"
                )


@dataclass
class FitOptions:
    config: str
    data: Sequence[str]
    name: str | None = None
    force: bool = False
    dask_scheduler: str | None = None
    part_size: PartSize | None = None  # Dask partition bytes ("256MB" is parsed when the options are made)

    def __post_init__(self) -> None:
        bounds.check(self)


@dataclass
class FitResult:
    record: ArtifactRecord
    up_to_date: bool


def fit(store: ArtifactStore, options: FitOptions, reporter: Reporter = SILENT) -> FitResult:
    from embedtab.workflow.compile import Context, side_table_path

    require_merlin("fit-workflow")
    config = load_config(options.config)
    name = options.name or config.name or Path(options.config).stem
    paths = tables.resolve_inputs(options.data)
    check_config_against_data(config, paths, options.config)
    if _count_rows(paths) == 0:
        raise DataError(f"{', '.join(p.name for p in paths)}: no rows to fit on")
    base_dir = Path(options.config).resolve().parent
    side = [side_table_path(join, base_dir) for join in config.joins]
    dtypes = input_schema(paths)
    vocabularies = Vocabularies(store, config, base_dir, dtypes, options.config)
    if name in [r.name for r in vocabularies.records]:
        raise ConfigError(f"{options.config}: workflow {name!r} cannot take a vocabulary from itself")
    use_gpu = gpu_dataframes_available()
    params = {"config": config.as_params(), "config_path": str(options.config), "data": [str(p) for p in paths]}
    # The fit reads only the columns the config uses: an edit to another one (an item's
    # description) leaves the workflow up to date. Joined and vocabulary tables count whole.
    data_files, other_files = files_fingerprint(paths), files_fingerprint(p for p in [*side, *vocabularies.tables] if p.is_file())
    used = columns_fingerprint(paths, [c for c in config.input_columns() if c in dtypes])
    plan = store.plan(
        "workflows", name, "fit-workflow", params, input_files=other_files if used else data_files + other_files,
        read_files=data_files if used else [], content=used, was=(data_files + other_files, None),
        input_artifacts=vocabularies.records, force=options.force, packages=_PACKAGES, warn=reporter.warn,
    )
    if plan.up_to_date:
        return FitResult(plan.existing, True)

    with store.building(plan) as made:
        if made is not None:
            return FitResult(made, True)
        with quiet_merlin(), dask_cluster(options.dask_scheduler, reporter) as cluster:

            from embedtab.workflow.compile import compile_workflow, feature_graph

            store.staging_root().mkdir(parents=True, exist_ok=True)
            with store.staging(plan) as staging, tempfile.TemporaryDirectory(dir=store.staging_root(), prefix=f"fit{owner_tag()}") as scratch:
                ctx = Context(out_path=scratch, base_dir=base_dir, use_gpu=use_gpu, vocabulary=vocabularies)
                features = feature_graph(config, ctx)
                _check_groupby(config, features, paths, options.config)
                workflow = compile_workflow(config, ctx, features)
                reporter.info(f"fitting workflow {name!r} on {len(paths)} file(s) ({'GPU/cuDF' if use_gpu else 'CPU/pandas'}, {cluster} Dask)")
                started = time.time()
                try:
                    workflow.fit(_dataset(paths, use_gpu, options.part_size))
                except (KeyError, ValueError, TypeError, AttributeError) as exc:
                    raise DataError(f"fitting {options.config} on {paths[0].name}: {type(exc).__name__}: {exc}") from None
                fit_seconds = time.time() - started
                from embedtab.workflow import functions

                # The named functions travel inside workflow.pkl, so plain NVTabular loads it without embedtab.
                workflow.save(str(staging), modules_byvalue=[functions])
                vocabularies.check_fitted(staging)
                cardinalities = embedding_sizes(workflow, derived_aggregates(params["config"]))
                _check_id_masking(config, cardinalities, options.config)
                metadata = {
                    "engine": "gpu" if use_gpu else "cpu",
                    "dask": cluster,
                    "input_columns": config.input_columns(),
                    "output_schema": _schema_summary(workflow.output_schema),
                    "cardinalities": cardinalities,
                    "masking": config.masking_spec(),
                    "side_tables": [str(p) for p in ctx.side_tables],
                    "vocabularies": vocabularies.used,
                }
                record = store.publish(
                    plan, staging, metadata=metadata, summary={"fit_seconds": round(fit_seconds, 3)},
                    device="cuda" if use_gpu else "cpu",
                )
        return FitResult(record, False)


def _check_id_masking(config: WorkflowConfig, cardinalities: dict[str, Any], source: str) -> None:
    for index, group in enumerate(config.masking.groups if config.masking else []):
        unknown = [c for c in group.ids or [] if c not in cardinalities]
        if unknown:
            raise ConfigError(
                f"{source}: masking.groups[{index}].ids: {', '.join(unknown)} not a categorified output of this workflow "
                f"(those are: {', '.join(cardinalities) or 'none'})"
            )


def embedding_sizes(workflow: Any, skip: set[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Cardinality and NVTabular's default embedding dim per categorical output column."""
    import nvtabular as nvt

    sizes = nvt.ops.get_embedding_sizes(workflow)
    # With list columns (after a groupby) NVTabular returns (single-hot, multi-hot) dicts.
    single, multi = sizes if isinstance(sizes, tuple) else (sizes, {})
    out = {col: {"cardinality": int(card), "embedding_dim": int(dim)} for col, (card, dim) in single.items()}
    out.update({col: {"cardinality": int(card), "embedding_dim": int(dim), "multi_hot": True} for col, (card, dim) in multi.items()})
    return dict(sorted((k, v) for k, v in out.items() if k not in skip))


def _schema_summary(schema: Any) -> list[dict[str, Any]]:
    out = []
    for col in schema:
        dtype = col.dtype.to_numpy if hasattr(col.dtype, "to_numpy") else col.dtype
        entry = {"name": col.name, "dtype": str(dtype), "tags": sorted(str(getattr(t, "value", t)) for t in col.tags)}
        if col.is_list:
            entry["list"] = True
        out.append(entry)
    return out


def derived_aggregates(config: dict[str, Any] | None) -> set[str]:
    """Groupby outputs such as `item_id-count` inherit Categorify's properties but hold no ids."""
    groupby = (config or {}).get("groupby")
    if not groupby:
        return set()
    return {f"{col}{groupby['name_sep']}{agg}" for col, aggs in groupby["aggs"].items()
            for agg in aggs if agg not in ("list", "first", "last")}


def oov_counts(directory: Path, schema: Any, skip: set[str]) -> dict[str, dict[str, int]]:
    """Per Categorify output column: rows that fell into the OOV slot(s) and rows that were null."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ranges = {}
    for col in schema:
        props = col.properties or {}
        if col.name not in skip and ("cat_path" in props or "embedding_sizes" in props):
            buckets = props.get("num_buckets") or 1
            ranges[col.name] = (2, 2 + int(buckets))  # NVTabular 23.08: 1 null, 2.. OOV buckets
    counts = {name: {"oov": 0, "null": 0} for name in ranges}
    for part in sorted(directory.glob("*.parquet")):
        table = pq.read_table(part, columns=list(ranges))
        for name, (low, high) in ranges.items():
            values = table.column(name).combine_chunks()
            if hasattr(values.type, "value_type"):  # list columns after a groupby
                values = pc.list_flatten(values)
            counts[name]["oov"] += pc.sum(pc.and_(pc.greater_equal(values, low), pc.less(values, high))).as_py() or 0
            counts[name]["null"] += pc.sum(pc.equal(values, 1)).as_py() or 0
    return counts


@dataclass
class TransformOptions:
    workflow: str
    data: Sequence[str]
    name: str | None = None
    force: bool = False
    part_size: PartSize | None = None  # Dask partition bytes ("256MB" is parsed when the options are made)
    mask: bool = False
    dask_scheduler: str | None = None
    trust_workflow: bool = False

    def __post_init__(self) -> None:
        bounds.check(self)


def _workflow_identity(store: ArtifactStore, options: TransformOptions) -> tuple[ArtifactRecord | None, str, list[str], dict[str, Any] | None]:
    """(record, fingerprint, input columns, masking spec) of the workflow to apply."""
    external = external_folder(options.workflow)
    if external is not None:
        if not options.trust_workflow:
            load_workflow(store, options.workflow)  # raises the explanation
        files = sorted(p for p in external.rglob("*") if p.is_file())
        return None, hash_value([file_fingerprint(p)["sha256"] for p in files]), [], None
    record = store.require("workflows", options.workflow)
    return record, record.fingerprint, record.metadata.get("input_columns", []), record.metadata.get("masking")


def transform(store: ArtifactStore, options: TransformOptions, reporter: Reporter = SILENT) -> FitResult:
    require_merlin("transform")
    name = options.name or Path(options.workflow).name
    paths = tables.resolve_inputs(options.data)
    record, workflow_fp, needed, masking = _workflow_identity(store, options)
    dtypes = input_schema(paths)
    missing = [c for c in needed if c not in dtypes]
    if missing:
        raise DataError(f"{paths[0]}: missing column(s) {', '.join(missing)} that workflow {options.workflow!r} needs")
    if _count_rows(paths) == 0:
        raise DataError(f"{', '.join(p.name for p in paths)}: no rows to transform")
    if options.mask and not masking:
        raise UsageError(f"--mask: workflow {options.workflow!r} has no masking block in its config")
    params = {"workflow": options.workflow, "data": [str(p) for p in paths], "mask": masking if options.mask else None}
    # As for fit: the columns the workflow (and the masking) read decide the output, not the others.
    masked = [c for g in (masking or {}).get("groups", []) if options.mask for c in [*(g.get("columns") or {}), g.get("by")] if c]
    data_files = files_fingerprint(paths)
    used = columns_fingerprint(paths, [c for c in [*needed, *masked] if c in dtypes]) if needed else None
    plan = store.plan(
        "datasets", name, "transform", params, input_files=[] if used else data_files, read_files=data_files if used else [],
        input_artifacts=[record] if record else [], force=options.force, packages=_PACKAGES, refresh=True,
        content=[workflow_fp, used] if used else workflow_fp, was=(data_files, workflow_fp), warn=reporter.warn,
        trusted=(record.key,) if record and options.trust_workflow else (),
    )
    if plan.up_to_date:
        return FitResult(plan.existing, True)
    with store.building(plan) as made:
        if made is not None:
            return FitResult(made, True)
        workflow, _ = load_workflow(store, options.workflow, trust=options.trust_workflow)
        use_gpu = gpu_dataframes_available()
        with quiet_merlin(), dask_cluster(options.dask_scheduler, reporter) as cluster, store.staging(plan) as staging:
            reporter.info(f"transforming {len(paths)} file(s) with workflow {options.workflow!r} ({cluster} Dask)")
            started = time.time()
            dataset = _dataset(paths, use_gpu, options.part_size)
            masked_rows, masked_ids, targets = None, {}, None
            raw = dataset
            workflow_dir = external_folder(options.workflow) or store.path("workflows", options.workflow)
            if options.mask:
                targets = _mask_targets(masking, workflow.output_schema, workflow_dir, record.params.get("config") if record else None)
                dataset, masked_rows, masked_ids = _masked(dataset, masking, use_gpu, targets or {})
            try:
                output = workflow.transform(dataset)
                from embedtab.workflow.masking import has_id_groups  # (pandas: imported only to transform)

                if options.mask and has_id_groups(masking):
                    output = _masked_ids(output, raw, masking, use_gpu)
                output.schema = _final_cat_paths(output.schema, workflow_dir)
                output.to_parquet(str(staging), out_files_per_proc=1)
                _final_file_list(staging, store.path("datasets", name))
            except (KeyError, ValueError, TypeError) as exc:
                raise DataError(f"transforming {paths[0].name} with {options.workflow!r}: {type(exc).__name__}: {exc}") from None
            seconds = time.time() - started
            rows = sum(tables.parquet_rows(p) for p in sorted(staging.glob("*.parquet")))
            oov = oov_counts(staging, workflow.output_schema, derived_aggregates(record.params.get("config") if record else None))
            metadata = {"engine": "gpu" if use_gpu else "cpu", "dask": cluster, "workflow": options.workflow,
                        "output_schema": _schema_summary(workflow.output_schema), "rows": rows,
                        "masking": {"spec": masking, "masked_rows": masked_rows} if options.mask else None}
            # oov: values unseen at fit time; masked: ids the masking set to the OOV id, counted apart
            summary = {"rows": rows, "seconds": round(seconds, 3),
                       "oov": {k: max(0, v["oov"] - masked_ids.get(k, 0)) for k, v in oov.items()},
                       "null": {k: v["null"] for k, v in oov.items()}}
            if masked_rows is not None:
                summary["masked_rows"] = masked_rows
                if targets is not None:  # (after a groupby rows are aggregated: oov then holds both)
                    summary["masked"] = {k: masked_ids.get(k, 0) for k in oov}
            out = store.publish(plan, staging, metadata=metadata, summary=summary, device="cuda" if use_gpu else "cpu")
        return FitResult(out, False)


def _final_cat_paths(schema: Any, workflow_dir: Path) -> Any:
    """Categorify's `cat_path` in the output schema names the folder the workflow was fitted in (a
    scratch folder, gone since); name the saved workflow's own category file instead."""
    from merlin.schema import Schema

    columns = []
    for column in schema:
        properties = dict(column.properties or {})
        if "cat_path" in properties:
            properties["cat_path"] = str(workflow_dir / "categories" / Path(properties["cat_path"]).name)
            column = column.with_properties(properties)
        columns.append(column)
    return Schema(columns)


def _final_file_list(staging: Path, final: Path) -> None:
    """NVTabular's _file_list.txt names the parts where they were written (the staging folder)."""
    listing = staging / "_file_list.txt"
    if listing.is_file():
        listing.write_text(listing.read_text().replace(str(staging), str(final)))


def _masked_ids(output: Any, raw: Any, spec: dict[str, Any], use_gpu: bool) -> Any:
    """Output partition i gets the `ids` masks decided on input partition i: NVTabular transforms
    partition by partition and keeps the rows' order (the config refuses groupby and inner joins)."""
    from merlin.io import Dataset

    from embedtab.workflow.masking import mask_ids_partition

    out = output.to_ddf()
    masked = out.map_partitions(mask_ids_partition, raw.to_ddf(), spec, meta=out._meta, align_dataframes=False)
    return Dataset(masked, schema=output.schema, cpu=not use_gpu)


def _masked(dataset: Any, spec: dict[str, Any], use_gpu: bool,
            targets: dict[str, list[tuple[int, bool]]]) -> tuple[Any, list[int], dict[str, int]]:
    """(the dataset with the `columns` groups applied, masked rows per group, per target column the
    rows the masking sets to the out-of-vocabulary id)."""
    from merlin.io import Dataset

    from embedtab.workflow.masking import count_partition, mask_partition

    ddf = dataset.to_ddf()
    meta = {**{f"g{i}": "int64" for i in range(len(spec["groups"]))}, **{f"t{j}": "int64" for j in range(len(targets))}}
    counts = ddf.map_partitions(count_partition, spec, targets, meta=meta).sum().compute()
    masked = ddf.map_partitions(mask_partition, spec, meta=ddf._meta)
    groups = [int(counts[f"g{i}"]) for i in range(len(spec["groups"]))]
    return Dataset(masked, cpu=not use_gpu), groups, {column: int(counts[f"t{j}"]) for j, column in enumerate(targets)}


def _mask_targets(spec: dict[str, Any], schema: Any, workflow_dir: Path,
                  config: dict[str, Any] | None) -> dict[str, list[tuple[int, bool]]] | None:
    """Categorify output column -> the masking groups that touch it, in the order they are applied,
    each with whether it leaves the out-of-vocabulary id: `columns` groups that mask the input
    column it was categorified from (named by its category file) -- OOV unless the sentinel is in
    the vocabulary --, then `ids` groups naming it (always OOV). None after a groupby, whose rows
    are aggregates of input rows."""
    if (config or {}).get("groupby"):
        return None
    targets: dict[str, list[tuple[int, bool]]] = {}
    for column in schema:
        props = column.properties or {}
        if "cat_path" not in props and "embedding_sizes" not in props:
            continue
        category_file = Path(str(props.get("cat_path", ""))).name
        source = category_file[len("unique."):-len(".parquet")] if category_file.startswith("unique.") else column.name
        unique_file = workflow_dir / workflow_vocabulary(source)
        groups = [(index, not _in_vocabulary(unique_file, source, group["columns"][source]))
                  for index, group in enumerate(spec["groups"]) if source in (group.get("columns") or {})]
        groups += [(index, True) for index, group in enumerate(spec["groups"]) if column.name in (group.get("ids") or ())]
        if groups:
            targets[column.name] = groups
    return targets


def _in_vocabulary(path: Path, column: str, value: Any) -> bool:
    """Whether a masking sentinel is a value of the vocabulary in `path` (then it gets a real id)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    if not path.is_file():
        return False
    try:
        return bool(pc.any(pc.equal(pq.read_table(path, columns=[column]).column(column), value)).as_py())
    except (pa.ArrowException, KeyError):  # a sentinel of another type than the vocabulary's
        return False
