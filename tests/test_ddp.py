"""Two CPU processes (gloo) under `accelerate launch` train in lock-step: identical weights on both ranks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from gan import checkpoint as ck
from training_support import REPO, make_dataset, tiny_config, write_config


def test_two_process_training_keeps_ranks_identical(tmp_path):
    data = make_dataset(tmp_path / "data", count=8)
    # batch 8 over 2 processes, 2 images per round => 2 accumulation rounds per process;
    # intervals of 2 put an R1 and a path-length step into the 3 steps.
    cfg = tiny_config(data, train={"batch": 8, "batch_per_gpu": 2}, augment={"mode": "fixed", "p": 0.3})
    config = write_config(tmp_path / "ddp.yaml", cfg)
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1",  # on a machine without GPUs: gloo on CPU
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
        str(REPO / "train.py"), "--config", str(config), "--run-dir", str(run_dir), "--max-kimg", "0.024",
    ]
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es) x 2 images x 2 accumulation round(s)" in proc.stderr

    latest = ck.latest_checkpoint(run_dir)
    assert latest.name == "0000000024"
    state = json.loads((latest / "state.json").read_text())
    assert state["num_processes"] == 2 and state["progress"]["data_position"] == 24
    digests = ck.process_digests(latest)
    assert sorted(digests) == [0, 1]
    assert digests[0] == digests[1], "ranks ended with different weights"
    # The digests describe the weights actually saved by rank 0.
    for key, name in ck.NETWORK_FILES.items():
        assert ck.tensors_sha256(load_file(str(latest / name))) == digests[0][key]
    assert (latest / "rng-rank0.pt").is_file() and (latest / "rng-rank1.pt").is_file()
    rng0 = torch.load(latest / "rng-rank0.pt", weights_only=True)["torch"]
    rng1 = torch.load(latest / "rng-rank1.pt", weights_only=True)["torch"]
    assert not torch.equal(rng0, rng1), "both ranks drew the same noise"
