"""Smoke tests of the benchmark scripts: tiny configs, a step or two, one valid JSON line each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # every test here starts a Python subprocess

REPO = Path(__file__).resolve().parents[1]
TINY = ["--z-dim", "32", "--w-dim", "32", "--mapping-layers", "1", "--channel-base", "128", "--channel-max", "16"]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], cwd=REPO, capture_output=True, text=True, timeout=120)


def bench_train(*extra: str, batch: int = 4, interval: int = 2, augment: str = "none") -> subprocess.CompletedProcess:
    """bench_train.py on the tiny 16 px network, one thread, one warm-up step, both lazy intervals ``interval``."""
    common = ["--resolution", "16", *TINY, "--batch", str(batch), "--r1-interval", str(interval), "--pl-interval", str(interval)]
    return run_script("bench_train.py", *common, "--augment", augment, "--warmup", "1", "--threads", "1", *extra)


def test_bench_train_times_every_phase_and_prints_one_json_line():
    # Intervals 2 and 2: the timed window (2 steps) includes G reg and D reg once each.
    proc = bench_train("--phase-times", augment="ada")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    for key in (
        "device",
        "resolution",
        "batch",
        "precision",
        "compile",
        "channels_last",
        "modconv",
        "sec_per_kimg",
        "images_per_s",
        "peak_memory_gb",
        "G_params",
        "D_params",
        "commit",
        "launch_to_first_step_s",
    ):
        assert key in row, key
    assert row["resolution"] == 16 and row["batch"] == 4 and row["precision"] == "fp32"
    assert row["modconv"] == "batched"  # perf.modconv=auto while training
    assert row["timed_steps"] == 4  # lcm of r1 (2), pl (2) and the ADA interval (4)
    assert row["images_per_s"] > 0 and row["sec_per_kimg"] == pytest.approx(1000 / row["images_per_s"], rel=0.02)
    assert row["G_params"] > 0 and row["D_params"] > 0
    phases = row["phase_ms_per_step"]
    assert set(phases) == {"G_main", "G_reg", "D_main", "D_reg"} and all(ms > 0 for ms in phases.values())


def test_bench_train_matched_config_has_nvidia_parameter_counts():
    """The matched row's architecture: G and D sizes equal stylegan2-ada-pytorch's (no steps timed)."""
    from gan.config import load_config
    from gan.networks import Discriminator, Generator

    sys.path.insert(0, str(REPO / "scripts"))
    import bench_train

    args = bench_train.build_parser().parse_args(
        "--resolution 32 --z-dim 512 --w-dim 512 --mapping-layers 2 --channel-base 4096 --channel-max 256".split()
    )
    cfg = load_config(None, bench_train.overrides_from_args(args))
    assert sum(p.numel() for p in Generator(cfg.model, 32).parameters()) == 5_238_419
    assert sum(p.numel() for p in Discriminator(cfg.model, 32).parameters()) == 4_608_897


def test_bench_train_rejects_a_bad_option_in_one_line():
    proc = run_script("bench_train.py", "--resolution", "24", *TINY)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "data.resolution" in proc.stderr


def test_bench_eval_generation_and_random_inception_features():
    proc = run_script(
        "bench_eval.py",
        "--set",
        "data.resolution=16",
        "--set",
        "model.z_dim=32",
        "--set",
        "model.w_dim=32",
        "--set",
        "model.channel_base=128",
        "--set",
        "model.channel_max=16",
        "--batch",
        "2",
        "--num",
        "2",
        "--random-inception",
        "--threads",
        "1",
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["generator"] == "random-init" and row["resolution"] == 16
    assert row["generation_samples_per_s"] > 0 and row["features_samples_per_s"] > 0
    assert row["inception_weights"].startswith("random-init")


def test_bench_help_explains_options():
    for name in ("bench_train.py", "bench_eval.py"):
        proc = run_script(name, "--help")
        assert proc.returncode == 0
        assert "--batch" in proc.stdout and "--threads" in proc.stdout


def test_bench_optim_times_each_bookkeeping_variant():
    proc = run_script("bench_optim.py", "--resolution", "16", *TINY, "--iters", "2", "--threads", "1", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.strip())
    for key in ("adam_foreach_ms", "adam_fused_ms", "ema_loop_ms", "ema_foreach_ms", "finite_cat_ms", "finite_norms_ms"):
        assert row[key] > 0, key
    assert row["G_params"] > 0 and row["device"] == "cpu"


def test_perf_table_renders_rows_with_speedups(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"row": "baseline fp32", "device": "GPU X", "images_per_s": 100.0, "command": "a"})
        + "\n\n"
        + json.dumps({"row": "bf16", "device": "GPU X", "images_per_s": 150.0, "command": "b"})
        + "\n"
        + json.dumps({"row": "broken", "error": "timed out"})
        + "\n"
    )
    proc = run_script("perf_table.py", str(rows), "--baseline", "baseline", "--commands")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("| row | device | images/s | vs baseline | error | command |")
    assert "| bf16 | GPU X | 150.0 | 1.50× |  | `b` |" in lines
    assert len(lines) == 5

    rows.write_text("{not json\n")
    proc = run_script("perf_table.py", str(rows))
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == f"error: {rows}:1: not a JSON line (Expecting property name enclosed in double quotes)"
    )


def test_bench_train_profile_writes_op_tables(tmp_path):
    table = tmp_path / "ops.txt"
    proc = bench_train("--profile", str(table), batch=2, interval=1)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["profile"] == str(table)
    text = table.read_text()
    assert "sorted by self_cpu_time_total" in text and "grouped by input shape" in text
    assert "aten::convolution" in text  # the real step ran under the profiler
    assert not list(tmp_path.glob("*.tmp"))


def test_bench_train_counts_ops_per_step_and_clamp_adds_ops():
    # Op counts are exact, so a layer change's effect on kernel launches shows without a GPU:
    # conv_clamp adds a clamp (and its backward's masks) to every layer.
    def ops(*extra: str) -> dict:
        proc = bench_train("--count-ops", *extra)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["ops_per_step"]

    clamped, unclamped = ops(), ops("--set", "model.conv_clamp=null")
    assert clamped["kernels"] > unclamped["kernels"] > 100 and unclamped["views"] > 0
