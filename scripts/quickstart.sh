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
echo "== 1/1 prepare the bundled sample set (data/sample -> data/datasets/sample-32)"
.venv/bin/python -m scraping.prepare --src data/sample --out data/datasets/sample-32 --resolution 32 --min-size 32 --overwrite
