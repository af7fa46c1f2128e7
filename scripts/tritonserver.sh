#!/usr/bin/env bash
# Serve a model repository written by `embedtab export triton` with the Triton Inference Server
# binary that nvidia-pytriton ships (it runs on CPU too), from the environment embedtab[serve] is
# installed in (the Python backend runs the models in that environment's Python):
#
#   scripts/tritonserver.sh artifacts-demo/exports/triton                 # HTTP 8000, gRPC 8001 on 127.0.0.1
#   scripts/tritonserver.sh REPO --http-port 9000 --grpc-port 9001       # any further tritonserver flags
#   PYTHON=/path/to/venv/bin/python scripts/tritonserver.sh REPO           # another environment
#
# The repository is polled (--model-control-mode=poll): a new version from a later export is
# loaded while the one before serves, then replaces it. What the wrapper sets up, once per
# environment, in <venv>/share/embedtab/triton/backends:
#   the Python backend with the stub built for this Python's X.Y (pytriton ships one per version;
#   linked, not copied: the stub finds pytriton's bundled libraries relative to itself);
#   LD_LIBRARY_PATH: this Python's own libpython, so the stub loads the same patch release as the
#   environment's standard library (else: "undefined symbol: _PyModule_Add" importing ssl).
set -euo pipefail
REPO=${1:?usage: scripts/tritonserver.sh MODEL_REPOSITORY [tritonserver flags...]}
shift
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
  [ -x "$PY" ] || { echo "tritonserver.sh: PYTHON=$PY is not an executable" >&2; exit 2; }
else
  PY=$(dirname "$0")/../.venv/bin/python
  [ -x "$PY" ] || PY=$(command -v python3)
fi
[ -d "$REPO" ] || { echo "tritonserver.sh: $REPO is not a folder (embedtab export triton writes ARTIFACTS/exports/<name>)" >&2; exit 2; }
read -r TRITON PYVER LIBDIR < <("$PY" -c 'import os, sys, sysconfig, pytriton
print(os.path.join(os.path.dirname(pytriton.__file__), "tritonserver"), "%d.%d" % sys.version_info[:2], sysconfig.get_config_var("LIBDIR"))' 2>/dev/null) || {
  echo "tritonserver.sh: $PY has no nvidia-pytriton; install embedtab[serve] there" >&2; exit 2; }
BACKENDS=$("$PY" -c 'import sys; print(sys.prefix)')/share/embedtab/triton/backends
if [ ! -x "$BACKENDS/python/triton_python_backend_stub" ]; then
  mkdir -p "$BACKENDS/python"
  ln -sf "$TRITON/backends/python/libtriton_python.so" "$TRITON/backends/python/triton_python_backend_utils.py" "$BACKENDS/python/"
  ln -sf "$TRITON/python_backend_stubs/$PYVER/triton_python_backend_stub" "$BACKENDS/python/"
fi
# (and the CUDA runtime pytriton bundles, which the stub links even on CPU); no bytecode written
# into the repository (it is an artifact: `embedtab status --verify` checks its files)
export PYTHONDONTWRITEBYTECODE=1
export PATH="$(dirname "$PY"):$PATH" LD_LIBRARY_PATH="$LIBDIR:$TRITON/../../nvidia_pytriton.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
exec "$TRITON/bin/tritonserver" --model-repository="$REPO" --backend-directory="$BACKENDS" \
  --http-address=127.0.0.1 --grpc-address=127.0.0.1 --allow-metrics=false \
  --model-control-mode=poll --repository-poll-secs=15 "$@"
