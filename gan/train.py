"""``atelier train``: train a StyleGAN2-ADA generator on a prepared dataset.

Single process (CPU or one GPU)::

    atelier train --config configs/smoke.yaml

Several GPUs or nodes (accelerate starts one process per GPU; DDP-style gradient averaging)::

    accelerate launch --multi_gpu --num_processes 8 -m atelier train --config configs/stylegan2-256.yaml
    accelerate launch --multi_gpu --num_processes 8 train.py --config configs/stylegan2-256.yaml

(``accelerate launch --multi_gpu --num_processes 2`` on a machine without GPUs runs two CPU
processes over gloo.) A run writes everything to ``--run-dir`` (default
``runs/<YYYYmmdd-HHMMSS>-<preset>``): ``config.yaml``, ``metrics.jsonl``, ``samples/``,
``checkpoints/<nimg>/`` and ``generator.safetensors``. ``--resume RUN_DIR`` continues a run
from its latest checkpoint exactly where it stopped. ``--init-from RUN_DIR`` starts a new run
from another run's networks (transfer learning, e.g. a movement model fine-tuned on one
master; ``--freeze-d K`` keeps D's first K blocks fixed); see docs/transfer.md.

Bad input (missing or empty dataset, a resolution that does not match the config, a config
typo or out-of-range value, a batch that cannot fit in memory, a resume path that is not a
checkpoint, a checkpoint of another architecture, a run dir another trainer holds or that
already holds a run's checkpoints) stops with a one-line ``atelier train: error:`` message and
exit status 2 before any training starts. A write that fails (disk full, read-only, no
permission) is one line naming the file, exit status 5. SIGTERM and SIGINT write a final
checkpoint (when it fits in ``checkpoint.stop_grace_sec``) and exit with 143 and 130.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Optional

from atelier.common.command import CommandParser, fail, fail_write, prog_name, setup_logging
from atelier.common.errors import AtelierError, ExitCode, io_error_line
from gan.checkpoint import CheckpointError, check_architecture, choose_resume_checkpoint, read_state
from gan.config import ConfigError, TrainingConfig, load_config, save_config, to_dict
from gan.process_group import leave_process_group

log = logging.getLogger("atelier.train")
CMD = "train"
# How long a process may wait in a collective. While the main process computes in-training
# metrics (FID/KID over thousands of generated images can take most of an hour on a big run)
# the others wait at a barrier; accelerate's default (10 min with NCCL) would end the run.
PROCESS_GROUP_TIMEOUT = timedelta(hours=3)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog=prog_name(CMD),
        description="Train StyleGAN2-ADA with Hugging Face accelerate (CPU, one GPU, many GPUs or nodes).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Examples:\n"
        "  atelier train --config configs/smoke.yaml\n"
        "  accelerate launch --multi_gpu --num_processes 4 -m atelier train --config configs/stylegan2-256.yaml --data data/datasets/monet-256\n"
        "  atelier train --resume runs/20250101-120000-smoke --max-kimg 10\n"
        "  atelier train --config configs/stylegan2-256.yaml --data data/datasets/monet-256 "
        "--init-from runs/impressionism-256 --freeze-d 2\n",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML preset (configs/*.yaml). Default: the resumed run's config.yaml with --resume, else the built-in defaults.",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.batch=16 (repeatable)",
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        help="where the run writes config, metrics, samples and checkpoints "
        "(default: runs/<YYYYmmdd-HHMMSS>-<preset>, or the resumed run's dir)",
    )
    parser.add_argument("--data", help="prepared dataset dir (atelier prepare output); overrides data.path")
    parser.add_argument(
        "--max-kimg",
        type=float,
        help="stop after this many thousand real images (earlier than train.total_kimg); a checkpoint is written at the stop",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR_OR_CHECKPOINT",
        help="continue from a run dir's latest checkpoint (the newest intact one, with a "
        "warning, when the latest is damaged) or from one checkpoint dir",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in a --run-dir that holds another run's checkpoints, deleting "
        "its checkpoints, samples, metrics.jsonl and generator.safetensors",
    )
    parser.add_argument(
        "--allow-rng-reset",
        action="store_true",
        help="resume from a checkpoint that lacks this process's RNG state (rng-rank<R>.pt), "
        "with fresh random streams: the run then no longer repeats an uninterrupted one",
    )
    parser.add_argument(
        "--init-from",
        metavar="CHECKPOINT",
        help="transfer learning: start from another run's networks (run dir or checkpoint dir: "
        "G, D, G_ema and w_avg; generator.safetensors export: G only), same architecture and "
        "resolution required; optimiser, counters and ADA p start afresh (sets transfer.init_from)",
    )
    parser.add_argument(
        "--freeze-d",
        type=int,
        metavar="K",
        help="FreezeD: keep the first K (highest-resolution) discriminator blocks fixed while "
        "fine-tuning (sets transfer.freeze_d; 0 = train all)",
    )
    parser.add_argument(
        "--tracker",
        choices=["wandb", "tensorboard", "none"],
        help="experiment tracker (overrides log.tracker); W&B is offline without an API key",
    )
    parser.add_argument("--no-wandb", action="store_true", help="do not log to Weights & Biases (same as WANDB_MODE=disabled)")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels and data order: an interrupted and resumed CPU run then ends bit-identical to an uninterrupted one",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def resolve_config(args: argparse.Namespace) -> tuple[TrainingConfig, Optional[Path]]:
    """The training config and the checkpoint to resume from (both validated)."""
    resume = choose_resume_checkpoint(args.resume) if args.resume else None
    config_path = args.config
    if config_path is None and resume is not None:
        saved = resume.parent.parent / "config.yaml"
        config_path = saved if saved.is_file() else None
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.path={args.data}")
    if args.deterministic:
        overrides.append("train.deterministic=true")
    if args.init_from:
        overrides.append(f"transfer.init_from={args.init_from}")
    if args.freeze_d is not None:
        overrides.append(f"transfer.freeze_d={args.freeze_d}")
    cfg = load_config(config_path, overrides)
    from gan.transfer import check_freeze_d, check_source, pickle_overrides

    derived = [] if resume is not None else pickle_overrides(cfg.transfer.init_from, config_path, overrides)
    if derived:  # an NVIDIA .pkl decides model.* and data.resolution (a contradicting value is a ConfigError)
        cfg = load_config(config_path, overrides + derived)
    model = to_dict(cfg)["model"]

    check_freeze_d(cfg.transfer.freeze_d, cfg.data.resolution)
    kind = None
    if resume is not None:
        check_architecture(read_state(resume), model, cfg.data.resolution, resume)
    elif cfg.transfer.init_from:
        kind, _ = check_source(cfg.transfer.init_from, model, cfg.data.resolution)
    if resume is None and cfg.transfer.freeze_d > 0 and kind not in ("checkpoint", "nvidia-pickle"):
        # FreezeD keeps a *pretrained* D's first blocks; frozen random features are almost surely a mistake.
        source = "a generator export (it has no discriminator)" if kind == "export" else "no --init-from source"
        log.warning(
            "transfer.freeze_d=%d with %s: the frozen discriminator blocks stay at random init; "
            "FreezeD needs --init-from a checkpoint or run dir",
            cfg.transfer.freeze_d,
            source,
        )
    return cfg, resume


def check_dataset(cfg: TrainingConfig) -> None:
    """Open the dataset once so a missing, empty or mismatched one fails before anything is built."""
    from gan.dataset import ImageFolderDataset

    ImageFolderDataset(cfg.data.path, resolution=cfg.data.resolution, xflip=False, seed=cfg.train.seed, cache=False)


def check_metrics(cfg: TrainingConfig) -> None:
    """Unknown in-training metric names fail now, not hours into the run."""
    if cfg.metrics.metrics:
        from eval.evaluate import ALL_METRICS

        unknown = [m for m in cfg.metrics.metrics if m not in ALL_METRICS]
        if unknown:
            raise ConfigError(f"metrics.metrics: unknown metric(s) {unknown}; choose from {', '.join(ALL_METRICS)}")


def default_run_dir(cfg: TrainingConfig, resume: Optional[Path]) -> Path:
    """The resumed run's dir, else runs/<YYYYmmdd-HHMMSS>-<preset> (from this process's clock)."""
    if resume is not None:
        return resume.parent.parent  # RUN_DIR/checkpoints/<nimg> -> RUN_DIR
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.name}"


def _supported_precision(precision: str) -> str:
    """``precision``, or "no" (fp32) where this machine cannot run it natively."""
    import torch

    if precision == "fp16" and not torch.cuda.is_available():
        log.warning("train.mixed_precision=fp16 needs a GPU; training in fp32")
        return "no"
    if precision == "bf16" and torch.cuda.is_available():
        try:  # without emulation: a pre-Ampere GPU "supports" bf16 only slowly, without tensor cores
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation to rule out
            native = torch.cuda.is_bf16_supported()
        if not native:
            log.warning("this GPU has no native bf16; training in fp32")
            return "no"
    return precision


def make_accelerator(cfg: TrainingConfig, tracker: Optional[str], proposed_run_dir: Path):
    """accelerate's Accelerator with a safe mixed-precision choice for this machine.

    Its ``project_dir`` is the run dir, the main process's ``proposed_run_dir`` on every process.
    """
    import torch
    from accelerate import Accelerator, PartialState
    from accelerate.utils import InitProcessGroupKwargs, broadcast_object_list

    # Without cpu=True accelerate ignores a multi-process launch on a machine with no GPU and
    # every process would train alone (and overwrite the others' files); with it, gloo is used.
    has_device = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    group = InitProcessGroupKwargs(timeout=PROCESS_GROUP_TIMEOUT)
    # Join the process group before the Accelerator exists, to agree on the run dir it logs to:
    # a default name comes from each process's own clock, and processes may start a second apart.
    PartialState(cpu=not has_device, **group.to_kwargs())  # also binds this process to its GPU
    precision = _supported_precision(cfg.train.mixed_precision)
    run_dir = broadcast_object_list([str(proposed_run_dir)], from_process=0)[0]
    accelerator = Accelerator(mixed_precision=precision, log_with=tracker, project_dir=run_dir, cpu=not has_device, kwargs_handlers=[group])
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise RuntimeError(f"launched {launched} processes but accelerate formed a group of {accelerator.num_processes}")
    return accelerator


# Errors of a write that the user can fix (space, quota, permissions), reported as ExitCode.IO.
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
# What a run writes into its run dir besides config.yaml; --overwrite removes these.
RUN_OUTPUTS = ("checkpoints", "samples", "metrics.jsonl", "generator.safetensors")


def claim_run_dir(run_dir: Path, resume: Optional[Path], overwrite: bool):
    """Lock the run dir for this run; refuse a fresh start over another run's checkpoints.

    Returns the held RunLock. Main process only.
    """
    from gan.checkpoint import CHECKPOINTS_DIR, list_checkpoints
    from gan.run_lock import RunLock

    lock = RunLock(run_dir)
    lock.acquire()
    try:
        existing = list_checkpoints(run_dir / CHECKPOINTS_DIR)
        if resume is None and existing:
            if not overwrite:
                raise AtelierError(
                    f"{run_dir} already holds a run's checkpoints (latest {existing[-1].name}): continue it with "
                    f"--resume {run_dir}, start in a new --run-dir, or pass --overwrite to discard them"
                )
            log.warning("--overwrite: deleting the previous run's %s in %s", ", ".join(RUN_OUTPUTS), run_dir)
            for name in RUN_OUTPUTS:
                path = run_dir / name
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    except BaseException:
        lock.release()
        raise
    return lock


def _agree_on_error(accelerator, message: Optional[tuple[str, int]]) -> Optional[tuple[str, int]]:
    """The main process's error (message, exit code) or None on every process, so all stop together."""
    from gan.process_group import ProcessGroup

    return ProcessGroup(accelerator).broadcast_object(message)


