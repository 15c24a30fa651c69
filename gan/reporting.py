"""What a training run shows people, and when: tick lines, metrics.jsonl, trackers, sample
grids and in-training metrics, apart from the step code that trains.

:class:`Schedule` says which of these fall due after a step; it depends only on the image
counters, so a resumed run keeps the same schedule. :class:`Reporter` writes them: records
and images on the main process, tracker calls on every process (accelerate's trackers log
only on the main one), in-training metrics on the main process while the others wait.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from atelier.common.fileio import atomic_write_text
from gan.config import TrainingConfig
from gan.trackers import log_image, log_scalars

log = logging.getLogger("gan.training_loop")  # the run's progress log keeps its one name

METRICS_FILE = "metrics.jsonl"


def crossed(prev_nimg: int, cur_nimg: int, every_kimg: float) -> bool:
    """Whether a multiple of ``every_kimg`` lies in (prev, cur]; depends only on counters, so resume-safe."""
    every = max(1, round(every_kimg * 1000))
    return every_kimg > 0 and cur_nimg // every > prev_nimg // every


@dataclass
class Due:
    """What falls due after one step."""

    tick: bool
    samples: bool
    checkpoint: bool
    metrics: bool


@dataclass
class Schedule:
    """The run's intervals (kimg) for ticks, sample grids, checkpoints and metrics."""

    tick_kimg: float
    sample_kimg: float
    checkpoint_kimg: float
    metrics_kimg: Optional[float]  # None: no in-training metrics

    @classmethod
    def from_config(cls, cfg: TrainingConfig) -> "Schedule":
        metrics = cfg.metrics.every_kimg if cfg.metrics.metrics else None
        return cls(cfg.log.tick_kimg, cfg.log.sample_every_kimg, cfg.checkpoint.every_kimg, metrics)

    def due(self, prev_nimg: int, cur_nimg: int, done: bool) -> Due:
        """Everything is due at the last step (``done``); otherwise what an interval boundary was crossed for."""
        return Due(
            tick=done or crossed(prev_nimg, cur_nimg, self.tick_kimg),
            samples=done or crossed(prev_nimg, cur_nimg, self.sample_kimg),
            checkpoint=done or crossed(prev_nimg, cur_nimg, self.checkpoint_kimg),
            metrics=self.metrics_kimg is not None and (done or crossed(prev_nimg, cur_nimg, self.metrics_kimg)),
        )


@contextlib.contextmanager
def preserved_rng():
    """Run a block (sampling for metrics) without moving any training RNG stream."""
    from gan.checkpoint import capture_rng, restore_rng

    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


def append_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def trim_metrics_log(path: Path, cur_nimg: int) -> int:
    """Drop the records a resumed run is about to replay; return the last kept tick number.

    A run killed after its last checkpoint has logged ticks (and metrics) past the point it
    resumes from; training them again would log each such stretch twice. Lines that do not
    parse (a write cut short by the kill) are dropped too. The file is rewritten atomically.
    """
    if not path.is_file():
        return 0
    kept, dropped, last_tick = [], 0, 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            beyond = record["cur_nimg"] > cur_nimg
        except (ValueError, KeyError, TypeError):
            dropped += 1
            continue
        if beyond:
            dropped += 1
            continue
        kept.append(line)
        last_tick = record.get("tick", last_tick)
    if dropped:
        log.info("%s: dropped %d record(s) past kimg %.3f, which this resumed run trains again", path, dropped, cur_nimg / 1000)
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))
    return int(last_tick)


def tick_line(rec: dict) -> str:
    """The terminal's progress line for one tick record."""
    losses = "  ".join(f"{k.split('/', 1)[1]} {v:.4f}" for k, v in rec.items() if k.startswith("Loss/"))
    aug = f"  augment_p {rec['augment/p']:.3f}" if "augment/p" in rec else ""
    return (
        f"tick {rec['tick']:<4d} kimg {rec['kimg']:<9.3f} sec/tick {rec['sec_per_tick']:<7.1f} "
        f"sec/kimg {rec['sec_per_kimg']:<8.2f} maintenance {rec['timing/maintenance_sec']:<6.1f} "
        f"{losses}{aug}  mem {rec['memory_gb']:.2f} GB"
    )


