"""Helpers shared by the tests that drive the command line in this process.

A test module imports `_capture` (an autouse fixture: importing it activates it there), `cli` and
`one_line_error`."""

from __future__ import annotations

import subprocess

import pytest

from embedtab.cli.main import run

_CAPSYS = None  # set per test by _capture


@pytest.fixture(autouse=True)
def _capture(capsys):
    global _CAPSYS
    _CAPSYS = capsys
    yield


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command line, run in this process (the same entry point as the `embedtab` script,
    without paying torch's import for every call); exit code, stdout and stderr as a subprocess's."""
    _CAPSYS.readouterr()
    code = run(list(args))
    out = _CAPSYS.readouterr()
    return subprocess.CompletedProcess(["embedtab", *args], code, out.out, out.err)


def one_line_error(
    proc: subprocess.CompletedProcess, code: int, *fragments: str, forbidden: tuple[str, ...] = ("Traceback", "unexpected")
) -> str:
    """The one `Error: ` line of a failed command, with its exit code and each fragment in it."""
    err = proc.stderr.strip()
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and not any(word in err for word in forbidden), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