def run(args: argparse.Namespace) -> int:
    from gan.dataset import DatasetError
    from gan.memory import check_batch_fits

    try:
        cfg, resume = resolve_config(args)
        check_dataset(cfg)
        check_metrics(cfg)
        check_batch_fits(cfg)
    except (ConfigError, CheckpointError, DatasetError) as exc:
        return fail(CMD, exc)
    if cfg.train.deterministic:  # from --deterministic, the preset, --set or the resumed run's config
        # cuBLAS needs this before CUDA initialises to pick deterministic workspaces.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    from gan.trackers import choose_tracker

    tracker = choose_tracker(cfg.log.tracker, args.tracker, args.no_wandb)
    accelerator = make_accelerator(cfg, tracker, args.run_dir or default_run_dir(cfg, resume))
    run_dir = Path(accelerator.project_dir)
    setup_logging(args.verbose, accelerator.is_main_process)
    lock, previous_config, problem = None, None, None
    if accelerator.is_main_process:
        try:
            lock = claim_run_dir(run_dir, resume, args.overwrite)
            if (run_dir / "config.yaml").is_file():
                previous_config = (run_dir / "config.yaml").read_bytes()
            save_config(cfg, run_dir / "config.yaml")
            log.info("run dir %s (device %s, %d process(es))", run_dir, accelerator.device, accelerator.num_processes)
        except AtelierError as exc:
            problem = (str(exc), int(exc.code))
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:
                raise
            problem = (io_error_line(exc, exc.filename or run_dir), int(ExitCode.IO))
    problem = _agree_on_error(accelerator, problem)
    if problem is not None:
        return fail(CMD, problem[0], ExitCode(problem[1])) if accelerator.is_main_process else problem[1]
    try:
        return _train(cfg, accelerator, args, run_dir, resume, tracker, previous_config)
    finally:
        if lock is not None:
            lock.release()
        leave_process_group()


