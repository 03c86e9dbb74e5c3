#!/usr/bin/env bash
# Model-path benchmark on a CUDA machine (issue 4): about 3-5 minutes.
#
#   deploy/gpu_bench.sh                 # from a checkout; pip may reach an index
#   WHEELHOUSE=/path/to/wheels deploy/gpu_bench.sh   # offline: wheels only (--no-index)
#
# Installs seqstream (and a CUDA torch 2.13.0 unless one is importable already) into a fresh
# virtual environment, then runs `seqstream bench` at 1M items with --device cuda over the
# model-path variants: the models alone (model_*) and `seqstream worker` with each model
# (seqstream_*, embedded broker), randomly initialised GRU4Rec and SASRec, full-catalogue
# top-20. The last line of output is the JSON object (ratio_model_path_* are the targets).
# Environment: ITEMS (default 1000000), EVENTS (default 100000), VENV (default
# /tmp/seqstream-gpu-venv), PYTHON (default python3), VARIANTS (default the four model runs).
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
ITEMS="${ITEMS:-1000000}"
EVENTS="${EVENTS:-100000}"
VENV="${VENV:-/tmp/seqstream-gpu-venv}"
PYTHON="${PYTHON:-python3}"
VARIANTS="${VARIANTS:-model_gru4rec,model_sasrec,seqstream_gru4rec,seqstream_sasrec}"

pip_opts=(--disable-pip-version-check -q)
if [[ -n "${WHEELHOUSE:-}" ]]; then
    pip_opts+=(--no-index --find-links "$WHEELHOUSE")
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    # --system-site-packages: reuse a CUDA torch the machine already has
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
        2>/dev/null; then
    "$VENV/bin/pip" install "${pip_opts[@]}" "torch==2.13.0"
fi
if [[ -n "${WHEELHOUSE:-}" ]] && ls "$WHEELHOUSE"/seqstream-*.whl >/dev/null 2>&1; then
    "$VENV/bin/pip" install "${pip_opts[@]}" seqstream
else
    "$VENV/bin/pip" install "${pip_opts[@]}" -e "$here"
fi

"$VENV/bin/python" - <<'PY'
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_bench: torch sees no CUDA device (torch %s)" % torch.__version__)
print("gpu_bench: torch", torch.__version__, "on", torch.cuda.get_device_name(0), flush=True)
PY

cd "$here"
exec "$VENV/bin/seqstream" bench --items "$ITEMS" --events "$EVENTS" --device cuda \
    --variants "$VARIANTS" --json
