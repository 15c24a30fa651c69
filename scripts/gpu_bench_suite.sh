#!/usr/bin/env bash
# Every GPU row of docs/performance.md in one go: one JSON line per row in RESULTS.
#
#   bash scripts/gpu_bench_suite.sh [RESULTS_DIR] [GROUP...]
#
# RESULTS_DIR defaults to $OUT (set by the device tool) or ./bench-results. GROUP picks
# parts: train (256 px rows, each option on and off), compile (compiled rows and launch to
# first step), big (512 px), eval, optim, launch (train.py via accelerate launch); default
# all. Two 256 px rows also write per-op profile tables (profile_*.txt). Each row runs under
# `timeout` so one hung row cannot eat the rest; a row that fails
# writes {"row": ..., "error": ...} instead. Turn the file into tables with
#   python scripts/perf_table.py RESULTS_DIR/gpu_rows.jsonl
#
# TRAIN_ARGS (optional) is appended to every bench_train.py row, e.g. a tiny model for a
# dry run of the script on a CPU before spending GPU time:
#   TRAIN_ARGS="--resolution 16 --channel-base 128 --channel-max 16 --batch 4 --repeat 1" \
#       bash scripts/gpu_bench_suite.sh /tmp/dry train
#
# Python: $PYTHON, else .venv/bin/python, else python3. On a machine without internet whose
# Python lacks this project's pure-Python dependencies (omegaconf, antlr4-python3-runtime,
# torch-fidelity), install them from carried wheels first, e.g.
#   pip install --no-index --no-deps --target /tmp/site wheels/*.whl && export PYTHONPATH=/tmp/site
set -uo pipefail
cd "$(dirname "$0")/.."

RESULTS="${1:-${OUT:-bench-results}}"
shift || true
GROUPS_WANTED="${*:-train compile big eval optim launch}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
ROW_TIMEOUT="${ROW_TIMEOUT:-300}"
mkdir -p "$RESULTS"
ROWS="$RESULTS/gpu_rows.jsonl"
LOG="$RESULTS/gpu_suite.log"
export PYTHONUNBUFFERED=1 WANDB_MODE=disabled

if ! "$PY" -c "import omegaconf, torch, accelerate, safetensors" 2>>"$LOG"; then
    echo "error: $PY lacks a dependency (see $LOG); install requirements.lock or carry wheels" >&2
    exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee -a "$LOG"

want() { [[ " $GROUPS_WANTED " == *" $1 "* ]]; }

# row NAME COMMAND...: run one benchmark, append its JSON line (tagged with the row name) to ROWS.
row() {
    local name="$1"; shift
    local extra=()
    if [[ " $* " == *" scripts/bench_train.py "* && -n "${TRAIN_ARGS:-}" ]]; then
        read -ra extra <<<"$TRAIN_ARGS"
        set -- "$@" "${extra[@]}"
    fi
    echo "== $name: $*" | tee -a "$LOG"
    local out
    if out=$(timeout "$ROW_TIMEOUT" "$@" 2>>"$LOG" | tail -n 1) && [ -n "$out" ]; then
        "$PY" -c 'import json,sys; d=json.loads(sys.argv[2]); d["row"]=sys.argv[1]; d["command"]=sys.argv[3]; print(json.dumps(d))' \
            "$name" "$out" "$*" >>"$ROWS"
        echo "$out" | tee -a "$LOG"
    else
        "$PY" -c 'import json,sys; print(json.dumps({"row": sys.argv[1], "command": sys.argv[2], "error": "failed or timed out, see gpu_suite.log"}))' \
            "$name" "$*" >>"$ROWS"
        echo "   (failed or timed out)" | tee -a "$LOG"
    fi
}