def _train(cfg, accelerator, args, run_dir: Path, resume: Optional[Path], tracker, previous_config) -> int:
    """Track, train and map every way a run ends to its exit status (README's table)."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from gan.export import GeneratorLoadError
    from gan.signals import StopRequested, StopSignals
    from gan.trackers import end_tracking, start_tracking
    from gan.training_loop import RunOptions, TrainingDiverged, training_loop

    main = accelerator.is_main_process
    start_tracking(accelerator, tracker, cfg.log.project, run_dir, to_dict(cfg))
    try:
        with StopSignals() as signals, logging_redirect_tqdm():
            options = RunOptions(
                run_dir=run_dir,
                stop_kimg=args.max_kimg,
                resume=resume,
                tracker=tracker,
                allow_rng_reset=args.allow_rng_reset,
                signals=signals,
            )
            result = training_loop(cfg, accelerator, options)
    except (ConfigError, CheckpointError, GeneratorLoadError) as exc:  # found while building (process count, init_from)
        if previous_config is not None and main:
            # Nothing trained under this config: a later plain --resume must see the run's own settings.
            from atelier.common.fileio import atomic_write_bytes

            atomic_write_bytes(run_dir / "config.yaml", previous_config)
        return fail(CMD, exc)
    except TrainingDiverged as exc:
        return fail(CMD, exc, ExitCode.DIVERGED)
    except StopRequested as stop:
        if main:
            print(f"{prog_name(CMD)}: {stopped_message(run_dir, stop)}", file=sys.stderr, flush=True)
        return int(stop.code)
    except KeyboardInterrupt:
        if main:
            print(f"{prog_name(CMD)}: {interrupted_message(run_dir)}", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        return fail_write(CMD, exc, exc.filename or run_dir)
    finally:
        end_tracking(accelerator, tracker)
    if main:
        log.info("done at kimg %.3f; latest checkpoint %s", result.progress.kimg, result.last_checkpoint)
    return 0


def stopped_message(run_dir: Path, stop) -> str:
    """One line for SIGTERM/SIGINT: the final checkpoint (or why there is none) and how to continue."""
    import signal

    name = signal.Signals(stop.signum).name
    if stop.checkpoint is not None:
        return (
            f"stopped by {name}: wrote checkpoint {stop.checkpoint} (kimg {int(Path(stop.checkpoint).name) / 1000:g}); "
            f"continue with `atelier train --resume {run_dir}`"
        )
    return f"stopped by {name} without a final checkpoint ({stop.reason}); {interrupted_message(run_dir)}"


def interrupted_message(run_dir: Path) -> str:
    """One line for Ctrl-C: what is kept and the command that continues the run."""
    from gan.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    if latest is None:
        return f"interrupted before the first checkpoint: nothing to resume in {run_dir}"
    return (
        f"interrupted: the run is kept up to its latest checkpoint {latest} (kimg {int(latest.name) / 1000:g}); "
        f"continue with `atelier train --resume {run_dir}`"
    )


def main(argv: Optional[list[str]] = None) -> int:
    """``atelier train``: parse the options and train; returns the exit status (README's table)."""
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
