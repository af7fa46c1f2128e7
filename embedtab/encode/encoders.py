"""The registry of encoders: built in (backends.py), or installed by entry point; and the Encoder
protocol (protocol.py, re-exported here).

An encoder is one model behind `embedtab encode`. The stage (stage.py) does everything else --
scanning, reuse of unchanged items, work shards, resume, errors, sealing -- the same way for every
encoder, so an encoder only says what it is and turns a batch into vectors:

    from embedtab.encode.encoders import Encoder

    class MyEncoder(Encoder):
        inputs = ("text",)            # what an input row is: "text" (a string) and/or "image"
        packages = ("my-lib",)        # versions recorded in the artifact's identity

        def __init__(self, model, settings):
            super().__init__(model, settings)
            self.net = my_lib.load(model, device=settings.device)
            self.dim = self.net.dim

        def _embed(self, batch):      # texts: list[str]; images: list of `preprocess` outputs
            return self.net(batch)    # (len(batch), dim) array-like

Register it in the plugin's pyproject.toml, then `embedtab encoders` lists it and
`embedtab encode text ... --encoder my-encoder` uses it:

    [project.entry-points."embedtab.encoders"]
    my-encoder = "my_package:MyEncoder"

Image encoders also set `preprocess`: a picklable function from a decoded RGB `PIL.Image` to a
tensor or array, run in the DataLoader worker processes (embedtab decodes the file, applies EXIF
orientation and flattens alpha first); and, to let JPEGs be decoded on the GPU, `tensor_preprocess`
(an `embedtab.encode.loading.TensorPreprocess` giving the same result on tensors). Vectors are L2-normalised by embedtab when the run asks for
it, unless the encoder sets `normalizes = True` and does it itself.
"""

from __future__ import annotations

from typing import Any

from embedtab.encode.protocol import INPUTS, Encoder
from embedtab.encode.protocol import Settings as Settings  # (re-exported: plugins import them from here)
from embedtab.encode.protocol import files_stamp as files_stamp
from embedtab.errors import UsageError

ENTRY_POINT_GROUP = "embedtab.encoders"


# ----------------------------------------------------------------------------- registry
def _builtins() -> dict[str, tuple[type[Encoder], str]]:
    from embedtab.encode import backends

    return {
        "sentence-transformers": (backends.SentenceTransformersEncoder, "built-in"),
        "open-clip": (backends.OpenClipEncoder, "built-in"),
        "hf-clip": (backends.HuggingFaceClipEncoder, "built-in"),
    }


def _entry_points() -> list[Any]:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def available() -> dict[str, tuple[type[Encoder] | None, str, str | None]]:
    """name -> (class or None, where it comes from, why it cannot load). Plugins never shadow a
    built-in name."""
    found: dict[str, tuple[type[Encoder] | None, str, str | None]] = {n: (c, w, None) for n, (c, w) in _builtins().items()}
    for ep in _entry_points():
        if ep.name in found:
            continue
        where = f"{ep.dist.name} {ep.dist.version}" if getattr(ep, "dist", None) else ep.value
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Encoder)):
                raise TypeError(f"{ep.value} is not an embedtab Encoder subclass")
            if not set(cls.inputs) <= set(INPUTS):
                raise TypeError(f"{ep.value}.inputs must be among {INPUTS}, not {cls.inputs}")
            cls.name = ep.name
            found[ep.name] = (cls, where, None)
        except Exception as exc:  # noqa: BLE001 - a broken plugin is listed with its problem, never fatal
            found[ep.name] = (None, where, f"{type(exc).__name__}: {exc}")
    for name, (cls, _, _) in found.items():
        if cls is not None and not cls.name:
            cls.name = name
    return found


DEFAULTS = {"text": "sentence-transformers", "image": "open-clip"}


def resolve(name: str, model: str, inputs: str) -> type[Encoder]:
    """The encoder class for `--encoder NAME` ("auto": whichever accepts the model, else the
    default of the input kind). Errors name the field (`encoder`), not a flag."""
    registry = available()
    if name == "auto":
        for cls, _, _ in registry.values():
            if cls is not None and inputs in cls.inputs and cls.accepts(model, inputs):
                return cls
        name = DEFAULTS[inputs]
    if name not in registry:
        raise UsageError(f"encoder: no encoder named {name!r}; installed: {', '.join(sorted(registry))}")
    cls, where, problem = registry[name]
    if cls is None:
        raise UsageError(f"encoder: {name!r} ({where}) cannot be loaded: {problem}")
    if inputs not in cls.inputs:
        raise UsageError(f"encoder: {name!r} encodes {' and '.join(cls.inputs)}, not {inputs}")
    return cls
