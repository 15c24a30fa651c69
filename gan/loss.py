"""StyleGAN2 losses: non-saturating logistic GAN loss, lazy R1, path-length regularisation.

Each method returns ``(loss, stats)``: a scalar tensor for the training loop to
backpropagate (with accelerate, and multiplied by the lazy-regularisation interval
itself), and a dict of detached tensors for logging. Nothing here calls ``.backward()``
or steps an optimiser.

Who holds which gradients:
- G phase (``g_main``, ``g_pathlen``): D's parameters are switched off
  (``requires_grad(D, False)``) while the graph is built, so backpropagating the G loss
  fills only G's ``.grad``.
- D phase (``d_main``, ``d_r1``): the fakes are generated under ``torch.no_grad()``, so
  backpropagating the D loss fills only D's ``.grad``.

G and D are plain modules (the training loop averages gradients over processes itself, see
gan.training_loop), so nothing here deals with DistributedDataParallel.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from gan.config import LossConfig

Stats = dict[str, torch.Tensor]


@contextlib.contextmanager
def requires_grad(module: nn.Module, flag: bool) -> Iterator[None]:
    """Set ``requires_grad`` of every parameter of ``module`` to ``flag`` for the block,
    then restore each parameter's own previous flag (so FreezeD-frozen blocks stay frozen)."""
    saved = [(p, p.requires_grad) for p in module.parameters()]
    for p, _ in saved:
        p.requires_grad_(flag)
    try:
        yield
    finally:
        for p, was in saved:
            p.requires_grad_(was)


