"""The closing lines a command prints about the artifact it made, as plain text.

One place for them, so that `embedtab run` shows for every stage that ran exactly what the stage's
own command shows (skipped items, explained variance, unseen and masked categories, coverage).
Plain strings only: the CLI decides how they look.
"""

from __future__ import annotations

from typing import Any

from embedtab.artifacts import EMBEDDINGS_ERRORS, ArtifactRecord


def encoded(record: ArtifactRecord) -> list[str]:
    """`encode text|image`: counts, speed, dim and model; where the skipped items are listed."""
    s, m = record.summary, record.metadata
    lines = [
        f"{s['items']} items: {s['encoded']} encoded ({s.get('distinct_encoded', s['encoded'])} distinct), "
        f"{s.get('reused', 0)} reused, {s['skipped']} skipped; {s.get('items_per_s') or 0:.1f} items/s; "
        f"dim {m['dim']}, model {m['model']['model']}",
    ]
    if s["skipped"]:
        lines.append(f"skipped items and reasons: {record.kind}/{record.name}/{EMBEDDINGS_ERRORS}")
    return lines


def reduced(projection: ArtifactRecord, embeddings: ArtifactRecord | None = None) -> list[str]:
    """`reduce`: dims, backend, the variance kept and its curve, the saved projection; or, for an
    update, the kept projection and the vectors reused."""
    info = projection.metadata
    if projection.summary.get("kept") and embeddings is not None:
        done = embeddings.summary
        return [
            f"the saved projection re-applied, not refitted ({info['input_dim']} -> {info['dims']} dims, "
            f"{info['explained_variance_ratio_total']:.1%} of the variance; --force refits)",
            f"{done.get('reused', 0):,} of {done.get('rows', 0):,} vectors kept bit for bit (their items did not change), "
            f"{done.get('rows', 0) - done.get('reused', 0):,} projected",
        ]
    curve = "  ".join(f"{k}:{v:.0%}" for k, v in info.get("explained_variance_curve", {}).items())
    return [
        f"{info['input_dim']} -> {info['dims']} dims with {info['backend']} on {info.get('device', 'cpu')}: "
        f"{info['explained_variance_ratio_total']:.1%} of the variance kept",
        *(
            [f"{info['kept_in_memory']:.0%} of the rows kept in memory between fit and transform (--memory)"]
            if "kept_in_memory" in info
            else []
        ),
        f"cumulative variance by dims: {curve}",
        f"projection saved as projections/{projection.name} (re-apply with --apply {projection.name})",
    ]


def applied(record: ArtifactRecord) -> list[str]:
    """`reduce --apply` (the pipeline's `apply` stage)."""
    return [f"{record.summary.get('rows', 0):,} rows projected with projections/{record.params.get('apply')}"]


def fitted(record: ArtifactRecord) -> list[str]:
    """`fit-workflow`, in one line: its categorical cardinalities (the command also prints them as a table)."""
    cards = record.metadata.get("cardinalities", {})
    if not cards:
        return ["no categorical columns"]
    lines = [
        "cardinalities (default embedding dim): "
        + ", ".join(f"{column} {sizes['cardinality']:,} ({sizes['embedding_dim']})" for column, sizes in cards.items())
    ]
    grown = {column: space for column, space in record.metadata.get("id_spaces", {}).items() if space.get("grown_from")}
    if grown:
        lines.append(
            "grown from the earlier fit, every earlier id kept: " + ", ".join(f"{column} +{s['added']:,}" for column, s in grown.items())
        )
    return lines


def transformed(record: ArtifactRecord) -> list[str]:
    """`transform`: rows; values unseen at fit time and ids the cold-start masking hid, apart."""
    summary = record.summary
    lines = [f"{summary.get('rows', 0):,} rows"]
    unseen = {k: v for k, v in summary.get("oov", {}).items() if v}
    masked = {k: v for k, v in summary.get("masked", {}).items() if v}
    if unseen:
        # `oov` holds both where masked ids are not counted apart: after a groupby, and in
        # datasets written before they were.
        both = summary.get("masked_rows") is not None and "masked" not in summary
        label = "out of vocabulary (unseen at fit time or masked)" if both else "unseen categories (mapped to OOV)"
        lines.append(f"{label}: " + _counts(unseen))
    if masked:
        lines.append("masked by --mask (set to OOV): " + _counts(masked))
    if summary.get("masked_rows") is not None:
        lines.append("masked rows per masking group: " + ", ".join(f"{v:,}" for v in summary["masked_rows"]))
    return lines


def looked_up(record: ArtifactRecord) -> list[str]:
    """`lookup`: table size, coverage and reach per source, the dense tables."""
    from embedtab.artifacts import lookup_dense_name

    m = record.metadata
    lines = [f"{m['cardinality']:,} rows ({m['reserved_ids']} reserved) x {m['dim'] if m['dim'] else m['dims']} dims, fill {m['fill']}"]
    for source, cov in m["by_source"].items():
        lines.append(
            f"{source}: {cov['with_embedding']:,} of {cov['vocabulary']:,} vocabulary ids have an embedding ({cov['coverage']:.1%}); "
            f"{cov['encoded'] - cov['embeddings_not_in_vocabulary']:,} of {cov['encoded']:,} encoded items reachable ({cov['reachable']:.1%})"
        )
    files = [lookup_dense_name()] if m["dim"] else [lookup_dense_name(s) for s in m["dims"]]
    lines.append("dense tables: " + ", ".join(f"lookups/{record.name}/{f}" for f in files))
    return lines


def exported(record: ArtifactRecord) -> list[str]:
    """`export triton`: the version written, its models and what they serve, the versions kept."""
    m = record.metadata
    newest = m["versions"].get(str(m["version"]), {})
    lines = [f"version {m['version']}: {len(newest)} models"]
    lines += [f"{model}: {served['artifact']} ({served['fingerprint'][:12]})" for model, served in newest.items()]
    kept = sorted({v for versions in m["models"].values() for v in versions})
    lines.append(f"versions in the repository: {', '.join(map(str, kept))} (Triton serves the newest of each model)")
    return lines


def of_stage(command: str, record: ArtifactRecord, projection: ArtifactRecord | None = None) -> list[str]:
    """The lines of a pipeline stage, by its command."""
    if command.startswith("encode"):
        return encoded(record)
    if command == "reduce":
        return reduced(projection, record) if projection is not None else []
    makers: dict[str, Any] = {
        "apply": applied,
        "fit-workflow": fitted,
        "transform": transformed,
        "lookup": looked_up,
        "export triton": exported,
    }
    return makers[command](record)


def _counts(values: dict[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in values.items())