class Reporter:
    """Writes a run's records, grids and metrics into its run dir and to its tracker."""

    def __init__(self, cfg: TrainingConfig, accelerator: Any, group: Any, run_dir: Path, tracker: Optional[str]) -> None:
        self.cfg, self.acc, self.group, self.tracker = cfg, accelerator, group, tracker
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.main = group.is_main_process

    def start(self, resume: bool, cur_nimg: int) -> int:
        """Prepare the run dir; on resume drop the records past ``cur_nimg``. Returns the last tick number."""
        if not self.main:
            return 0
        self.run_dir.mkdir(parents=True, exist_ok=True)
        return trim_metrics_log(self.metrics_path, cur_nimg) if resume else 0

    def tick(self, rec: dict, step: int) -> None:
        """One tick record: metrics.jsonl and the progress line (main process), the tracker's scalars."""
        if self.main:
            append_jsonl(self.metrics_path, rec)
            log.info(tick_line(rec))
        log_scalars(self.acc, self.tracker, {k: v for k, v in rec.items() if k != "timestamp"}, step=step)

    def write_samples(self, G_ema: torch.nn.Module, name: str, cur_nimg: int, device: torch.device) -> None:
        """A grid of G_ema images at fixed seeds (noise_mode const: draws nothing from the global RNG)."""
        if not self.main or self.cfg.log.sample_seeds <= 0:
            return
        from gan.sampling import generate_images, make_grid, run_xmp, save_png

        seeds = list(range(self.cfg.log.sample_seeds))
        grid = make_grid(generate_images(G_ema, seeds, psi=1.0, noise_mode="const", device=device))
        settings = {"kimg": f"{cur_nimg / 1000:.3f}", "seeds": f"0-{seeds[-1]}"}
        # Grids are for people: they carry the AI disclosure like every other image (reals.png does not).
        save_png(grid, self.run_dir / "samples" / f"{name}.png", text=settings, xmp=run_xmp(self.run_dir, G_ema, settings))
        log_image(self.acc, self.tracker, "samples", grid, step=cur_nimg)

    def write_reals(self, dataset: Any) -> None:
        """The first training images as a grid beside the samples."""
        if not self.main or self.cfg.log.sample_seeds <= 0:
            return
        from gan.sampling import make_grid, save_png, to_uint8_images

        count = min(self.cfg.log.sample_seeds, len(dataset))
        images = torch.stack([dataset[i] for i in range(count)])
        save_png(make_grid(list(to_uint8_images(images))), self.run_dir / "samples" / "reals.png")

    def run_metrics(self, G_ema: torch.nn.Module, cur_nimg: int, device: torch.device) -> None:
        """In-training evaluation of G_ema (eval.in_training) on the main process; the others wait."""
        if self.main:
            result = self._evaluate(G_ema, cur_nimg / 1000, device)
            if result is not None:
                self._report_metrics(result, cur_nimg)
        self.group.wait_for_everyone()

    def _evaluate(self, G_ema: torch.nn.Module, kimg: float, device: torch.device) -> Any:
        from eval.in_training import run_training_metrics

        try:
            with preserved_rng():  # sampling for the metrics must not shift the training noise
                return run_training_metrics(
                    G_ema, self.cfg.metrics, self.cfg.data.path, self.run_dir, kimg, device, seed=self.cfg.train.seed
                )
        except Exception as exc:  # a metric failure (e.g. missing Inception weights) must not end a long run
            log.error("in-training metrics failed at kimg %.3f, training continues: %s", kimg, exc)
            return None

    def _report_metrics(self, result: Any, step: int) -> None:
        kimg = step / 1000
        scalars = {f"metrics/{k}": v for k, v in result.scalars.items()}
        append_jsonl(self.metrics_path, {"kimg": kimg, "cur_nimg": step, **scalars})
        log_scalars(self.acc, self.tracker, scalars, step=step)
        log.info("metrics at kimg %.3f: %s (report %s)", kimg, ", ".join(f"{k} {v:.4g}" for k, v in result.scalars.items()), result.report)
        if result.nn_panel is not None:
            from PIL import Image

            with Image.open(result.nn_panel) as panel:
                log_image(self.acc, self.tracker, "memorisation", np.asarray(panel.convert("RGB")), step=step)