P256="scripts/bench_train.py --preset configs/stylegan2-256.yaml --repeat 3"
if want train; then
    # Two rows also write per-op profiles (one extra window each, after timing), so a short
    # GPU lease yields both the numbers and where the time goes.
    row "256 fp32 eager grouped NCHW (baseline)" "$PY" $P256 --precision no --modconv grouped --no-channels-last --no-compile \
        --profile "$RESULTS/profile_256_fp32_baseline.txt"
    row "256 fp32 batched" "$PY" $P256 --precision no --modconv batched --no-channels-last
    row "256 fp32 batched channels_last" "$PY" $P256 --precision no --modconv batched --channels-last
    row "256 bf16 batched" "$PY" $P256 --precision bf16 --no-channels-last
    row "256 bf16 batched channels_last" "$PY" $P256 --precision bf16 --channels-last \
        --profile "$RESULTS/profile_256_bf16_cl.txt"
    row "256 bf16 channels_last, per-tensor Adam" "$PY" $P256 --precision bf16 --channels-last --set perf.fused_adam=false
    row "256 bf16 channels_last, host-side skip (one sync per phase)" "$PY" $P256 --precision bf16 --channels-last --set perf.device_side_skip=false
    row "256 fp16 batched channels_last" "$PY" $P256 --precision fp16 --channels-last
    row "256 bf16 channels_last, no augmentation" "$PY" $P256 --precision bf16 --channels-last --augment none
    row "256 bf16 channels_last, ADA p=0.5, per-phase times (synced)" "$PY" $P256 --precision bf16 --channels-last --augment ada --augment-p 0.5 --phase-times
fi
if want compile; then
    # A fresh inductor cache for the cold row; the warm row then reuses it (as a relaunch would).
    export TORCHINDUCTOR_CACHE_DIR
    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)
    row "256 launch to first step, eager" "$PY" scripts/bench_train.py --preset configs/stylegan2-256.yaml --first-step-only
    row "256 launch to first step, compile, cold cache" "$PY" scripts/bench_train.py --preset configs/stylegan2-256.yaml --first-step-only --compile
    row "256 launch to first step, compile, warm cache" "$PY" scripts/bench_train.py --preset configs/stylegan2-256.yaml --first-step-only --compile
    row "256 bf16 channels_last compile" "$PY" $P256 --precision bf16 --channels-last --compile
fi
if want big; then
    row "512 bf16 channels_last" "$PY" scripts/bench_train.py --preset configs/stylegan2-512.yaml --repeat 3 --precision bf16 --channels-last
fi
if want optim; then
    row "optimiser bookkeeping, 256 px G" "$PY" scripts/bench_optim.py --preset configs/stylegan2-256.yaml --resolution 256
fi
if want eval; then
    row "eval 256 px, generation + Inception features" "$PY" scripts/bench_eval.py --preset configs/stylegan2-256.yaml --batch 64 --num 1024
fi
if want launch; then
    # The real launcher, end to end: accelerate launch -> first tick line of train.py.
    scratch=$(mktemp -d)  # not under RESULTS: the device tool brings back only a few files
    data="$scratch/data"
    if [ ! -d "$data" ]; then  # random 256 px PNGs in the prepared-dataset format (speed does not depend on content)
        mkdir -p "$data" && "$PY" -c 'import sys; sys.path.insert(0, "scripts"); from pathlib import Path; import bench_train as b; b.write_synthetic_dataset(Path(sys.argv[1]), 256)' "$data" >>"$LOG" 2>&1
    fi
    start=$(date +%s.%N)
    if timeout "$ROW_TIMEOUT" "$PY" -m accelerate.commands.launch --num_processes 1 train.py \
        --config configs/stylegan2-256.yaml --data "$data" --max-kimg 0.016 --no-wandb \
        --run-dir "$scratch/run" --set log.tick_kimg=0.016 --set metrics.metrics=[] >>"$LOG" 2>&1; then
        end=$(date +%s.%N)
        "$PY" -c 'import json,sys; print(json.dumps({"row": "accelerate launch train.py, 256 px, 16 images", "total_s": round(float(sys.argv[2]) - float(sys.argv[1]), 2)}))' \
            "$start" "$end" >>"$ROWS"
    else
        echo '{"row": "accelerate launch train.py, 256 px, 16 images", "error": "failed, see gpu_suite.log"}' >>"$ROWS"
    fi
fi
echo "rows in $ROWS" | tee -a "$LOG"
