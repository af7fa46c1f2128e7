"""WorkflowConfig -> a real NVTabular graph (nvtabular.ops only; nothing re-implemented)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtab.errors import ConfigError
from embedtab.workflow import config as cfg
from embedtab.workflow.functions import CASTS, TIME_FUNCTIONS, Prefix
from embedtab.yamlfile import clip, file_problem

_Prefix = Prefix  # workflows saved by embedtab 0.1 pickled the renamer under this name

# Groupby outputs and the tags that describe them: a list is a sequence (Transformers4Rec finds the
# item sequence by its ITEM_ID + LIST tags); a count or statistic of ids is a number, not an id
# (CONTINUOUS overrides the ID and CATEGORICAL tags it would inherit from the id column).
_AGG_TAGS = {
    "list": ("list",),
    "count": ("continuous",),
    "sum": ("continuous",),
    "mean": ("continuous",),
    "std": ("continuous",),
    "var": ("continuous",),
    "min": ("continuous",),
    "max": ("continuous",),
}


@dataclass
class Context:
    out_path: str  # where stat ops (Categorify, TargetEncoding) write during fit
    base_dir: Path  # relative side-table paths are relative to the config file
    use_gpu: bool = False
    side_tables: list[Path] = field(default_factory=list)  # fingerprinted as inputs of the fit
    # (vocabulary spec, categorified column) -> the values in id order; supplied by the stage, which
    # knows the artifact directory. None: configs with a `vocabulary` cannot be compiled.
    vocabulary: Callable[[cfg.Vocabulary, str], Any] | None = None
    # (categorified column, the graph before the op or None for raw columns) -> its grown vocabulary
    # for an `append` op, None on a first fit (growth.py)
    grown: Callable[[str, Any], Any] | None = None


def side_table_path(op: cfg.Join, base_dir: Path) -> Path:
    path = Path(op.path)
    return path if path.is_absolute() else base_dir / path


def _side_table(op: cfg.Join, ctx: Context) -> Any:
    """The side table as a dataframe, so it is saved inside the workflow (loads anywhere)."""
    import pandas as pd

    path = side_table_path(op, ctx.base_dir)
    problem = file_problem(path)
    if problem:
        raise ConfigError(f"joins: side table {clip(path, 200)} {problem}")
    keys = op.keys
    columns = list(dict.fromkeys(keys + op.columns))
    try:
        frame = pd.read_parquet(path, columns=columns)
    except (ValueError, KeyError, OSError) as exc:
        raise ConfigError(f"joins: cannot read {path} ({str(exc).splitlines()[0]})") from None
    ctx.side_tables.append(path)
    if ctx.use_gpu:
        import cudf

        return cudf.from_pandas(frame)
    return frame


def _categorify(node: Any, op: cfg.Categorify, ctx: Context, names: list[str]) -> Any:
    """`node >> Categorify`, with a given or grown vocabulary as `vocabs=` where there is one."""
    import nvtabular as nvt

    kwargs: dict[str, Any] = {
        "freq_threshold": op.freq_threshold,
        "max_size": op.max_size,
        "out_path": ctx.out_path,
        "encode_type": op.encode_type,
    }
    if op.num_buckets is not None:
        kwargs["num_buckets"] = op.num_buckets
    if op.dtype is not None:
        kwargs["dtype"] = op.dtype
    if op.vocabulary is not None:
        if ctx.vocabulary is None:
            raise ConfigError("categorify: a vocabulary needs an artifact directory to resolve it")
        # NVTabular's own mechanism: the values are written as the category file at once and
        # fit skips these columns, so ids follow the given order (first id 2 + OOV slots).
        kwargs["vocabs"] = {name: ctx.vocabulary(op.vocabulary, name) for name in names}
    if op.append and ctx.grown is not None:
        # The same mechanism for an append-only refit: earlier values keep their ids (growth.py).
        grown = {name: ctx.grown(name, None if isinstance(node, list) else node) for name in names}
        if all(vocab is not None for vocab in grown.values()):
            kwargs["vocabs"] = grown
    return node >> nvt.ops.Categorify(**kwargs)


def _apply(node: Any, op: Any, ctx: Context, names: list[str]) -> Any:
    """`node >> op`; `names` are the columns the node carries at this point (for vocabularies)."""
    import numpy as np
    import nvtabular as nvt
    from merlin.schema import Tags

    ops = nvt.ops
    if isinstance(op, cfg.Categorify):
        return _categorify(node, op, ctx, names)
    if isinstance(op, cfg.Normalize):
        return node >> ops.Normalize(out_dtype=np.dtype(op.out_dtype))
    if isinstance(op, cfg.NormalizeMinMax):
        return node >> ops.NormalizeMinMax(out_dtype=np.dtype(op.out_dtype))
    if isinstance(op, cfg.FillMissing):
        return node >> ops.FillMissing(fill_val=op.fill_val, add_binary_cols=op.add_binary_cols)
    if isinstance(op, cfg.FillMedian):
        return node >> ops.FillMedian(add_binary_cols=op.add_binary_cols)
    if isinstance(op, cfg.Log):
        return node >> ops.LogOp()
    if isinstance(op, cfg.Clip):
        return node >> ops.Clip(min_value=op.min_value, max_value=op.max_value)
    if isinstance(op, cfg.Bucketize):
        return node >> ops.Bucketize(op.boundaries)
    if isinstance(op, cfg.HashBucket):
        return node >> ops.HashBucket(op.num_buckets)
    if isinstance(op, cfg.TargetEncoding):
        return node >> ops.TargetEncoding(
            op.target, kfold=op.kfold, fold_seed=op.fold_seed, p_smooth=op.p_smooth, out_dtype=op.out_dtype, out_path=ctx.out_path
        )
    if isinstance(op, cfg.Rename):
        if op.prefix:
            return node >> ops.Rename(f=Prefix(op.prefix))
        return node >> ops.Rename(postfix=op.postfix, name=op.name)
    if isinstance(op, cfg.AddTags):
        return node >> ops.AddTags([Tags(t) for t in op.tags])
    if isinstance(op, cfg.TimeFeatures):
        branches = [
            node >> ops.LambdaOp(TIME_FUNCTIONS[feature], dtype=np.float32) >> ops.Rename(postfix=f"_{feature}") for feature in op.features
        ]
        total = branches[0]
        for branch in branches[1:]:
            total = total + branch
        return total
    raise TypeError(f"no compiler for {type(op).__name__}")  # config.py and this file disagree


def _renamed(names: list[str], op: Any) -> list[str]:
    """Column names after an op (only renames and time features change them)."""
    if isinstance(op, cfg.Rename):
        if op.name:
            return [op.name]
        return [f"{op.prefix}{n}" if op.prefix else f"{n}{op.postfix}" for n in names]
    if isinstance(op, cfg.TimeFeatures):
        return [f"{n}_{feature}" for feature in op.features for n in names]
    return names


def feature_graph(config: cfg.WorkflowConfig, ctx: Context) -> Any:
    """The sum of all feature groups (before any groupby)."""
    import nvtabular as nvt

    base: Any = None
    if config.joins:  # raw input columns >> JoinExternal >> ...; the groups select from the result
        base = config.input_columns()
        for join in config.joins:
            base = base >> nvt.ops.JoinExternal(
                _side_table(join, ctx), on=join.key, how=join.how, columns_ext=list(dict.fromkeys(join.keys + join.columns))
            )
    output = None
    for group in config.features:
        node: Any = list(group.columns) if base is None else base[group.flat_columns()]
        names = group.flat_columns()
        for op in group.ops:
            node = _apply(node, op, ctx, names)
            names = _renamed(names, op)
        if isinstance(node, list):
            node = nvt.ColumnSelector(node) >> nvt.ops.AddMetadata()  # a pass-through group
        output = node if output is None else output + node
    return output


def compile_workflow(config: cfg.WorkflowConfig, ctx: Context, features: Any = None) -> Any:
    """The Workflow; pass `features` when feature_graph() was already built (side tables read once)."""
    import nvtabular as nvt

    output = feature_graph(config, ctx) if features is None else features
    if config.groupby is not None:
        from merlin.schema import Tags

        spec = config.groupby
        grouped = output >> nvt.ops.Groupby(
            groupby_cols=spec.by, sort_cols=spec.sort, aggs=dict(spec.aggs), name_sep=spec.name_sep, ascending=spec.ascending
        )
        tagged: dict[tuple[str, ...], list[str]] = {}
        plain = list(spec.by)
        for column, aggs in spec.aggs.items():
            for agg in aggs:
                name = f"{column}{spec.name_sep}{agg}"
                if agg in _AGG_TAGS:
                    tagged.setdefault(_AGG_TAGS[agg], []).append(name)
                else:
                    plain.append(name)
        output = grouped[plain] >> nvt.ops.AddMetadata()
        for tags, names in tagged.items():
            output = output + (_shaped(grouped[names], tags, spec) >> nvt.ops.AddTags([Tags(t) for t in tags]))
    return nvt.Workflow(output)


def _shaped(node: Any, tags: tuple[str, ...], spec: cfg.GroupBy) -> Any:
    """Lists cut to their latest `max_length` entries and padded with 0 (the padding id) to it, which
    NVTabular records as the lists' fixed value count; group statistics cast to floats."""
    import numpy as np
    import nvtabular as nvt

    if "list" in tags and spec.max_length is not None:
        # the latest entries: the tail of an ascending sort, the head of a descending one
        start, end = (-spec.max_length, None) if spec.ascending else (0, spec.max_length)
        return node >> nvt.ops.ListSlice(start, end, pad=True, pad_value=0)
    if "continuous" in tags:
        return node >> nvt.ops.LambdaOp(CASTS[spec.continuous_dtype], dtype=np.dtype(spec.continuous_dtype))
    return node
