#!/usr/bin/env bash
# The GPU checks of issues 8 and 9 as one device call (about 8 minutes on an H100 box), e.g. with
# the device tool: carry [".gpu"] (made by ../shared/gpu/prepare.sh), command `bash benchmarks/gpu_check.sh`.
# Results (JSON) are copied to $OUT when it is set; the tables are printed.
set -uo pipefail
source .gpu/setup.sh || exit 1
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/encode/test_decode.py tests/test_reduce.py 2>&1 | tail -15
python3 benchmarks/bench_gpu.py images --n 20000
python3 benchmarks/bench_gpu.py texts --n 200000
python3 benchmarks/bench_reduce.py pca --rounds 1 | tail -1
[ -n "${OUT:-}" ] && cp benchmarks/results/gpu-*.json benchmarks/results/reduce-pca.json "$OUT"/ 2>/dev/null
exit 0
