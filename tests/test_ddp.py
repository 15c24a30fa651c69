"""Two CPU processes (gloo): lock-step training under `accelerate launch` (one run dir, identical weights,
a stop and a resume on two processes),
and gradients averaged over processes equal to one process's on the union batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_support import REPO, make_dataset, tiny_config, write_config

from gan import checkpoint as ck
from gan.process_group import leave_process_group


def _launch_two(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",  # on a machine without GPUs: gloo on CPU
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",
        str(REPO / "train.py"),
        *args,
    ]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)


@pytest.mark.slow
def test_two_process_training_keeps_ranks_identical_and_resumes(tmp_path):
    data = make_dataset(tmp_path / "data", count=8)
    # batch 8 over 2 processes, 2 images per round => 2 accumulation rounds per process;
    # intervals of 2 put an R1 and a path-length step into the 3 steps.
    cfg = tiny_config(data, train={"batch": 8, "batch_per_gpu": 2}, augment={"mode": "fixed", "p": 0.3}, metrics={"metrics": []})
    config = write_config(tmp_path / "ddp.yaml", cfg)
    # No --run-dir: the default name comes from the clock, and all processes must use the main one's.
    proc = _launch_two(tmp_path, "--config", str(config), "--max-kimg", "0.016")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es) x 2 images x 2 accumulation round(s)" in proc.stderr
    assert "8 images decoded once for this machine's processes" in proc.stderr  # gan.shared_cache, not one copy each
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name.endswith("-tiny"), run_dirs
    run_dir = run_dirs[0]
    stopped = ck.latest_checkpoint(run_dir)
    assert stopped.name == "0000000016"

    # Stopped, then resumed on two processes (each loads onto its own device, cpu:<rank>).
    proc = _launch_two(tmp_path, "--resume", str(run_dir), "--max-kimg", "0.024")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from {stopped}" in proc.stderr
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
    assert digests[0] != ck.process_digests(stopped)[0], "the resumed run trained nothing"
    ck.verify_checkpoint(latest)


# --------------------------------------------------------------------------- gradient averaging is exact

GLOBAL_BATCH, PER_ROUND = 4, 2


def _fixed_inputs(z_dim: int, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global minibatch: 4 reals and 4 latents, the same in every process."""
    g = torch.Generator().manual_seed(123)
    reals = torch.rand([GLOBAL_BATCH, 3, resolution, resolution], generator=g) * 2 - 1
    return reals, torch.randn([GLOBAL_BATCH, z_dim], generator=g)


def _averaged_step(config_path: str, run_dir: str, accelerator) -> dict[str, list[torch.Tensor]]:
    """One G_main and one D_main phase of the real Trainer on this process's shards of the fixed batch.

    Shard k (images 2k, 2k+1) is rank k's minibatch with 2 processes, and accumulation round k
    with one. Each shard's latents and G noise come from seed 1000 + k, so everything but the
    gradient reduction is identical between the two set-ups.
    """
    from gan.config import load_config
    from gan.training_loop import RunOptions, Trainer

    cfg = load_config(config_path)
    trainer = Trainer(cfg, accelerator, RunOptions(run_dir=Path(run_dir)))
    reals, z = _fixed_inputs(trainer.G.z_dim, cfg.data.resolution)
    shards = [trainer.rank] if trainer.world > 1 else list(range(GLOBAL_BATCH // PER_ROUND))
    pending: list[int] = []

    def latents() -> torch.Tensor:
        if not pending:
            pending.extend(shards)
        k = pending.pop(0)
        torch.manual_seed(1000 + k)
        return z[k * PER_ROUND : (k + 1) * PER_ROUND].clone()

    trainer._latents = latents
    rounds = [reals[k * PER_ROUND : (k + 1) * PER_ROUND] for k in shards]
    out = {}
    for phase in trainer.phases:
        if phase.name in ("G_main", "D_main"):
            assert trainer._run_phase(phase, rounds)
            out[f"{phase.name}/grad"] = [p.grad.clone() for p in phase.params]
            out[f"{phase.name}/weights"] = [p.detach().clone() for p in phase.params]
    return out


def _gloo_worker(rank: int, world: int, port: int, config_path: str, run_dir: str, out_dir: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)  # what train.py builds on a machine without GPUs: gloo
    assert accelerator.num_processes == world
    torch.save(_averaged_step(config_path, run_dir, accelerator), Path(out_dir) / f"rank{rank}.pt")
    accelerator.wait_for_everyone()
    leave_process_group()  # as atelier train does: a gloo group left to exit can abort the process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gradients_equal_one_process_on_the_union_batch(tmp_path):
    import torch.multiprocessing as mp
    from training_support import OneProcess

    data = make_dataset(tmp_path / "data", count=8)
    # No style mixing (its coin flips would use each process's own RNG); reals and fakes fixed.
    cfg = tiny_config(data, train={"batch": GLOBAL_BATCH, "batch_per_gpu": PER_ROUND}, loss={"style_mixing": 0.0})
    config = str(write_config(tmp_path / "c.yaml", cfg))
    mp.spawn(_gloo_worker, args=(2, _free_port(), config, str(tmp_path / "run2"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    torch.set_num_threads(1)
    single = _averaged_step(config, str(tmp_path / "run1"), OneProcess())  # 2 accumulation rounds of 2

    for key in single:
        for a, b, ref in zip(ranks[0][key], ranks[1][key], single[key]):
            assert torch.equal(a, b), f"{key}: ranks differ"
            torch.testing.assert_close(a, ref, rtol=1e-5, atol=1e-6, msg=lambda m, key=key: f"{key}: 2 processes vs 1: {m}")
    # Not vacuous: zero gradients would agree under any reduction.
    assert all(any(g.abs().sum() > 0 for g in single[f"{name}/grad"]) for name in ("G_main", "D_main"))
