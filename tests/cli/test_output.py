"""What the command line prints: each stage's summary in `embedtab run`, an up-to-date run in a line
per stage, plain progress lines off a terminal, tables never cut when piped."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from embedtab.cli.main import run as cli

EMBEDTAB = str(Path(sys.executable).with_name("embedtab"))


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """A two-stage pipeline run once as CI runs it: stderr piped, a narrow $COLUMNS, a progress
    line on every step; one of the 40 texts is blank (skipped)."""
    tmp = tmp_path_factory.mktemp("piped")
    rng = np.random.default_rng(1)
    words = np.array(["red", "blue", "wool", "steel", "soft", "lamp", "mug", "hat"])
    titles = [" ".join(rng.choice(words, 5)) + f" {i}" for i in range(40)]
    titles[7] = "   "
    pd.DataFrame({"item_id": np.arange(40), "title": titles}).to_parquet(tmp / "items.parquet")
    pipeline = tmp / "pipeline.yaml"
    pipeline.write_text(
        f"stages:\n  - encode text: {tmp / 'items.parquet'}\n    name: t\n    text-column: title\n  - reduce: t\n    dims: 4\n"
    )
    root = tmp / "a"
    proc = subprocess.run(
        [EMBEDTAB, "run", str(pipeline), "-A", str(root)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "EMBEDTAB_PROGRESS_INTERVAL": "0", "COLUMNS": "40"},
    )
    assert proc.returncode == 0, proc.stderr
    return pipeline, root, proc.stderr


def test_run_prints_what_each_stage_made(piped_run):
    _, _, err = piped_run
    assert "encode text -> embeddings/t  (" in err and "wrote embeddings/t in " in err
    assert "\n  40 items: 39 encoded (39 distinct), 0 reused, 1 skipped; " in err
    assert "\n  skipped items and reasons: embeddings/t/_errors.parquet\n" in err
    assert re.search(r"^reduce -> embeddings/t-pca4, projections/t-pca4  \(.*pipeline.yaml:5\)$", err, re.M)
    assert re.search(r"^  384 -> 4 dims with sklearn on cpu: \d+\.\d% of the variance kept$", err, re.M)
    assert re.search(r"^  cumulative variance by dims: 1:\d+%  2:\d+%  4:\d+%$", err, re.M)
    # The closing table is whole although $COLUMNS says 40.
    assert "…" not in err and re.search(r"│ embeddings/t-pca4 +│ reduce +│ ran +│", err)


def test_progress_off_a_terminal_is_plain_lines(piped_run):
    _, _, err = piped_run
    assert "\x1b" not in err and "━" not in err.split("\nrun of ")[0]  # no escape codes, no bars (before the closing table)
    assert re.search(r"^encoding texts: \d+/39 texts \(\d+%\), [\d,.]+ texts/s, \d+s$", err, re.M)
    assert re.search(r"^encoding texts: 39/39 texts \(100%\), [\d,.]+ texts/s, \d+s - done$", err, re.M)
    assert re.search(r"^fitting PCA: 39/39 rows \(100%\)", err, re.M)


def test_quiet_progress_lines_wait_for_the_interval(tmp_path, monkeypatch, capsys):
    """Off a terminal a loop shorter than the interval prints nothing; a longer one a line per interval and a last one."""
    from embedtab.cli.common import RichReporter

    monkeypatch.setenv("EMBEDTAB_PROGRESS_INTERVAL", "3600")
    with RichReporter().progress("counting", total=10, unit="rows") as advance:
        advance(10)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("EMBEDTAB_PROGRESS_INTERVAL", "0")
    reporter = RichReporter()
    reporter.heading = "stage heading"
    with reporter.progress("counting", total=None, unit="rows") as advance:
        advance(3)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "stage heading" and re.fullmatch(r"counting: 3 rows(, [\d,.]+ rows/s)?, \d+s", lines[1]), lines
    assert lines[2].endswith(" - done") and len(lines) == 3


def test_an_up_to_date_run_is_a_line_per_stage_and_json_carries_the_summaries(piped_run, capsys):
    pipeline, root, _ = piped_run
    assert cli(["run", str(pipeline), "-A", str(root)]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[:2] == ["encode text -> embeddings/t: up to date", "reduce -> embeddings/t-pca4, projections/t-pca4: up to date"]
    assert len(lines) == 3 and re.fullmatch(
        rf"all 2 stages of {re.escape(str(pipeline))} are up to date; nothing to do \(\d+\.\ds\)", lines[2]
    )

    assert cli(["run", str(pipeline), "--force", "t-pca4", "--json", "-A", str(root)]) == 0
    stages = {s["stage"]: s for s in json.loads(capsys.readouterr().out)["stages"]}
    assert (stages["embeddings/t"]["status"], stages["embeddings/t"]["summary"], stages["embeddings/t"]["lines"]) == ("up to date", {}, [])
    ran = stages["embeddings/t-pca4"]
    assert ran["status"] == "ran" and ran["summary"]["rows"] == 39 and ran["summary"]["dims"] == 4
    assert 0 < ran["summary"]["explained_variance_ratio_total"] <= 1
    assert ran["lines"][0].startswith("384 -> 4 dims with sklearn on cpu: ") and ran["lines"][0].endswith("of the variance kept")


def test_status_piped_into_a_narrow_pipe_cuts_no_word(piped_run, tmp_path):
    _, built, _ = piped_run
    root = tmp_path / "a"
    shutil.copytree(built, root)
    part = next((root / "embeddings" / "t-pca4").glob("part-*.parquet"))
    with part.open("ab") as handle:
        handle.write(b"!")
    proc = subprocess.run([EMBEDTAB, "status", "-A", str(root)], capture_output=True, text=True, env={**os.environ, "COLUMNS": "40"})
    assert proc.returncode == 1
    assert "…" not in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if "│ t-pca4 " in line and "embeddings" in line)
    assert f"damaged: {part.name} changed size" in row


def test_encode_help_names_the_encoders_there_are():
    proc = subprocess.run([EMBEDTAB, "encode", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0
    for name in ("sentence-transformers", "CLIP text tower", "OpenCLIP", "Hugging Face CLIP/SigLIP", "hf-clip", "plugin"):
        assert name in proc.stdout, name
