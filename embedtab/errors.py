"""Typed errors raised by embedtab's core.

Only the CLI turns them into `Error: ...` lines and exit codes; the core never prints or exits.
"""

from __future__ import annotations


class EmbedtabError(Exception):
    """Base class. `exit_code` is what the CLI returns for it."""

    exit_code = 1


class UsageError(EmbedtabError):
    """The command line asks for something impossible (bad option combination, bad value)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration file is missing, malformed or refers to something that does not exist."""


class ArtifactNotFound(UsageError):
    """A named artifact is not in the artifact directory."""


class ArtifactExists(UsageError):
    """An artifact with this name exists and was made from other inputs; --force replaces it."""


class UnrecordedArtifact(UsageError):
    """A folder in the artifact directory that the manifest has no record of (a lost manifest.json,
    a folder copied in by hand): embedtab neither reads nor replaces it unless told to (--force)."""


class DataError(EmbedtabError):
    """Input data is missing, unreadable or inconsistent."""


class ModelError(EmbedtabError):
    """A model cannot be loaded."""


class ManifestError(EmbedtabError):
    """The manifest is corrupted or from an unknown format; embedtab refuses to touch it."""


class IntegrityError(EmbedtabError):
    """Files of an artifact do not match what embedtab recorded when it wrote them."""


class LockTimeout(EmbedtabError):
    """Another embedtab process holds the artifact directory's lock for too long."""


class ArtifactBusy(EmbedtabError):
    """Another run is making the same artifact from other inputs or options right now."""
