"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): a fixed, always-on alternative to ADA with the same call ``img -> img``.

Every image D sees (real and fake) gets all transforms of the policy, each drawn per
sample; all are differentiable so G gets gradients through them. Unlike ADA there is
no probability: the paper relies on the transforms being mild enough not to leak.
Policy ``"color,translation,cutout"`` (the paper's choice for few-shot data):

- color: brightness + U(-0.5, 0.5); saturation x U(0, 2) about the per-pixel channel
  mean; contrast x U(0.5, 1.5) about the image mean.
- translation: integer shift up to 1/8 of the image size per axis, zero fill.
- cutout: a zeroed square of half the image size at a uniform position.

Outputs are not clamped (as in the paper); translation and cutout keep [-1, 1].
The double backward R1 needs works through every op here (arithmetic and gather).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """Split ``"color,translation,cutout"``; ValueError naming an unknown entry."""
    names = tuple(name.strip() for name in policy.split(",") if name.strip())
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown[0]!r}; choose from {', '.join(POLICIES)}")
    if not names:
        raise ValueError("empty DiffAugment policy")
    return names


class DiffAugment(nn.Module):
    """DiffAugment as a module: ``DiffAugment("color,translation,cutout")(images) -> images``."""

    def __init__(self, policy: str = "color,translation,cutout", translation_ratio: float = 0.125, cutout_ratio: float = 0.5) -> None:
        super().__init__()
        self.policy = parse_policy(policy)
        self.translation_ratio = translation_ratio
        self.cutout_ratio = cutout_ratio

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy)}"

    def forward(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"expected images [N, C, H, W], got shape {tuple(images.shape)}")
        x = images
        for name in self.policy:
            x = getattr(self, f"_{name}")(x, generator)
        return x

    @staticmethod
    def _uniform(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype, generator=generator)

    def _color(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        x = x + (self._uniform(x, generator) - 0.5)  # brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (self._uniform(x, generator) * 2) + mean  # saturation
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (self._uniform(x, generator) + 0.5) + mean  # contrast

    def _translation(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        n, c, h, w = x.shape
        max_x, max_y = int(w * self.translation_ratio + 0.5), int(h * self.translation_ratio + 0.5)
        shift_x = torch.randint(-max_x, max_x + 1, (n, 1), device=x.device, generator=generator)
        shift_y = torch.randint(-max_y, max_y + 1, (n, 1), device=x.device, generator=generator)
        # One zero pixel of border: sources outside the image clamp onto it (zero fill).
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
        cols = (torch.arange(w, device=x.device)[None] - shift_x + 1).clamp(0, w + 1)  # [N, W]
        rows = (torch.arange(h, device=x.device)[None] - shift_y + 1).clamp(0, h + 1)  # [N, H]
        out = padded.gather(3, cols[:, None, None, :].expand(n, c, h + 2, w))
        return out.gather(2, rows[:, None, :, None].expand(n, c, h, w))

    def _cutout(self, x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        n, _, h, w = x.shape
        size_x, size_y = int(w * self.cutout_ratio + 0.5), int(h * self.cutout_ratio + 0.5)
        # Centres range so the square may hang over an edge, as in the paper.
        cx = torch.randint(0, w + (1 - size_x % 2), (n, 1), device=x.device, generator=generator)
        cy = torch.randint(0, h + (1 - size_y % 2), (n, 1), device=x.device, generator=generator)
        cols = torch.arange(w, device=x.device)[None]
        rows = torch.arange(h, device=x.device)[None]
        inside_x = (cols >= cx - size_x // 2) & (cols < cx - size_x // 2 + size_x)  # [N, W]
        inside_y = (rows >= cy - size_y // 2) & (rows < cy - size_y // 2 + size_y)  # [N, H]
        inside = inside_y[:, :, None] & inside_x[:, None, :]
        return x * (~inside)[:, None].to(x.dtype)
