"""`embedtab encode`: item texts or images -> an embeddings artifact keyed by the raw item id.

Output (embeddings/<name>/):
    part-NNNNN.parquet   <id column> (original dtype), embedding fixed_size_list<float32>[dim]
    _metadata            parquet summary of the parts (merlin.io.Dataset(<folder>) reads just them)
    _errors.parquet      <id column>, input, reason  -- items skipped, with why
    _index.parquet       <id column>, key (content hash), row; for images path, size, mtime_ns
    _embeddings.json     encoder identity, dim, counts (also in the manifest record)

How a run goes (one module per phase; this one runs them):
 1. scan  (scan.py) -- stream the inputs once; every item gets a content key (sha256 of the rendered text or
             of the image bytes) or a reason it cannot be encoded. Memory: ids and 16-byte keys.
 2. plan  (plan.py) -- unchanged inputs and options: "up to date". Otherwise keys already in the previous
             artifact (same encoder) are reused, and each distinct new key is encoded once.
 3. work  (work.py) -- the distinct new contents, in shards; each shard is published on its own (work.py),
             so a killed run resumes and `--shard i/n` splits the work across machines.
 4. seal  (seal.py) -- stream the final parts in input order from reused and new vectors; publish atomically.
"""


from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from embedtab import tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore
from embedtab.encode import distributed
from embedtab.encode import sources as src
from embedtab.encode.encoders import Settings
from embedtab.encode.inputs import ROWS
from embedtab.encode.options import EncodeOptions, EncodeResult, ImageOptions, TextOptions, parse_shard
from embedtab.encode.plan import previous_artifact, work_list
from embedtab.encode.scan import Scan, read_index, scan_inputs, stat_cache_from
from embedtab.encode.seal import clean_work, seal
from embedtab.encode.work import WorkDir, do_work
from embedtab.errors import ArtifactExists, DataError, UsageError
from embedtab.fingerprint import files_fingerprint, hash_value
from embedtab.reporting import SILENT, Reporter

_PACKAGES = ("torch", "numpy", "pyarrow", "pillow")


# ----------------------------------------------------------------------------- encoder
def _encoder_class(options: EncodeOptions, model: str) -> type:
    from embedtab.encode.encoders import resolve

    return resolve(options.encoder, model, options.rows)


def _load_encoder(options: EncodeOptions, cls: type, model: str, settings: Settings, reporter: Reporter) -> Any:
    reporter.info(f"loading {cls.name} model {model} on {settings.device} ({settings.precision}) for {ROWS[options.rows].plural}")
    started = time.perf_counter()
    encoder = cls(model, settings)
    encoder.load_seconds = time.perf_counter() - started
    if encoder.warning:
        reporter.warn(encoder.warning)
    return encoder


# ----------------------------------------------------------------------------- entry points
def run_text(store: ArtifactStore, options: TextOptions, reporter: Reporter = SILENT) -> EncodeResult:
    return _run(store, options, reporter)


def run_image(store: ArtifactStore, options: ImageOptions, reporter: Reporter = SILENT) -> EncodeResult:
    return _run(store, options, reporter)


def _run(store: ArtifactStore, options: EncodeOptions, reporter: Reporter) -> EncodeResult:
    options.check()
    cls = _encoder_class(options, options.model or "")
    model = options.model or cls.default_model
    if not model:
        raise UsageError(f"model: {cls.name} needs a model ({cls.model_help})")
    cls.check(model, options.pretrained)
    if getattr(options, "decode", "auto") == "gpu" and not options.dask_scheduler:  # (before any input is read)
        from embedtab.device import torch_device

        if not torch_device(options.device).startswith("cuda"):
            raise UsageError("--decode gpu needs a CUDA device; this run is on cpu (use --decode cpu or auto)")
    source = options.source()
    existing = store.get("embeddings", options.name)
    # Nothing is reused from a damaged artifact (its index or vectors may be wrong): it is re-encoded.
    intact = existing is not None and not store.damaged_files(existing)
    index = read_index(store, existing) if intact else None
    started = time.time()
    scan = scan_inputs(source, options, stat_cache_from(index), reporter)
    if len(scan.problems) == len(scan.keys):  # nothing to encode: say why, leave nothing behind
        reasons = Counter(reason for _, reason in scan.problems.values())
        what = ROWS[source.modality].nothing
        raise DataError(f"{source.describe()}: no row has {what}: {len(scan.keys)} of {len(scan.keys)} "
                        f"({', '.join(f'{n} {reason}' for reason, n in reasons.most_common())})")

    params = {**options.recipe(), "model": model, "on_error": options.on_error, "max_errors": options.max_errors,
              "inputs": [str(p) for p in (source.paths if source.folder is None else [source.folder])]}
    if existing is not None and not options.force:
        _check_same_source(existing, params["inputs"], scan)
    kind = ROWS[source.modality].name
    # The scan (ids, content keys of the texts or image files, unusable rows) is what decides the
    # vectors: other columns of the input tables may change without making the artifact stale.
    files = files_fingerprint(source.paths) if source.folder is None else []
    plan = store.plan(
        "embeddings", options.name, f"encode {kind}", params, read_files=files, was=(files, scan.fingerprint),
        content=scan.fingerprint, force=options.force, refresh=True, refresh_ignore=("inputs", "on_error", "max_errors"),
        packages=tuple(dict.fromkeys(_PACKAGES + cls.packages)),
        warn=reporter.warn,
    )
    if plan.up_to_date:
        return EncodeResult(plan.existing, True, dict(plan.existing.summary))
    if options.shard or options.seal:  # sharded jobs meet in the work folder, not on the build lock
        return _make(store, options, plan, source, scan, existing, index, cls, model, started, reporter)
    with store.building(plan) as made:
        if made is not None:  # an identical run finished it while this one waited
            return EncodeResult(made, True, dict(made.summary))
        return _make(store, options, plan, source, scan, existing, index, cls, model, started, reporter)


