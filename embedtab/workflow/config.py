"""YAML workflow configs, validated with pydantic.

A config is a list of feature groups; each group selects columns and applies ops in order:

    name: item
    features:
      - columns: [item_id]
        ops:
          - categorify: {dtype: int32}
          - tags: [item_id, item]
      - columns: [price]
        ops: [log, normalize, {rename: {postfix: _log_norm}}, {tags: [item, continuous]}]

An op is a bare name (`log`), or a one-key mapping to its parameters (`categorify: {...}`), or,
for ops with one list parameter, to that list (`tags: [...]`, `bucketize: [...]`). A column entry
may itself be a list, a column group encoded together (`categorify: {encode_type: combo}`).

Optional top-level blocks: `joins` (parquet side tables joined onto the input first), `groupby`
(rows -> one row per group, e.g. sessions, applied to the output of all feature groups) and
`masking` (cold-start masking applied by `transform --mask`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, ValidationError, field_validator, model_validator

from embedtab.errors import ConfigError
from embedtab.yamlfile import MAX_BYTES, MAX_DEPTH, MAX_VALUES, clip, read_yaml, shown, yaml_line  # noqa: F401 (re-exported)

# merlin.schema.Tags values accepted under `tags:` (kept here so validation needs no merlin import).
TAGS = tuple(
    "user_id item_id session_id id user item session context categorical continuous list sequence text time embedding "
    "target regression classification binary_classification multi_class_classification".split()
)
TIME_FEATURES = ("hour_sin", "hour_cos", "weekday_sin", "weekday_cos")
INT64_MAX = 2**63 - 1  # counts, sizes and buckets: NVTabular keeps them in int64


def _finite(value: Any) -> Any:
    """No NaN or infinity where a config gives a number: no op means anything by them (a NaN
    boundary or clip bound fails deep inside the fit), and the recorded config is JSON, which has
    neither (pydantic would record null)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number (got {value})")
    return value


Number = Annotated[float, BeforeValidator(_finite)]
Scalar = Annotated[int | float | str, BeforeValidator(_finite)]  # a fill value or sentinel: a number or text
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]


class _Model(BaseModel):
    # unknown keys are errors; NaN/inf refused in any float (the Number type says why, this is the backstop)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class _Op(_Model):
    pass


class Vocabulary(_Model):
    """Where a Categorify takes its vocabulary from instead of fitting one on the data.

    `workflow: item` -- the ids of a fitted workflow artifact, kept exactly (one id space);
    `table: ../catalog.parquet` -- the distinct values of a table, in order of first appearance
    (relative to the config file). `column` defaults to the categorified column's own name.
    """

    workflow: str | None = None
    table: str | None = None
    column: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Vocabulary:
        if (self.workflow is None) == (self.table is None):
            raise ValueError("give exactly one of workflow (a fitted workflow's name) or table (a parquet/csv path)")
        return self


class Categorify(_Op):
    op: Literal["categorify"]
    freq_threshold: Count = 0
    max_size: Count = 0
    num_buckets: int | None = Field(None, ge=1, le=INT64_MAX)
    dtype: Literal["int32", "int64"] | None = None
    encode_type: Literal["joint", "combo"] = "joint"
    vocabulary: Vocabulary | None = None
    # Append-only: a refit keeps every id of the workflow it replaces and numbers new values after them.
    append: StrictBool = False  # (true or false, not 'yes' or 1)

    @model_validator(mode="after")
    def _append_only(self) -> Categorify:
        if not self.append:
            return self
        if self.vocabulary is not None:
            raise ValueError("append: a vocabulary from a workflow or table already follows its source; drop append")
        if self.freq_threshold or self.max_size or self.encode_type == "combo":
            raise ValueError("append keeps every value it has numbered: drop freq_threshold, max_size and encode_type: combo")
        if self.num_buckets:
            # (a grown vocabulary is given to NVTabular as `vocabs`, numbered after one OOV slot)
            raise ValueError("append cannot be combined with num_buckets (NVTabular 23.08 numbers a grown vocabulary after one OOV id)")
        return self

    @model_validator(mode="after")
    def _fixed_vocabulary(self) -> Categorify:
        if self.vocabulary is not None and (self.freq_threshold or self.max_size or self.encode_type == "combo"):
            raise ValueError("a given vocabulary is used as it is: drop freq_threshold, max_size and encode_type: combo")
        if self.vocabulary is not None and self.num_buckets:
            # NVTabular 23.08 numbers a given vocabulary after one OOV slot whatever num_buckets says,
            # so hashed OOV buckets would land on real ids.
            raise ValueError("num_buckets cannot be combined with a vocabulary (NVTabular 23.08 would hash unknown values onto real ids)")
        return self


