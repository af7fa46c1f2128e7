"""Who holds what: the directory's writer lock, per-artifact build locks, and the owner tags of
work in progress (so a writer only ever cleans up after writers that died on its own host).

Both locks are flocks, released by the kernel when their holder dies. The writer lock (`.lock`)
is held only while the manifest changes or artifacts move into place; a build lock
(`.locks/<kind>.<name>`) is held for the whole time a run makes that artifact, and says which
inputs it is made from, so a second run from the same ones waits and one from others stops.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from embedtab.artifacts.manifest import now_iso
from embedtab.errors import ArtifactBusy, LockTimeout

HOST = socket.gethostname()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def owner_tag() -> str:
    """Names of in-progress folders carry their writer: '@<pid>.<host>.<random>' (no '@' in artifact names)."""
    return f"@{os.getpid()}.{HOST}."


def dead_owner(entry: str) -> bool:
    """A staging entry whose writer ran on this host and is gone (entries of live writers, or of
    other hosts sharing the directory, are never touched)."""
    if "@" not in entry:
        return False
    pid, _, rest = entry.rpartition("@")[2].partition(".")
    host = rest.rpartition(".")[0]
    return pid.isdigit() and host == HOST and not pid_alive(int(pid))


def wait_for_flock(fd: int, deadline: float, poll: float, while_busy: Callable[[], None] = lambda: None) -> bool | None:
    """Take an exclusive flock on `fd`, polling: True if it had to wait, False if not, None when
    `deadline` passed first. `while_busy` runs between tries (it may raise to give up early)."""
    waited = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return waited
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
        while_busy()
        if time.monotonic() >= deadline:
            return None
        waited = True
        time.sleep(poll)


def read_intent(fd: int) -> dict[str, Any] | None:
    """What the run holding a build lock is making (None while it has not said yet)."""
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (ValueError, UnicodeDecodeError):
        return None


class DirectoryLock:
    """The exclusive writer lock of an artifact directory (flock on <root>/.lock, which names its
    holder's pid and host); re-entrant within one object."""

    def __init__(self, path: Path):
        self.path = path
        self.depth = 0

    @contextlib.contextmanager
    def hold(self, timeout: float, on_acquire: Callable[[], None] = lambda: None) -> Iterator[None]:
        """Hold the lock, waiting up to `timeout` seconds; `on_acquire` runs first when it is taken
        (not when re-entered)."""
        if self.depth:
            self.depth += 1
            try:
                yield
            finally:
                self.depth -= 1
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if wait_for_flock(fd, time.monotonic() + timeout, 0.05) is None:
                raise LockTimeout(self._holder(fd, timeout))
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {HOST}".encode(), 0)
            self.depth = 1
            try:
                on_acquire()
                yield
            finally:
                self.depth = 0
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _holder(self, fd: int, timeout: float) -> str:
        """Why the lock could not be taken: who holds it, and whether it still runs."""
        root = self.path.parent
        pid, _, host = os.pread(fd, 256, 0).decode(errors="replace").strip().partition(" ")
        waited = f"for more than {timeout:.0f}s"
        if not pid.isdigit():
            return f"{root} is locked by another embedtab process {waited}; wait for it or raise EMBEDTAB_LOCK_TIMEOUT"
        if host and host != HOST:
            return f"{root} is locked {waited} by pid {pid} on host {host}; wait for it or raise EMBEDTAB_LOCK_TIMEOUT"
        if pid_alive(int(pid)):
            return f"{root} is locked {waited} by embedtab pid {pid}, which is still running; wait for it or raise EMBEDTAB_LOCK_TIMEOUT"
        return (
            f"{root} is locked {waited}, but pid {pid} that took the lock is no longer running: a process "
            "it started (a Dask or DataLoader worker, say) still holds it; stop that process"
        )


@contextlib.contextmanager
def build_lock(path: Path, what: str, stage: str, input_fingerprint: str, timeout: float) -> Iterator[bool]:
    """Hold the build lock at `path` while `stage` makes the artifact `what` ("embeddings 'text'")
    from the inputs `input_fingerprint`; yields whether it had to wait for another run.

    A run holding it for the same inputs is waited for (up to `timeout` seconds); one holding it
    for other inputs or options makes this one fail at once (ArtifactBusy), naming that run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def refuse_other_recipes() -> None:
        holder = read_intent(fd)
        if holder and holder.get("input_fingerprint") != input_fingerprint:
            raise ArtifactBusy(
                f"{what} is being made right now by pid {holder.get('pid')} on "
                f"{holder.get('host')} ({holder.get('stage')}, started {holder.get('started')}) from other "
                "inputs or options; wait for it to finish, or choose another --name"
            )

    try:
        waited = wait_for_flock(fd, time.monotonic() + timeout, 0.2, refuse_other_recipes)
        if waited is None:
            raise LockTimeout(
                f"{what} has been in the making by another run for more than {timeout:.0f}s; wait for it or raise EMBEDTAB_LOCK_TIMEOUT"
            )
        intent = {"pid": os.getpid(), "host": HOST, "stage": stage, "started": now_iso(), "input_fingerprint": input_fingerprint}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(intent).encode(), 0)
        try:
            yield waited
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the flock
