"""SIGTERM (SLURM, cloud preemption) and SIGINT stop a real training process with a final
checkpoint and the documented exit code; the run then resumes from that checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_support import REPO, make_dataset, tiny_config, write_config

from atelier.common.errors import ExitCode
from gan import checkpoint as ck
from gan.signals import StopRequested, StopSignals


def test_the_first_signal_is_recorded_and_a_second_ctrl_c_interrupts_at_once():
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.signum == signal.SIGTERM
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.signum == signal.SIGINT
        assert StopRequested(signals.signum, None).code == ExitCode.INTERRUPTED
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored on exit


def _wait_for_ticks(metrics: Path, proc: subprocess.Popen, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()[-3000:]}")
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= count:
            return
        time.sleep(0.2)
    raise AssertionError("training made no progress")


@pytest.mark.slow
def test_sigterm_writes_a_final_checkpoint_and_the_run_resumes(tmp_path):
    """SIGINT takes the same path (gan.signals maps it to ExitCode.INTERRUPTED); one subprocess run suffices."""
    signum, code = signal.SIGTERM, ExitCode.TERMINATED
    data = make_dataset(tmp_path / "data", count=4)
    # Checkpoints only at kimg 10: any checkpoint found below comes from the signal.
    cfg = tiny_config(
        data,
        train={"total_kimg": 10.0},
        checkpoint={"every_kimg": 10.0},
        metrics={"metrics": []},
        log={"tick_kimg": 0.004, "sample_every_kimg": 10.0, "sample_seeds": 0, "tracker": "none"},
    )
    config = write_config(tmp_path / "c.yaml", cfg)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "train.py"), "--config", str(config), "--run-dir", str(run)]
    proc = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_ticks(run / "metrics.jsonl", proc, 2)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == code, err[-3000:]
    last = err.strip().splitlines()[-1]
    latest = ck.latest_checkpoint(run)
    assert latest is not None, err[-3000:]
    assert last == (
        f"atelier train: stopped by {signal.Signals(signum).name}: wrote checkpoint {latest} "
        f"(kimg {int(latest.name) / 1000:g}); continue with `atelier train --resume {run}`"
    )
    stopped_at = int(latest.name)
    assert stopped_at >= 8
    ck.verify_checkpoint(latest)
    assert not (run / "run.lock").exists()

    resumed = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--resume", str(run), "--max-kimg", str((stopped_at + 4) / 1000)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {latest}" in resumed.stderr
    assert int(ck.latest_checkpoint(run).name) == stopped_at + 4
    ticks = [json.loads(line)["cur_nimg"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert ticks == list(range(4, stopped_at + 5, 4))  # no tick lost or logged twice
