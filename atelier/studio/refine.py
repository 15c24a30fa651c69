"""Refine one painting with the Gatys refiner of :mod:`eval.style_transfer`, watchable and stoppable.

Style sources are the painting's nearest real works (as the originality check found them),
works picked from the dataset by name, or uploaded images (decoded with atelier's safe image
decoding, with a pixel cap), optionally limited to a region painted in the browser. The
optimisation runs in a worker thread; every few iterations it hands the current image to the
UI, and a stop request ends the run keeping that image.
"""

from __future__ import annotations

import io
import logging
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from atelier.common.images import BadImage, inspect_image_bytes, open_image_rgb
from eval.style_transfer import FEATURE_LAYERS, TransferSettings

log = logging.getLogger(__name__)

MAX_STYLE_IMAGES = 8
UPLOAD_MAX_PIXELS = 40_000_000  # an upload larger than this (about 7000 x 5700) is refused before decoding
MAX_MASK_BYTES = 20_000_000  # as Gradio's upload cap (atelier.studio.server.MAX_UPLOAD)
MIN_WORK_SIZE = 64
MAX_WORK_SIZE = 1024


@dataclass
class RefineRequest:
    """What the Refine tab asks for."""

    strength: float = 0.75
    preserve_color: bool = False
    steps: int = 100
    size: int = 256  # working size (longer side); the painting is resized to it
    sources: Sequence[str] = ()  # names of the style images, for the record

    def settings(self) -> TransferSettings:
        """The refiner's settings, validated (ValueError names the setting)."""
        settings = TransferSettings(strength=float(self.strength), steps=int(self.steps), preserve_color=bool(self.preserve_color))
        settings.validate()
        if not MIN_WORK_SIZE <= int(self.size) <= MAX_WORK_SIZE:
            raise ValueError(f"size must be between {MIN_WORK_SIZE} and {MAX_WORK_SIZE} px, got {self.size}")
        return settings


@dataclass
class RefineState:
    """Shared between the worker and the UI: the latest image, progress, and the stop request."""

    total: int = 1
    done: int = 0
    latest: Optional[np.ndarray] = None
    version: int = 0  # bumped with every new ``latest``
    stop: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    error: Optional[str] = None
    result: Optional[np.ndarray] = None
    report: dict = field(default_factory=dict)


def to_tensor(image: np.ndarray, size: Optional[int] = None) -> torch.Tensor:
    """uint8 HWC -> [3, H, W] in [0, 1], resized (Lanczos) so the longer side is ``size``."""
    pil = Image.fromarray(np.ascontiguousarray(image[..., :3]))
    if size is not None and max(pil.size) != size:
        scale = size / max(pil.size)
        pil = pil.resize((max(16, round(pil.width * scale)), max(16, round(pil.height * scale))), Image.LANCZOS)
    return torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1).float() / 255


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [0, 1] -> uint8 HWC (rounded)."""
    return (image.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def load_upload(path: str | Path, max_pixels: int = UPLOAD_MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded style image with the scraper's checks (bombs, truncation, non-images); uint8 HWC.

    Raises ValueError naming the file (its base name only: upload paths are server temp paths).
    """
    try:
        return np.asarray(open_image_rgb(path, max_pixels=max_pixels), dtype=np.uint8)
    except BadImage as exc:
        raise ValueError(f"upload {Path(path).name}: {exc}") from exc


def style_tensors(images: Sequence[np.ndarray], size: int) -> list[torch.Tensor]:
    """Style images as [3, h, w] in [0, 1], shrunk (never enlarged: that would blur the brushwork) to ``size``."""
    if not images:
        raise ValueError("no style images: choose nearest works, pick works or upload images")
    if len(images) > MAX_STYLE_IMAGES:
        raise ValueError(f"at most {MAX_STYLE_IMAGES} style images, got {len(images)}")
    return [to_tensor(image, min(size, max(image.shape[:2]))) for image in images]