class NormalizeMinMax(_Op):
    op: Literal["normalize_minmax"]
    out_dtype: Literal["float32", "float64"] = "float32"


class FillMedian(_Op):
    op: Literal["fill_median"]
    add_binary_cols: bool = False


class Clip(_Op):
    op: Literal["clip"]
    min_value: Number | None = None
    max_value: Number | None = None

    @model_validator(mode="after")
    def _bound(self) -> Clip:
        if self.min_value is None and self.max_value is None:
            raise ValueError("give min_value, max_value or both")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise ValueError("min_value is above max_value")
        return self


class HashBucket(_Op):
    op: Literal["hash_bucket"]
    num_buckets: int = Field(ge=1, le=INT64_MAX)


class TargetEncoding(_Op):
    op: Literal["target_encoding"]
    target: str | list[str]
    kfold: int | None = Field(None, ge=2, le=INT64_MAX)
    fold_seed: int = Field(42, ge=0, le=2**32 - 1)  # a numpy RandomState seed
    p_smooth: Number = Field(20, ge=0)
    out_dtype: Literal["float32", "float64"] = "float32"


class Normalize(_Op):
    op: Literal["normalize"]
    out_dtype: Literal["float32", "float64"] = "float32"


class FillMissing(_Op):
    op: Literal["fill_missing"]
    fill_val: Scalar = 0
    add_binary_cols: bool = False


class Log(_Op):
    op: Literal["log"]


class Bucketize(_Op):
    op: Literal["bucketize"]
    boundaries: list[Number] = Field(min_length=1)

    @field_validator("boundaries")
    @classmethod
    def _sorted(cls, value: list[float]) -> list[float]:
        if value != sorted(value):
            raise ValueError("boundaries must be increasing")
        return value


