#!/usr/bin/env bash
# Multi-node training on SLURM with accelerate's own launcher (no home-made rendezvous).
#
#   sbatch --nodes=2 scripts/slurm_train.sh configs/stylegan2-256.yaml --data data/datasets/monet-256
#
# One task per node; each task runs `accelerate launch`, which starts one process per GPU
# on its node. The first node of the allocation is the rendezvous host.
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

# srun starts one launcher per node; SLURM_NODEID tells each launcher its machine rank.
srun --kill-on-bad-exit=1 bash -c "
  .venv/bin/accelerate launch \
    --multi_gpu \
    --num_machines $NUM_NODES \
    --num_processes $((NUM_NODES * GPUS_PER_NODE)) \
    --machine_rank \$SLURM_NODEID \
    --main_process_ip $MAIN_HOST \
    --main_process_port $MAIN_PORT \
    --rdzv_backend c10d \
    train.py --config $CONFIG --run-dir $RUN_DIR $*
"