def _make(store: ArtifactStore, options: EncodeOptions, plan: Any, source: src.Source, scan: Scan,
          existing: ArtifactRecord | None, index: pa.Table | None, cls: type, model: str, started: float,
          reporter: Reporter) -> EncodeResult:
    """Encode what the plan needs (resuming finished work shards), then seal the artifact."""
    from embedtab.device import torch_device
    from embedtab.encode.backends import resolve_precision

    client = None
    if options.dask_scheduler and not options.seal:
        client = distributed.connect(options.dask_scheduler)
        device = client.submit(distributed.worker_device, options.device, pure=False).result()  # the workers' device
        reporter.info(f"encoding on the Dask cluster at {options.dask_scheduler} "
                      f"({len(client.scheduler_info()['workers'])} workers, {device})")
    else:
        device = torch_device(options.device)
    precision = resolve_precision(options.precision, device)
    settings = options.settings(device, precision)
    identity = cls.identity(model, settings)
    previous = previous_artifact(existing, index, identity) if index is not None and not options.force else None
    worklist = work_list(scan, previous)
    key = hash_value([plan.input_fingerprint, identity, previous.record.fingerprint if previous else None, options.shard_size])[:16]
    store.check_work("embeddings", options.name, key, plan.stage, options.force)  # another run's work is not discarded silently
    work = WorkDir.open(store.work_path("embeddings", options.name, key), len(worklist.positions), options.shard_size)

    job, jobs = parse_shard(options.shard)
    mine = [s for s in range(work.shards) if s % jobs == job]
    todo = [] if options.seal else [s for s in mine if not work.is_done(s)]
    if todo and len(todo) < len(mine):
        reporter.info(f"resuming: {len(mine) - len(todo)} of {len(mine)} work shards already done")
    decode_errors = truncated = 0
    backend = None
    if todo and client is not None:
        try:
            decode_errors, truncated = distributed.do_work_on_dask(client, source, options, scan, worklist, work, todo, cls, model, settings, reporter)
        finally:
            client.close()
    elif todo:
        backend = _load_encoder(options, cls, model, settings, reporter)
        decode_errors, truncated = do_work(source, options, scan, worklist, work, todo, backend, reporter)
    # The preprocessing an image encoder applies is recorded; when this run encoded nothing, it is
    # the previous artifact's (same identity) or, sealing other jobs' shards, asked of the encoder.
    if backend is not None:
        preprocess = backend.preprocess_config
    elif previous is not None:
        preprocess = previous.record.metadata.get("preprocess")
    else:
        preprocess = _load_encoder(options, cls, model, settings, reporter).preprocess_config if ROWS[options.rows].keeps_files else None

    missing = work.missing()
    if missing:
        if options.seal:
            owners = sorted({s % jobs + 1 for s in missing}) if jobs > 1 else None
            raise DataError(
                f"cannot seal {options.name!r}: {len(missing)} of {work.shards} work shards are missing "
                f"(e.g. {missing[:5]}) in {work.path}; run the --shard jobs first"
                + (f" ({owners})" if owners else "")
            )
        return EncodeResult(None, False, {"items": len(scan.keys), "work_shards": work.shards, "done_shards": work.shards - len(missing)}, missing)

    with store.lock():  # one sealer at a time; another shard job may have sealed already
        done = store.get("embeddings", options.name)
        if store.current(done, plan.input_fingerprint):
            return EncodeResult(done, True, dict(done.summary))
        record = seal(store, plan, source, options, scan, worklist, work, previous, identity, preprocess,
                       device, started, reporter, truncated, backend.model_seconds if backend else 0.0,
                       getattr(backend, "decoded", None), getattr(backend, "load_seconds", 0.0))
        clean_work(store, options.name)
    if truncated:
        reporter.warn(f"{truncated} text(s) exceed the model's maximum length and were truncated")
    return EncodeResult(record, False, dict(record.summary))


def _source_of(inputs: list[str]) -> str:
    """What an artifact was encoded from: tables (their paths may change: a catalog's daily file
    or a grown glob is an update) or one image folder (another folder is another input)."""
    if all(Path(p).suffix in tables.TABLE_SUFFIXES for p in inputs):
        return "tables"
    return f"the folder {inputs[0]}"


def _id_kind(type_name: str | None) -> str | None:
    if not type_name:
        return None
    return "integer" if type_name.startswith(("int", "uint")) else "string" if "string" in type_name else type_name


def _check_same_source(existing: ArtifactRecord, inputs: list[str], scan: Scan) -> None:
    """An incremental update keeps the artifact's source and id type; anything else needs --force."""
    old, new = _source_of(existing.params.get("inputs", [])), _source_of(inputs)
    old_ids, new_ids = _id_kind(existing.metadata.get("id_type")), _id_kind(str(scan.ids.type))
    if old != new or (old_ids and old_ids != new_ids):
        made = f"{old} with {old_ids} ids" if old_ids else old
        raise ArtifactExists(
            f"embeddings {existing.name!r} were encoded from {made}; this run reads {new} with {new_ids} ids. "
            "Pass --force to replace them, or choose another --name"
        )
