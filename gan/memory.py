"""A lower bound on the memory one training step needs, to refuse an impossible batch up front.

Training keeps every feature map of G and D for the backward passes (twice over for the
regularisers' double backward). Their size per image is set by the architecture: the sum over
resolutions r of channels(r) * r^2, for G's synthesis and D's blocks. A G and D step with R1 on
the smoke preset (peak RSS at batch 64 against batch 256, on CPU) keeps about 14 stored fp32
values per feature-map element; the estimate below counts 4 (also under what a bf16/fp16 step
keeps), so it stays below what any step really takes, and a batch is refused only when even
that exceeds the machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

from gan.config import ConfigError, TrainingConfig

STORED_PER_ELEMENT = 4  # fp32 values kept per feature-map element (a floor; measured ~14)
BYTES = 4
GiB = 2**30


@dataclass
class MemoryEstimate:
    per_process: float  # bytes one process needs at least
    processes: int  # processes sharing this memory
    available: float  # bytes this machine (GPU or RAM) has for them
    where: str  # "GPU" or "RAM"


def feature_elements(cfg: TrainingConfig) -> int:
    """Feature-map elements per image of G's synthesis plus D (both walk 4..resolution)."""
    total, res = 0, 4
    while res <= cfg.data.resolution:
        channels = min(cfg.model.channel_base // res, cfg.model.channel_max)
        total += 2 * channels * res * res  # G's block and D's block at this resolution
        res *= 2
    return total


def images_per_round(cfg: TrainingConfig, num_processes: int) -> int:
    """Images one process pushes through G and D at once (its share of the batch, or batch_per_gpu)."""
    return cfg.train.batch_per_gpu or max(1, cfg.train.batch // max(num_processes, 1))


def step_bytes(cfg: TrainingConfig, images: int) -> float:
    """A floor on the activation memory of one accumulation round of ``images`` images."""
    return float(feature_elements(cfg)) * STORED_PER_ELEMENT * BYTES * images


def estimate(cfg: TrainingConfig, num_processes: Optional[int] = None, local_processes: Optional[int] = None) -> MemoryEstimate:
    """The memory floor of this config on this machine (num_processes from the launcher's WORLD_SIZE)."""
    import psutil
    import torch

    world = num_processes or int(os.environ.get("WORLD_SIZE", "1"))
    local = local_processes or int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    need = step_bytes(cfg, images_per_round(cfg, world))
    if torch.cuda.is_available():  # one process per GPU
        return MemoryEstimate(need, 1, float(torch.cuda.get_device_properties(0).total_memory), "GPU")
    return MemoryEstimate(need, local, float(psutil.virtual_memory().total), "RAM")


def check_batch_fits(cfg: TrainingConfig, num_processes: Optional[int] = None) -> None:
    """Raise ConfigError when the batch clearly cannot fit in this machine's memory."""
    world = num_processes or int(os.environ.get("WORLD_SIZE", "1"))
    est = estimate(cfg, world)
    if est.per_process * est.processes > est.available:
        per_round = images_per_round(cfg, world)
        raise ConfigError(
            f"train.batch={cfg.train.batch} needs at least {est.per_process * est.processes / GiB:.1f} GiB "
            f"({per_round} images per process x {est.processes} process(es), estimated) but this machine's "
            f"{est.where} has {est.available / GiB:.1f} GiB; lower train.batch, or set train.batch_per_gpu "
            "to accumulate gradients over smaller rounds"
        )
