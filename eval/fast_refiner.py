"""A trained transfer network as one file, and applying it: ``refine --fast MODEL``.

The file is safetensors: the network's weights plus metadata (``format``, the network's
``config`` and a ``training`` record: style source, target, steps, VGG weights), so it loads
without unpickling anything and without the training run around it.

    refiner = load_fast_refiner("runs/refine-monet/transfer_net.safetensors")
    stylised = apply(refiner, images, strength=0.8)   # [N, 3, H, W] in [0, 1], any H, W
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Union

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from atelier.common.fileio import atomic_write
from atelier.common.hashing import file_sha256
from eval.refine_images import RefineInputError
from eval.transfer_net import TransferNet, TransferNetConfig

FORMAT = "atelier-transfer-net/1"


@dataclass
class FastRefiner:
    """A loaded transfer network, its file and what it was trained on."""

    net: TransferNet
    path: Path
    sha256: str
    training: dict[str, Any]

    @property
    def device(self) -> torch.device:
        """Where the network's weights live."""
        return next(self.net.parameters()).device

    def to(self, device: Union[str, torch.device]) -> "FastRefiner":
        """Move the network to ``device`` (returns self)."""
        self.net.to(device)
        return self


def save_fast_refiner(path: Path, net: TransferNet, training: dict[str, Any]) -> None:
    """Write the network and its metadata to ``path`` (safetensors; temp name, then rename)."""
    state = {key: value.detach().to("cpu").contiguous().clone() for key, value in net.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(asdict(net.config)), "training": json.dumps(training)}
    # atomic_write also gives the file the umask's permissions (safetensors writes it owner-only).
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_fast_refiner(path: Union[str, Path], device: Union[str, torch.device] = "cpu") -> FastRefiner:
    """Load a transfer network written by ``atelier refine-train``; RefineInputError (one line) if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise RefineInputError(f"--fast {path}: no such model file (train one with `atelier refine-train`)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RefineInputError(f"--fast {path}: not a safetensors model file ({' '.join(str(exc).split())[:120]})") from exc
    if metadata.get("format") != FORMAT:
        raise RefineInputError(f"--fast {path}: not an atelier transfer network (format {metadata.get('format')!r}, expected {FORMAT})")
    try:
        config = TransferNetConfig(**json.loads(metadata["config"]))
        training = json.loads(metadata.get("training", "{}"))
        net = TransferNet(config)
        net.load_state_dict(state, strict=True)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise RefineInputError(f"--fast {path}: weights do not fit the network its metadata describes ({reason})") from exc
    net.eval().requires_grad_(False)
    return FastRefiner(net.to(device), path, file_sha256(path), training)


@torch.no_grad()
def apply(refiner: FastRefiner, images: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Stylise ``images`` ([N, 3, H, W] or [3, H, W], RGB in [0, 1], any size) in one forward pass.

    ``strength`` blends with the input: ``s * f(x) + (1 - s) * x`` (0 returns the input, 1 the
    network's output).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be between 0 and 1, got {strength}")
    single = images.ndim == 3
    batch = (images[None] if single else images).to(refiner.device, torch.float32)
    if batch.ndim != 4 or batch.shape[1] != 3:
        raise ValueError(f"images must be [N, 3, H, W], got {tuple(images.shape)}")
    if strength == 0:
        return images
    stylised = refiner.net(batch)
    out = (strength * stylised + (1 - strength) * batch).clamp(0, 1)
    return out[0] if single else out
