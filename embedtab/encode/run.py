"""One encode run's state, from the plan to the seal, in one object: what the run was asked, what
it read, what it decided and how long it took. The phases after the scan (work.py,
distributed.py, seal.py) read it instead of a list of loose arguments.

An `EncodeRun` holds the store and the reporter, so it never travels to a Dask worker: the Dask
driver sends each task the small picklable `ShardTask` it builds from the run.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from embedtab.encode.options import EncodeOptions, ImageOptions

if TYPE_CHECKING:
    import pyarrow as pa

    from embedtab.artifacts import ArtifactRecord, ArtifactStore, Plan
    from embedtab.encode import sources as src
    from embedtab.encode.plan import Previous, WorkList
    from embedtab.encode.protocol import Encoder, Settings
    from embedtab.encode.scan import Scan
    from embedtab.encode.workdir import WorkDir
    from embedtab.reporting import Reporter


@dataclass
class ImageRun:
    """What only an image run has."""

    decode: str  # where JPEGs are decoded: cpu (Pillow), gpu (nvJPEG), auto
    workers: int | None  # image decoding processes asked for (None: the default for the device)
    decoded: Counter[str] = field(default_factory=Counter)  # items this process decoded, per path (cpu, gpu)

    @classmethod
    def of(cls, options: EncodeOptions) -> ImageRun | None:
        """The image part of a run's options; None for a text run."""
        if isinstance(options, ImageOptions):
            return cls(options.decode, options.workers)
        return None


@dataclass
class Timings:
    """How long the run took: the summary's seconds count from `started`."""

    started: float  # time.time() when the scan began
    load_seconds: float = 0.0  # loading the model that did this process's work
    model_seconds: float = 0.0  # in that model's embed_batch calls


@dataclass(eq=False)
class EncodeRun:
    """One `embedtab encode` run past its plan (the artifact is not up to date)."""

    store: ArtifactStore
    options: EncodeOptions
    reporter: Reporter
    source: src.Source
    scan: Scan
    plan: Plan
    existing: ArtifactRecord | None  # the artifact of that name before this run
    index: pa.Table | None  # its _index.parquet, when the artifact is intact (else nothing is reused)
    encoder: type[Encoder]  # the registered class; loaded (model on a device) only where work is done
    model: str
    timings: Timings
    image: ImageRun | None = None  # None: a text run

    # Decided once the run knows its device (stage.py's `_place`), before any work:
    device: str = field(init=False, repr=False)  # where the vectors are made ("cpu", "cuda:0", a Dask worker's)
    settings: Settings = field(init=False, repr=False)
    identity: dict[str, Any] = field(init=False, repr=False)  # the encoder's identity: what decides the vectors
    previous: Previous | None = field(init=False, repr=False)  # the artifact whose vectors are reused
    worklist: WorkList = field(init=False, repr=False)  # per item: reused row or work index
    work: WorkDir = field(init=False, repr=False)  # the work folder of this plan

    # What the work leaves for the seal:
    truncated: int = 0  # texts the model cut, in the work this process did
    preprocess: dict[str, Any] | None = None  # image encoders: the preprocessing recorded in the artifact

    @property
    def workers(self) -> int | None:
        """Image decoding processes asked for (None: the default for the device; texts have none)."""
        return self.image.workers if self.image is not None else None

    @property
    def decoded(self) -> Counter[str] | None:
        """Images this process decoded per path; None for texts."""
        return self.image.decoded if self.image is not None else None
