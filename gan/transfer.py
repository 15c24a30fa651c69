"""Transfer learning: start a run from another run's networks (``--init-from``), optionally
with the first discriminator blocks frozen (FreezeD, Mo et al. 2020).

The typical use is a model trained on a whole art movement, fine-tuned on one master's
few hundred works. The source may be

- a run dir (its latest complete checkpoint) or a checkpoint dir: G, D and G_ema are
  loaded, including the mapping network's tracked ``w_avg`` (a buffer of G), so
  truncation works from the first fine-tuning step;
- a generator export (``generator.safetensors``): G and G_ema start from the exported
  G_ema (with its ``w_avg``), D starts from its fresh initialisation;
- an NVIDIA StyleGAN2-ADA / StyleGAN2 (TF) ``.pkl``, or an https URL of one: G, D and G_ema
  (with ``w_avg``), read by gan.nvidia's allow-list reader (nothing in the file is run). The
  run's ``model.*`` and ``data.resolution`` come from the pickle (:func:`pickle_overrides`);
  a value the user set that contradicts it is a ConfigError.

Only the networks are carried over: optimiser moments, counters, the ADA probability and
the RNG start afresh (that is what distinguishes a transfer from ``--resume``).

Every source is checked against the configured architecture before anything is built
(``check_source``): same resolution, RGB, and the same ``model.*`` values (channel counts,
latent sizes, mapping depth ...), else a one-line CheckpointError naming the first
difference.
"""

from __future__ import annotations

import dataclasses
import logging
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
            f"transfer.freeze_d must be in 0..{blocks} (the discriminator has {blocks} blocks at {resolution} px), got {freeze_d}"
        )


def classify_init_source(source: str | Path) -> tuple[str, Path]:
    """("export", file) for a weights file; ("checkpoint", dir) for a checkpoint or run dir.

    A run dir holds both a checkpoint and a ``generator.safetensors`` export; the checkpoint
    wins, since it also carries D.
    """
    path = Path(source)
    from gan.nvidia.source import KIND, is_nvidia_pickle

    if is_nvidia_pickle(path):
        return KIND, path
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

    A checkpoint or an NVIDIA pickle fills G, D and G_ema; an export fills G and G_ema (D stays as built).
    """
    kind, path = check_source(source, model, resolution, G.img_channels)
    if kind == "nvidia-pickle":
        from gan.nvidia.source import converted

        nets = converted(path)
        G_ema.load_state_dict(nets.G_ema)
        G.load_state_dict(nets.G if nets.G is not None else nets.G_ema)
        if nets.D is not None:
            D.load_state_dict(nets.D)
    elif kind == "export":
        from gan.export import load_generator

        weights = load_generator(path, device=device).state_dict()  # includes mapping.w_avg
        G.load_state_dict(weights)
        G_ema.load_state_dict(weights)
    else:
        load_networks(path, {"G": G, "D": D, "G_ema": G_ema}, device)
    return kind


def pickle_overrides(init_from: str | None, config_path: str | Path | None, overrides: list[str]) -> list[str]:
    """Config overrides that make a run match the NVIDIA pickle (or https URL) it starts from.

    Returns ``model.*`` and ``data.resolution`` as ``key=value`` items (plus ``transfer.init_from``
    pointing at the downloaded file for a URL), or [] when ``init_from`` is not a pickle. A value
    the user set explicitly, in the ``--config`` file or a ``--set``, that differs from the
    pickle's is a ConfigError naming both: the pickle decides the architecture.
    """
    if not init_from:
        return []
    from omegaconf import OmegaConf

    from gan.nvidia import source as nvidia

    try:
        path, url, digest = nvidia.localize(init_from)
        if not nvidia.is_nvidia_pickle(path):
            return []
        arch = nvidia.converted(path).arch
    except ValueError as exc:  # PickleRefused, UnsupportedNetwork, DownloadError: one line each
        raise ConfigError(f"{OPTION} {exc}") from None
    wanted = {f"model.{k}": v for k, v in dataclasses.asdict(arch.model).items()}
    wanted["data.resolution"] = arch.resolution
    given: dict[str, tuple[Any, str]] = {}
    if config_path is not None and Path(config_path).is_file():
        try:
            raw = OmegaConf.to_container(OmegaConf.load(config_path))
        except Exception:  # load_config reports a broken file with its own message
            raw = {}
        for section in ("model", "data"):
            for key, value in ((raw or {}).get(section) or {}).items():
                given[f"{section}.{key}"] = (value, str(config_path))
    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in wanted:
            given[key] = (OmegaConf.select(OmegaConf.from_dotlist([item]), key), "--set")
    for key, want in wanted.items():
        if key in given and given[key][0] != want and not _same_number(given[key][0], want):
            raise ConfigError(
                f"{OPTION} {init_from}: the pickle's network has {key}={want!r}, but {given[key][1]} sets "
                f"{key}={given[key][0]!r}; the architecture comes from the pickle, so leave {key} out"
            )
    extra = [f"{key}={'null' if value is None else value}" for key, value in wanted.items()]
    if url:  # the training loop takes a local path; config.yaml keeps the URL and the file's sha256
        extra += [f"transfer.init_from={path}", f"transfer.init_url={url}", f"transfer.init_sha256={digest}"]
        logging.getLogger(__name__).info("%s %s: downloaded to %s (sha256 %s)", OPTION, url, path, digest)
    return extra


def _same_number(a: Any, b: Any) -> bool:
    return isinstance(a, (int, float)) and isinstance(b, (int, float)) and float(a) == float(b)
