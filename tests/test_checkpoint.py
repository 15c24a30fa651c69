"""Checkpoints: round trip, atomic naming and pruning, safe loading, and bit-exact resume."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_support import OneProcess, make_dataset, one_thread, tiny_config, write_config  # noqa: F401 (autouse fixture)

from gan import checkpoint as ck
from gan import train
from gan.config import load_config
from gan.networks import Discriminator, Generator


def _snapshot(cfg, cur_nimg: int) -> ck.Snapshot:
    G = Generator(cfg.model, cfg.data.resolution)
    D = Discriminator(cfg.model, cfg.data.resolution)
    opt_G = torch.optim.Adam(G.parameters(), lr=0.01, betas=(0.0, 0.99))
    opt_D = torch.optim.Adam(D.parameters(), lr=0.01, betas=(0.0, 0.99))
    for opt, net in ((opt_G, G), (opt_D, D)):  # one real step so Adam has state to save
        for p in net.parameters():
            p.grad = torch.randn_like(p)
        opt.step()
    return ck.Snapshot(
        networks={"G": G, "D": D, "G_ema": Generator(cfg.model, cfg.data.resolution)},
        optimizers={"G": opt_G, "D": opt_D},
        progress=ck.Progress(cur_nimg=cur_nimg, step=cur_nimg // 4, data_position=cur_nimg),
        extra={"loss": {"pl_mean": torch.tensor(1.25)}, "scaler": {"scale": 1024.0, "_growth_tracker": 3}},
        meta={"model": {"z_dim": cfg.model.z_dim}, "resolution": cfg.data.resolution},
    )


@pytest.fixture()
def cfg(tmp_path):
    return load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "data")))


def test_round_trip_restores_weights_optimisers_counters_and_rng(tmp_path, cfg):
    snap = _snapshot(cfg, cur_nimg=40)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    path = ck.save_checkpoint(tmp_path, snap, OneProcess(), keep_last=3)
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))

    fresh = _snapshot(cfg, cur_nimg=0)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restored = ck.load_checkpoint(path, fresh.networks, fresh.optimizers)
    ck.restore_rng(restored.rng)

    for key in snap.networks:
        for (name, a), (_, b) in zip(snap.networks[key].state_dict().items(), fresh.networks[key].state_dict().items()):
            assert torch.equal(a, b), f"{key}.{name}"
    for key in snap.optimizers:
        a, b = snap.optimizers[key].state_dict(), fresh.optimizers[key].state_dict()
        assert a["param_groups"] == b["param_groups"]
        for idx in a["state"]:
            for name in a["state"][idx]:
                assert torch.equal(a["state"][idx][name], b["state"][idx][name])
    assert restored.progress == snap.progress
    assert torch.equal(restored.extra["loss"]["pl_mean"], torch.tensor(1.25))
    assert restored.extra["scaler"] == {"scale": 1024.0, "_growth_tracker": 3}
    draws = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[0] == expected_draws[0] and draws[1] == expected_draws[1] and torch.equal(draws[2], expected_draws[2])
    state = json.loads((path / "state.json").read_text())
    assert state["format"] == ck.FORMAT and state["kimg"] == 0.04 and path.name == "0000000040"
    assert ck.process_digests(path)[0]["G"] == ck.weights_sha256(snap.networks["G"])


def test_latest_ignores_temp_dirs_and_keep_last_prunes(tmp_path, cfg):
    for nimg in (8, 16, 24):
        ck.save_checkpoint(tmp_path, _snapshot(cfg, nimg), OneProcess(), keep_last=2)
    (tmp_path / "checkpoints" / ".tmp-0000000032").mkdir()  # a save killed half-way
    (tmp_path / "checkpoints" / "0000000040").mkdir()  # renamed by hand, no state.json
    names = [p.name for p in ck.list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["0000000016", "0000000024"]
    assert ck.latest_checkpoint(tmp_path).name == "0000000024"
    assert ck.resolve_checkpoint(tmp_path).name == "0000000024"
    assert ck.resolve_checkpoint(tmp_path / "checkpoints" / "0000000016").name == "0000000016"


def test_checkpoint_loads_only_tensors(tmp_path, cfg):
    snap = _snapshot(cfg, 8)
    path = ck.save_checkpoint(tmp_path, snap, OneProcess(), keep_last=1)
    torch.save({"state": {}, "param_groups": [{"lr": OneProcess()}]}, path / "optim_G.pt")  # pickled object
    _rerecord(path, "optim_G.pt")  # whoever planted it also fixed the recorded hash
    with pytest.raises(ck.CheckpointError, match="refused, since loading it could run code") as info:
        ck.load_checkpoint(path, snap.networks, snap.optimizers)
    assert "weights_only=False" not in str(info.value)  # torch's own advice must never reach users


def _rerecord(ckpt: Path, name: str) -> None:
    """Record ``name``'s current sha256 in state.json, as if the checkpoint had been written so."""
    state = json.loads((ckpt / ck.STATE_FILE).read_text())
    state["files_sha256"][name] = ck.file_sha256(ckpt / name)
    (ckpt / ck.STATE_FILE).write_text(json.dumps(state))


