"""Exponential moving average of the generator's weights (G_ema), with ramp-up.

Karras et al. evaluate and sample from a running average of G rather than G itself: it
smooths out the oscillations of adversarial training. The average's half-life is given in
images (``ema_kimg``); early in training it is shortened (``ema_rampup``) so G_ema does not
remember the random initialisation for thousands of images.
"""

from __future__ import annotations

from typing import Optional

import torch


def ema_beta(batch: int, cur_nimg: int, ema_kimg: float, ema_rampup: Optional[float]) -> float:
    """Decay per minibatch so that the average's half-life is ``ema_nimg`` images.

    ``ema_nimg = min(ema_kimg * 1000, cur_nimg * rampup)`` when ramp-up is on; a minibatch of
    ``batch`` images then keeps ``0.5 ** (batch / ema_nimg)`` of the old average.
    """
    ema_nimg = ema_kimg * 1000.0
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    # max(): at cur_nimg == 0 the ramped half-life is zero; 1e-8 makes beta 0 (plain copy) instead of 0/0.
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """``p_ema <- beta * p_ema + (1 - beta) * p`` for every parameter; buffers are copied.

    Buffers (``mapping.w_avg``, constant noise maps) are not averaged: they already are
    running statistics or fixed tensors, so G_ema takes G's current values.
    """
    # foreach: one call over all tensors rather than a Python loop of small ops.
    torch._foreach_lerp_(list(G_ema.parameters()), [p.detach() for p in G.parameters()], 1.0 - beta)
    torch._foreach_copy_(list(G_ema.buffers()), [b.detach() for b in G.buffers()])
