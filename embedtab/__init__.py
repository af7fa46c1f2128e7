"""embedtab: offline embedding and feature preparation for NVIDIA Merlin recommender systems.

    import embedtab
    art = embedtab.Artifacts("artifacts")   # the Python API (embedtab.api): one method per command

Importing embedtab is cheap: heavy libraries (torch, nvtabular, open_clip) load inside the stages.
"""

from embedtab.version import __version__

__all__ = ["Artifact", "Artifacts", "__version__"]


def __getattr__(name: str):  # the API loads on first use, so `embedtab --help` stays fast
    if name in ("Artifact", "Artifacts"):
        from embedtab import api

        return getattr(api, name)
    raise AttributeError(f"module 'embedtab' has no attribute {name!r}")
