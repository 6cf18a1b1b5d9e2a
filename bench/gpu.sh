#!/usr/bin/env bash
# The one script a session with a GPU runs (expected 4-6 minutes on an H100/H200; each step has
# its own time limit, at most 10 minutes together, so the whole fits one device command):
#   bash bench/gpu.sh            # from the repository root, on the GPU machine
# It needs python3 with a CUDA torch, transformers, tokenizers, safetensors, scipy, numpy,
# pyyaml, tqdm and peft (the project's GPU image has them all; nothing is built). A missing
# package is installed from wheels carried in .whl/ (offline), else from the package index
# where that is reachable. The repository runs from its folder (PYTHONPATH), uninstalled.
# Figures go to stdout and to $OUT (default /tmp/llava4d_gpu): paste the summary's lines
# into docs/PERFORMANCE.md ("GPU figures"), gpu_ttft_ms from the llava-1.5-7b run. Each
# config's first token comes with voxel pooling on the GPU (core/pool_torch.py), and its
# decode tokens/s per decode mode (eager; static KV cache; compiled with CUDA graphs, whose
# warm-up compiles: the llava-1.5-7b limit allows for it). bench/pool.py compares pooling.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/llava4d_gpu}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# one process, one GPU: no torch threads fighting the ingest loop over 16 cores
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}

need="torch transformers tokenizers safetensors scipy numpy yaml tqdm peft"
missing=$($PY -c "
import importlib.util, sys
print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))" $need)
if [ -n "$missing" ]; then
  echo "gpu.sh: missing python modules: $missing"
  if compgen -G ".whl/*.whl" > /dev/null; then
    $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/llava4d_site .whl/*.whl
  else
    pip_names=$(echo "$missing" | sed 's/\byaml\b/pyyaml/')
    # shellcheck disable=SC2086
    timeout 120 $PY -m pip install -q --target /tmp/llava4d_site $pip_names
  fi
  export PYTHONPATH="$PYTHONPATH:/tmp/llava4d_site"
fi

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  $PY -c "
import torch, transformers, peft
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers',
      transformers.__version__, 'peft', peft.__version__)
print('gpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'NONE')"
} 2>&1 | tee "$OUT/gpu_env.txt"

rc=0
run() {  # name, limit in seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit} s)"
  timeout "$limit" "$@" 2>&1 | grep -v -i "warn" | tee "$OUT/$name.txt"
  local status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] || { echo "gpu.sh: $name failed ($status)"; rc=1; }
}

# DEVICE=cpu CONFIGS=tiny bash bench/gpu.sh: the same steps on a CPU (a dry run of the script)
DEVICE=${DEVICE:-cuda}
run pool 30 $PY bench/pool.py --repeats 5 --devices numpy "$DEVICE"
for config in ${CONFIGS:-smollm2-135m llava-3b llava-1.5-7b}; do
  # static and compile where they pay (batch-1 decode is launch-bound); llava-3b eager only,
  # to stay within the device command's 10 minutes
  modes="eager static compile"
  case $config in llava-1.5-7b) limit=190 ;; llava-3b) limit=100; modes=eager ;;
    *) limit=110 ;; esac
  # shellcheck disable=SC2086
  run "query_$config" $limit $PY bench/query.py --config "$config" --device "$DEVICE" \
    --decode-modes $modes
done
# int4 LM weights where torchao or bitsandbytes is installed (neither is on the image today)
if [ "$DEVICE" != cpu ] && $PY -c "import importlib.util as u, sys
sys.exit(not (u.find_spec('torchao') or u.find_spec('bitsandbytes')))"; then
  run query_llava-1.5-7b-int4 90 $PY bench/query.py --config llava-1.5-7b --device "$DEVICE" \
    --quantization int4
fi
# the training path on the device: bf16 autocast, LoRA and gradient checkpointing, tiny preset
# (one GPU is one process: no process group; nccl needs a process per GPU, so two GPUs)
run train_tiny 80 $PY -m torch.distributed.run --standalone --nproc_per_node 1 \
  -m llava4d_ros.train --config tiny --device "$DEVICE" --bf16 --lora-rank 4 \
  --grad-checkpointing --stages 1,2,3 \
  --threads 4 --out /tmp/llava4d_gpu_train/run --cache /tmp/llava4d_gpu_train/cache

echo "=== summary"
grep -h -E "^(config=|gpu_ttft_ms=|world_size=|dim=)|^gpu " "$OUT"/*.txt | tee "$OUT/summary.txt"
exit $rc
