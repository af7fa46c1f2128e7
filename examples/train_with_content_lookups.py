"""Train a small two-tower retrieval model on embedtab's artifacts with merlin-dataloader, the text
and image vectors gathered per row by `EmbeddingOperator` from embedtab's lookups -- and measure
whether those vectors help items the model never saw in training (cold start).

    make setup-train        # .venv-train: merlin-dataloader 23.08, torch; no embedtab in it
    make demo               # the artifacts, in artifacts-demo/
    .venv-train/bin/python examples/train_with_content_lookups.py artifacts-demo

Reads (nothing here imports embedtab):
    datasets/train, datasets/valid      rows of (user, item) interactions, one id space
    lookups/text-train/_embeddings.npy  row i = the text vector of the item whose id is i
    lookups/image-train/_embeddings.npy row i = its image vector (zeros where the image was unreadable)

The model: user = embeddings of user_id, gender and top_category; item = an embedding of item_id,
plus (the content variant) a projection of the item's text and image vectors, looked up by
`item_id_content` -- the key embedtab's cold-start masking never touches, so a masked training row
(item_id set to the out-of-vocabulary id 2) still carries its item's content. Trained with in-batch
softmax. Then, on the validation day, recall@10 over the whole catalog, for the items first seen
that day (their ids were never trained: the model sees the OOV id, as on masked rows) and for the
others. The same seeds train both variants; only the content inputs differ.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np

OOV = 2  # NVTabular 23.08 Categorify: 0 padding, 1 null, 2 out of vocabulary, 3.. the values


def TABLES(artifacts: Path) -> list[Path]:  # noqa: N802 - the dense tables of the two lookups, text then image
    return [artifacts / "lookups" / f"{source}-train" / "_embeddings.npy" for source in ("text", "image")]


USER_INPUTS = ("user_id", "gender", "top_category")


def loader(artifacts: Path, name: str, batch_size: int, shuffle: bool, content: bool):
    from merlin.dataloader.ops.embeddings import EmbeddingOperator
    from merlin.dataloader.torch import Loader
    from merlin.io import Dataset

    transforms = []
    if content:  # a row's vectors, looked up by its content key in embedtab's dense tables
        for source, table in zip(("text", "image"), TABLES(artifacts)):
            transforms.append(EmbeddingOperator(str(table), lookup_key="item_id_content", embedding_name=f"{source}_vec"))
    dataset = Dataset(str(artifacts / "datasets" / name), engine="parquet", cpu=True)
    return Loader(dataset, batch_size=batch_size, shuffle=shuffle, transforms=transforms), dataset.schema


def build_model(schema, content_dims: tuple[int, int] | None, dim: int = 32):
    import torch
    from torch import nn

    def cardinality(column: str) -> int:
        return int(schema[column].int_domain.max) + 1

    class TwoTower(nn.Module):
        def __init__(self):
            super().__init__()
            self.user = nn.ModuleDict({c: nn.Embedding(cardinality(c), dim) for c in USER_INPUTS})
            self.item = nn.Embedding(cardinality("item_id"), dim)
            self.content = nn.Linear(sum(content_dims), dim) if content_dims else None
            for table in [*self.user.values(), self.item]:
                nn.init.normal_(table.weight, std=0.1)  # small logits at the start

        def users(self, batch):
            return sum(self.user[c](batch[c].long().view(-1)) for c in USER_INPUTS)

        def items(self, ids, text=None, image=None):
            vectors = self.item(ids.long().view(-1))
            if self.content is not None:
                vectors = vectors + self.content(torch.cat([text, image], dim=1).float())
            return vectors

    return TwoTower()


def train(model, batches, epochs: int, content: bool, lr: float = 0.01) -> list[float]:
    """In-batch softmax: each row's item against the other rows' items. Returns the mean loss per epoch."""
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(epochs):
        total, steps = 0.0, 0
        for features, _ in batches:
            user = model.users(features)
            item = model.items(features["item_id"], features.get("text_vec"), features.get("image_vec"))
            logits = user @ item.T
            loss = torch.nn.functional.cross_entropy(logits, torch.arange(len(logits)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss), steps + 1
        losses.append(total / steps)
    return losses


def cold_start_recall(model, artifacts: Path, batches, trained_ids: set[int], in_training: set[int], content: bool, k: int = 10) -> dict:
    """recall@k over the catalog for validation rows whose item is not in the training rows at all
    (first seen on the validation day), and for the rest."""
    import torch

    text, image = (torch.from_numpy(np.load(table)) for table in TABLES(artifacts)) if content else (None, None)
    catalog = torch.arange(OOV + 1, int(model.item.num_embeddings))  # every item id (0-2 are padding, null and OOV)
    seen = torch.tensor([int(i) in trained_ids for i in catalog])
    with torch.no_grad():
        as_trained = torch.where(seen, catalog, torch.full_like(catalog, OOV))  # an untrained id reads as OOV
        items = model.items(as_trained, text[catalog], image[catalog]) if content else model.items(as_trained)
        hits = {"cold": [], "warm": []}
        for features, _ in batches:
            scores = model.users(features) @ items.T
            top = catalog[scores.topk(k, dim=1).indices]
            target = features["item_id"].long().view(-1)
            hit = (top == target[:, None]).any(dim=1)
            cold = torch.tensor([int(i) not in in_training for i in target])
            hits["cold"] += hit[cold].tolist()
            hits["warm"] += hit[~cold].tolist()
    return {f"{kind}_recall@{k}": float(np.mean(h)) if h else None for kind, h in hits.items()} | {
        "cold_rows": len(hits["cold"]),
        "warm_rows": len(hits["warm"]),
        "chance@10": k / len(catalog),
    }


def run(artifacts: Path, epochs: int, batch_size: int, seed: int, content: bool) -> dict:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)  # merlin-dataloader shuffles with numpy
    train_rows, schema = loader(artifacts, "train", batch_size, shuffle=True, content=content)
    trained_ids, in_training, rows = set(), set(), 0  # ids the model trains; items the rows hold (masked or not)
    for features, _ in loader(artifacts, "train", 4096, shuffle=False, content=False)[0]:
        trained_ids.update(features["item_id"].view(-1).tolist())
        in_training.update(features["item_id_content"].view(-1).tolist())
        rows += len(features["item_id"])
    trained_ids.discard(OOV)  # masked rows: their items' own ids are never trained
    dims = tuple(np.load(table, mmap_mode="r").shape[1] for table in TABLES(artifacts)) if content else None
    model = build_model(schema, dims)
    losses = train(model, train_rows, epochs, content)
    valid_rows, _ = loader(artifacts, "valid", 1024, shuffle=False, content=False)
    return {"content": content, "epochs": epochs, "seed": seed, "train_rows": rows, "losses": losses} | cold_start_recall(
        model, artifacts, valid_rows, trained_ids, in_training, content
    )


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", type=Path, help="embedtab's artifact directory (e.g. artifacts-demo)")
    parser.add_argument("--epochs", type=positive, default=20)
    parser.add_argument("--batch-size", type=positive, default=256, help="rows per batch (in-batch softmax: 2 or more)")
    parser.add_argument("--seeds", type=positive, default=3, help="train each variant with seeds 0..N-1 and average")
    parser.add_argument("--only", choices=("content", "ids"), help="train one variant")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # Merlin's import-time notices about TensorFlow and Triton
    if args.batch_size < 2:
        parser.error("--batch-size: in-batch softmax needs 2 or more rows (each row's item against the others)")
    wanted = [args.artifacts / "datasets" / "train", args.artifacts / "datasets" / "valid"]
    wanted += TABLES(args.artifacts) if args.only != "ids" else []
    missing = [str(path) for path in wanted if not path.exists()]
    if missing:
        parser.error(f"not in the artifact directory: {', '.join(missing)} (make demo builds them)")
    variants = {"content": [True], "ids": [False]}.get(args.only, [True, False])
    results = [run(args.artifacts, args.epochs, args.batch_size, seed, content) for content in variants for seed in range(args.seeds)]
    if args.json:
        print(json.dumps(results))
        return 0
    print(f"{'model':<22} {'seed':>4} {'first loss':>10} {'last loss':>9} {'cold recall@10':>14} {'warm recall@10':>14}")
    for r in results:
        name = "ids + text/image" if r["content"] else "ids only"
        print(
            f"{name:<22} {r['seed']:>4} {r['losses'][0]:>10.3f} {r['losses'][-1]:>9.3f} "
            f"{r['cold_recall@10']:>14.3f} {r['warm_recall@10']:>14.3f}"
        )
    for content in variants:
        mine = [r for r in results if r["content"] == content]
        cold = np.mean([r["cold_recall@10"] for r in mine])
        warm = np.mean([r["warm_recall@10"] for r in mine])
        print(f"{'ids + text/image' if content else 'ids only':<22} mean: cold recall@10 {cold:.3f}, warm {warm:.3f}")
    r = results[0]
    print(f"validation rows: {r['cold_rows']} with items first seen that day, {r['warm_rows']} others; chance@10 = {r['chance@10']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