def _flip_byte(path: Path, offset_from_end: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_any_file_is_detected_on_load(tmp_path, cfg):
    snap = _snapshot(cfg, 8)
    path = ck.save_checkpoint(tmp_path, snap, OneProcess(), keep_last=1)
    for name in ("G.safetensors", "D.safetensors", "optim_G.pt", "rng-rank0.pt"):
        original = (path / name).read_bytes()
        _flip_byte(path / name)
        with pytest.raises(ck.DamagedCheckpoint, match=f"{name}: damaged") as info:
            ck.load_checkpoint(path, snap.networks, snap.optimizers)
        assert "\n" not in str(info.value)
        (path / name).write_bytes(original)
    ck.load_checkpoint(path, snap.networks, snap.optimizers)  # intact again


def test_weights_are_checked_against_process_0_digests_without_files_sha256(tmp_path, cfg):
    """Checkpoints written before state.json recorded file digests: the weights' own digests still hold."""
    snap = _snapshot(cfg, 8)
    path = ck.save_checkpoint(tmp_path, snap, OneProcess(), keep_last=1)
    state = json.loads((path / ck.STATE_FILE).read_text())
    del state["files_sha256"]
    (path / ck.STATE_FILE).write_text(json.dumps(state))
    _flip_byte(path / "G_ema.safetensors")  # the last bytes are tensor data, so the file still parses
    with pytest.raises(ck.DamagedCheckpoint, match="G_ema.safetensors: damaged, its weights do not match"):
        ck.load_networks(path, {"G_ema": snap.networks["G_ema"]})


def test_a_damaged_latest_checkpoint_falls_back_only_for_a_run_dir(tmp_path, cfg, caplog):
    older = ck.save_checkpoint(tmp_path, _snapshot(cfg, 8), OneProcess(), keep_last=3)
    latest = ck.save_checkpoint(tmp_path, _snapshot(cfg, 16), OneProcess(), keep_last=3)
    _flip_byte(latest / "D.safetensors")
    with caplog.at_level("WARNING"):
        assert ck.choose_resume_checkpoint(tmp_path) == older
    assert f"latest checkpoint {latest.name} is damaged" in caplog.text and str(older) in caplog.text
    # Named explicitly, the damaged one is an error that points at the intact one.
    with pytest.raises(ck.DamagedCheckpoint, match=f"D.safetensors: damaged.*intact: --resume {older}"):
        ck.choose_resume_checkpoint(latest)
    _flip_byte(older / "G.safetensors")
    with pytest.raises(ck.CheckpointError, match="no intact checkpoint"):
        ck.choose_resume_checkpoint(tmp_path)


def test_a_missing_rng_file_is_an_error_unless_reset_is_allowed(tmp_path, cfg):
    snap = _snapshot(cfg, 8)
    path = ck.save_checkpoint(tmp_path, snap, OneProcess(), keep_last=1)
    (path / "rng-rank0.pt").unlink()
    state = json.loads((path / ck.STATE_FILE).read_text())
    del state["files_sha256"]["rng-rank0.pt"]  # not a damaged file: one that was never there
    (path / ck.STATE_FILE).write_text(json.dumps(state))
    with pytest.raises(ck.CheckpointError, match="rng-rank0.pt is missing.*--allow-rng-reset"):
        ck.load_checkpoint(path, snap.networks, snap.optimizers)
    assert ck.load_checkpoint(path, snap.networks, snap.optimizers, allow_rng_reset=True).rng is None
    # A process the saving run did not have (resumed on more processes) has no RNG to lose.
    assert ck.load_checkpoint(path, snap.networks, snap.optimizers, rank=1).rng is None


def test_loads_onto_a_per_process_cpu_device(tmp_path, cfg):
    """accelerate gives process R of a CPU run the device cpu:R, which safetensors and torch.load reject."""
    snap = _snapshot(cfg, 8)
    path = ck.save_checkpoint(tmp_path, snap, OneProcess(), keep_last=1)
    restored = ck.load_checkpoint(path, snap.networks, snap.optimizers, device=torch.device("cpu", 1))
    assert restored.progress.cur_nimg == 8
    assert ck.storage_device("cpu:0") == "cpu" and ck.storage_device(torch.device("cuda", 1)) == "cuda:1"


def test_checkpoint_files_follow_the_umask(tmp_path, cfg):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = ck.save_checkpoint(tmp_path, _snapshot(cfg, 8), OneProcess(), keep_last=1)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.iterdir()}
    assert modes and all(mode == 0o644 for mode in modes.values()), modes


