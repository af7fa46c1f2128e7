"""Shared fixtures. Everything runs on CPU, offline, from data built here or the committed sample."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "sample_data"
CONFIGS = REPO / "configs"

# Tests send Ctrl-C to embedtab processes. A test run started in the background by a
# non-interactive shell inherits SIGINT *ignored*, and so would every child (Python then installs
# no KeyboardInterrupt handler): give the children the default back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Never reach for a model hub from the tests; keep model caches inside the test session.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# Libraries change process-wide thread settings behind a test's back: distributed's Nanny writes
# OMP/MKL/OPENBLAS_NUM_THREADS=1 into this process's environment when it starts a worker, and
# every later child process (a killed encode, a CLI run) would then compute with one thread.
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
_THREADS_AT_START = {name: os.environ.get(name) for name in _THREAD_VARIABLES}


@pytest.fixture(autouse=True)
def _thread_settings_as_at_start():
    """(and the CLI's global flags: a test, or a fixture set up before it, that ran `embedtab -q ...`
    must not silence the next test: every test starts and ends with the defaults)"""
    from embedtab.cli import common

    defaults = common.State()
    common.state.quiet, common.state.debug = defaults.quiet, defaults.debug
    yield
    common.state.quiet, common.state.debug = defaults.quiet, defaults.debug
    for name, value in _THREADS_AT_START.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _gpu_present() -> bool:
    """A CUDA device that torch or CuPy sees (each GPU test skips on the library it lacks)."""
    from embedtab.device import _cupy_sees_a_device

    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:
        pass
    return _cupy_sees_a_device()


def pytest_collection_modifyitems(config, items):
    from embedtab.workflow.stage import merlin_installed

    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    no_merlin = pytest.mark.skip(reason="needs NVTabular/Merlin (pip install 'embedtab[merlin]', Python <= 3.11)")
    gpu, merlin = _gpu_present(), merlin_installed()
    for item in items:
        if "gpu" in item.keywords and not gpu:
            item.add_marker(no_gpu)
        if "merlin" in item.keywords and not merlin:
            item.add_marker(no_merlin)


@pytest.fixture(autouse=True)
def _cpu_unless_gpu_test(request, monkeypatch):
    """Tests mean the CPU unless marked gpu: on a GPU machine "auto" would pick CUDA (and fp16),
    and the CPU references they compare with would no longer apply. Child processes inherit it."""
    if "gpu" in request.keywords:
        monkeypatch.delenv("EMBEDTAB_DEVICE", raising=False)
    else:
        monkeypatch.setenv("EMBEDTAB_DEVICE", "cpu")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    cache = tmp_path_factory.mktemp("embedtab-cache")
    os.environ["EMBEDTAB_CACHE"] = str(cache)
    yield cache


@pytest.fixture(scope="session")
def sample(tmp_path_factory) -> Path:
    """A private copy of sample_data/ (tests may not touch the committed files)."""
    target = tmp_path_factory.mktemp("sample") / "sample_data"
    shutil.copytree(SAMPLE, target)
    return target


@pytest.fixture
def store(tmp_path):
    from embedtab.artifacts import ArtifactStore

    return ArtifactStore(tmp_path / "artifacts", lock_timeout=5)


@pytest.fixture(scope="session")
def text_backend():
    from embedtab.encode.backends import SentenceTransformersEncoder
    from embedtab.encode.encoders import Settings

    return SentenceTransformersEncoder("all-MiniLM-L6-v2", Settings("text", batch_size=16))


@pytest.fixture(scope="session")
def chain(tmp_path_factory, sample):
    """The sample pipeline run once through the core API; read-only for the tests that use it."""
    from embedtab import lookup, reduce
    from embedtab.artifacts import ArtifactStore
    from embedtab.encode import ImageOptions, TextOptions, run_image, run_text
    from embedtab.workflow import stage

    store = ArtifactStore(tmp_path_factory.mktemp("chain") / "artifacts", lock_timeout=5)
    items = str(sample / "items.parquet")
    run_text(store, TextOptions(inputs=[items], name="text", template="{title}. {description}", batch_size=32))
    run_image(store, ImageOptions(inputs=[items], name="image", model="embedtab-smoke-clip", batch_size=32))
    reduce.run(store, reduce.ReduceOptions("text", 16))
    train = [str(sample / "interactions" / "day_1.parquet"), str(sample / "interactions" / "day_2.parquet")]
    fit_id_space(store, sample)
    stage.fit(store, stage.FitOptions(str(CONFIGS / "interactions.yaml"), train))
    stage.transform(store, stage.TransformOptions("interactions", train, name="train"))
    lookup.run(store, lookup.LookupOptions("text", "interactions", "item_id", name="text-train"))
    lookup.run(store, lookup.LookupOptions("image", "interactions", "item_id", name="image-train"))
    return store


def fit_id_space(store, sample) -> None:
    """The item, user and context workflows, whose vocabularies the interactions and session configs share."""
    from embedtab.workflow import stage

    for which, data in (("item", "items.parquet"), ("user", "users.parquet"), ("context", "interactions")):
        stage.fit(store, stage.FitOptions(str(CONFIGS / f"{which}.yaml"), [str(sample / data)]))


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The demo's artifact directory, made by the demo script itself (read-only for the tests)."""
    import subprocess
    import sys

    from embedtab.artifacts import ArtifactStore

    root = tmp_path_factory.mktemp("demo") / "artifacts"
    env = {**os.environ, "EMBEDTAB_ARTIFACTS": str(root), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return ArtifactStore(root)
