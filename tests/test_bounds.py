"""Every option of every command has bounds, checked when its options are made -- before any input
is read, any model loaded or any process started -- the same way from the CLI (exit 2, the flag
named, one line), the Python API and a pipeline file (its file and line). And image decoding
workers never outlive the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from embedtab import bounds
from embedtab.cli.main import run
from embedtab.errors import UsageError
from tests.conftest import CONFIGS, SAMPLE

ITEMS = str(SAMPLE / "items.parquet")
TEXT = ["encode", "text", ITEMS, "-c", "title"]
IMAGE = ["encode", "image", ITEMS, "-m", "embedtab-smoke-clip"]
FIT = ["fit-workflow", str(CONFIGS / "item.yaml"), "-d", ITEMS]
TRANSFORM = ["transform", "item", "-d", ITEMS]
LOOKUP = ["lookup", "-e", "text", "-w", "item"]
PIPELINE = ["run", str(CONFIGS / "pipeline.yaml")]

BAD = [
    # encode text / image
    (TEXT, "--batch-size", "0"),
    (TEXT, "--batch-size", "-4"),
    (TEXT, "--batch-size", "70000"),
    (TEXT, "--shard-size", "0"),
    (TEXT, "--shard-size", "2000000"),
    (TEXT, "--max-errors", "-1"),
    (TEXT, "--shard", "0/2"),
    (TEXT, "--shard", "3/2"),
    (TEXT, "--shard", "1/0"),
    (TEXT, "--shard", "1/2/3"),
    (TEXT, "--shard", "a/b"),
    (TEXT, "--shard", "-1/2"),
    (TEXT, "--shard", "1/100000"),
    (TEXT, "--shard", "½/2"),
    (TEXT, "--id-column", ""),
    (TEXT, "--on-error", "ignore"),
    (TEXT, "--precision", "fp8"),
    (TEXT, "--device", "tpu"),
    (IMAGE, "--workers", "-1"),
    (IMAGE, "--workers", "100000"),
    (IMAGE, "--workers", "65"),
    (IMAGE, "--batch-size", "0"),
    (IMAGE, "--batch-size", "9000"),
    (IMAGE, "--max-pixels", "0"),
    (IMAGE, "--max-pixels", "-5"),
    (IMAGE, "--max-pixels", "5000000000"),
    (IMAGE, "--shard-size", "0"),
    (IMAGE, "--max-errors", "-3"),
    (IMAGE, "--decode", "fast"),
    (IMAGE, "--image-column", ""),
    # reduce (and reduce --apply, which still checks what it does not use)
    (["reduce", "text"], "--dims", "0"),
    (["reduce", "text"], "--dims", "-8"),
    (["reduce", "text"], "--dims", "100000"),
    (["reduce", "text"], "--variance", "0"),
    (["reduce", "text"], "--variance", "1.5"),
    (["reduce", "text"], "--variance", "-0.5"),
    (["reduce", "text"], "--variance", "nan"),
    (["reduce", "text"], "--variance", "inf"),
    (["reduce", "text"], "--fit-on", "1"),
    (["reduce", "text"], "--fit-on", "0"),
    (["reduce", "text"], "--fit-on", "-5"),
    (["reduce", "text"], "--fit-on", "1.5"),
    (["reduce", "text"], "--fit-on", "1e5"),
    (["reduce", "text"], "--fit-on", "a/b"),
    (["reduce", "text"], "--seed", "-1"),
    (["reduce", "text"], "--seed", str(2**32)),
    (["reduce", "text"], "--memory", "abc"),
    (["reduce", "text"], "--memory", "-1GB"),
    (["reduce", "text"], "--memory", "1000PB"),
    (["reduce", "text"], "--backend", "gpu"),
    (["reduce", "text", "--apply", "text-pca4"], "--seed", "-1"),
    (["reduce", "text", "--apply", "text-pca4"], "--memory", "x"),
    (["reduce", "text", "--apply", "text-pca4"], "--dims", "0"),
    (["reduce", "text", "--apply", "text-pca4"], "--backend", "x"),
    # fit-workflow / transform
    (FIT, "--part-size", "0"),
    (FIT, "--part-size", "abc"),
    (FIT, "--part-size", "-5MB"),
    (FIT, "--part-size", "1KB"),
    (FIT, "--part-size", "1000PB"),
    (FIT, "--part-size", "1.5.3GB"),
    (TRANSFORM, "--part-size", "0"),
    (TRANSFORM, "--part-size", "lots"),
    (TRANSFORM, "--part-size", "10"),
    # lookup
    (LOOKUP, "--min-coverage", "-0.1"),
    (LOOKUP, "--min-coverage", "2"),
    (LOOKUP, "--min-coverage", "nan"),
    (LOOKUP, "--min-reachable", "1.5"),
    (LOOKUP, "--min-reachable", "-inf"),
    (LOOKUP, "--fill", "median"),
    (LOOKUP, "--column", ""),
    # run
    (PIPELINE, "--only", "no-such-stage"),
    (PIPELINE, "--force", "no-such-stage"),
    # values that are not numbers at all (typer refuses them, naming the flag)
    (IMAGE, "--workers", "many"),
    (TEXT, "--batch-size", "1.5"),
    (["reduce", "text"], "--seed", "x"),
    (LOOKUP, "--min-coverage", "most"),
    # empty values never fall back to a default; digits other than 0-9 are not numbers here;
    # a Dask scheduler is an address before anything connects (a hostile probe's cases)
    (TEXT, "--shard", ""),
    (TEXT, "--model", ""),
    (TEXT, "--text-column", ""),
    (["reduce", "text"], "--name", ""),
    (FIT, "--data", ""),
    (FIT, "--name", ""),
    (TRANSFORM, "--name", ""),
    (LOOKUP, "--name", ""),
    (["reduce", "text"], "--memory", "\u0663GB"),
    (["reduce", "text"], "--memory", "\uff13GB"),
    (TRANSFORM, "--part-size", "\u0663\u0660\u0660MB"),
    (IMAGE, "--dask-scheduler", "garbage"),
    (TEXT, "--dask-scheduler", "tls://127.0.0.1:1"),
    (TEXT, "--dask-scheduler", "tcp://[::1"),
    (TEXT, "--dask-scheduler", "inproc://x"),
    (FIT, "--dask-scheduler", "tcp://h:99999"),
]


@pytest.fixture
def no_work(monkeypatch):
    """Whatever would start work -- reading inputs, loading a model, running a stage -- fails the test."""
    import embedtab.encode as encode
    import embedtab.lookup as lookup
    import embedtab.pipeline as pipeline
    import embedtab.reduce as reduce
    import embedtab.workflow.stage as workflow
    from embedtab import tables

    def started(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    for module, name in (
        (encode, "run_text"),
        (encode, "run_image"),
        (reduce, "run"),
        (reduce, "apply"),
        (workflow, "fit"),
        (workflow, "transform"),
        (lookup, "run"),
        (pipeline, "_run_stages"),
        (tables, "resolve_inputs"),
    ):
        monkeypatch.setattr(module, name, started)


@pytest.mark.parametrize("command, flag, value", BAD, ids=[f"{' '.join(c[:2])} {f} {v}" for c, f, v in BAD])
def test_a_bad_option_is_one_line_naming_the_flag_before_any_work(tmp_path, capsys, no_work, command, flag, value):
    root = tmp_path / "a"
    started = time.monotonic()
    code = run([*command, flag, value, "-A", str(root)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("Error: ") and "unexpected" not in err, err
    assert flag in err, err
    assert time.monotonic() - started < 10
    assert not root.exists()  # nothing written, not even the artifact directory


GOOD = [  # the bounds themselves are allowed
    ("TextOptions", {"batch_size": 1}),
    ("TextOptions", {"batch_size": bounds.MAX_TEXT_BATCH}),
    ("TextOptions", {"shard_size": 1}),
    ("TextOptions", {"shard_size": bounds.MAX_SHARD_SIZE}),
    ("TextOptions", {"max_errors": 0}),
    ("TextOptions", {"shard": "1/1"}),
    ("TextOptions", {"shard": f"{bounds.MAX_SHARDS}/{bounds.MAX_SHARDS}"}),
    ("ImageOptions", {"workers": 0}),
    ("ImageOptions", {"workers": bounds.max_workers()}),
    ("ImageOptions", {"batch_size": bounds.MAX_IMAGE_BATCH}),
    ("ImageOptions", {"max_pixels": 1}),
    ("ImageOptions", {"max_pixels": bounds.MAX_PIXELS}),
    ("ReduceOptions", {"dims": 1}),
    ("ReduceOptions", {"dims": bounds.MAX_DIMS}),
    ("ReduceOptions", {"dims": None, "variance": 1.0}),
    ("ReduceOptions", {"seed": 0}),
    ("ReduceOptions", {"seed": bounds.MAX_SEED}),
    ("ReduceOptions", {"fit_on": "2"}),
    ("ReduceOptions", {"fit_on": "other-artifact"}),
    ("ReduceOptions", {"memory": 0}),
    ("ReduceOptions", {"memory": "1MB"}),
    ("FitOptions", {"part_size": "1MB"}),
    ("TransformOptions", {"part_size": 2**30}),
    ("LookupOptions", {"min_coverage": 0, "min_reachable": 1}),
]


def _options(cls_name: str, values: dict):
    from embedtab.encode import ImageOptions, TextOptions
    from embedtab.lookup import LookupOptions
    from embedtab.reduce import ReduceOptions
    from embedtab.workflow.stage import FitOptions, TransformOptions

    make = {
        "TextOptions": lambda: TextOptions(inputs=[ITEMS], name="t", text_columns=["title"], **values),
        "ImageOptions": lambda: ImageOptions(inputs=[ITEMS], name="i", model="embedtab-smoke-clip", **values),
        "ReduceOptions": lambda: ReduceOptions("text", **values),
        "FitOptions": lambda: FitOptions("item.yaml", [ITEMS], **values),
        "TransformOptions": lambda: TransformOptions("item", [ITEMS], **values),
        "LookupOptions": lambda: LookupOptions("text", "item", **values),
    }
    return make[cls_name]()


@pytest.mark.parametrize("cls_name, values", GOOD)
def test_values_at_the_bounds_are_accepted(cls_name, values):
    _options(cls_name, values)


def test_byte_sizes_are_parsed_when_the_options_are_made():
    from embedtab.workflow.stage import FitOptions, TransformOptions

    assert FitOptions("item.yaml", [ITEMS], part_size="256MB").part_size == 256_000_000
    assert TransformOptions("item", [ITEMS], part_size="1GiB").part_size == 2**30
    assert _options("ReduceOptions", {"memory": "4MB"}).memory == 4_000_000


def test_the_workers_bound_follows_the_machine(monkeypatch):
    monkeypatch.setattr(bounds, "usable_cores", lambda: 1)
    assert bounds.max_workers() == bounds.WORKERS_PER_CORE
    _options("ImageOptions", {"workers": bounds.WORKERS_PER_CORE})
    with pytest.raises(UsageError, match=rf"^workers: must be an integer from 0 to {bounds.WORKERS_PER_CORE} "):
        _options("ImageOptions", {"workers": bounds.WORKERS_PER_CORE + 1})
    monkeypatch.setattr(bounds, "usable_cores", lambda: 1000)
    assert bounds.max_workers() == bounds.MAX_WORKERS


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a: a.encode_image(ITEMS, model="embedtab-smoke-clip", workers=-1), "workers: must be an integer from 0 to"),
        (lambda a: a.encode_image(ITEMS, model="embedtab-smoke-clip", workers=10**5), "workers: must be an integer from 0 to"),
        (lambda a: a.encode_text(ITEMS, columns=["title"], batch_size=True), "batch_size: must be an integer from 1 to 65,536 (got True)"),
        (lambda a: a.encode_text(ITEMS, columns=["title"], shard_size="many"), "shard_size: must be an integer from 1 to"),
        (lambda a: a.encode_text(ITEMS, columns=["title"], max_errors=-1), "max_errors: must be an integer of 0 or more (got -1)"),
        (lambda a: a.reduce("text", dims=0), "dims: must be an integer from 1 to 65,536 (got 0)"),
        (lambda a: a.reduce("text", seed=-1), "seed: must be an integer from 0 to"),
        (lambda a: a.reduce("text", fit_on=1), "fit_on: must be a sample of at least 2 rows"),
        (lambda a: a.reduce("text", variance=float("nan")), "variance: must be a share in (0, 1]"),
        (lambda a: a.fit_workflow(CONFIGS / "item.yaml", ITEMS, part_size="abc"), "part_size: must be a byte size from 1MB to"),
        (lambda a: a.transform("item", ITEMS, part_size=0), "part_size: must be a byte size"),
        (lambda a: a.lookup("text", workflow="item", min_coverage="all"), "min_coverage: must be a share between 0 and 1"),
        (lambda a: a.lookup("text", workflow="item", min_reachable=7), "--min-reachable is a share between 0 and 1"),
    ],
)
def test_the_python_api_checks_the_same_bounds(tmp_path, no_work, call, message):
    import embedtab

    art = embedtab.Artifacts(tmp_path / "a")
    with pytest.raises(UsageError) as caught:
        call(art)
    assert message in str(caught.value)
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize(
    "stage, line, message",
    [
        (
            "- encode image: {items}\n    model: embedtab-smoke-clip\n    workers: 100000\n",
            5,
            "encode image: workers: must be an integer from 0 to",
        ),
        ("- encode text: {items}\n    template: '{{title}}'\n    batch-size: 0\n", 5, "encode text: batch_size: must be an integer from 1"),
        ("- encode text: {items}\n    template: '{{title}}'\n    shard_size: -1\n", 5, "encode text: shard_size: must be an integer"),
        ("- encode image: {items}\n    model: embedtab-smoke-clip\n    max-pixels: 0\n", 5, "encode image: max_pixels: must be"),
        ("- reduce: text\n    dims: 0\n", 4, "reduce: dims: must be an integer from 1 to 65,536 (got 0)"),
        ("- reduce: text\n    seed: -1\n", 4, "reduce: seed: must be an integer from 0 to"),
        ("- reduce: text\n    memory: lots\n", 4, "reduce: invalid --memory 'lots'"),
        ("- reduce: text\n    fit-on: 1\n", 4, "reduce: fit_on: must be a sample of at least 2 rows"),
        ("- reduce: text\n    dims: null\n    variance: 2\n", 5, "reduce: variance: must be a share in (0, 1]"),
        ("- fit-workflow: {config}\n    data: {items}\n    part-size: abc\n", 5, "fit-workflow: part_size: must be a byte size"),
        ("- transform: item\n    data: {items}\n    part_size: 0\n", 5, "transform: part_size: must be a byte size"),
        ("- lookup: text\n    workflow: item\n    min-coverage: 3\n", 5, "lookup: min_coverage: must be a share between 0 and 1"),
        (
            "- lookup: text\n    workflow: item\n    min-reachable: all\n",
            5,
            "lookup: min_reachable: Input should be a valid number, unable to parse string as a number (must be a share between 0 and 1",
        ),
    ],
)
def test_a_pipeline_file_names_its_line(tmp_path, capsys, no_work, stage, line, message):
    path = tmp_path / "pipeline.yaml"
    body = stage.format(items=ITEMS, config=CONFIGS / "item.yaml")
    path.write_text("description: bounds\nstages:\n  " + body.replace("\n    ", "\n    "))
    assert run(["run", str(path), "-A", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == err.splitlines()[0] and err.startswith(f"Error: {path}:{line}: ") and message in err, err
    assert not (tmp_path / "a").exists()


# ----------------------------------------------------------------------------- child processes
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG and /proc are Linux's")
def test_decoding_workers_die_with_their_parent_even_on_sigkill(tmp_path):
    """A parent killed with SIGKILL (kill -9, the OOM killer) runs no cleanup: its DataLoader
    workers, busy decoding, must still go with it instead of living on as orphans."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        import torch
        from embedtab.encode.loading import ImageBatches

        def slow(image):  # a worker busy with one image for a long time
            time.sleep(120)
            return torch.zeros(3, 8, 8)

        paths = [str(p) for p in sorted(__import__("pathlib").Path({str(SAMPLE / "images")!r}).glob("*.jpg"))[:8]]
        for batch in ImageBatches(paths, slow, batch_size=1, workers=2, device="cpu", max_pixels=10**8):
            pass
    """)
    )
    parent = subprocess.Popen([sys.executable, str(script)], cwd=Path(__file__).resolve().parents[1])
    try:
        children: list[int] = []
        deadline = time.monotonic() + 90
        while len(children) < 2 and time.monotonic() < deadline:
            assert parent.poll() is None, "the parent ended early"
            children = _children(parent.pid)
            time.sleep(0.2)
        assert len(children) == 2, children
        time.sleep(1.0)  # the workers are inside the slow preprocessing now
        assert all(_alive(pid) for pid in children)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in children if _alive(pid)]
    for pid in survivors:  # (leave nothing behind even when the test fails)
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"workers {survivors} outlived their parent"


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(found)


def _alive(pid: int) -> bool:
    """Running (a zombie, killed and waiting to be reaped, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("variable", ["EMBEDTAB_LOCK_TIMEOUT", "EMBEDTAB_PROGRESS_INTERVAL"])
@pytest.mark.parametrize("value", ["abc", "-1", "nan", "1e9", "\u0663"])
def test_numeric_environment_variables_are_bounded_too(tmp_path, monkeypatch, capsys, variable, value):
    monkeypatch.setenv(variable, value)
    assert run(["status", "-A", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"Error: ${variable}: must be a number of seconds from 0 to"), err
    monkeypatch.setenv(variable, "5")
    assert run(["status", "-A", str(tmp_path)]) == 0


@pytest.mark.parametrize(
    "variable, value, message",
    [
        ("EMBEDTAB_DEVICE", "garbage", "invalid EMBEDTAB_DEVICE='garbage'"),
        ("DASK_SCHEDULER_ADDRESS", "garbage", "--dask-scheduler: must be a Dask scheduler address"),
    ],
)
def test_environment_variables_are_checked_before_any_command(tmp_path, monkeypatch, capsys, no_work, variable, value, message):
    monkeypatch.setenv(variable, value)
    for command in (["status"], FIT, TEXT):
        assert run([*command, "-A", str(tmp_path / "a")]) == 2 or command == ["status"] and variable != "EMBEDTAB_DEVICE"
        err = capsys.readouterr().err.strip()
        if command != ["status"] or variable == "EMBEDTAB_DEVICE":
            assert len(err.splitlines()) == 1 and message in err, err
