"""Experiment tracking through accelerate's tracker API: Weights & Biases or TensorBoard.

``choose_tracker`` turns the config, command-line flags and environment into one of
``"wandb"``, ``"tensorboard"`` or ``None``; W&B runs offline (synced later with
``wandb sync``) when no API key is configured, and ``WANDB_MODE=disabled`` or ``--no-wandb``
turns it off. Scalars go through ``accelerator.log``; sample grids go to the underlying
tracker objects (``wandb.Image`` / ``SummaryWriter.add_image``), because the two libraries
want images in different shapes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np

log = logging.getLogger(__name__)

TRACKERS = ("wandb", "tensorboard", "none")


def _wandb_key_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def choose_tracker(configured: str, cli_choice: Optional[str] = None, no_wandb: bool = False) -> Optional[str]:
    """The tracker to use (``"wandb"``, ``"tensorboard"``) or None; sets W&B offline mode when needed."""
    name = cli_choice or configured
    if name not in TRACKERS:
        raise ValueError(f"unknown tracker {name!r}; choose one of {', '.join(TRACKERS)}")
    if name == "wandb":
        mode = os.environ.get("WANDB_MODE", "")
        if no_wandb or mode == "disabled":
            return None
        if not mode and not _wandb_key_configured():
            # No key: log locally instead of failing or prompting; `wandb sync RUN_DIR/wandb/...` uploads later.
            os.environ["WANDB_MODE"] = "offline"
            log.info("no W&B API key found: logging offline (upload later with `wandb sync`)")
    return None if name == "none" else name


def start_tracking(accelerator: Any, tracker: Optional[str], project: str, run_dir: Path, config: dict) -> None:
    """Start the accelerate trackers with the resolved config (main process logs, others no-op)."""
    if tracker is None:
        return
    init_kwargs = {"wandb": {"name": run_dir.name, "dir": str(run_dir)}} if tracker == "wandb" else {}
    accelerator.init_trackers(project, config=_flat_config(config), init_kwargs=init_kwargs)


def _flat_config(config: dict, prefix: str = "") -> dict[str, Any]:
    """TensorBoard's hparams accept only scalars, so nested sections become ``section.key``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_config(value, name + "."))
        elif isinstance(value, (list, tuple)) or value is None:
            flat[name] = str(value)
        else:
            flat[name] = value
    return flat


def log_scalars(accelerator: Any, tracker: Optional[str], scalars: dict[str, float], step: int) -> None:
    if tracker is not None:
        accelerator.log(scalars, step=step)


def log_image(accelerator: Any, tracker: Optional[str], name: str, image: np.ndarray, step: int) -> None:
    """Log one HxWx3 uint8 image (a sample grid) to the active tracker."""
    if tracker is None or not accelerator.is_main_process:
        return
    if tracker == "wandb":
        import wandb

        accelerator.get_tracker("wandb", unwrap=True).log({name: wandb.Image(image)}, step=step)
    elif tracker == "tensorboard":
        accelerator.get_tracker("tensorboard", unwrap=True).add_image(name, image, step, dataformats="HWC")


def end_tracking(accelerator: Any, tracker: Optional[str]) -> None:
    if tracker is not None:
        accelerator.end_training()
