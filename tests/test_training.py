"""The trainers the design names train on the demo's artifacts as shipped, where embedtab cannot be
imported: Transformers4Rec on datasets/sessions, and a PyTorch model fed by merlin-dataloader's
Loader with EmbeddingOperator for the text and image lookups.

They run the examples/ scripts in the training environment (.venv-train: Transformers4Rec 23.08,
transformers 4.33, merlin-dataloader 23.08, torch, no embedtab; requirements-train.txt), which
`make test` passes in EMBEDTAB_TRAIN_PYTHON, with an import blocker for embedtab on top.
"""

from __future__ import annotations

import json
import math
import os
import subprocess

import pandas as pd
import pytest

from tests.conftest import REPO, SAMPLE
from tests.workflow.test_stage import read_dataset

TRAIN = os.environ.get("EMBEDTAB_TRAIN_PYTHON")
pytestmark = [
    pytest.mark.merlin,
    pytest.mark.skipif(not TRAIN, reason="set EMBEDTAB_TRAIN_PYTHON to the training environment's python (`make test` does)"),
]

_WITHOUT_EMBEDTAB = """
import runpy, sys

class NoEmbedtab:  # as in a training container where embedtab is not installed
    def find_spec(self, name, path=None, target=None):
        if name == "embedtab" or name.startswith("embedtab."):
            raise ModuleNotFoundError("No module named 'embedtab' (blocked by the test)")

sys.meta_path.insert(0, NoEmbedtab())
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name="__main__")
finally:
    assert not any(m == "embedtab" or m.startswith("embedtab.") for m in sys.modules)
"""


def train(tmp_path, script: str, *args: str):
    proc = subprocess.run(
        [str(TRAIN), "-c", _WITHOUT_EMBEDTAB, str(REPO / "examples" / script), *args, "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the repository: nothing of it on sys.path
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_training_environment_has_the_trainers_and_no_embedtab(tmp_path):
    code = "import importlib.util as u, transformers, transformers4rec, merlin.dataloader; print(u.find_spec('embedtab'), transformers.__version__)"
    proc = subprocess.run([str(TRAIN), "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    spec, version = proc.stdout.split()
    assert spec == "None" and int(version.split(".")[0]) < 5  # Transformers4Rec 23.08 needs transformers < 5


def test_transformers4rec_builds_its_inputs_from_the_sessions_schema_and_its_loss_falls(demo, tmp_path):
    result = train(tmp_path, "train_transformers4rec.py", str(demo.root), "--epochs", "3")
    assert result["max_sequence_length"] == 20  # session.yaml's max_length, read from the schema
    assert result["inputs"] == ["device_type-list", "item_id-count", "item_id-list"]
    assert result["rows"] == len(read_dataset(demo.path("datasets", "sessions")))
    losses = result["losses"]
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]


def test_a_pytorch_model_trains_an_epoch_on_train_with_the_text_and_image_lookups(demo, tmp_path):
    (result,) = train(tmp_path, "train_with_content_lookups.py", str(demo.root), "--epochs", "1", "--seeds", "1", "--only", "content")
    train_days = pd.concat([pd.read_parquet(SAMPLE / "interactions" / f"day_{d}.parquet") for d in (1, 2)])
    valid_day = pd.read_parquet(SAMPLE / "interactions" / "day_3.parquet")
    assert result["content"] is True and result["train_rows"] == len(train_days)
    assert len(result["losses"]) == 1 and math.isfinite(result["losses"][0])
    # the validation rows whose item the training rows never hold (first seen that day), and the rest
    assert result["cold_rows"] == (~valid_day["item_id"].isin(train_days["item_id"])).sum() > 0
    assert result["cold_rows"] + result["warm_rows"] == len(valid_day)
    assert 0 <= result["cold_recall@10"] <= 1 and 0 <= result["warm_recall@10"] <= 1
