"""The suite itself must not leak process-wide settings from one test into the next."""

from __future__ import annotations

import os

import pytest

from tests.conftest import _THREADS_AT_START


@pytest.mark.parametrize("step", ["leak", "check"])
def test_thread_settings_written_by_a_test_do_not_reach_the_next(step):
    if step == "leak":  # what distributed's Nanny does when it starts a worker process
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    else:
        assert os.environ.get("OMP_NUM_THREADS") == _THREADS_AT_START["OMP_NUM_THREADS"]
        assert os.environ.get("MKL_NUM_THREADS") == _THREADS_AT_START["MKL_NUM_THREADS"]


@pytest.mark.parametrize("step", ["leak", "check"])
def test_the_cli_global_flags_of_one_test_do_not_reach_the_next(step, tmp_path):
    from embedtab.cli import common
    from embedtab.cli.main import run

    if step == "leak":
        (tmp_path / "a").mkdir()
        assert run(["-q", "status", "-A", str(tmp_path / "a")]) == 0
        assert common.state.quiet
    else:
        assert not common.state.quiet
