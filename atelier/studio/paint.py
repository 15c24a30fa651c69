"""Painting with a loaded generator: seeds, variations around a w, style mixing, latent walks.

Everything here is a plain function of a generator and numbers, returning uint8 HWC images and
the :class:`Painting` records the studio shows, judges, refines and curates. The seed convention
is :mod:`gan.sampling`'s (NVIDIA's), so a seed painted here is the same picture ``generate``
writes for it.
"""

from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from gan.sampling import MAX_SEED, interpolate, latents_for_seeds, parse_seeds, save_gif, to_uint8_images

MAX_GRID = 64  # paintings per request: a grid is for looking at, not for bulk generation
MAX_FRAMES = 240
# StyleGAN's layer groups for style mixing, by the resolution a w drives (Karras et al. 2019, Sec. 3.1):
# coarse 4-8 px (pose, layout), middle 16-32 px (forms, strokes), fine 64 px and up (colour, texture).
LAYER_GROUPS = {"coarse": (4, 8), "middle": (16, 32), "fine": (64, 1 << 30)}

Progress = Callable[[float, str], None]


@dataclass
class Painting:
    """One painting the studio made: its pixels and everything needed to paint it again."""

    image: np.ndarray = field(repr=False)  # uint8 HWC
    kind: str  # "seed" | "variation" | "mix" | "refined" | "walk-frame"
    seed: Optional[int] = None
    psi: float = 1.0
    noise_mode: str = "const"
    recipe: dict = field(default_factory=dict)  # how a non-seed painting was made (base seed, step, layers, ...)
    w: Optional[torch.Tensor] = field(default=None, repr=False)  # [num_ws, w_dim] for variations of it

    @property
    def label(self) -> str:
        """A short caption: ``seed 12``, ``variation 3 of seed 12``, ``seed 4 x seed 9 (middle)``."""
        if self.kind == "seed":
            return f"seed {self.seed}"
        if self.kind == "variation":
            return f"variation {self.recipe.get('index')} of {self.recipe.get('base')}"
        if self.kind == "mix":
            return f"seed {self.recipe.get('row_seed')} x seed {self.recipe.get('col_seed')} ({self.recipe.get('layers')})"
        if self.kind == "refined":
            return f"refined {self.recipe.get('base')}"
        return self.kind

    def record(self) -> dict:
        """The JSON-able facts of this painting (no pixels, no tensors)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("image", "w")}
        data["label"] = self.label
        return data


def parse_seed_text(text: str, count: int, rng: Optional[random.Random] = None) -> list[int]:
    """Seeds from the Paint box: ``"0-7,12"`` as :func:`gan.sampling.parse_seeds`, or ``count`` random
    seeds when the box is empty or says ``random``. At most :data:`MAX_GRID` are painted."""
    text = (text or "").strip().lower()
    if text in ("", "random", "?"):
        if not 1 <= count <= MAX_GRID:
            raise ValueError(f"grid size must be between 1 and {MAX_GRID}, got {count}")
        rng = rng or random.Random()
        return [rng.randint(0, MAX_SEED) for _ in range(count)]
    seeds = parse_seeds(text)
    if len(seeds) > MAX_GRID:
        raise ValueError(f"{len(seeds)} seeds asked for; the studio paints at most {MAX_GRID} at once")
    return seeds


def _device(G) -> torch.device:
    return next(G.parameters()).device


@torch.no_grad()
def ws_for_seeds(G, seeds: Sequence[int], psi: float) -> torch.Tensor:
    """ws [N, num_ws, w_dim] of seeds after truncation (the picture's full description)."""
    z = latents_for_seeds(list(seeds), G.z_dim).to(_device(G))
    return G.mapping(z, psi=psi)


@torch.no_grad()
def synthesize(G, ws: torch.Tensor, noise_mode: str = "const", noise_seeds: Optional[Sequence[int]] = None) -> list[np.ndarray]:
    """uint8 HWC images of ws; ``random`` noise is seeded per image (``noise_seeds``) as in gan.sampling."""
    ws = ws.to(_device(G))
    if noise_mode != "random":
        return list(to_uint8_images(G.synthesis(ws, noise_mode=noise_mode)))
    noise_seeds = list(noise_seeds) if noise_seeds is not None else [0] * len(ws)
    images = []
    for w, noise_seed in zip(ws, noise_seeds):
        with torch.random.fork_rng(devices=[ws.device] if ws.device.type == "cuda" else []):
            torch.manual_seed(int(noise_seed))
            images.extend(to_uint8_images(G.synthesis(w[None], noise_mode="random")))
    return images


def paint_seeds(
    G,
    seeds: Sequence[int],
    psi: float = 0.7,
    noise_mode: str = "const",
    batch: int = 8,
    progress: Optional[Progress] = None,
    cancelled: Optional[Callable[[], bool]] = None,
) -> list[Painting]:
    """One :class:`Painting` per seed (same pixels as ``generate --seeds``), painted ``batch`` at a time."""
    out: list[Painting] = []
    for start in range(0, len(seeds), batch):
        if cancelled is not None and cancelled():
            break
        chunk = list(seeds[start : start + batch])
        ws = ws_for_seeds(G, chunk, psi)
        for seed, w, image in zip(chunk, ws, synthesize(G, ws, noise_mode, chunk)):
            out.append(Painting(image, "seed", seed=seed, psi=psi, noise_mode=noise_mode, w=w.cpu()))
        if progress is not None:
            progress(len(out) / len(seeds), f"painted {len(out)} of {len(seeds)}")
    return out


def variations(G, base: Painting, count: int = 8, step: float = 0.5, seed: int = 0, noise_mode: Optional[str] = None) -> list[Painting]:
    """``count`` small steps around a painting's w.

    Each variation adds a random direction in W to every layer's w; the direction is the
    mapping of a fresh z minus the average w, so it points where the generator actually goes,
    and ``step`` scales it (0 = the painting itself, 1 = as far as a new seed's w is from the mean).
    """
    if base.w is None:
        raise ValueError(f"{base.label} has no latent (an uploaded or refined image): paint a seed first")
    if not 1 <= count <= MAX_GRID:
        raise ValueError(f"variation count must be between 1 and {MAX_GRID}, got {count}")
    if not 0 <= step <= 4:
        raise ValueError(f"step size must be between 0 and 4, got {step}")
    device = _device(G)
    z = torch.from_numpy(np.random.RandomState(seed).randn(count, G.z_dim).astype(np.float32)).to(device)
    with torch.no_grad():
        directions = G.mapping(z, psi=1.0) - G.mapping.w_avg.to(device)
    ws = base.w.to(device)[None] + step * directions
    noise_mode = noise_mode or base.noise_mode
    noise_seeds = [base.seed or 0] * count
    return [
        Painting(
            image,
            "variation",
            psi=base.psi,
            noise_mode=noise_mode,
            w=w.cpu(),
            recipe={"base": base.label, "base_seed": base.seed, "step": step, "index": i, "direction_seed": seed},
        )
        for i, (w, image) in enumerate(zip(ws, synthesize(G, ws, noise_mode, noise_seeds)))
    ]


def layer_range(G, group: str) -> tuple[int, int]:
    """[start, stop) of the w indices that drive a layer group of this generator (empty if it has none)."""
    if group not in LAYER_GROUPS:
        raise ValueError(f"layer group must be one of {', '.join(LAYER_GROUPS)}, got {group!r}")
    low, high = LAYER_GROUPS[group]
    # Two ws per resolution, as in StyleGAN's mixing figure: 4 px -> ws 0-1, 8 px -> 2-3, 16 px -> 4-5, ...
    # (in StyleGAN2 a ToRGB shares the next block's first w, so the groups' edges overlap by one ToRGB).
    start = max(0, 2 * int(np.log2(low)) - 4)
    stop = min(G.num_ws, 2 * int(np.log2(min(high, G.resolution))) - 2)
    return (start, stop) if start < stop else (start, start)


def style_mix(
    G, row_seeds: Sequence[int], col_seeds: Sequence[int], group: str, psi: float = 0.7, noise_mode: str = "const"
) -> list[list[Painting]]:
    """Style-mixing grid: row ``i``, column ``j`` is row seed ``i`` with its ``group`` layers taken from column seed ``j``."""
    start, stop = layer_range(G, group)
    if start == stop:
        raise ValueError(f"this {G.resolution} px generator has no {group} layers (fine layers start at 64 px)")
    row_ws = ws_for_seeds(G, row_seeds, psi)
    col_ws = ws_for_seeds(G, col_seeds, psi)
    grid = []
    for row_seed, row_w in zip(row_seeds, row_ws):
        mixed = row_w[None].repeat(len(col_seeds), 1, 1)
        mixed[:, start:stop] = col_ws[:, start:stop]
        images = synthesize(G, mixed, noise_mode, [row_seed] * len(col_seeds))
        grid.append(
            [
                Painting(
                    image,
                    "mix",
                    psi=psi,
                    noise_mode=noise_mode,
                    w=w.cpu(),
                    recipe={"row_seed": row_seed, "col_seed": col_seed, "layers": group, "ws": [start, stop]},
                )
                for col_seed, w, image in zip(col_seeds, mixed, images)
            ]
        )
    return grid


def latent_walk(G, seed_a: int, seed_b: int, frames: int, psi: float = 0.7, noise_mode: str = "const") -> list[np.ndarray]:
    """Frames of the slerp walk from seed_a to seed_b (:func:`gan.sampling.interpolate`)."""
    if not 2 <= frames <= MAX_FRAMES:
        raise ValueError(f"frames must be between 2 and {MAX_FRAMES}, got {frames}")
    return interpolate(G, seed_a, seed_b, frames, psi=psi, noise_mode=noise_mode, batch=8)


def write_gif(
    frames: Sequence[np.ndarray], path: Path, fps: float = 24.0, xmp: Optional[str] = None, comment: Optional[str] = None
) -> Path:
    """The walk as a looping GIF (:func:`gan.sampling.save_gif`) with the disclosure packet and sentence."""
    return save_gif(frames, path, fps=fps, xmp=xmp, comment=comment)


def write_mp4(frames: Sequence[np.ndarray], path: Path, fps: int = 24, metadata: Optional[dict[str, str]] = None) -> Path:
    """The walk as an H.264 MP4 (yuv420p, so browsers and phones play it) through PyAV, with container
    tags (``metadata``: atelier.common.disclosure.video_metadata, the disclosure for video)."""
    import av

    from atelier.common.fileio import atomic_write_bytes

    if not frames:
        raise ValueError("a video needs at least one frame")
    height, width = frames[0].shape[:2]
    # yuv420p needs even sides; tiny models (e.g. 32 px) are doubled so players show more than a dot.
    scale = max(1, int(np.ceil(128 / max(height, width))))
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        container.metadata.update(metadata or {})
        stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
        stream.width, stream.height = width * scale, height * scale
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18"}
        for frame in frames:
            big = np.ascontiguousarray(frame.repeat(scale, axis=0).repeat(scale, axis=1)[..., :3])
            for packet in stream.encode(av.VideoFrame.from_ndarray(big, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return atomic_write_bytes(path, buffer.getvalue(), fsync=False)
