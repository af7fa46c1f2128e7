"""Train a tiny Transformers4Rec next-item model on embedtab's sessions dataset, as shipped.

    make setup-train        # .venv-train: transformers4rec 23.08, transformers 4.33, torch; no embedtab in it
    make demo               # the artifacts, in artifacts-demo/
    .venv-train/bin/python examples/train_transformers4rec.py artifacts-demo

Everything the model needs comes from the dataset's schema (schema.pbtxt), written by
`embedtab transform session`: the item sequence (item_id-list, tags ITEM_ID + LIST), its fixed
length (configs/session.yaml's `max_length`: the latest 20, padded with 0), a sequential context
(device_type-list), a float32 continuous feature (item_id-count) and the tagged user id. The input
block, the embedding tables (sized by each column's categorical domain) and the data loader are all
built from it; nothing here imports embedtab.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of 1 or more, got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", type=Path, help="embedtab's artifact directory (e.g. artifacts-demo)")
    parser.add_argument("--dataset", default="sessions", help="the sessions dataset's name under datasets/")
    parser.add_argument("--epochs", type=positive, default=5)
    parser.add_argument("--batch-size", type=positive, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # Merlin's import-time notices about TensorFlow and Triton

    import torch
    import transformers4rec.torch as tr
    from merlin.io import Dataset
    from merlin.schema import Tags
    from transformers4rec.torch.utils.data_utils import MerlinDataLoader

    torch.manual_seed(args.seed)
    if not (args.artifacts / "datasets" / args.dataset / "schema.pbtxt").is_file():
        parser.error(f"{args.artifacts / 'datasets' / args.dataset} is not a dataset embedtab wrote (no schema.pbtxt)")
    dataset = Dataset(str(args.artifacts / "datasets" / args.dataset), engine="parquet", cpu=True)
    schema = dataset.schema
    length = schema["item_id-list"].value_count.max  # the fixed list length the workflow wrote
    if not length:
        parser.error("item_id-list has no fixed length in the schema: set groupby.max_length in the session config (e.g. 20)")
    inputs = tr.TabularSequenceFeatures.from_schema(
        schema, max_sequence_length=length, continuous_projection=16, masking="mlm", d_output=64
    )
    config = tr.XLNetConfig.build(d_model=64, n_head=2, n_layer=1, total_seq_length=length)
    body = tr.SequentialBlock(inputs, tr.MLPBlock([64]), tr.TransformerBlock(config, masking=inputs.masking))
    model = tr.Model(tr.Head(body, tr.NextItemPredictionTask(weight_tying=True), inputs=inputs))
    batches = MerlinDataLoader.from_schema(schema, dataset, batch_size=args.batch_size, max_sequence_length=length, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.005)

    losses: list[float] = []
    for epoch in range(args.epochs):
        total, steps, skipped = 0.0, 0, 0
        for features, _ in batches:
            loss = model(features, training=True)["loss"]
            if not torch.isfinite(loss):  # a batch of one-item sessions has no item left to predict
                skipped += 1
                continue
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss), steps + 1
        losses.append(total / steps if steps else math.nan)
        if not args.json:
            print(
                f"epoch {epoch + 1}: mean loss {losses[-1]:.4f} over {steps} steps"
                + (f" ({skipped} without a target skipped)" if skipped else "")
            )
    # what from_schema embeds and projects: the CATEGORICAL and CONTINUOUS columns (user_id is
    # tagged USER_ID, not categorical: the raw id of the sequence's user, left out of the inputs)
    inputs_used = sorted(schema.select_by_tag(Tags.CATEGORICAL).column_names + schema.select_by_tag(Tags.CONTINUOUS).column_names)
    if args.json:
        print(json.dumps({"losses": losses, "inputs": inputs_used, "max_sequence_length": length, "rows": dataset.num_rows}))
    else:
        print(f"inputs from the schema: {', '.join(inputs_used)}; sequences of {length}")
    return 0 if all(math.isfinite(x) for x in losses) else 1


if __name__ == "__main__":
    sys.exit(main())
