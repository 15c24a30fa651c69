"""The training fast path: how ``perf.*`` in the config turns into settings on G and D.

Every switch here changes speed only, never the maths: the networks compute the same
function (up to float rounding) whichever options are on. What each option buys is
measured in docs/performance.md.

- ``perf.modconv``: modulated convolution as one grouped conv with per-sample weights
  ("grouped") or as activation scaling + a shared-weight conv + demodulation scaling
  ("batched", StyleGAN2 App. B). "auto" = batched while training (1.5x faster per step on
  CPU at the matched config, and what StyleGAN2-ADA itself does while training); sampling and
  export keep the networks' own default (grouped).
- ``perf.channels_last``: NHWC weights, so every conv and its activations run in the
  layout oneDNN/cuDNN prefer.
- ``perf.compile``: ``torch.compile`` of the forward passes of the main phases (G main,
  D main). The regularisation phases differentiate twice (R1, path length), which compiled
  graphs do not support, so they always run the eager modules. If compiling fails (no
  compiler, an unsupported op, an old torch) training warns once and continues eagerly.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from atelier.common.errors import first_line
from gan.config import PerfConfig

log = logging.getLogger(__name__)


@dataclass
class PerfChoices:
    """What was actually applied (for logs and benchmark rows)."""

    modconv: str  # grouped | batched
    channels_last: bool
    compile: bool  # asked for
    compiled: bool  # compile available and not (yet) fallen back


def resolve_modconv(choice: str, device: torch.device) -> str:
    """The modulated-conv implementation for training on ``device``.

    ``choice`` is one of gan.config.MODCONV_CHOICES (checked when the config is loaded).
    """
    # auto: batched on every device. Measured on CPU (docs/performance.md); on GPUs it is what
    # StyleGAN2-ADA uses in training (its grouped conv is for inference only).
    return "batched" if choice == "auto" else choice


class CompiledOrEager(nn.Module):
    """Calls a ``torch.compile``d module, falling back to the eager one for good on failure.

    ``eager = True`` routes calls to the eager module (for double-backward phases). The
    parameters are the wrapped module's own, so optimisers, ``requires_grad`` switches and
    checkpoints see no difference.
    """

    def __init__(self, module: nn.Module, name: str) -> None:
        super().__init__()
        self.module, self.name = module, name
        self.eager = False
        self.failed = False
        # Kept out of the module tree (object.__setattr__): it shares ``module``'s parameters.
        object.__setattr__(self, "_compiled", None)
        try:
            object.__setattr__(self, "_compiled", torch.compile(module))
        except Exception as exc:  # compile itself missing or refusing the module
            self._fall_back(exc)

    @property
    def compiled(self) -> bool:
        return not self.failed

    def _fall_back(self, exc: BaseException) -> None:
        self.failed = True
        object.__setattr__(self, "_compiled", None)
        warnings.warn(
            f"torch.compile of {self.name} failed ({type(exc).__name__}: {first_line(exc)}); running it eagerly",
            RuntimeWarning,
            stacklevel=3,
        )
        log.warning("torch.compile of %s failed; running it eagerly", self.name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.eager or self.failed:
            return self.module(*args, **kwargs)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as exc:  # compilation happens lazily, on the first call(s)
            self._fall_back(exc)
            return self.module(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # Attributes the loss reads (z_dim, num_ws, ...) come from the wrapped module.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("module"), name)


def apply_perf(perf: PerfConfig, G: nn.Module, D: nn.Module, device: torch.device) -> tuple[nn.Module, nn.Module, PerfChoices]:
    """Configure G and D in place for training; return the modules the loss should call.

    The returned modules are G and D themselves, or :class:`CompiledOrEager` wrappers around
    them when ``perf.compile`` is on.
    """
    modconv = resolve_modconv(perf.modconv, device)
    G.set_fused_modconv(modconv == "grouped")
    if perf.channels_last:
        G.to(memory_format=torch.channels_last)
        D.to(memory_format=torch.channels_last)
    G_run: nn.Module = G
    D_run: nn.Module = D
    if perf.compile:
        # Compile the backward graph together with the forward, inside CompiledOrEager's guard:
        # lazily compiled, a backward that fails to compile would crash in .backward() instead
        # of falling back to eager.
        try:
            import torch._functorch.config as functorch_config

            if hasattr(functorch_config, "force_non_lazy_backward_lowering"):  # process-wide switch
                functorch_config.force_non_lazy_backward_lowering = True
        except ImportError:  # a torch without it compiles the backward lazily; nothing to do
            pass
        G_run, D_run = CompiledOrEager(G, "G"), CompiledOrEager(D, "D")
    compiled = perf.compile and not (getattr(G_run, "failed", True) or getattr(D_run, "failed", True))
    return G_run, D_run, PerfChoices(modconv, perf.channels_last, perf.compile, compiled)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so wall-clock timings measure the computation (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_eager(modules: tuple[nn.Module, ...], eager: bool) -> None:
    """Route calls of any :class:`CompiledOrEager` among ``modules`` to eager (True) or compiled."""
    for module in modules:
        if isinstance(module, CompiledOrEager):
            module.eager = eager