class StyleGAN2Loss:
    """The StyleGAN2(-ADA) objective for a generator ``G`` and a discriminator ``D``.

    ``augment_pipe`` (img -> img, differentiable) is applied to every image D sees, real
    or fake (ADA, Karras et al. 2020b Sec. 2). ``pl_mean`` (the running path length)
    is state: save it with ``state_dict()``. ``process_mean`` (tensor -> its mean over the
    training processes, e.g. gan.process_group.ProcessGroup.mean) keeps one ``pl_mean`` for
    all processes; None with one process.
    """

    def __init__(
        self,
        G: nn.Module,
        D: nn.Module,
        cfg: LossConfig,
        augment_pipe: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        process_mean: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    ) -> None:
        self.G, self.D, self.cfg, self.augment_pipe = G, D, cfg, augment_pipe
        self.process_mean = process_mean
        device = next(G.parameters()).device
        self.pl_mean = torch.zeros([], device=device)

    # -- helpers ---------------------------------------------------------------------

    def _augment(self, img: torch.Tensor) -> torch.Tensor:
        return self.augment_pipe(img) if self.augment_pipe is not None else img

    def _generate(self, z: torch.Tensor, update_w_avg: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        return self.G(z, style_mix_prob=self.cfg.style_mixing, return_ws=True, update_w_avg=update_w_avg)

    # -- generator -------------------------------------------------------------------

    def g_main(self, z: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Non-saturating generator loss E[softplus(-D(G(z)))] (Goodfellow et al. 2014).

        Like every training pass through G's mapping (as in NVIDIA's code: G main, path length
        and D main's fakes), it also moves G's tracked w average.
        """
        img, _ = self._generate(z, update_w_avg=True)
        with requires_grad(self.D, False):
            logits = self.D(self._augment(img))
        loss = F.softplus(-logits).mean()
        return loss, {"loss/G": loss.detach(), "scores/fake": logits.detach().mean()}

    def g_pathlen(self, z: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """Path-length regularisation (StyleGAN2 Sec. 3.2, Eq. 4), weighted by pl_weight.

        Penalises (|J_w^T y| - a)^2 with y ~ N(0, I)/sqrt(H*W) and ``a`` the running mean
        of the path length, so a fixed step in W changes the image by a fixed amount
        whatever the direction. Uses ``z[: N // pl_batch_shrink]`` (cheaper, App. B).
        The returned loss is not multiplied by ``pl_interval``: the training loop does it.
        """
        batch = max(1, z.shape[0] // self.cfg.pl_batch_shrink)
        img, ws = self._generate(z[:batch], update_w_avg=True)
        # 1/sqrt(H*W) makes the expected |J^T y| independent of the image resolution.
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        (grads,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = grads.float().square().sum(dim=2).mean(dim=1).sqrt()
        local_mean = lengths.mean()
        batch_mean = local_mean.detach().clone()
        if self.process_mean is not None:
            # Average over processes so every process (and every checkpoint) has one pl_mean.
            batch_mean = self.process_mean(batch_mean)
        pl_mean = self.pl_mean.to(batch_mean.device)
        # Blend only a finite batch mean: the loop skips a non-finite step, but a NaN already
        # blended into the running mean would poison every later step. torch.where: no host sync.
        self.pl_mean = torch.where(torch.isfinite(batch_mean), pl_mean.lerp(batch_mean, self.cfg.pl_decay), pl_mean)
        # The penalty's target a = lerp(pl_mean, batch mean, pl_decay) is not detached, as in
        # StyleGAN2's TF code and StyleGAN2-ADA's: the gradient also flows through this batch's
        # mean length (docs/parity.md). Its value is the all-process mean, its gradient the local mean's.
        target = pl_mean.lerp(local_mean + (batch_mean - local_mean).detach(), self.cfg.pl_decay)
        penalty = (lengths - target).square().mean()
        # img * 0 ties every G parameter into the graph (e.g. the last ToRGB bias has no
        # second derivative here), so each gets a (zero) gradient and the loop's flattened
        # gradient all-reduce has the same layout in every G phase.
        loss = img[:, 0, 0, 0].float().mean() * 0 + penalty * self.cfg.pl_weight
        stats = {"loss/pl": penalty.detach(), "pl/mean": self.pl_mean.detach(), "pl/length": batch_mean}
        return loss, stats

    # -- discriminator ---------------------------------------------------------------

    def d_main(self, real_img: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """D loss E[softplus(D(G(z)))] + E[softplus(-D(x))], reals and fakes in ONE forward.

        One D pass for both halves is cheaper than two, and ``mbstd_split=2`` keeps reals
        and fakes in separate minibatch-stddev groups.
        ``scores/real_sign`` = E[sign(D(x))] is ADA's overfitting heuristic r_t.
        """
        if z.shape[0] != real_img.shape[0]:
            raise ValueError(f"d_main needs as many latents as reals, got {z.shape[0]} and {real_img.shape[0]}")
        with torch.no_grad():
            fake_img, _ = self._generate(z, update_w_avg=True)
        n = real_img.shape[0]
        imgs = torch.cat([real_img.to(fake_img.dtype), fake_img], dim=0)
        logits = self.D(self._augment(imgs), mbstd_split=2)
        real_logits, fake_logits = logits[:n], logits[n:]
        loss_real = F.softplus(-real_logits).mean()
        loss_fake = F.softplus(fake_logits).mean()
        loss = loss_real + loss_fake
        stats = {
            "loss/D": loss.detach(),
            "loss/D_real": loss_real.detach(),
            "loss/D_fake": loss_fake.detach(),
            "scores/real": real_logits.detach().mean(),
            "scores/fake": fake_logits.detach().mean(),
            "scores/real_sign": real_logits.detach().sign().mean(),
        }
        return loss, stats

    def d_r1(self, real_img: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """R1 penalty gamma/2 * E[|grad_x D(x)|^2] on reals (Mescheder et al. 2018).

        Returned without the ``r1_interval`` factor (lazy regularisation is the loop's job).
        """
        real = real_img.detach().float().requires_grad_(True)
        # fp32 throughout: the penalty squares a gradient obtained by a double backward;
        # in fp16 small gradients underflow (autograd.grad is not loss-scaled) and in bf16
        # the rounding of every backward step compounds. R1 runs only every r1_interval
        # minibatches, so full precision costs little.
        with torch.autocast(device_type=real.device.type, enabled=False):
            logits = self.D(self._augment(real)).float()
            (grads,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
            penalty = grads.square().sum(dim=[1, 2, 3]).mean()
        # logits * 0: every D parameter gets a (zero) gradient, as in g_pathlen.
        loss = logits.mean() * 0 + penalty * (self.cfg.r1_gamma / 2)
        return loss, {"loss/r1": penalty.detach(), "scores/real_r1": logits.detach().mean()}

    # -- state -----------------------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The loss's running state (tensors only, safetensors/weights_only friendly)."""
        return {"pl_mean": self.pl_mean.detach().clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"pl_mean"}:
            raise ValueError(f"loss state must hold exactly 'pl_mean', got {sorted(state)}")
        self.pl_mean = state["pl_mean"].detach().to(self.pl_mean.device, torch.float32).reshape([])
