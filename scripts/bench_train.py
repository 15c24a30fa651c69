"""Benchmark StyleGAN2-ADA training speed with the real Trainer (one JSON line on stdout).

Builds the run exactly as ``train.py`` does (accelerate, ``gan.training_loop.Trainer``,
``gan.loss.StyleGAN2Loss``), runs warm-up steps, then times whole training steps: every
phase at its lazy interval (G main, G path-length reg every ``--pl-interval``, D main,
D R1 every ``--r1-interval``) plus the EMA and ADA updates. The timed window is a multiple
of the lazy intervals, so it contains each regulariser exactly as often as training does.

No dataset is needed: without ``--data`` the reals come from a small synthetic prepared
dataset of random PNGs written to a temp dir (decoding is cached, so the data do not
matter for speed). Examples::

    # the matched CPU row of docs/performance.md
    python scripts/bench_train.py --resolution 32 --z-dim 512 --w-dim 512 --mapping-layers 2 \\
        --channel-base 4096 --channel-max 256 --batch 8 --r1-interval 16 --pl-interval 4 \\
        --style-mixing 0.9 --augment none
    # a GPU row (256 px preset) and its launch-to-first-step time
    python scripts/bench_train.py --preset configs/stylegan2-256.yaml --precision bf16 --channels-last --compile
    python scripts/bench_train.py --preset configs/stylegan2-256.yaml --compile --first-step-only
"""

from __future__ import annotations

import time

_T_LAUNCH = time.perf_counter()  # before torch is imported: "launch to first step" includes imports

import argparse
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_train")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bench_train.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Prints one JSON line: device, resolution, batch, precision, compile, channels_last, modconv, "
        "sec_per_kimg, images_per_s, peak_memory_gb, G_params, D_params, commit and the full settings.",
    )
    p.add_argument("--preset", type=Path, help="YAML preset to start from (configs/*.yaml); default: built-in defaults")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other config override, e.g. --set model.mbstd_group=4 (repeatable)",
    )
    p.add_argument("--data", help="prepared dataset dir to read reals from (default: synthetic random PNGs in a temp dir)")
    arch = p.add_argument_group("architecture (match another implementation's configuration)")
    arch.add_argument("--resolution", type=int, help="image size (power of two); default: the preset's")
    arch.add_argument("--channel-base", type=int, help="channels(res) = min(channel_base / res, channel_max)")
    arch.add_argument("--channel-max", type=int, help="upper bound on the channels of any layer")
    arch.add_argument("--z-dim", type=int, help="latent z size")
    arch.add_argument("--w-dim", type=int, help="intermediate latent w size")
    arch.add_argument("--mapping-layers", type=int, help="depth of the z -> w mapping MLP")
    train = p.add_argument_group("training")
    train.add_argument("--batch", type=int, help="global minibatch")
    train.add_argument("--r1-gamma", type=float, help="R1 weight (0 disables the D reg phase)")
    train.add_argument("--r1-interval", type=int, help="lazy R1: every N minibatches")
    train.add_argument("--pl-weight", type=float, help="path-length weight (0 disables the G reg phase)")
    train.add_argument("--pl-interval", type=int, help="lazy path-length reg: every N minibatches")
    train.add_argument("--style-mixing", type=float, help="style-mixing probability")
    train.add_argument(
        "--augment", choices=["ada", "fixed", "diffaugment", "none"], help="augmentation mode (ada starts at p=0 unless --augment-p)"
    )
    train.add_argument("--augment-p", type=float, help="augmentation probability (fixed/ada start value)")
    perf = p.add_argument_group("fast path (perf.* in the config)")
    perf.add_argument("--precision", choices=["no", "bf16", "fp16"], help="train.mixed_precision (no = fp32)")
    perf.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile G and D (falls back to eager, with a warning, if compiling fails)",
    )
    perf.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None, help="NHWC memory format for G, D and the reals"
    )
    perf.add_argument(
        "--modconv",
        choices=["auto", "grouped", "batched"],
        help="modulated conv: grouped conv with per-sample weights, or batched activation scaling + demodulation; auto picks per device",
    )
    timing = p.add_argument_group("timing")
    timing.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile, allocator, caches)")
    timing.add_argument(
        "--steps",
        type=int,
        default=0,
        help="timed steps; rounded up to a multiple of the lazy intervals (default 0 = one full cycle of the intervals)",
    )
    timing.add_argument("--repeat", type=int, default=1, help="time the window this many times and report the best")
    timing.add_argument(
        "--phase-times",
        action="store_true",
        help="also report each phase's mean time per step (ms) over the timed steps; adds a "
        "device sync after every phase, so the total is a little slower on GPUs",
    )
    timing.add_argument(
        "--profile",
        metavar="FILE",
        help="after the timed windows, run one more window under torch.profiler and write its "
        "per-op tables (by total, and by input shape) to FILE; sorted by GPU time on CUDA",
    )
    timing.add_argument(
        "--count-ops",
        action="store_true",
        help="after the timed windows, count the tensor ops (kernels, views excluded) one training "
        "step dispatches, averaged over one more window: on a GPU each is at least one kernel "
        "launch, so this predicts when small batches become launch-bound; the same on every device",
    )
    timing.add_argument(
        "--first-step-only", action="store_true", help="only measure launch -> end of the first training step (all phases), then stop"
    )
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return p


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """Config dot-list overrides for every option given on the command line."""
    mapping = {
        "resolution": "data.resolution",
        "channel_base": "model.channel_base",
        "channel_max": "model.channel_max",
        "z_dim": "model.z_dim",
        "w_dim": "model.w_dim",
        "mapping_layers": "model.mapping_layers",
        "batch": "train.batch",
        "r1_gamma": "loss.r1_gamma",
        "r1_interval": "loss.r1_interval",
        "pl_weight": "loss.pl_weight",
        "pl_interval": "loss.pl_interval",
        "style_mixing": "loss.style_mixing",
        "augment": "augment.mode",
        "augment_p": "augment.p",
        "precision": "train.mixed_precision",
        "compile": "perf.compile",
        "channels_last": "perf.channels_last",
        "modconv": "perf.modconv",
    }
    out = [f"train.seed={args.seed}", "log.tracker=none", "data.workers=0"]
    for attr, key in mapping.items():
        value = getattr(args, attr)
        if isinstance(value, bool):
            out.append(f"{key}={str(value).lower()}")
        elif isinstance(value, str):
            out.append(f"{key}='{value}'")  # quoted: YAML would read a bare `no` as false
        elif value is not None:
            out.append(f"{key}={value}")
    return out + list(args.overrides)