def load_mask_layer(path: str | Path, max_pixels: int = UPLOAD_MAX_PIXELS) -> np.ndarray:
    """The editor's brush layer as sent by the browser (a PNG upload), checked like any upload; uint8 RGBA.

    The checks are the scraper's (non-images, bombs, truncation); the alpha channel, where the
    brush painted, is kept (the RGB decoder would flatten it).
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_MASK_BYTES:
            raise BadImage(f"larger than {MAX_MASK_BYTES // 1_000_000} MB")
        data = path.read_bytes()
        inspect_image_bytes(data, max_pixels=max_pixels)
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGBA"), dtype=np.uint8)
    except (BadImage, OSError) as exc:
        raise ValueError(f"painted mask {path.name}: {exc}") from exc


def mask_from_editor(layers: Optional[np.ndarray], size: tuple[int, int]) -> Optional[torch.Tensor]:
    """The region painted in the browser as an [H, W] mask in [0, 1] (None when nothing was painted).

    ``layers`` is the editor's brush layer (RGBA, uint8): painted pixels have alpha > 0.
    """
    if layers is None:
        return None
    array = np.asarray(layers)
    if array.ndim != 3 or array.shape[2] < 4:
        return None
    alpha = array[..., 3].astype(np.float32) / 255.0
    if float(alpha.max()) <= 0:
        return None
    mask = torch.from_numpy(alpha)[None, None]
    return torch.nn.functional.interpolate(mask, size=size, mode="bilinear", align_corners=False)[0, 0].clamp(0, 1)


def run_refine(
    vgg, painting: np.ndarray, styles: Sequence[np.ndarray], request: RefineRequest, state: RefineState, mask: Optional[np.ndarray] = None
) -> RefineState:
    """Refine ``painting`` toward ``styles`` (:func:`eval.style_transfer.transfer`); fills ``state``.

    Runs in the caller's thread (the app starts it in a worker). ``state.latest`` follows the
    optimisation; a stop request ends it keeping the current image. ``mask``: the editor's brush
    layer; only the painted region is refined (every style applies inside it).
    """
    from eval.style_transfer import total_iterations, transfer

    try:
        settings = request.settings()
        device = next(vgg.parameters()).device
        content = to_tensor(painting, int(request.size)).to(device)
        styles_t = style_tensors(styles, int(request.size))
        region = mask_from_editor(mask, tuple(content.shape[-2:]))
        masks = None if region is None else [region] * len(styles_t)
        state.total = max(1, total_iterations(settings, content.shape[-2], content.shape[-1]))

        def progress(n: int) -> None:
            state.done = min(state.total, state.done + n)

        def on_step(done: int, images: torch.Tensor) -> bool:
            state.done = min(state.total, done)
            state.latest = to_uint8(images[0])
            state.version += 1
            return state.stop.is_set()

        result = transfer(vgg, content, styles_t, masks=masks, settings=settings, on_step=on_step, progress=progress)
        state.result = state.latest = to_uint8(result.images[0])
        state.report = {
            "style_loss_before": result.style_loss_before[0],
            "style_loss_after": result.style_loss_after[0],
            "content_loss": result.content_loss[0],
            "iterations": result.iterations,
            "stopped_early": result.stopped,
            "settings": {**asdict(settings), "size": int(request.size), "masked": region is not None},
            "sources": list(request.sources),
        }
    except Exception as exc:  # shown in the UI as one line; the worker must always finish
        log.warning("refine failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
        state.error = " ".join(str(exc).split()) or type(exc).__name__
    finally:
        state.finished.set()
    return state


def load_refiner_vgg(weights: Optional[str], weights_dir: Optional[str], device: str | torch.device):
    """VGG19 for the refiner (eval.vgg.load_vgg19); MissingWeightsError says which file and where to put it."""
    from eval.vgg import load_vgg19

    return load_vgg19(FEATURE_LAYERS, weights=weights, weights_dir=weights_dir, device=device)
