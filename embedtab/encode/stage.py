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
 3. work  (work.py) -- the distinct new contents, in shards; each shard is published on its own (workdir.py),
             so a killed run resumes and `--shard i/n` splits the work across machines.
 4. seal  (seal.py) -- stream the final parts in input order from reused and new vectors; publish atomically.

From the plan on, the run's state travels in one `EncodeRun` (run.py).
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtab import tables
from embedtab.artifacts import ArtifactRecord, ArtifactStore, Built, Driver, RunMode
from embedtab.encode import distributed
from embedtab.encode import sources as src
from embedtab.encode.inputs import ROWS
from embedtab.encode.options import EncodeOptions, EncodeResult, ImageOptions, TextOptions, parse_shard
from embedtab.encode.plan import previous_artifact, work_list
from embedtab.encode.run import EncodeRun, ImageRun, Timings
from embedtab.encode.scan import Scan, read_index, scan_inputs, stat_cache_from
from embedtab.encode.seal import clean_work, seal
from embedtab.encode.work import do_work
from embedtab.encode.workdir import WorkDir
from embedtab.errors import ArtifactExists, DataError, UsageError
from embedtab.fingerprint import files_fingerprint, hash_value
from embedtab.reporting import SILENT, Reporter

if TYPE_CHECKING:
    from embedtab.encode.protocol import Encoder

_PACKAGES = ("torch", "numpy", "pyarrow", "pillow")


# ----------------------------------------------------------------------------- encoder
def _encoder_class(options: EncodeOptions, model: str) -> type[Encoder]:
    from embedtab.encode.encoders import resolve

    return resolve(options.encoder, model, options.rows)


def _choose_encoder(options: EncodeOptions) -> tuple[type[Encoder], str]:
    """The encoder class and the model it runs, refused before any input is read if they cannot work."""
    cls = _encoder_class(options, options.model or "")
    model = options.model or cls.default_model
    if not model:
        raise UsageError(f"model: {cls.name} needs a model ({cls.model_help})")
    cls.check(model, options.pretrained)
    return cls, model


def _load_encoder(run: EncodeRun) -> tuple[Encoder, float]:
    """The encoder with its model loaded on the run's device, and the seconds the loading took."""
    settings = run.settings
    run.reporter.info(
        f"loading {run.encoder.name} model {run.model} on {settings.device} ({settings.precision}) for {ROWS[run.options.rows].plural}"
    )
    started = time.perf_counter()
    encoder = run.encoder(run.model, settings)
    seconds = time.perf_counter() - started
    if encoder.warning:
        run.reporter.warn(encoder.warning)
    return encoder, seconds


# ----------------------------------------------------------------------------- entry points
def run_text(store: ArtifactStore, options: TextOptions, reporter: Reporter = SILENT, mode: RunMode | None = None) -> EncodeResult:
    return _run(store, options, reporter, mode)


def run_image(store: ArtifactStore, options: ImageOptions, reporter: Reporter = SILENT, mode: RunMode | None = None) -> EncodeResult:
    return _run(store, options, reporter, mode)


def _run(store: ArtifactStore, options: EncodeOptions, reporter: Reporter, mode: RunMode | None) -> EncodeResult:
    options.check()
    cls, model = _choose_encoder(options)
    image = ImageRun.of(options)
    if image is not None and image.decode == "gpu" and not options.dask_scheduler:  # (before any input is read)
        _check_gpu_decoding(options.device)
    source = options.source()
    existing = store.get("embeddings", options.name)
    # Nothing is reused from a damaged artifact (its index or vectors may be wrong): it is re-encoded.
    intact = existing is not None and not store.damaged_files(existing)
    index = read_index(store, existing) if existing is not None and intact else None
    started = time.time()
    scan = scan_inputs(source, options, stat_cache_from(index), reporter)
    _check_something_to_encode(source, scan)

    params = {
        **options.recipe(),
        "model": model,
        "on_error": options.on_error,
        "max_errors": options.max_errors,
        "inputs": [str(p) for p in (source.paths if source.folder is None else [source.folder])],
    }
    if existing is not None and not options.force:
        _check_same_source(existing, params["inputs"], scan)
    kind = ROWS[source.modality].name
    # The scan (ids, content keys of the texts or image files, unusable rows) is what decides the
    # vectors: other columns of the input tables may change without making the artifact stale.
    files = files_fingerprint(source.paths) if source.folder is None else []
    driver = Driver(store, mode)
    plan = driver.plan(
        "embeddings",
        options.name,
        f"encode {kind}",
        params,
        read_files=files,
        was=(files, scan.fingerprint),
        content=scan.fingerprint,
        force=options.force,
        refresh=True,
        refresh_ignore=("inputs", "on_error", "max_errors"),
        packages=tuple(dict.fromkeys(_PACKAGES + cls.packages)),
        warn=reporter.warn,
    )
    run = EncodeRun(store, options, reporter, source, scan, plan, existing, index, cls, model, Timings(started), image)
    missing: list[int] = []

    def work() -> bool:
        missing.extend(_work(run))
        return not missing

    # Sharded jobs meet in the work folder, not on the build lock; the last to finish seals.
    built = driver.build([plan], lambda staging: [seal(run, staging[0])], work=work, wait=not (options.shard or options.seal))
    return _result(run, built, missing)


