"""Before / after: one benchmark run against two revisions of embedtab, alternating, in one run.

    .venv/bin/python benchmarks/bench_revisions.py 62d1f57 --rounds 2 --metric embedtab_s -- bench_encode.py text --rounds 1
    .venv/bin/python benchmarks/bench_revisions.py 62d1f57 --rounds 2 --metric embedtab_s -- bench_workflow.py --rounds 1
    .venv/bin/python benchmarks/bench_revisions.py 62d1f57 --rounds 2 --metric seconds_median -- bench_reduce.py lookup --rounds 1

BEFORE (and --after, else this working tree) is checked out into a temporary git worktree; each
round runs the benchmark script of this checkout (the same harness for both) once with
`PYTHONPATH=<each tree>`, in alternating order, and reads `--metric` from the last JSON line it prints.
Printed (and saved as results/revisions-<benchmark>-<cases>.json): the metric per run, the medians
and after/before (< 1: the change is faster); the benchmark's own results/ files are left as they were. The
machine should be otherwise idle: the ratio is only as steady as the host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_once(tree: Path, script: list[str], metric: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, str(HERE / script[0]), *script[1:]], env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{script[0]} failed on {tree}:\n{out.stderr[-2000:]}")
    last = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    return float(last[metric])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("before", help="the revision to compare with (a commit, tag or branch)")
    parser.add_argument("--after", help="the revision measured against it (default: this working tree)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--metric", default="embedtab_s", help="the key of the benchmark's JSON result to compare")
    argv = sys.argv[1:]
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        parser.error("give the benchmark after --, e.g. -- bench_encode.py text --rounds 1")
    split = argv.index("--")
    args = parser.parse_args(argv[:split])
    script = argv[split + 1 :]  # the benchmark script in benchmarks/ and its arguments
    (HERE / "results").mkdir(exist_ok=True)
    # The benchmark writes its own results/ file on every run: the recorded ones are put back after.
    recorded = {path: path.read_bytes() for path in (HERE / "results").glob("*.json")}
    with tempfile.TemporaryDirectory(prefix="embedtab-before-") as tmp:
        trees = {"before": Path(tmp) / "before", "after": Path(tmp) / "after" if args.after else ROOT}
        for label, revision in (("before", args.before), ("after", args.after)):
            if revision:
                subprocess.run(
                    ["git", "worktree", "add", "--detach", str(trees[label]), revision], cwd=ROOT, check=True, capture_output=True
                )
        try:
            runs: dict[str, list[float]] = {"before": [], "after": []}
            for r in range(args.rounds):
                for label in ("before", "after") if r % 2 == 0 else ("after", "before"):
                    runs[label].append(run_once(trees[label], script, args.metric))
                    print(f"round {r + 1} {label}: {args.metric} = {runs[label][-1]:.3f}", flush=True)
        finally:
            for tree in trees.values():
                if tree != ROOT:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
            for path, data in recorded.items():
                path.write_bytes(data)
    medians = {label: statistics.median(values) for label, values in runs.items()}
    result = {
        "case": f"revisions {' '.join(script)}",
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "before": args.before,
        "after": args.after
        or "working tree at "
        + subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip(),
        "metric": args.metric,
        "runs": runs,
        "medians": medians,
        "after_over_before": round(medians["after"] / medians["before"], 3),
    }
    cases = [a for a in script[1:] if not a.startswith("-") and not a.isdigit()]
    (HERE / "results" / f"revisions-{'-'.join([Path(script[0]).stem, *cases])}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
