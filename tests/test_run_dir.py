"""A run dir belongs to one run: its lock, the refusal to start afresh over a run's checkpoints,
and writes that fail (disk full, read-only) as one line with exit status 5 and nothing half-written."""

from __future__ import annotations

import builtins
import errno
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from training_support import make_dataset, one_thread, tiny_config, write_config  # noqa: F401 (autouse fixture)

from atelier.common.errors import ExitCode
from gan import checkpoint as ck
from gan import train
from gan.run_lock import LOCK_NAME, RunDirLocked, RunLock


@pytest.fixture()
def config(tmp_path) -> Path:
    data = make_dataset(tmp_path / "data", count=4)
    return write_config(tmp_path / "c.yaml", tiny_config(data, checkpoint={"every_kimg": 0.004}, metrics={"metrics": []}))


def _train(config: Path, run: Path, *extra: str) -> int:
    return train.main(["--config", str(config), "--run-dir", str(run), "--max-kimg", "0.004", "--no-wandb", *extra])


def _last_error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    return lines[-1] if lines else ""


def _write_lock(run: Path, pid: int, host: str | None = None) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "since": "then"}))


def test_a_live_trainer_s_lock_refuses_a_second_one(tmp_path, config, capsys):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(run, holder.pid)
        assert _train(config, run) == ExitCode.BAD_INPUT
        err = _last_error(capsys)
        assert err.startswith("atelier train: error: ") and f"pid {holder.pid}" in err and "--run-dir" in err, err
        assert not (run / "checkpoints").exists() and not (run / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_note_and_released_at_the_end(tmp_path, config, caplog):
    run = tmp_path / "run"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no longer runs: the trainer that held it was killed
    _write_lock(run, gone.pid)
    umask = os.umask(0o022)
    try:
        with caplog.at_level("WARNING", logger="gan.run_lock"):
            assert _train(config, run) == 0
    finally:
        os.umask(umask)
    assert f"stale lock of process {gone.pid}" in caplog.text
    assert not (run / LOCK_NAME).exists()
    assert ck.latest_checkpoint(run) is not None
    # Everything the run wrote follows the umask: teammates can read the weights.
    modes = {p.relative_to(run).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in run.rglob("*") if p.is_file()}
    assert "generator.safetensors" in modes and any(name.endswith("G.safetensors") for name in modes)
    assert all(mode == 0o644 for mode in modes.values()), modes


def test_resume_of_a_run_dir_skips_a_damaged_latest_checkpoint_and_says_so(tmp_path, config, caplog, capsys):
    run = tmp_path / "run"
    assert train.main(["--config", str(config), "--run-dir", str(run), "--max-kimg", "0.008", "--no-wandb"]) == 0
    older, latest = ck.list_checkpoints(run / "checkpoints")[-2:]
    data = bytearray((latest / "G.safetensors").read_bytes())
    data[-3] ^= 0x10  # one flipped bit in the weights
    (latest / "G.safetensors").write_bytes(bytes(data))
    # Named explicitly, the damaged checkpoint is refused with a pointer to the intact one.
    assert train.main(["--resume", str(latest), "--max-kimg", "0.012"]) == ExitCode.BAD_INPUT
    err = _last_error(capsys)
    assert "G.safetensors: damaged" in err and f"--resume {older}" in err, err
    with caplog.at_level("WARNING"):
        assert train.main(["--resume", str(run), "--max-kimg", "0.012", "--no-wandb"]) == 0
    assert f"latest checkpoint {latest.name} is damaged" in caplog.text and f"newest intact one, {older}" in caplog.text
    assert ck.latest_checkpoint(run).name == ck.checkpoint_name(12)


def test_a_lock_from_another_host_is_refused_with_how_to_clear_it(tmp_path):
    _write_lock(tmp_path, 12345, host="some-other-node")
    with pytest.raises(RunDirLocked, match=f"some-other-node.*delete {tmp_path / LOCK_NAME}"):
        RunLock(tmp_path).acquire()
    lock = RunLock(tmp_path / "fresh")
    with lock:
        record = json.loads((tmp_path / "fresh" / LOCK_NAME).read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname()
    assert not (tmp_path / "fresh" / LOCK_NAME).exists()


def test_a_fresh_start_over_a_run_s_checkpoints_refuses_and_overwrite_starts_afresh(tmp_path, config, capsys):
    run = tmp_path / "run"
    assert _train(config, run) == 0
    first = ck.latest_checkpoint(run)
    metrics = (run / "metrics.jsonl").read_bytes()
    assert _train(config, run) == ExitCode.BAD_INPUT
    err = _last_error(capsys)
    assert err.startswith("atelier train: error: ") and "already holds a run's checkpoints" in err
    assert f"--resume {run}" in err and "new --run-dir" in err and "--overwrite" in err
    assert (run / "metrics.jsonl").read_bytes() == metrics and ck.latest_checkpoint(run) == first
    assert not (run / LOCK_NAME).exists()

    assert _train(config, run, "--overwrite") == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("tick") for r in records] == [1]  # the old run's records are gone, not interleaved
    assert [p.name for p in ck.list_checkpoints(run / "checkpoints")] == [first.name]


def test_a_full_disk_at_a_checkpoint_is_one_line_exit_5_and_leaves_no_temp_dir(tmp_path, config, capsys, monkeypatch):
    real_open = builtins.open

    class FillsUp:
        """A file on a disk that fills up halfway through the write, as the kernel reports it."""

        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            self.handle.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def open_on_full_disk(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        return FillsUp(handle) if "w" in mode and Path(os.fsdecode(file)).name == "optim_G.pt" else handle

    monkeypatch.setattr(builtins, "open", open_on_full_disk)
    run = tmp_path / "run"
    assert _train(config, run) == ExitCode.IO
    err = _last_error(capsys)
    assert err == f"atelier train: error: {run / 'checkpoints' / '.tmp-0000000004' / 'optim_G.pt'}: cannot write (disk full)"
    assert list((run / "checkpoints").iterdir()) == []
    assert not (run / LOCK_NAME).exists()


@pytest.fixture()
def read_only(monkeypatch):
    """Make a dir read-only: chmod, plus, for root (whom permissions do not stop), refusing writes
    into it at the os.open/open/mkdir/link level the way the kernel would for anyone else."""
    made: list[Path] = []

    def inside(path) -> bool:
        try:
            target = Path(os.fsdecode(path)).absolute()
        except TypeError:  # a file descriptor
            return False
        return any(target == d or d in target.parents for d in made)

    def denied(path):
        return PermissionError(errno.EACCES, "Permission denied", os.fsdecode(path))

    if os.geteuid() == 0:
        real_open, real_os_open, real_mkdir, real_link = builtins.open, os.open, os.mkdir, os.link

        def fake_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+") and inside(file):
                raise denied(file)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
                raise denied(path)
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            if inside(path) and not Path(os.fsdecode(path)).is_dir():
                raise denied(path)
            return real_mkdir(path, *args, **kwargs)

        def fake_link(src, dst, *args, **kwargs):
            if inside(dst):
                raise denied(dst)
            return real_link(src, dst, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)
        monkeypatch.setattr(os, "mkdir", fake_mkdir)
        monkeypatch.setattr(os, "link", fake_link)

    def make(path: Path) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o555)
        made.append(path.absolute())
        return path

    yield make
    for path in made:
        path.chmod(0o755)


def test_a_read_only_run_dir_is_one_line_exit_5_before_training(tmp_path, config, capsys, read_only):
    run = read_only(tmp_path / "run")
    assert _train(config, run) == ExitCode.IO
    err = _last_error(capsys)
    assert err.startswith("atelier train: error: ") and err.endswith("cannot write (permission denied)"), err
    assert str(run) in err
