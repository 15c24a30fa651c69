"""One decoded dataset per machine (gan.shared_cache): the file round trip, two real gloo
processes mapping one copy, the fallback when it does not fit, and stale-file cleanup."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp
from training_support import make_dataset

from gan import shared_cache
from gan.dataset import ImageFolderDataset
from gan.process_group import leave_process_group


def _decoded(dataset: ImageFolderDataset) -> torch.Tensor:
    return torch.stack([dataset._decode(i, keep=False) for i in range(len(dataset))])


def test_decode_to_file_then_map_file_gives_the_same_pixels(tmp_path):
    dataset = ImageFolderDataset(make_dataset(tmp_path / "data", count=5))
    path = dataset.decode_to_file(tmp_path / "cache.u8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.u8", "data"]  # no temp file left
    mapped = ImageFolderDataset(tmp_path / "data")
    mapped.map_file(path)
    assert mapped.preloaded
    assert torch.equal(torch.stack([mapped.uint8(i) for i in range(5)]), _decoded(dataset))
    assert torch.equal(mapped[3], dataset[3])


def test_stale_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # that process has exited
    stale = tmp_path / f"{shared_cache.PREFIX}{dead_pid}-abc123.u8"
    stale_tmp = tmp_path / f"{shared_cache.PREFIX}{dead_pid}-abc124.u8.tmp"
    live = tmp_path / f"{shared_cache.PREFIX}{os.getpid()}-abc125.u8"
    other = tmp_path / "someone-elses-file.u8"
    for path in (stale, stale_tmp, live, other):
        path.write_bytes(b"x")
    shared_cache.remove_stale_files(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, data: str, shm_dir: str, out_dir: str) -> None:
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

    accelerator = Accelerator(cpu=True)
    dataset = ImageFolderDataset(data)
    shared = shared_cache.preload_per_machine(dataset, accelerator, shm_dir)
    mapped = str(dataset.mapped_file) if dataset.mapped_file else None
    report = {
        "shared": shared,
        "file": mapped,
        # The kernel's view: this process maps that file (its name already removed: "(deleted)").
        "in_proc_maps": bool(mapped) and any(mapped in line for line in Path("/proc/self/maps").read_text().splitlines()),
        "same_pixels": dataset.preloaded and torch.equal(dataset._images, _decoded(dataset)),
        "left_in_shm": sorted(p.name for p in Path(shm_dir).iterdir()) if Path(shm_dir).is_dir() else None,
    }
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(report))
    accelerator.wait_for_everyone()
    leave_process_group()  # as atelier train does: a gloo group left to exit can abort the process


def _run_two(tmp_path: Path, shm_dir: Path) -> list[dict]:
    data = make_dataset(tmp_path / "data", count=6)
    mp.spawn(_worker, args=(2, _free_port(), str(data), str(shm_dir), str(tmp_path)), nprocs=2, join=True)
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_processes_map_one_decoded_copy_and_leave_no_file(tmp_path):
    shm = tmp_path / "shm"
    shm.mkdir()
    reports = _run_two(tmp_path, shm)
    for report in reports:
        assert report["shared"] and report["same_pixels"]
        assert report["file"] and Path(report["file"]).parent == shm and report["in_proc_maps"]
    assert reports[0]["file"] == reports[1]["file"], "the two processes decoded separate copies"
    assert not list(shm.iterdir()), "the shared file's name must be gone once every process mapped it"


def test_without_a_usable_shared_dir_nothing_is_shared(tmp_path):
    reports = _run_two(tmp_path, tmp_path / "no-such-dir")
    assert [r["shared"] for r in reports] == [False, False]
    assert [r["file"] for r in reports] == [None, None]


def test_a_failed_write_leaves_no_file_and_nothing_mapped(tmp_path, monkeypatch):
    """One process, shm filling up mid-write: a warning, no partial file, the dataset not preloaded."""
    dataset = ImageFolderDataset(make_dataset(tmp_path / "data", count=4))
    shm = tmp_path / "shm"
    shm.mkdir()

    def full(index, keep):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(dataset, "_decode", full)

    class OneProcess:
        num_processes, process_index, is_main_process, is_local_main_process = 1, 0, True, True

        def wait_for_everyone(self):
            pass

    assert shared_cache.preload_per_machine(dataset, OneProcess(), shm) is False
    assert not dataset.preloaded and not list(shm.iterdir())