def test_a_failed_write_leaves_no_temp_dir_and_names_the_file(tmp_path, cfg, monkeypatch):
    import errno

    real = ck.write_file

    def disk_full(path, data):
        if path.name == "optim_D.pt":
            real(path, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, data)

    monkeypatch.setattr(ck, "write_file", disk_full)
    with pytest.raises(OSError) as info:
        ck.save_checkpoint(tmp_path, _snapshot(cfg, 8), OneProcess(), keep_last=1)
    assert info.value.errno == errno.ENOSPC and info.value.filename.endswith("optim_D.pt")
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_a_truncated_file_is_a_one_line_checkpoint_error(tmp_path, cfg):
    snap = _snapshot(cfg, 8)
    path = ck.save_checkpoint(tmp_path, snap, OneProcess(), keep_last=1)
    for name in ("G.safetensors", "D.safetensors", "G_ema.safetensors", "optim_D.pt", "training_state.pt", "rng-rank0.pt"):
        data = (path / name).read_bytes()
        (path / name).write_bytes(data[: len(data) // 3])  # a copy cut short, a disk that filled up
        with pytest.raises(ck.CheckpointError, match=name.replace(".", r"\.")) as info:
            ck.load_checkpoint(path, snap.networks, snap.optimizers)
        assert "\n" not in str(info.value) and len(str(info.value)) < 300
        (path / name).write_bytes(data)


def test_architecture_mismatch_is_one_line(tmp_path, cfg):
    state = {"model": {"channel_max": 512, "z_dim": 32}, "resolution": 16}
    with pytest.raises(ck.CheckpointError, match=r"model.channel_max=512 there, 32 in the config"):
        ck.check_architecture(state, {"channel_max": 32, "z_dim": 32}, 16, tmp_path)
    with pytest.raises(ck.CheckpointError, match="resolution 16, the config says data.resolution=32"):
        ck.check_architecture(state, state["model"], 32, tmp_path)


def test_generator_export_reads_a_training_checkpoint(tmp_path, cfg):
    from gan.export import load_generator

    snap = _snapshot(cfg, 8)
    snap.meta = {"model": {k: getattr(cfg.model, k) for k in cfg.model.__dataclass_fields__}, "resolution": 16}
    path = ck.save_checkpoint(tmp_path, snap, OneProcess(), keep_last=1)
    G = load_generator(tmp_path)  # the run dir: resolves its latest checkpoint
    for name, tensor in G.state_dict().items():
        assert torch.equal(tensor, snap.networks["G_ema"].state_dict()[name])
    assert path.exists()


class ThreadRank:
    """One of several processes, played by a thread: wait_for_everyone is a shared barrier."""

    def __init__(self, rank: int, world: int, barrier: threading.Barrier) -> None:
        self.process_index, self.num_processes, self.is_main_process = rank, world, rank == 0
        self.barrier = barrier

    def wait_for_everyone(self) -> None:
        self.barrier.wait(timeout=30)


def _save_on_ranks(cfg, run_dirs: list[Path]) -> list:
    """save_checkpoint on len(run_dirs) thread-ranks (rank r writes under run_dirs[r]); results or exceptions."""
    barrier, results = threading.Barrier(len(run_dirs)), [None] * len(run_dirs)
    snap = _snapshot(cfg, cur_nimg=8)

    def save(rank: int) -> None:
        try:
            results[rank] = ck.save_checkpoint(run_dirs[rank], snap, ThreadRank(rank, len(run_dirs), barrier), keep_last=2)
        except Exception as exc:  # reported to the test thread
            results[rank] = exc
            barrier.abort()

    threads = [threading.Thread(target=save, args=(rank,)) for rank in range(len(run_dirs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_every_process_writes_its_rng_before_the_main_process_renames(tmp_path, cfg):
    results = _save_on_ranks(cfg, [tmp_path, tmp_path, tmp_path])
    assert all(r == tmp_path / "checkpoints" / "0000000008" for r in results), results
    assert sorted(ck.process_digests(results[0])) == [0, 1, 2]
    assert all((results[0] / f"rng-rank{r}.pt").is_file() for r in range(3))
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_a_run_dir_not_shared_by_all_processes_is_reported_not_fatal(tmp_path, cfg, caplog):
    # A second node with its own disk: its process must still be able to write (mkdir), and the
    # main process says why the checkpoint lacks that process's RNG state.
    with caplog.at_level("ERROR", logger="gan.checkpoint"):
        results = _save_on_ranks(cfg, [tmp_path / "shared", tmp_path / "node-local"])
    assert not any(isinstance(r, Exception) for r in results), results
    assert sorted(ck.process_digests(results[0])) == [0]
    assert "holds the files of 1 of 2 processes" in caplog.text and "filesystem" in caplog.text


def test_progress_with_per_phase_failure_counts_round_trips(tmp_path, cfg):
    snap = _snapshot(cfg, cur_nimg=8)
    snap.progress.bad_runs, snap.progress.bad_steps = {"G_reg": 2, "D_main": 0}, 2
    path = ck.save_checkpoint(tmp_path, snap, OneProcess(), keep_last=1)
    fresh = _snapshot(cfg, cur_nimg=0)
    assert ck.load_checkpoint(path, fresh.networks, fresh.optimizers).progress == snap.progress


# --------------------------------------------------------------------------- resume bit-exactness


def _final_tensors(run_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    latest = ck.latest_checkpoint(run_dir)
    tensors = {key: load_file(str(latest / name)) for key, name in ck.NETWORK_FILES.items()}
    for key, name in ck.OPTIMIZER_FILES.items():
        state = torch.load(latest / name, weights_only=True)["state"]
        tensors[f"opt_{key}"] = {f"{i}.{k}": v for i, s in state.items() for k, v in s.items()}
    extra = torch.load(latest / ck.EXTRA_FILE, weights_only=True)
    tensors["extra"] = {"pl_mean": extra["loss"]["pl_mean"], "augment_p": torch.tensor(extra["augment"]["p"])}
    return tensors


def test_interrupted_and_resumed_run_is_bit_identical(tmp_path):
    data = make_dataset(tmp_path / "data", count=6)  # 6 images, batch 4: epochs end mid-batch
    # ADA draws from the global RNG on every D call and moves p every 2 steps; x-flips depend on the epoch.
    cfg = tiny_config(data, augment={"mode": "ada", "p": 0.3, "pipe": "bgc", "interval": 2, "speed_kimg": 0.05})
    config = write_config(tmp_path / "tiny.yaml", cfg)
    base = ["--config", str(config), "--deterministic", "--no-wandb"]
    # 6 steps of 4 images; the interruption after 3 falls between the r1/pl steps (interval 2).
    assert train.main(base + ["--run-dir", str(tmp_path / "straight"), "--max-kimg", "0.024"]) == 0
    assert train.main(base + ["--run-dir", str(tmp_path / "split"), "--max-kimg", "0.012"]) == 0
    assert ck.latest_checkpoint(tmp_path / "split").name == "0000000012"
    assert train.main(["--resume", str(tmp_path / "split"), "--max-kimg", "0.024", "--no-wandb"]) == 0

    straight, split = _final_tensors(tmp_path / "straight"), _final_tensors(tmp_path / "split")
    assert ck.latest_checkpoint(tmp_path / "split").name == "0000000024"
    for group in straight:
        assert straight[group].keys() == split[group].keys()
        for name in straight[group]:
            assert torch.equal(straight[group][name], split[group][name]), f"{group}: {name} differs after resume"
    assert straight["extra"]["augment_p"] != 0.3, "ADA never adjusted p"
    # And training did change the weights (the comparison is not between two untouched inits).
    first = load_file(str(tmp_path / "split" / "checkpoints" / "0000000012" / "G.safetensors"))
    assert any(not torch.equal(first[k], straight["G"][k]) for k in first)


def test_safe_load_gives_one_short_reason(tmp_path):
    """atelier.common.safe_load is what checkpoints and eval weights use for .pt files."""
    from atelier.common.safe_load import UnreadableTensorsFile, load_tensors

    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    assert torch.equal(load_tensors(good)["w"], torch.ones(3))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    torch.save({"obj": OneProcess()}, tmp_path / "pickled.pt")
    for name, reason in (("garbage.pt", "not a torch.save file"), ("pickled.pt", "could run code")):
        with pytest.raises(UnreadableTensorsFile, match=reason) as info:
            load_tensors(tmp_path / name)
        message = str(info.value)
        assert message.startswith(str(tmp_path / name)) and "\n" not in message and "weights_only" not in message