def write_synthetic_dataset(root: Path, resolution: int, count: int = 32) -> Path:
    """A valid prepared dataset (atelier-dataset/1) of random RGB PNGs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        name = f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (resolution, resolution, 3), dtype=np.uint8)).save(root / name)
        rows.append({"file": name, "sha256": hashlib.sha256((root / name).read_bytes()).hexdigest(), "source": "synthetic"})
    info = {
        "format": "atelier-dataset/1",
        "resolution": resolution,
        "count": count,
        "source_manifest_sha256": None,
        "content_sha256": hashlib.sha256("".join(sorted(r["sha256"] for r in rows)).encode()).hexdigest(),
        "images": rows,
        "dropped": [],
    }
    (root / "dataset.json").write_text(json.dumps(info))
    return root


def git_commit() -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def device_name(device) -> str:
    import platform

    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu ({cpu}, {torch.get_num_threads()} threads)"


def peak_memory_gb(device) -> float:
    """Peak GPU memory allocated by torch, or the process's peak resident memory on CPU."""
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def timed_window(cfg, requested: int) -> int:
    """Steps per timed window: a multiple of every lazy interval in use, at least ``requested``."""
    cycle = 1
    if cfg.loss.r1_gamma > 0:
        cycle = math.lcm(cycle, cfg.loss.r1_interval)
    if cfg.loss.pl_weight > 0:
        cycle = math.lcm(cycle, cfg.loss.pl_interval)
    if cfg.augment.mode == "ada":
        cycle = math.lcm(cycle, cfg.augment.interval)
    return max(1, math.ceil(max(requested, 1) / cycle)) * cycle


def _time_phases(trainer, device) -> dict[str, float]:
    """Wrap the trainer's phase runner to add up wall seconds per phase (synced) from now on."""
    from gan.perf import synchronize

    seconds: dict[str, float] = {phase.name: 0.0 for phase in trainer.phases}
    run_phase = trainer._run_phase

    def timed(phase, reals):
        synchronize(device)
        start = time.perf_counter()
        result = run_phase(phase, reals)
        synchronize(device)
        seconds[phase.name] += time.perf_counter() - start
        return result

    trainer._run_phase = timed
    return seconds


