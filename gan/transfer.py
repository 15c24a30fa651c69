"""Transfer learning: start a run from another run's networks (``--init-from``), optionally
with the first discriminator blocks frozen (FreezeD, Mo et al. 2020).

The typical use is a model trained on a whole art movement, fine-tuned on one master's
few hundred works. The source may be

- a run dir (its latest complete checkpoint) or a checkpoint dir: G, D and G_ema are
  loaded, including the mapping network's tracked ``w_avg`` (a buffer of G), so
  truncation works from the first fine-tuning step;
- a generator export (``generator.safetensors``): G and G_ema start from the exported
  G_ema (with its ``w_avg``), D starts from its fresh initialisation.

Only the networks are carried over: optimiser moments, counters, the ADA probability and
the RNG start afresh (that is what distinguishes a transfer from ``--resume``).

Every source is checked against the configured architecture before anything is built
(``check_source``): same resolution, RGB, and the same ``model.*`` values (channel counts,
latent sizes, mapping depth ...), else a one-line CheckpointError naming the first
difference. Public StyleGAN2 ``.pkl`` files are not accepted: they are pickles, and
unpickling an untrusted file can run arbitrary code (see docs/transfer.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch

from gan.checkpoint import CheckpointError, check_architecture, load_networks, resolve_checkpoint
from gan.config import ConfigError

OPTION = "--init-from"


def num_d_blocks(resolution: int) -> int:
    """How many FreezeD-able blocks the discriminator has (one per resolution R .. 8)."""
    return max(0, int(math.log2(resolution)) - 2)


def check_freeze_d(freeze_d: int, resolution: int) -> None:
    """``transfer.freeze_d`` must name 0..(number of D blocks); ConfigError otherwise."""
    blocks = num_d_blocks(resolution)
    if not 0 <= freeze_d <= blocks:
        raise ConfigError(
            f"transfer.freeze_d must be in 0..{blocks} (the discriminator has {blocks} blocks at "
            f"{resolution} px), got {freeze_d}"
        )


def classify_init_source(source: str | Path) -> tuple[str, Path]:
    """("export", file) for a weights file; ("checkpoint", dir) for a checkpoint or run dir.

    A run dir holds both a checkpoint and a ``generator.safetensors`` export; the checkpoint
    wins, since it also carries D.
    """
    path = Path(source)
    if path.is_file() and path.name != "state.json":
        return "export", path
    return "checkpoint", resolve_checkpoint(path, option=OPTION)


def check_source(source: str | Path, model: Mapping[str, Any], resolution: int, img_channels: int = 3) -> tuple[str, Path]:
    """Refuse a source whose networks do not fit the configured ones; returns ``classify_init_source``'s pair.

    ``model`` is the configured ``model`` section as a dict. Raises CheckpointError (one
    line): missing or unreadable source, resolution, image channels, or the first
    differing ``model.*`` value.
    """
    from gan.export import GeneratorLoadError, describe_generator

    kind, path = classify_init_source(source)
    try:
        meta = describe_generator(path)  # metadata only, weights untouched
    except GeneratorLoadError as exc:
        raise CheckpointError(f"{OPTION} {exc}") from exc
    where = Path(f"{OPTION} {path}")
    channels = meta.get("img_channels", 3)
    if channels != img_channels:
        raise CheckpointError(f"{where}: networks for {channels}-channel images, this run trains {img_channels}-channel ones")
    check_architecture(meta, model, resolution, where)
    return kind, path


def init_networks(
    source: str | Path,
    G: torch.nn.Module,
    D: torch.nn.Module,
    G_ema: torch.nn.Module,
    model: Mapping[str, Any],
    resolution: int,
    device: torch.device | str = "cpu",
) -> str:
    """Load a checked source's weights into the freshly built networks; returns its kind.

    A checkpoint fills G, D and G_ema; an export fills G and G_ema (D stays as built).
    """
    kind, path = check_source(source, model, resolution, G.img_channels)
    if kind == "export":
        from gan.export import load_generator

        weights = load_generator(path, device=device).state_dict()  # includes mapping.w_avg
        G.load_state_dict(weights)
        G_ema.load_state_dict(weights)
    else:
        load_networks(path, {"G": G, "D": D, "G_ema": G_ema}, device)
    return kind