def _result(run: EncodeRun, built: Built, missing: list[int]) -> EncodeResult:
    """What the run did: the shards still missing, the artifact up to date, or the one it made."""
    if not built.finished:
        counts = {"items": len(run.scan.keys), "work_shards": run.work.shards, "done_shards": run.work.shards - len(missing)}
        return EncodeResult(None, False, counts, missing)
    if built.up_to_date:
        return EncodeResult(built.record, True, dict(built.record.summary))
    clean_work(run.store, run.options.name)
    if run.truncated:
        run.reporter.warn(f"{run.truncated} text(s) exceed the model's maximum length and were truncated")
    return EncodeResult(built.record, False, dict(built.record.summary))


def _check_gpu_decoding(device: str) -> None:
    from embedtab.device import torch_device

    if not torch_device(device).startswith("cuda"):
        raise UsageError("--decode gpu needs a CUDA device; this run is on cpu (use --decode cpu or auto)")


def _check_something_to_encode(source: src.Source, scan: Scan) -> None:
    """Nothing to encode: say why, leave nothing behind."""
    if len(scan.problems) == len(scan.keys):
        reasons = Counter(reason for _, reason in scan.problems.values())
        what = ROWS[source.modality].nothing
        raise DataError(
            f"{source.describe()}: no row has {what}: {len(scan.keys)} of {len(scan.keys)} "
            f"({', '.join(f'{n} {reason}' for reason, n in reasons.most_common())})"
        )


# ----------------------------------------------------------------------------- making the artifact
def _work(run: EncodeRun) -> list[int]:
    """Encode the work shards this job owns that are not done yet (resuming finished ones); the
    work shards still missing after it (other --shard jobs'), refused when sealing (--seal)."""
    options = run.options
    client, device = _connect(run)
    work = _place(run, device)
    job, jobs = parse_shard(options.shard)
    mine = [s for s in range(work.shards) if s % jobs == job]
    todo = [] if options.seal else [s for s in mine if not work.is_done(s)]
    if todo and len(todo) < len(mine):
        run.reporter.info(f"resuming: {len(mine) - len(todo)} of {len(mine)} work shards already done")
    backend = _encode(run, client, todo)
    run.preprocess = _preprocess(run, backend)
    missing = work.missing()
    if missing and options.seal:
        owners = sorted({s % jobs + 1 for s in missing}) if jobs > 1 else None
        raise DataError(
            f"cannot seal {options.name!r}: {len(missing)} of {work.shards} work shards are missing "
            f"(e.g. {missing[:5]}) in {work.path}; run the --shard jobs first" + (f" ({owners})" if owners else "")
        )
    return missing


def _connect(run: EncodeRun) -> tuple[Any, str]:
    """(the Dask client or None, the device the vectors are made on: the workers' on a cluster)."""
    from embedtab.device import torch_device

    options = run.options
    if options.dask_scheduler and not options.seal:
        client = distributed.connect(options.dask_scheduler)
        device = client.submit(distributed.worker_device, options.device, pure=False).result()  # the workers' device
        run.reporter.info(
            f"encoding on the Dask cluster at {options.dask_scheduler} ({len(client.scheduler_info()['workers'])} workers, {device})"
        )
        return client, device
    return None, torch_device(options.device)


def _place(run: EncodeRun, device: str) -> WorkDir:
    """Decide how the run encodes on `device`: settings, encoder identity, what is reused from the
    artifact being updated and what is encoded, in which work folder (opened and returned)."""
    from embedtab.encode.backends import resolve_precision

    options = run.options
    run.device = device
    run.settings = options.settings(device, resolve_precision(options.precision, device))
    run.identity = run.encoder.identity(run.model, run.settings)
    reuse = run.index is not None and not options.force
    run.previous = previous_artifact(run.existing, run.index, run.identity) if reuse else None
    run.worklist = work_list(run.scan, run.previous)
    reused = run.previous.record.fingerprint if run.previous else None
    key = hash_value([run.plan.input_fingerprint, run.identity, reused, options.shard_size])[:16]
    # another run's work is not discarded silently
    run.store.check_work("embeddings", options.name, key, run.plan.stage, options.force)
    path = run.store.work_path("embeddings", options.name, key)
    run.work = WorkDir.open(path, len(run.worklist.positions), options.shard_size)
    return run.work


def _encode(run: EncodeRun, client: Any, todo: list[int]) -> Encoder | None:
    """Encode the work shards `todo` (on the cluster when there is a client); the encoder loaded
    here, if any. Records the truncated texts and the model's times in the run."""
    if todo and client is not None:
        try:
            _, run.truncated = distributed.do_work_on_dask(client, run, todo)
        finally:
            client.close()
        return None
    if not todo:
        return None
    backend, run.timings.load_seconds = _load_encoder(run)
    _, run.truncated = do_work(run, todo, backend)
    run.timings.model_seconds = backend.model_seconds
    return backend


def _preprocess(run: EncodeRun, backend: Encoder | None) -> dict[str, Any] | None:
    """The preprocessing an image encoder applies, recorded in the artifact. When this run encoded
    nothing, it is the previous artifact's (same identity) or, sealing other jobs' shards, asked of
    the encoder."""
    if backend is not None:
        return backend.preprocess_config
    if run.previous is not None:
        return run.previous.record.metadata.get("preprocess")
    if ROWS[run.options.rows].keeps_files:
        return _load_encoder(run)[0].preprocess_config
    return None


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