def count_ops_per_step(trainer, window: int) -> dict:
    """Tensor ops dispatched per training step (mean over ``window`` steps), views excluded.

    Counted below autograd, so backward ops are included and each count is one ATen kernel
    call; composite ops that dispatch several kernels count each of them.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpCounter(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.kernels = self.views = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.is_view:
                self.views += 1
            else:
                self.kernels += 1
            return func(*args, **(kwargs or {}))

    with OpCounter() as counter:
        for _ in range(window):
            trainer.train_step()
    return {"kernels": round(counter.kernels / window), "views": round(counter.views / window)}


def profile_window(trainer, window: int, device, path: Path) -> None:
    """Run ``window`` more training steps under torch.profiler; write its op tables to ``path``.

    Written to a temp name first, then renamed, so a killed run leaves no half-written table.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    from gan.perf import synchronize

    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(window):
            trainer.train_step()
        synchronize(device)
    sort = "self_cuda_time_total" if on_cuda else "self_cpu_time_total"
    events = prof.key_averages()
    by_shape = prof.key_averages(group_by_input_shape=True)
    text = (
        f"# {window} training steps on {device_name(device)}, torch {torch.__version__}, sorted by {sort}\n\n"
        + events.table(sort_by=sort, row_limit=40, max_name_column_width=60)
        + "\n\n# the same steps, grouped by input shape\n\n"
        + by_shape.table(sort_by=sort, row_limit=40, max_name_column_width=40, max_shapes_column_width=100)
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_benchmark(args: argparse.Namespace) -> dict:
    import torch
    from accelerate import Accelerator

    from gan.config import load_config
    from gan.perf import synchronize
    from gan.training_loop import RunOptions, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench_train-") as tmp:
        overrides = overrides_from_args(args)
        cfg = load_config(args.preset, overrides)
        if args.data:
            cfg.data.path = args.data
        else:
            Path(tmp, "data").mkdir()
            cfg.data.path = str(write_synthetic_dataset(Path(tmp, "data").resolve(), cfg.data.resolution))
        has_gpu = torch.cuda.is_available()
        precision = cfg.train.mixed_precision
        if precision == "fp16" and not has_gpu:
            raise SystemExit("error: --precision fp16 needs a GPU")
        accelerator = Accelerator(mixed_precision=precision, cpu=not has_gpu)
        load_before = os.getloadavg()[0]
        trainer = Trainer(cfg, accelerator, RunOptions(run_dir=Path(tmp, "run")))
        device = trainer.device
        window = timed_window(cfg, args.steps)
        for i in range(1 if args.first_step_only else args.warmup):
            trainer.train_step()
            synchronize(device)
            if i == 0:
                first_step_s = time.perf_counter() - _T_LAUNCH
            log.info("warm-up step %d/%d", i + 1, args.warmup)
        if args.first_step_only:
            if args.warmup == 0:
                trainer.train_step()
                synchronize(device)
                first_step_s = time.perf_counter() - _T_LAUNCH
            return {
                "device": device_name(device),
                "resolution": cfg.data.resolution,
                "batch": cfg.train.batch,
                "precision": "fp32" if precision == "no" else precision,
                "compile": trainer.perf.compile,
                "channels_last": trainer.perf.channels_last,
                "modconv": trainer.perf.modconv,
                "launch_to_first_step_s": round(first_step_s, 2),
                "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                "peak_memory_gb": round(peak_memory_gb(device), 3),
                "G_params": sum(p.numel() for p in trainer.G.parameters()),
                "D_params": sum(p.numel() for p in trainer.D.parameters()),
                "commit": git_commit(),
            }
        if args.warmup == 0:
            first_step_s = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        phase_sec = _time_phases(trainer, device) if args.phase_times else None
        best, best_cpu = float("inf"), float("inf")
        for r in range(max(1, args.repeat)):
            synchronize(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(window):
                trainer.train_step()
            synchronize(device)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            log.info("window %d: %d steps in %.2f s (%.2f CPU s)", r + 1, window, elapsed, cpu)
            best, best_cpu = min(best, elapsed), min(best_cpu, cpu)
        images = window * cfg.train.batch
        phase_ms = None
        if phase_sec is not None:  # summed over every repeat: mean per step of all timed steps
            phase_ms = {name: round(sec / (window * max(1, args.repeat)) * 1000, 2) for name, sec in phase_sec.items()}
        peak_gb = peak_memory_gb(device)  # before profiling: the profiler's own buffers are not the run's
        if args.profile:  # after timing, so the profiler's own overhead never enters a timed window
            profile_window(trainer, window, device, Path(args.profile))
        ops = count_ops_per_step(trainer, window) if args.count_ops else None
        return {
            "device": device_name(device),
            "resolution": cfg.data.resolution,
            "batch": cfg.train.batch,
            "precision": "fp32" if precision == "no" else precision,
            "compile": trainer.perf.compile,
            "compiled": bool(trainer.perf.compile and trainer.G_run.compiled and trainer.D_run.compiled),
            "channels_last": trainer.perf.channels_last,
            "modconv": trainer.perf.modconv,
            "sec_per_kimg": round(best / images * 1000, 2),
            "images_per_s": round(images / best, 2),
            # Images per second of this process's CPU time: comparable across machine load on CPU.
            "images_per_cpu_s": round(images / best_cpu, 2),
            "timed_steps": window,
            "phase_ms_per_step": phase_ms,
            "repeats": max(1, args.repeat),
            "launch_to_first_step_s": round(first_step_s, 2) if first_step_s is not None else None,
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "peak_memory_gb": round(peak_gb, 3),
            "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "process peak RSS",
            "G_params": sum(p.numel() for p in trainer.G.parameters()),
            "D_params": sum(p.numel() for p in trainer.D.parameters()),
            "model": {k: getattr(cfg.model, k) for k in ("z_dim", "w_dim", "mapping_layers", "channel_base", "channel_max")},
            "loss": {k: getattr(cfg.loss, k) for k in ("r1_gamma", "r1_interval", "pl_weight", "pl_interval", "style_mixing")},
            "augment": cfg.augment.mode,
            "data": args.data or "synthetic",
            "profile": args.profile,
            "ops_per_step": ops,
            "torch": torch.__version__,
            "commit": git_commit(),
        }


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("WANDB_MODE", "disabled")
    from gan.config import ConfigError

    try:
        result = run_benchmark(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
