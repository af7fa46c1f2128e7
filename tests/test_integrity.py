"""Integrity under damage, crashes and hostile inputs (issue 15).

Every hostile case asserts the exit code, a one-line message (no traceback, nothing "unexpected"),
and that the artifact directory afterwards has the same manifest, no leftovers, and passes
`status --verify`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from embedtab.artifacts import ArtifactStore
from embedtab.cli.main import run
from tests.conftest import CONFIGS
from tests.support import _capture, cli, one_line_error  # noqa: F401 (_capture: autouse)

EMBEDTAB = str(Path(sys.executable).with_name("embedtab"))


def cli_process(*args: str) -> subprocess.CompletedProcess:
    """The command line in its own process, where a crash must not take the test run down."""
    return subprocess.run([EMBEDTAB, *args], capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def snapshot(root: Path) -> str:
    return (root / "manifest.json").read_text()


def assert_untouched(root: Path, before: str) -> None:
    """Same manifest, nothing left behind by the failed command, every file as recorded."""
    assert snapshot(root) == before
    staging = root / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())
    assert not (root / "work").exists() or not any((root / "work").rglob("*.npy"))
    assert cli("status", "--verify", "-A", str(root)).returncode == 0


@pytest.fixture(scope="module")
def _base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("base")
    pd.DataFrame({"item_id": [1, 2, 3], "title": ["red wool hat", "blue mug", "steel lamp"]}).to_parquet(folder / "items.parquet")
    assert run(["-q", "encode", "text", str(folder / "items.parquet"), "-c", "title", "--name", "t", "-A", str(folder / "artifacts")]) == 0
    return folder


@pytest.fixture
def base(_base, tmp_path) -> Path:
    """A private artifact directory holding one small embeddings artifact (made from tmp_path/items.parquet)."""
    shutil.copy(_base / "items.parquet", tmp_path / "items.parquet")
    shutil.copytree(_base / "artifacts", tmp_path / "artifacts")
    return tmp_path / "artifacts"


# ----------------------------------------------------------------------------- inputs
def test_all_texts_empty_or_null_is_one_line_and_leaves_nothing(base, tmp_path):
    before = snapshot(base)
    data = tmp_path / "blank.parquet"
    pd.DataFrame({"item_id": [1, 2, 3], "title": [None, "", "   "]}).to_parquet(data)
    proc = cli("encode", "text", str(data), "-c", "title", "--name", "blank", "-A", str(base))
    one_line_error(proc, 1, "blank.parquet: no row has text to encode: 3 of 3 (2 empty text, 1 null text)")
    assert_untouched(base, before)


def test_null_and_empty_texts_get_their_own_reasons(base, tmp_path):
    data = tmp_path / "mixed.parquet"
    pd.DataFrame({"item_id": [1, 2, 3, 4], "title": [None, "  ", "ok", None], "brand": [None, "", None, "acme"]}).to_parquet(data)
    assert cli("encode", "text", str(data), "--template", "{title}. {brand}", "--name", "m", "-A", str(base)).returncode == 0
    errors = pq.read_table(base / "embeddings" / "m" / "_errors.parquet").to_pylist()
    assert [(e["item_id"], e["reason"]) for e in errors] == [(1, "null text"), (2, "empty text")]


def test_nul_byte_in_an_image_path_is_one_recorded_row(base, tmp_path):
    Image.new("RGB", (16, 16), (200, 10, 10)).save(tmp_path / "ok.png")
    data = tmp_path / "images.parquet"
    pd.DataFrame({"item_id": [1, 2], "image_path": ["ok.png", "bad\x00name.png"]}).to_parquet(data)
    proc = cli("encode", "image", str(data), "-m", "embedtab-smoke-clip", "--name", "img", "--workers", "0", "-A", str(base))
    assert proc.returncode == 0, proc.stderr
    errors = pq.read_table(base / "embeddings" / "img" / "_errors.parquet").to_pylist()
    assert [(e["item_id"], e["reason"]) for e in errors] == [(2, "invalid path (contains a NUL byte)")]


def test_id_columns_of_different_widths_are_widened_and_other_types_named(base, tmp_path):
    a, b, c = tmp_path / "a.parquet", tmp_path / "b.parquet", tmp_path / "c.parquet"
    pq.write_table(pa.table({"item_id": pa.array([1, 2], pa.int32()), "title": ["x y", "z w"]}), a)
    pq.write_table(pa.table({"item_id": pa.array([3], pa.int64()), "title": ["q r"]}), b)
    assert cli("encode", "text", str(a), str(b), "-c", "title", "--name", "wide", "-A", str(base)).returncode == 0
    ids = pq.read_table(base / "embeddings" / "wide" / "part-00000.parquet").column("item_id")
    assert ids.type == pa.int64() and ids.to_pylist() == [1, 2, 3]
    before = snapshot(base)
    pq.write_table(pa.table({"item_id": ["sku-9"], "title": ["s t"]}), c)
    proc = cli("encode", "text", str(a), str(c), "-c", "title", "--name", "mixed", "-A", str(base))
    one_line_error(proc, 1, "the 'item_id' column has different types in the input files (a.parquet: int32, c.parquet: string)")
    assert_untouched(base, before)


def test_max_pixels_governs_also_above_pillows_own_limit(tmp_path, monkeypatch):
    from embedtab.encode.images import ImageLoadError, load_rgb

    path = tmp_path / "big.png"
    Image.new("L", (200, 100)).save(path)  # 20,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5_000)  # Pillow's default stands in at 89 M
    assert load_rgb(path, max_pixels=50_000).size == (200, 100)  # the flag lets it through
    with pytest.raises(ImageLoadError, match=r"image too large \(200x100 = 20000 pixels > 10000\)"):
        load_rgb(path, max_pixels=10_000)


def test_a_fifo_as_input_says_what_it_is(base, tmp_path):
    before = snapshot(base)
    fifo = tmp_path / "items.parquet"
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo)
    proc = cli("encode", "text", str(fifo), "-c", "title", "--name", "f", "-A", str(base))
    one_line_error(proc, 1, f"input {fifo} is a FIFO (named pipe), not a file")
    assert_untouched(base, before)


# ----------------------------------------------------------------------------- manifest, lock, debris
def test_an_empty_json_object_is_not_a_manifest(base, tmp_path):
    (base / "manifest.json").write_text("{}")
    items = tmp_path / "items.parquet"
    proc = cli("encode", "text", str(items), "-c", "title", "--name", "t", "--force", "-A", str(base))
    one_line_error(proc, 1, "manifest.json is not an embedtab manifest (no format_version); embedtab will not touch it")
    assert (base / "manifest.json").read_text() == "{}"
    assert (base / "embeddings" / "t" / "part-00000.parquet").is_file()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_dead_writers_are_counted_then_reclaimed_by_the_next_writer(base, tmp_path):
    import socket

    dead = _dead_pid()
    host = socket.gethostname()
    staging = base / ".staging"
    staging.mkdir(exist_ok=True)
    leftovers = [
        staging / f"embeddings.x@{dead}.{host}.0123456789ab",
        staging / f"fit@{dead}.{host}.k2j3h4",
        staging / "trash.feedfacecafe",
    ]
    for folder in leftovers:
        folder.mkdir()
        (folder / "part-00000.parquet").write_bytes(b"x" * 1_000_000)
    (base / f".manifest.json.{dead}.tmp").write_text("{half")
    alive = staging / f"embeddings.y@{os.getpid()}.{host}.0123456789ab"  # a writer still running
    other_host = staging / f"embeddings.z@{dead}.elsewhere.example.0123456789ab"  # a job on another machine
    for folder in (alive, other_host):
        folder.mkdir()

    status = cli("status", "-A", str(base))
    assert status.returncode == 0 and "2.9 MiB left in .staging by interrupted runs" in status.stdout, status.stdout
    assert json.loads(cli("status", "--json", "-A", str(base)).stdout)["reclaimable_bytes"] == 3_000_005
    items = tmp_path / "more.parquet"
    pd.DataFrame({"item_id": [7], "title": ["tall round lamp"]}).to_parquet(items)
    assert cli("encode", "text", str(items), "-c", "title", "--name", "u", "-A", str(base)).returncode == 0
    assert sorted(p.name for p in staging.iterdir()) == sorted([alive.name, other_host.name])
    assert not (base / f".manifest.json.{dead}.tmp").exists()
    assert json.loads(cli("status", "--json", "-A", str(base)).stdout)["reclaimable_bytes"] == 0


def test_lock_timeout_says_whether_the_holder_still_runs(tmp_path):
    import fcntl

    from embedtab.errors import LockTimeout

    store = ArtifactStore(tmp_path / "a", lock_timeout=0.2)
    store.root.mkdir()
    fd = os.open(store.root / ".lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for pid, expected in (
            (os.getpid(), f"by embedtab pid {os.getpid()}, which is still running"),
            (dead := _dead_pid(), f"pid {dead} that took the lock is no longer running: a process it started"),
        ):
            import socket

            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{pid} {socket.gethostname()}".encode(), 0)
            with pytest.raises(LockTimeout, match=expected):
                with store.lock():
                    pass
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- hostile configs
BOMB = (
    "a: &a [x, x, x, x, x, x, x, x, x]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    + "features:\n  - columns: [item_id]\n    ops:\n      - tags: *i\n"
)


@pytest.mark.merlin  # through fit-workflow, which needs NVTabular before it reads a config
@pytest.mark.parametrize(
    "name, text, fragment",
    [
        ("bomb.yaml", BOMB, "holds more than 100,000 values once YAML aliases are expanded"),
        ("huge.yaml", "features:\n" + "  - columns: [item_id]\n" * 120_000, "a workflow config may be at most 128 KiB"),
        ("deep.yaml", "features: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested more than 64 levels deep"),
        ("loop.yaml", "features: &f\n  - columns: *f\n", "holds more than 100,000 values"),
        ("long.yaml", "features:\n  - columns: [item_id]\n    ops: [" + "x" * 120_000 + "]\n", "unknown op 'xxxxx"),
    ],
)
def test_hostile_configs_are_one_short_line(base, tmp_path, name, text, fragment):
    before = snapshot(base)
    config = tmp_path / name
    config.write_text(text)
    proc = cli_process("fit-workflow", str(config), "-d", str(tmp_path / "items.parquet"), "-A", str(base))
    line = one_line_error(proc, 2, fragment)
    assert len(line) < 500, len(line)
    assert_untouched(base, before)


# ----------------------------------------------------------------------------- messages
def test_force_refusal_says_what_differs(base, tmp_path):
    before = snapshot(base)
    items = tmp_path / "items.parquet"
    proc = cli("encode", "text", str(items), "--template", "{title}!", "--name", "t", "-A", str(base))
    one_line_error(
        proc, 2, "embeddings 't' already exists and was made from other inputs or options (template: '{title}' -> '{title}!'); pass --force"
    )
    assert_untouched(base, before)


def test_status_of_a_missing_directory_and_piped_output(base, tmp_path):
    proc = cli("status", "-A", str(tmp_path / "nope"))
    one_line_error(proc, 2, f"artifact directory {tmp_path / 'nope'} does not exist")
    assert not (tmp_path / "nope").exists()
    piped = cli("status", "-A", str(base))  # stdout is a pipe here
    assert "embeddings" in piped.stdout and "…" not in piped.stdout


@pytest.mark.merlin
def test_quiet_fit_workflow_prints_nothing(tmp_path, sample):
    proc = cli("-q", "fit-workflow", str(CONFIGS / "item.yaml"), "-d", str(sample / "items.parquet"), "-A", str(tmp_path / "a"))
    assert proc.returncode == 0 and proc.stderr.strip() == "wrote workflows/item in " + proc.stderr.split(" in ")[-1].strip()
    assert "cardinality" not in proc.stderr


# ----------------------------------------------------------------------------- damage
@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory, sample) -> Path:
    """Every kind of artifact, small: encode, reduce, fit, transform, lookup."""
    root = tmp_path_factory.mktemp("damage") / "artifacts"
    items = sample / "items.parquet"
    small = root.parent / "items.parquet"
    pd.read_parquet(items).iloc[:40].to_parquet(small)
    steps = [
        ["encode", "text", str(small), "-c", "title", "--name", "text"],
        ["reduce", "text", "--dims", "4"],
        ["fit-workflow", str(CONFIGS / "item.yaml"), "-d", str(small)],
        ["transform", "item", "-d", str(small), "--name", "features"],
        ["lookup", "-e", "text-pca4", "-w", "item", "--name", "text"],
    ]
    for step in steps:
        assert run(["-q", *step, "-A", str(root)]) == 0, step
    return root


# (artifact, file, command that made it, a command that consumes it or None)
DAMAGE = [
    (
        "embeddings/text",
        "part-00000.parquet",
        ["encode", "text", "{small}", "-c", "title", "--name", "text"],
        ["reduce", "text", "--dims", "3", "--name", "x"],
    ),
    (
        "embeddings/text",
        "_index.parquet",
        ["encode", "text", "{small}", "-c", "title", "--name", "text"],
        ["lookup", "-e", "text", "-w", "item", "--name", "x", "--min-reachable", "0"],
    ),
    ("embeddings/text", "_embeddings.json", ["encode", "text", "{small}", "-c", "title", "--name", "text"], None),
    ("embeddings/text-pca4", "_metadata", ["reduce", "text", "--dims", "4"], ["lookup", "-e", "text-pca4", "-w", "item", "--name", "x"]),
    (
        "projections/text-pca4",
        "projection.npz",
        ["reduce", "text", "--dims", "4"],
        ["reduce", "text", "--apply", "text-pca4", "--name", "x"],
    ),
    (
        "workflows/item",
        "categories/unique.brand.parquet",
        ["fit-workflow", "{configs}/item.yaml", "-d", "{small}"],
        ["transform", "item", "-d", "{small}", "--name", "x"],
    ),
    (
        "workflows/item",
        "workflow.pkl",
        ["fit-workflow", "{configs}/item.yaml", "-d", "{small}"],
        ["lookup", "-e", "text-pca4", "-w", "item", "--name", "x"],
    ),
    ("datasets/features", "part_0.parquet", ["transform", "item", "-d", "{small}", "--name", "features"], None),
    ("datasets/features", "schema.pbtxt", ["transform", "item", "-d", "{small}", "--name", "features"], None),
    ("lookups/text", "_embeddings.npy", ["lookup", "-e", "text-pca4", "-w", "item", "--name", "text"], None),
    ("lookups/text", "table.parquet", ["lookup", "-e", "text-pca4", "-w", "item", "--name", "text"], None),
]


@pytest.mark.merlin
@pytest.mark.parametrize("artifact, name, producer, consumer", DAMAGE, ids=[f"{a}/{n}" for a, n, _, _ in DAMAGE])
def test_a_flipped_byte_is_named_refused_and_rebuilt(chain_dir, tmp_path, artifact, name, producer, consumer):
    root = tmp_path / "artifacts"
    shutil.copytree(chain_dir, root)
    target = root / artifact / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit
    target.write_bytes(bytes(data))
    fill = {"{small}": str(chain_dir.parent / "items.parquet"), "{configs}": str(CONFIGS)}
    expand = lambda args: [next((a.replace(k, v) for k, v in fill.items() if k in a), a) for a in args]  # noqa: E731

    verify = cli("status", "--verify", "-A", str(root))
    one_line_error(verify, 1, "1 damaged", f"{artifact} ({name} differs from what embedtab wrote (sha256))")
    if consumer is not None:
        one_line_error(cli(*expand(consumer), "-A", str(root)), 1, f"{artifact} is damaged: {name} differs")
    rebuilt = cli(*expand(producer), "-A", str(root))
    assert rebuilt.returncode == 0 and "up to date" not in rebuilt.stderr, rebuilt.stderr
    kind, artifact_name = artifact.split("/")
    assert f"{kind} '{artifact_name}' is damaged ({name} differs from what embedtab wrote (sha256)); rebuilding it" in rebuilt.stderr
    assert cli("status", "--verify", "-A", str(root)).returncode == 0


# ----------------------------------------------------------------------------- crashes
_KILL_BETWEEN_PUBLISHES = textwrap.dedent(
    """
    import os, signal, sys
    from embedtab import artifacts, reduce
    real, calls = artifacts._rename, []

    def rename(src, dst):  # SIGKILL right after the first of reduce's two artifacts moved into place
        real(src, dst)
        calls.append(dst)
        if sum(1 for d in calls if "/.staging/" not in str(d)) == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

    artifacts._rename = rename
    reduce.run(artifacts.ArtifactStore(sys.argv[1]), reduce.ReduceOptions("t", dims=2, name="t-pca", force=True))
    """
)


@pytest.mark.parametrize("moved, outcome", [(1, "old"), (2, "new")])
def test_reduce_killed_between_its_two_publishes_leaves_both_old_or_both_new(base, moved, outcome):
    """Killed after one of its two artifacts moved into place: both roll back. After both moved,
    before the manifest said so: both roll forward. Never one without the other."""
    first = cli("reduce", "t", "--dims", "1", "--name", "t-pca", "-A", str(base))
    assert first.returncode == 0, first.stderr
    before = snapshot(base)
    proc = subprocess.run([sys.executable, "-c", _KILL_BETWEEN_PUBLISHES, str(base), str(moved)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    status = cli("status", "-A", str(base))  # a reader: sees the interrupted publication, calls nothing damaged
    assert status.returncode == 0 and "pending" in status.stdout, status.stdout + status.stderr
    store = ArtifactStore(base)
    with store.lock():  # the next writer recovers the whole group
        pass
    dims = 1 if outcome == "old" else 2
    assert store.get("embeddings", "t-pca").metadata["dim"] == store.get("projections", "t-pca").metadata["dims"] == dims
    assert store.get("embeddings", "t-pca").inputs["artifacts"][-1]["fingerprint"] == store.get("projections", "t-pca").fingerprint
    assert not store.read_manifest().pending
    if outcome == "old":
        assert_untouched(base, before)
    else:
        assert cli("status", "--verify", "-A", str(base)).returncode == 0 and not any((base / ".staging").iterdir())


@pytest.mark.merlin
def test_published_datasets_name_no_staging_paths(tmp_path, sample):
    root = tmp_path / "artifacts"
    items = str(sample / "items.parquet")
    for step in (["fit-workflow", str(CONFIGS / "item.yaml"), "-d", items], ["transform", "item", "-d", items, "--name", "features"]):
        assert cli(*step, "-A", str(root)).returncode == 0
    shutil.rmtree(root / ".staging", ignore_errors=True)
    folder = root / "datasets" / "features"
    named = folder.joinpath("_file_list.txt").read_text().split("\n")[1:]
    schema = json.loads((folder / ".merlin" / "schema.json").read_text())
    named += [f["annotation"]["extraMetadata"][0]["cat_path"] for f in schema["feature"] if "cat_path" in json.dumps(f)]
    named += [line.split('"')[1] for line in (folder / "schema.pbtxt").read_text().splitlines() if "unique." in line]
    named = [n for n in named if n.strip()]
    assert len(named) >= 1 + 3 + 3  # the part, and item_id, category, brand twice
    for path in named:
        assert ".staging" not in path and Path(path).is_file(), path