class Rename(_Op):
    op: Literal["rename"]
    postfix: str | None = None
    prefix: str | None = None
    name: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Rename:
        given = [k for k in ("postfix", "prefix", "name") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of postfix, prefix or name")
        return self


class AddTags(_Op):
    op: Literal["tags"]
    tags: list[Literal[TAGS]] = Field(min_length=1)  # type: ignore[valid-type]


class TimeFeatures(_Op):
    """hour-of-day / day-of-week as sin and cos, from unix seconds or datetimes."""

    op: Literal["time_features"]
    features: list[Literal[TIME_FEATURES]] = Field(default_factory=lambda: list(TIME_FEATURES))  # type: ignore[valid-type]


Op = Annotated[
    Categorify
    | Normalize
    | NormalizeMinMax
    | FillMissing
    | FillMedian
    | Log
    | Clip
    | Bucketize
    | HashBucket
    | TargetEncoding
    | Rename
    | AddTags
    | TimeFeatures,
    Field(discriminator="op"),
]
OP_NAMES = (
    "categorify",
    "normalize",
    "normalize_minmax",
    "fill_missing",
    "fill_median",
    "log",
    "clip",
    "bucketize",
    "hash_bucket",
    "target_encoding",
    "rename",
    "tags",
    "time_features",
)
# Ops that need numeric input columns (checked against the data at fit time).
NUMERIC_OPS = ("normalize", "normalize_minmax", "fill_median", "log", "clip", "bucketize", "time_features")
_LIST_PARAM = {"tags": "tags", "bucketize": "boundaries", "time_features": "features"}


def _expand(entry: Any) -> Any:
    """YAML shorthand -> {"op": name, **params}."""
    if isinstance(entry, str):
        return {"op": entry}
    if isinstance(entry, dict) and len(entry) == 1:
        ((name, params),) = entry.items()
        if params is None:
            return {"op": name}
        if isinstance(params, list) and name in _LIST_PARAM:
            return {"op": name, _LIST_PARAM[name]: params}
        if isinstance(params, dict):
            return {"op": name, **params}
        return {"op": name, "__invalid__": params}
    return entry


class FeatureGroup(_Model):
    columns: list[str | list[str]] = Field(min_length=1)
    ops: list[Op] = Field(default_factory=list)

    @field_validator("ops", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return [_expand(v) for v in value] if isinstance(value, list) else value

    def flat_columns(self) -> list[str]:
        out: list[str] = []
        for entry in self.columns:
            out.extend([entry] if isinstance(entry, str) else entry)
        return out

    @model_validator(mode="after")
    def _vocabulary_columns(self) -> FeatureGroup:
        for op in self.ops:
            if isinstance(op, Categorify) and op.vocabulary is not None:
                if any(not isinstance(c, str) for c in self.columns):
                    raise ValueError("a vocabulary cannot be given to column groups (nested lists)")
                if op.vocabulary.column and len(self.columns) > 1:
                    raise ValueError("vocabulary.column names one source column: use it in a group of one column")
        return self


class Join(_Model):
    """A parquet side table joined onto the input rows (NVTabular JoinExternal) before the feature
    groups, which can then use its columns. `path` is relative to the config file."""

    path: str
    key: str | list[str]
    columns: list[str] = Field(min_length=1)
    how: Literal["left", "inner"] = "left"

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, value: Any) -> Any:
        if isinstance(value, dict) and True in value:
            raise ValueError("write `key:` for the join column (YAML reads a bare `on:` as true)")
        return value

    @property
    def keys(self) -> list[str]:
        return [self.key] if isinstance(self.key, str) else list(self.key)


AGGREGATIONS = ("list", "count", "first", "last", "min", "max", "sum", "mean", "std", "var")


class GroupBy(_Model):
    """Rows -> one row per group (e.g. a session), sorted inside the group, with aggregations."""

    by: list[str] = Field(min_length=1)
    sort: list[str] = Field(default_factory=list)
    aggs: dict[str, list[Literal[AGGREGATIONS]]] = Field(min_length=1)  # type: ignore[valid-type]
    ascending: bool = True
    name_sep: str = "-"
    # Every list keeps its last max_length entries (the latest, after `sort`), padded with 0 (the
    # padding id) to that length: Transformers4Rec sizes its inputs from this fixed length.
    max_length: StrictInt | None = Field(None, ge=1, le=100_000)  # (not true, "20" or 20.0)
    # Statistics of a group (count, sum, mean, ...) are continuous features, and models take floats.
    continuous_dtype: Literal["float32", "float64"] = "float32"


class MaskGroup(_Model):
    """For a share `rate` of rows (or of entities, `by`), either input columns set to sentinels
    together (`columns`, before the workflow), or categorified output ids set to the
    out-of-vocabulary id (`ids`, after it; every other column -- a content lookup key too -- kept)."""

    columns: dict[str, Scalar] | None = Field(None, min_length=1)  # input column -> sentinel
    ids: list[str] | None = Field(None, min_length=1)  # categorified output columns -> OOV id
    rate: Number = Field(gt=0, le=1)
    by: str | None = None  # an input (entity) column: all rows of a chosen entity are masked alike

    @model_validator(mode="after")
    def _one_kind(self) -> MaskGroup:
        if (self.columns is None) == (self.ids is None):
            raise ValueError("give exactly one of columns (input sentinels) or ids (categorified outputs set to OOV)")
        return self


class Masking(_Model):
    """Cold-start masking: applied before transform, only with `embedtab transform --mask`."""

    seed: int = 0
    groups: list[MaskGroup] = Field(min_length=1)


class WorkflowConfig(_Model):
    name: str | None = None
    description: str | None = None
    joins: list[Join] = Field(default_factory=list)
    features: list[FeatureGroup] = Field(min_length=1)
    groupby: GroupBy | None = None
    masking: Masking | None = None

    def joined_columns(self) -> list[str]:
        return [c for join in self.joins for c in join.columns]

    def input_columns(self) -> list[str]:
        """Columns the input data must have: what the groups use, minus what joins add, plus join keys."""
        joined = set(self.joined_columns())
        seen: list[str] = []
        for column in [k for join in self.joins for k in join.keys] + [c for g in self.features for c in g.flat_columns()]:
            if column not in joined and column not in seen:
                seen.append(column)
        return seen

    @model_validator(mode="after")
    def _groups_with_joins(self) -> WorkflowConfig:
        if self.joins and any(not isinstance(c, str) for g in self.features for c in g.columns):
            raise ValueError("column groups (nested lists) cannot be combined with joins")
        return self

    @model_validator(mode="after")
    def _raw_groupby_keys(self) -> WorkflowConfig:
        # NVTabular's Groupby takes its keys from the input rows, not from the graph: an op on a
        # key would be dropped from the values but kept in the schema (e.g. a categorical domain
        # over raw ids), so only tags may be given to a key.
        raw = set(self.input_columns())
        for key in self.groupby.by if self.groupby else []:
            if key not in raw:
                raise ValueError(f"groupby.by: {shown(key)} is not an input column (NVTabular groups by the input rows' columns)")
            for group in self.features:
                ops = [op.op for op in group.ops if not isinstance(op, AddTags)]
                if key in group.flat_columns() and ops:
                    raise ValueError(
                        f"groupby.by: {shown(key)} is grouped on its input values, so {ops[0]} would not apply to it; give it only tags"
                    )
        return self

    @model_validator(mode="after")
    def _id_masking_keeps_rows(self) -> WorkflowConfig:
        # `ids` masks are decided on the input rows and applied to the output rows, one to one.
        if self.masking and any(g.ids for g in self.masking.groups):
            if self.groupby is not None:
                raise ValueError("masking ids needs one output row per input row: it cannot be combined with groupby")
            if any(j.how == "inner" for j in self.joins):
                raise ValueError("masking ids needs one output row per input row: use left joins")
        return self

    def as_params(self) -> dict[str, Any]:
        """The config as recorded (and fingerprinted); options added after 0.1 are left out when
        unset, so artifacts fitted by 0.1 from the same YAML stay up to date. (A groupby's
        continuous_dtype is always recorded: a session workflow fitted with integer counts is refit.)"""
        return _prune(self.model_dump(mode="json"), ("vocabulary", "ids", "columns", "append", "max_length"))

    def masking_spec(self) -> dict[str, Any] | None:
        return self.as_params().get("masking")

    def appended(self) -> bool:
        """Whether the workflow numbers any column append-only."""
        return any(isinstance(op, Categorify) and op.append for g in self.features for op in g.ops)

    def vocabulary_sources(self) -> list[Vocabulary]:
        return [op.vocabulary for g in self.features for op in g.ops if isinstance(op, Categorify) and op.vocabulary]


def _prune(value: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: _prune(v, keys) for k, v in value.items() if not (k in keys and v in (None, False))}
    if isinstance(value, list):
        return [_prune(v, keys) for v in value]
    return value


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{clip(part, 40)}" if text else clip(part, 40))
    return text


def _message(error: Mapping[str, Any]) -> str:
    if error["type"] == "union_tag_invalid":
        tag = error.get("ctx", {}).get("tag")
        return f"unknown op {shown(tag)} (allowed: {', '.join(OP_NAMES)})"
    if error["type"] == "union_tag_not_found":
        return "each op is a name or a one-key mapping, e.g. `- categorify: {dtype: int32}`"
    if error["loc"] and error["loc"][-1] == "__invalid__":
        return "op parameters must be a mapping (or a list, for tags, bucketize and time_features)"
    if error["type"] == "extra_forbidden":
        return f"unknown parameter {shown(error['loc'][-1])}"
    if error["type"] == "literal_error" and "aggs" in error["loc"]:
        return f"unknown aggregation {shown(error['input'])} (allowed: {', '.join(AGGREGATIONS)})"
    if error["type"] == "literal_error" and error["loc"] and error["loc"][-2:-1] == ("tags",):
        return f"unknown tag {shown(error['input'])} (allowed: {', '.join(TAGS)})"
    return clip(error["msg"].removeprefix("Value error, "), 200)


def parse_config(raw: Any, source: str) -> WorkflowConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with a `features:` list at the top level")
    try:
        config = WorkflowConfig.model_validate(raw)
    except ValidationError as exc:
        problems = _problems(exc.errors())
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ConfigError(f"{source}: {'; '.join(problems[:3])}{more}") from None
    return config


# pydantic reports a value that fits no member of a union once per member, its loc ending in the member
_UNION_MEMBERS = {"int": "a number", "float": "a number", "str": "a string", "list[str]": "a list of strings"}


def _problems(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    """One `place: message` per place: a value no member of a union takes is one problem
    (`fill_val: must be a number or a string`), not one per member."""
    problems: dict[tuple[Any, ...], str] = {}
    members: dict[tuple[Any, ...], list[str]] = {}
    for error in errors:
        loc = tuple(p for p in error["loc"] if p != "__invalid__")
        if loc and loc[-1] in _UNION_MEMBERS and error["type"].endswith(("_type", "_parsing")):
            kinds = members.setdefault(loc[:-1], [])
            if _UNION_MEMBERS[loc[-1]] not in kinds:
                kinds.append(_UNION_MEMBERS[loc[-1]])
            problems[loc[:-1]] = f"must be {' or '.join(kinds)}"
        elif loc and loc[-1] in _UNION_MEMBERS:  # (a member's own bound, e.g. a NaN refused)
            problems.setdefault(loc[:-1], _message(error))
        else:
            problems.setdefault(loc, _message(error))
    return [f"{_where(loc) or 'top level'}: {message}" for loc, message in problems.items()]


# Configs are read by the one bounded YAML reader (size, nesting, aliases): see embedtab.yamlfile.
MAX_CONFIG_BYTES, MAX_CONFIG_VALUES, MAX_NESTING = MAX_BYTES, MAX_VALUES, MAX_DEPTH


def load_config(path: str | Path) -> WorkflowConfig:
    raw, _ = read_yaml(path)
    return parse_config(raw, str(path))
