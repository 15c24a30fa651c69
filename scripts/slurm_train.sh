#!/usr/bin/env bash
# Multi-node training on SLURM with accelerate's own launcher (no home-made rendezvous).
#
#   mkdir -p runs && sbatch --nodes=2 scripts/slurm_train.sh configs/stylegan2-256.yaml --data data/datasets/monet-256
#
# (SLURM does not create the --output folder: runs/ must exist before sbatch.)
#
# One task per node; each task runs `accelerate launch`, which starts one process per GPU
# on its node. The first node of the allocation is the rendezvous host; static rendezvous
# gives node k machine rank SLURM_NODEID, so process 0 (checkpoints, logs) is on that host.
#SBATCH --job-name=atelier
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --output=runs/slurm-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch scripts/slurm_train.sh CONFIG [train.py options...]}
shift

GPUS_PER_NODE=${SLURM_GPUS_ON_NODE:-8}
NUM_NODES=${SLURM_NNODES:-1}
MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
RUN_DIR=${RUN_DIR:-runs/slurm-${SLURM_JOB_ID}}

cd "${SLURM_SUBMIT_DIR:-.}"  # the repo root (sbatch was run there): .venv, train.py, runs/

# With perf.compile=true: keep torch.compile's cache on the shared filesystem, so a resumed or
# requeued job (and every node) reuses the compiled kernels instead of compiling again
# (docs/performance.md: launch to first step 200 s cold vs 24 s warm on CPU at 256 px).
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$PWD/.cache/torchinductor}

# srun starts one launcher per node; SLURM_NODEID tells each launcher its machine rank.
# The extra train.py options travel as positional arguments ("$@" inside the inner shell),
# so values with spaces survive; only SLURM_NODEID is expanded per node.
srun --kill-on-bad-exit=1 bash -c '
  exec .venv/bin/accelerate launch \
    --multi_gpu \
    --num_machines "$1" \
    --num_processes "$2" \
    --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$3" \
    --main_process_port "$4" \
    --rdzv_backend static \
    train.py --config "$5" --run-dir "$6" "${@:7}"
' bash "$NUM_NODES" "$((NUM_NODES * GPUS_PER_NODE))" "$MAIN_HOST" "$MAIN_PORT" "$CONFIG" "$RUN_DIR" "$@"
