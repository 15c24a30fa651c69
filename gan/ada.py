"""The adaptive part of ADA: tune the augmentation probability ``p`` from D's overfitting.

Karras et al. 2020 (Section 3) measure overfitting with ``r_t = E[sign(D(x_real))]``:
about 0 when D cannot tell training reals from fakes, approaching 1 when it has
memorised them. Every ``interval`` minibatches ``p`` moves by
``sign(r_t - target) * batch * interval / (speed_kimg * 1000)``, so it can go from 0 to 1
in ``speed_kimg`` thousand images, and is clamped to [0, 1].

Use in a training loop (one controller per process, same on every process; this is what
gan.training_loop does)::

    pipe, ada = from_config(cfg.augment, batch_size=cfg.train.batch,
                            reduce_fn=group.sum)   # gan.process_group.ProcessGroup
    ...  # D main step: real_logits = D(pipe(reals) if pipe else reals)
    if d_step_taken:                 # gradients finite: a skipped step must not move p
        ada.add_stats(real_logits.sign().sum(), real_logits.numel())   # or ada.observe(real_logits)
    ada.step()                       # once per minibatch; adjusts every `interval`
    log(ada.log_values())            # {"augment/p": ..., "augment/rt": ...}
    checkpoint["augment"] = ada.state_dict()   # plain JSON-able dict

Distributed training: each process accumulates its own (sum of signs, count) without
any host sync; at an adjustment step the pair is summed over processes with the
user-supplied ``reduce_fn`` (e.g. ``accelerator.reduce(t, reduction="sum")``), so every
process computes the same ``r_t`` and the same new ``p``. ``step()`` must therefore be
called on every process at the same minibatch, as the reduction is collective.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Optional

import torch
from torch import nn

from gan.augment import AugmentPipe, parse_groups
from gan.config import AugmentConfig, ConfigError
from gan.diffaugment import DiffAugment, parse_policy

log = logging.getLogger(__name__)

ReduceFn = Callable[[torch.Tensor], torch.Tensor]


class AdaptiveAugment:
    """ADA controller: accumulates sign(D(real)), adjusts ``pipe.p`` every ``interval`` steps.

    Args:
        pipe: the AugmentPipe whose ``p`` is driven (None: only measure ``r_t``).
        batch_size: images per minibatch over all processes (the global batch).
        target: the desired ``r_t`` (0.6 in the paper).
        interval: minibatches between adjustments.
        speed_kimg: thousands of images for ``p`` to move by 1.0.
        adaptive: False keeps ``p`` fixed (fixed-p mode) but still measures ``r_t``.
        reduce_fn: sums a tensor over processes; None for a single process.
        device: where the running statistics live (the logits' device; NCCL needs CUDA).
    """

    def __init__(
        self,
        pipe: Optional[AugmentPipe],
        batch_size: int,
        target: float = 0.6,
        interval: int = 4,
        speed_kimg: float = 500.0,
        adaptive: bool = True,
        reduce_fn: Optional[ReduceFn] = None,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        if speed_kimg <= 0:
            raise ValueError(f"speed_kimg must be positive, got {speed_kimg}")
        if not -1.0 <= target <= 1.0:
            raise ValueError(f"target must be in [-1, 1], got {target}")
        self.pipe = pipe
        self.batch_size = batch_size
        self.target = target
        self.interval = interval
        self.speed_kimg = speed_kimg
        self.adaptive = adaptive and pipe is not None
        self.reduce_fn = reduce_fn
        self.steps = 0  # minibatches seen (calls to step)
        self.adjustments = 0
        self.r_t: Optional[float] = None  # last measured E[sign(D(real))]
        self._stats = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of signs, count), this process

    @property
    def p(self) -> float:
        """Current augmentation probability (0 when there is no pipe)."""
        return self.pipe.probability if self.pipe is not None else 0.0

    @property
    def increment(self) -> float:
        """How far one adjustment moves ``p``."""
        return self.batch_size * self.interval / (self.speed_kimg * 1000)

    def observe(self, real_logits: torch.Tensor) -> None:
        """Accumulate sign(D(real)) of this process's minibatch (no host sync)."""
        logits = real_logits.detach().flatten()
        self.add_stats(torch.sign(logits).sum(), logits.numel())

    def add_stats(self, sign_sum: torch.Tensor | float, count: torch.Tensor | float) -> None:
        """Accumulate a per-process (sum of signs, number of logits) pair directly."""
        total = torch.as_tensor(sign_sum, dtype=torch.float64)
        pair = torch.stack([total, torch.as_tensor(count, dtype=torch.float64, device=total.device)])
        if self._stats.device != pair.device:
            self._stats = self._stats.to(pair.device)
        self._stats = self._stats + pair

    def local_stats(self) -> tuple[float, float]:
        """This process's pending (sum of signs, count) since the last adjustment."""
        total, count = self._stats.tolist()
        return total, count

    def step(self) -> bool:
        """Call once per D minibatch; every ``interval`` calls measure r_t and adjust p.

        Returns True when a measurement happened (a good moment to log).
        """
        self.steps += 1
        if self.steps % self.interval != 0:
            return False
        stats = self._stats.clone()
        if self.reduce_fn is not None:
            stats = self.reduce_fn(stats)
        total, count = stats.tolist()
        self._stats = torch.zeros_like(self._stats)
        if count <= 0:
            log.warning("ADA: no D(real) logits observed in the last %d steps; p unchanged", self.interval)
            return False
        if not math.isfinite(total):  # e.g. NaN logits a caller added anyway: they say nothing about overfitting
            log.warning("ADA: non-finite D(real) statistics in the last %d steps; p unchanged", self.interval)
            return False
        self.r_t = total / count
        if self.adaptive:
            new_p = self.p + _sign(self.r_t - self.target) * self.increment
            self.pipe.set_p(min(max(new_p, 0.0), 1.0))
            self.adjustments += 1
        return True

    def log_values(self) -> dict[str, float]:
        """Scalars for the tracker: ``augment/p`` (when a pipe exists) and ``augment/rt``."""
        values: dict[str, float] = {}
        if self.pipe is not None:
            values["augment/p"] = self.p
        if self.r_t is not None:
            values["augment/rt"] = self.r_t
        return values

    def state_dict(self) -> dict[str, Any]:
        """Plain JSON-able state: resume continues with the same p and pending statistics.

        With a ``reduce_fn`` (several processes) this is a collective, to be called on every
        process: the pending statistics saved are the sum over all of them, which one process
        takes back on resume (``load_state_dict(keep_pending=...)``).
        """
        stats = self._stats.clone()
        if self.reduce_fn is not None:
            stats = self.reduce_fn(stats)
        total, count = stats.tolist()
        return {
            "p": self.p,
            "r_t": self.r_t,
            "steps": self.steps,
            "adjustments": self.adjustments,
            "pending_sign_sum": total,
            "pending_count": count,
        }

    def load_state_dict(self, state: dict[str, Any], keep_pending: bool = True) -> None:
        """Restore ``state_dict()`` output (sets the pipe's p).

        ``keep_pending=False`` starts this process's pending statistics at zero: in a
        multi-process resume exactly one process keeps the saved (all-process) sums.
        """
        try:
            p = float(state["p"])
            r_t = None if state.get("r_t") is None else float(state["r_t"])
            steps = int(state["steps"])
            adjustments = int(state.get("adjustments", 0))
            pending = (float(state.get("pending_sign_sum", 0.0)), float(state.get("pending_count", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid ADA state: {exc!r}") from exc
        if self.pipe is not None:
            self.pipe.set_p(p)
        self.r_t, self.steps, self.adjustments = r_t, steps, adjustments
        self._stats = torch.tensor(pending if keep_pending else (0.0, 0.0), dtype=torch.float64, device=self._stats.device)


def _sign(value: float) -> float:
    return 0.0 if value == 0 else math.copysign(1.0, value)


def from_config(
    cfg: AugmentConfig, batch_size: int, reduce_fn: Optional[ReduceFn] = None, device: torch.device | str | None = None
) -> tuple[Optional[nn.Module], AdaptiveAugment]:
    """Build (augmentation module or None, controller) for ``cfg.mode``.

    - ``ada``: AugmentPipe(cfg.pipe) starting at cfg.p, p adapted toward cfg.target.
    - ``fixed``: AugmentPipe(cfg.pipe) at constant cfg.p.
    - ``diffaugment``: DiffAugment(cfg.diffaugment_policy), always applied.
    - ``none``: no augmentation.
    The controller always measures r_t (useful to compare runs with and without ADA);
    it only changes p in ``ada`` mode. Raises ConfigError naming the bad key (gan.config.validate
    has already checked augment.mode and augment.p for configs from load_config).
    """
    try:  # the strings are parsed first so a typo names its key
        if cfg.mode in ("ada", "fixed"):
            parse_groups(cfg.pipe)
            if not cfg.pipe:
                raise ValueError("no augmentation groups given")
        elif cfg.mode == "diffaugment":
            parse_policy(cfg.diffaugment_policy)
    except ValueError as exc:
        key = "augment.pipe" if cfg.mode in ("ada", "fixed") else "augment.diffaugment_policy"
        raise ConfigError(f"{key}: {exc}") from exc
    module: Optional[nn.Module] = None
    pipe: Optional[AugmentPipe] = None
    if cfg.mode in ("ada", "fixed"):
        pipe = AugmentPipe(cfg.pipe, p=cfg.p)  # its set_p refuses a p outside [0, 1]
        module = pipe
        if cfg.mode == "fixed" and cfg.p == 0:
            log.warning("augment.mode=fixed with augment.p=0 applies no augmentation")
    elif cfg.mode == "diffaugment":
        module = DiffAugment(cfg.diffaugment_policy)
    elif cfg.mode != "none":
        raise ConfigError(f"augment.mode {cfg.mode!r} is unknown")
    if module is not None and device is not None:
        module = module.to(device)
    try:
        controller = AdaptiveAugment(
            pipe,
            batch_size=batch_size,
            target=cfg.target,
            interval=cfg.interval,
            speed_kimg=cfg.speed_kimg,
            adaptive=cfg.mode == "ada",
            reduce_fn=reduce_fn,
            device=device,
        )
    except ValueError as exc:  # the controller names the argument; it is the augment.* key of the same name
        raise ConfigError(f"augment.{exc}") from exc
    return module, controller
