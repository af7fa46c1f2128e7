"""Day 2 benchmark: the daily update against the day-1 build, whole `embedtab run`, in one run.

    .venv/bin/python benchmarks/bench_day2.py                       # 100k items, 10M interactions, +1 %, +1 day
    .venv/bin/python benchmarks/bench_day2.py --items 5000 --rows-per-day 100000 --days 4   # a quick check

Data (embedtab.synthetic, seeded, under benchmarks/data/): N items with texts, users, D days of
interactions, and its next day: 1 % new items among the old ones, new users, one more day. The
pipeline (written beside the data) is the sample's chain without images: encode text (MiniLM),
reduce to 64 dims, the item, user and context workflows (append-only, the shipped configs), an
interactions workflow sharing their vocabularies, the interactions transformed (every day) and
a catalog lookup.

Day 1 runs the pipeline on a fresh artifact directory; then the next day is copied over the data
and the same command runs again (day 2). Each is one `embedtab run` process, timed whole; the
goal is day 2 <= 10 % of day 1. Printed and saved (results/day2.json): both times, the ratio, and
each stage's seconds on both days.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EMBEDTAB = Path(sys.executable).parent / "embedtab"

INTERACTIONS = """\
name: interactions
features:
  - columns: [user_id]
    ops: [{categorify: {dtype: int32, vocabulary: {workflow: user}}}]
  - columns: [item_id]
    ops: [{categorify: {dtype: int32, vocabulary: {workflow: item}}}]
  - columns: [device_type]
    ops: [{categorify: {dtype: int32, vocabulary: {workflow: context}}}]
  - columns: [timestamp]
    ops: [time_features]
  - columns: [click]
    ops: [{tags: [target, binary_classification]}]
"""


def pipeline(data: Path) -> str:
    configs = REPO / "configs"
    return f"""\
stages:
  - encode text: {data}/items.parquet
    template: "{{title}}. {{description}}"
    name: text
  - reduce: text
    dims: 64
  - fit-workflow: {configs}/item.yaml
    data: {data}/items.parquet
  - fit-workflow: {configs}/user.yaml
    data: {data}/users.parquet
  - fit-workflow: {configs}/context.yaml
    data: {data}/interactions
  - fit-workflow: {data}/interactions.yaml
    data: {data}/interactions
  - transform: interactions
    data: {data}/interactions
    name: train
  - lookup: text-pca64
    workflow: item
    name: text-catalog
"""


def make_data(items: int, users: int, days: int, rows_per_day: int) -> Path:
    from embedtab.synthetic import generate

    source = HERE / "data" / f"day2-{items}-{days}x{rows_per_day}"
    if not (source / "next_day" / "items.parquet").exists():
        generate(
            source,
            n_items=items,
            n_users=users,
            days=days,
            rows_per_day=rows_per_day,
            new_items=0,
            images=False,
            next_day_items=max(1, items // 100),
            next_day_users=max(1, users // 100),
        )
    return source


def run(work: Path, label: str) -> dict:
    started = time.perf_counter()
    done = subprocess.run(
        [str(EMBEDTAB), "run", str(work / "pipeline.yaml"), "-A", str(work / "artifacts"), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"{label} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    report = json.loads(done.stdout)
    return {"seconds": round(seconds, 2), "stages": {s["stage"]: [s["status"], s["duration_s"]] for s in report["stages"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--rows-per-day", type=int, default=1_000_000)
    args = parser.parse_args()
    source = make_data(args.items, args.users, args.days, args.rows_per_day)
    work = HERE / "data" / "day2-run"
    shutil.rmtree(work, ignore_errors=True)
    data = work / "data"
    shutil.copytree(source, data, ignore=shutil.ignore_patterns("next_day"))
    (data / "interactions.yaml").write_text(INTERACTIONS)
    (work / "pipeline.yaml").write_text(pipeline(data))
    day1 = run(work, "day 1")
    print(f"day 1: {day1['seconds']} s", flush=True)
    shutil.copytree(source / "next_day", data, dirs_exist_ok=True)
    day2 = run(work, "day 2")
    print(f"day 2: {day2['seconds']} s", flush=True)
    result = {
        "case": "day2",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "items": args.items,
        "new_items": max(1, args.items // 100),
        "interactions_day1": args.days * args.rows_per_day,
        "interactions_added": args.rows_per_day,
        "day1_s": day1["seconds"],
        "day2_s": day2["seconds"],
        "day2_over_day1": round(day2["seconds"] / day1["seconds"], 4),
        "stages": {name: {"day1": day1["stages"].get(name), "day2": status} for name, status in day2["stages"].items()},
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "day2.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
