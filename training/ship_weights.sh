#!/usr/bin/env bash
# How the shipped weights are made: SRResNet, ESPCN and SRCNN x4 trained side by side on one GPU for a fixed
# time, each evaluated on Set5/Set14 into its model card. Usage:
#   training/ship_weights.sh DATA_ROOT OUT_DIR [SECONDS] [extra srgan-train flags...]
# DATA_ROOT holds train/ and benchmarks/{Set5,Set14} (the layout of shared/data/sr). The SRGAN stage runs
# afterwards from the shipped SRResNet (training/recipes/srgan_cpu.toml).
set -u
DATA=${1:?data root with train/ and benchmarks/}
OUT=${2:?output folder}
LIMIT=${3:-400}
shift 3 || shift $#
PY=${PYTHON:-python3}
RUNS=${RUNS:-/tmp/srgan-runs}
mkdir -p "$RUNS" "$OUT"

train() {
  local stage=$1 limit=$2
  shift 2
  "$PY" -m app.cli -v train "$stage" --config "${stage}_gpu" --data "$DATA/train" --val "$DATA/benchmarks/Set5" \
    --bench "$DATA/benchmarks/Set5" "$DATA/benchmarks/Set14" --out "$RUNS/$stage" --no-progress \
    --time-limit "$limit" "$@" > "$RUNS/$stage.log" 2>&1
  echo "$stage finished with status $?"
}

train srresnet "$LIMIT" "$@" &
train espcn "$((LIMIT * 9 / 10))" "$@" &
train srcnn "$((LIMIT * 9 / 10))" "$@" &
wait
for stage in srresnet espcn srcnn; do
  cp "$RUNS/$stage/${stage}_x4.safetensors" "$RUNS/$stage/${stage}_x4.json" "$OUT/" 2>/dev/null \
    || echo "no weights from $stage"
  tail -n 3 "$RUNS/$stage.log"
done
tar -czf "$OUT/runs.tar.gz" -C "$RUNS" --exclude='*.pt' .
