"""Support for tests/test_training_parity.py: the NVIDIA fixture, name mapping, const-noise G.

The fixture ``tests/fixtures/parity/nvidia_phases.safetensors`` holds numbers only, made by
running NVIDIA's stylegan2-ada-pytorch (``training/loss.py`` StyleGAN2Loss and the phase /
optimiser / EMA code of ``training/training_loop.py``) on CPU in fp32, outside this repository
(docs/parity.md says how). Its tensors, under NVIDIA's parameter names:

- ``init/{G,D,G_ema}/<name>``: the perturbed starting weights (and G's buffers);
- ``inputs/...``: reals (uint8), the latents of every phase, the path-length noise, pl_mean;
- ``grad/<phase>/<name>``: every parameter's gradient of one phase (gain 1) from ``init``;
- ``after/<phase>/...``: w_avg (and pl_mean) after that phase;
- ``step/...``: weights, G_ema and pl_mean after two full training steps.

Its metadata ``meta`` (JSON) holds the configuration and each phase's loss value.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from gan.config import ModelConfig
from gan.nvidia.convert import nvidia_to_atelier_name

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "parity" / "nvidia_phases.safetensors"


def load_fixture(path: Path = FIXTURE) -> tuple[dict[str, torch.Tensor], dict]:
    """All tensors of the fixture and its metadata."""
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["meta"])
    return tensors, meta


def model_config(cfg: dict) -> ModelConfig:
    """The atelier ModelConfig of the fixture's networks (fp32, no clamping, as NVIDIA's were built)."""
    return ModelConfig(
        z_dim=cfg["z_dim"],
        w_dim=cfg["w_dim"],
        mapping_layers=cfg["mapping_layers"],
        mapping_lr_mul=0.01,
        channel_base=cfg["channel_base"],
        channel_max=cfg["channel_max"],
        mbstd_group=cfg["mbstd_group"],
        conv_clamp=None,
    )


def to_atelier(tensors: dict[str, torch.Tensor], prefix: str, network: str, resolution: int) -> dict[str, torch.Tensor]:
    """The fixture tensors under ``prefix`` (e.g. 'init/G/'), under atelier's names and layout.

    Uses the .pkl importer's own mapping (gan.nvidia.convert), so these tests check it too.
    The mapping is a renaming plus a kernel flip, i.e. a permutation: it applies to gradients
    as it does to weights.
    """
    out = {}
    for key, value in tensors.items():
        if key.startswith(prefix):
            mapping = nvidia_to_atelier_name(network, key[len(prefix) :], resolution)
            if mapping is not None:
                out[mapping.name] = value.flip([-2, -1]) if mapping.flip else value
    return out


class ConstNoise(nn.Module):
    """G with ``noise_mode='const'`` forced, so both sides add the same (stored) noise images.

    NVIDIA's loss calls its synthesis with random noise; the harness forced const there too.
    """

    def __init__(self, G: nn.Module) -> None:
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor, **kwargs) -> torch.Tensor:
        kwargs["noise_mode"] = "const"
        return self.G(z, **kwargs)


def max_rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (0 when both are all zero)."""
    scale = expected.abs().max().item()
    diff = (actual - expected).abs().max().item()
    return diff / scale if scale > 0 else diff


def update_rel_err(actual: torch.Tensor, before: torch.Tensor, expected: torch.Tensor, ulps: float = 4.0) -> float:
    """Error of a weight update relative to the update's size: max |actual - expected| over
    max |expected - before|, less the rounding of storing the weights themselves.

    The update, not the weight: an error in a step would vanish next to the weight. But a weight
    is stored in fp32 after each of the steps, so each side rounds it (mapping weights are stored
    x100 for the 0.01 lr multiplier): ``ulps`` units in the last place of each weight are allowed.
    """
    scale = (expected - before).abs().max().item()
    slack = ulps * torch.finfo(expected.dtype).eps * expected.abs()
    excess = ((actual - expected).abs() - slack).clamp(min=0).max().item()
    return excess / scale if scale > 0 else excess


STOCHASTIC_FIXTURE = FIXTURE.with_name("nvidia_stochastic.safetensors")
