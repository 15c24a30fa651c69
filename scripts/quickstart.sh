#!/usr/bin/env bash
# One command on a fresh machine: create .venv/ in this checkout, install the pinned
# environment, and run the quickstart offline on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# requirements.lock pins every version (torch/torchvision: the CUDA-built pair, which also runs on CPU).
.venv/bin/python -m pip install --quiet -c requirements.lock -e '.[dev]'

export WANDB_MODE=${WANDB_MODE:-offline}
# The smoke networks are tiny: one thread per process beats oversubscribing small CPUs.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
echo "== 1/3 prepare the bundled sample set (data/sample -> data/datasets/sample-32)"
.venv/bin/atelier prepare --src data/sample --out data/datasets/sample-32 --resolution 32 --min-size 32 --overwrite
echo "== 2/3 train the smoke preset on CPU (runs/quickstart)"
rm -rf runs/quickstart
.venv/bin/atelier train --config configs/smoke.yaml --run-dir runs/quickstart --no-wandb
echo "== 3/3 paint 16 new works and a grid (outputs/quickstart/grid.png)"
.venv/bin/atelier generate --checkpoint runs/quickstart --seeds 0-15 --psi 0.7 --grid --out outputs/quickstart --no-progress
echo "done: see outputs/quickstart/grid.png and runs/quickstart/samples/"
