"""Typed training configuration: dataclasses, loaded from YAML presets in ``configs/``.

A preset is merged over these defaults by OmegaConf's structured configs, so a typo
in a key or a value of the wrong type is caught before any training starts and
reported as one line that names the key. Command-line overrides use dot-lists:
``--set train.batch=32 --set loss.r1_gamma=1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from atelier.common.errors import first_line
from atelier.common.fileio import atomic_write_text


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass
class DataConfig:
    path: str = "data/datasets/sample-32"  # a prepared dataset dir (scraping.prepare output)
    resolution: int = 32  # must equal the dataset's resolution
    xflip: bool = True  # random horizontal flips at training time (no copies on disk)
    workers: int = 2  # DataLoader worker processes
    cache: bool = True  # keep the decoded dataset in memory (one copy shared by the loader workers) when it fits
    # Several processes per machine (GPUs): one decoded copy per machine, in a file here that all map; "" = one per process.
    shm_dir: str = "/dev/shm"


@dataclass
class ModelConfig:
    z_dim: int = 512
    w_dim: int = 512
    mapping_layers: int = 8  # depth of the z -> w MLP
    mapping_lr_mul: float = 0.01  # mapping network learns 100x slower (StyleGAN2)
    channel_base: int = 32768  # channels at a layer = min(channel_base / res, channel_max)
    channel_max: int = 512
    mbstd_group: int = 4  # minibatch-stddev group size in D
    conv_clamp: Optional[float] = 256.0  # clamp activations; keeps fp16/bf16 finite


@dataclass
class LossConfig:
    r1_gamma: float = 10.0  # R1 weight on reals; 0 disables
    r1_interval: int = 16  # lazy regularisation: every N minibatches
    pl_weight: float = 2.0  # path-length regularisation weight; 0 disables
    pl_interval: int = 4
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    style_mixing: float = 0.9  # probability of mixing two latents in a minibatch


@dataclass
class TrainConfig:
    batch: int = 32  # global batch across all processes
    batch_per_gpu: Optional[int] = None  # smaller => gradient accumulation; None = batch / processes
    g_lr: float = 0.0025
    d_lr: float = 0.0025
    betas: list[float] = field(default_factory=lambda: [0.0, 0.99])
    eps: float = 1e-8
    ema_kimg: float = 10.0  # half-life of the G_ema average, in thousands of images
    ema_rampup: Optional[float] = 0.05  # ramp the half-life up early in training; null disables
    total_kimg: float = 25000.0
    seed: int = 0
    mixed_precision: str = "no"  # no | bf16 | fp16
    deterministic: bool = False  # bit-exact resume on CPU (slower on GPU)
    max_bad_steps: int = 10  # consecutive non-finite losses before the run stops


@dataclass
class AugmentConfig:
    mode: str = "ada"  # ada | fixed | diffaugment | none
    p: float = 0.0  # starting (ada) or constant (fixed) augmentation probability
    target: float = 0.6  # ADA target for E[sign(D(real))]
    interval: int = 4  # adjust p every N minibatches
    speed_kimg: float = 500.0  # p can move by 1.0 within this many kimg
    pipe: str = "bgc"  # augmentation groups: b=blit, g=geometry, c=colour, f=filter, n=noise/cutout
    diffaugment_policy: str = "color,translation,cutout"


@dataclass
class TransferConfig:
    init_from: Optional[str] = None  # checkpoint / run dir / generator export to start from
    freeze_d: int = 0  # freeze the first K discriminator blocks (FreezeD)
    # Set by the run itself when init_from was an https URL: where the file came from and the
    # sha256 of the bytes it trained from, so config.yaml says exactly what the run started from.
    init_url: Optional[str] = None
    init_sha256: Optional[str] = None


@dataclass
class CheckpointConfig:
    every_kimg: float = 50.0
    keep_last: int = 3
    # After SIGTERM/SIGINT a final checkpoint is written only if it can finish within this many
    # seconds of the signal (SLURM's default KillWait is 30 s); otherwise the run stops at once.
    stop_grace_sec: float = 25.0


@dataclass
class LogConfig:
    tracker: str = "wandb"  # wandb | tensorboard | none
    project: str = "atelier"
    tick_kimg: float = 4.0  # progress line / scalar logging interval
    sample_every_kimg: float = 50.0
    sample_seeds: int = 32  # fixed seeds 0..N-1 for the sample grid


@dataclass
class MetricsConfig:
    # SWD is on by default: it needs no pretrained weights, so every run has a quality curve
    # offline. Add e.g. kid, fd_dinov2, lpips_div, nn; [] turns in-training metrics off.
    metrics: list[str] = field(default_factory=lambda: ["swd"])
    every_kimg: float = 200.0
    num_samples: int = 1000
    weights_dir: Optional[str] = None  # folder of pretrained feature-extractor weights


@dataclass
class PerfConfig:
    compile: bool = False  # torch.compile G and D (falls back cleanly when unavailable)
    channels_last: bool = False
    modconv: str = "auto"  # auto | grouped | batched: modulated-conv implementation in training (gan/perf.py)
    fused_adam: bool = True  # one fused Adam kernel over all parameters instead of one op per tensor
    # With fused Adam: a non-finite update is skipped on the device (Adam's found_inf) and the
    # host reads the skip flags one step later on GPUs, so no phase waits for the GPU to drain.
    device_side_skip: bool = True


@dataclass
class TrainingConfig:
    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    perf: PerfConfig = field(default_factory=PerfConfig)


# Allowed values of string options. validate() is the one place they are checked (with a
# ConfigError before anything starts); modules that branch on them import these names.
AUGMENT_MODES = ("ada", "fixed", "diffaugment", "none")
MODCONV_CHOICES = ("auto", "grouped", "batched")
_CHOICES = {
    "train.mixed_precision": ("no", "bf16", "fp16"),
    "augment.mode": AUGMENT_MODES,
    "log.tracker": ("wandb", "tensorboard", "none"),
    "perf.modconv": MODCONV_CHOICES,
}


def _one_line(exc: OmegaConfBaseException) -> str:
    message = first_line(exc)
    key = getattr(exc, "full_key", None)
    return f"{key}: {message}" if key else message


def _presets_beside(path: Path) -> str:
    """A hint for a mistyped preset name: the YAML files in the folder it names, if any."""
    folder = path.parent if path.parent.is_dir() else None
    names = sorted(p.name for p in folder.glob("*.yaml")) if folder else []
    return f" (that folder has: {', '.join(names)})" if names else ""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainingConfig:
    """Load a preset YAML (or the defaults) and apply ``key=value`` overrides.

    Raises ConfigError with a one-line message naming the bad key or value.
    """
    schema = OmegaConf.structured(TrainingConfig)
    layers = [schema]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}{_presets_beside(path)}")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as exc:  # YAML syntax errors come from several libraries
            raise ConfigError(f"{path}: not valid YAML: {first_line(exc)}") from exc
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
    try:
        merged = OmegaConf.merge(*layers)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{path}: {_one_line(exc)}") from exc
    try:
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        cfg: TrainingConfig = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ConfigError(f"override: {_one_line(exc)}") from exc
    validate(cfg)
    return cfg


# Numeric ranges, checked by validate(): key -> (low, high, whether the low end is allowed).
# Integer counts and intervals start at 1 (or 0 where 0 means "none"); kimg intervals must be
# positive (0 would mean "never", e.g. no checkpoint at all, so a kill loses the whole run).
_INF = float("inf")
_RANGES: dict[str, tuple[float, float, bool]] = {
    "data.workers": (0, 256, True),
    "model.z_dim": (1, _INF, True),
    "model.w_dim": (1, _INF, True),
    "model.mapping_layers": (1, _INF, True),
    "model.mapping_lr_mul": (0, _INF, False),
    "model.channel_base": (1, _INF, True),
    "model.channel_max": (1, _INF, True),
    "model.mbstd_group": (1, _INF, True),
    "model.conv_clamp": (0, _INF, False),
    "loss.r1_gamma": (0, _INF, True),
    "loss.r1_interval": (1, _INF, True),
    "loss.pl_weight": (0, _INF, True),
    "loss.pl_interval": (1, _INF, True),
    "loss.pl_decay": (0, 1, True),
    "loss.pl_batch_shrink": (1, _INF, True),
    "loss.style_mixing": (0, 1, True),
    "train.batch": (1, _INF, True),
    "train.batch_per_gpu": (1, _INF, True),
    "train.g_lr": (0, _INF, False),
    "train.d_lr": (0, _INF, False),
    "train.eps": (0, _INF, False),
    "train.ema_kimg": (0, _INF, True),
    "train.ema_rampup": (0, _INF, True),
    "train.total_kimg": (0, _INF, False),
    "train.seed": (0, 2**63 - 1, True),
    "train.max_bad_steps": (1, _INF, True),
    "augment.p": (0, 1, True),
    "augment.target": (-1, 1, True),  # r_t = E[sign(D(real))] lies in [-1, 1]
    "augment.interval": (1, _INF, True),
    "augment.speed_kimg": (0, _INF, False),
    "transfer.freeze_d": (0, _INF, True),
    "checkpoint.every_kimg": (0, _INF, False),
    "checkpoint.keep_last": (1, _INF, True),
    "checkpoint.stop_grace_sec": (0, _INF, True),
    "log.tick_kimg": (0, _INF, False),
    "log.sample_every_kimg": (0, _INF, False),
    "log.sample_seeds": (0, 1024, True),
    "metrics.every_kimg": (0, _INF, False),
    "metrics.num_samples": (1, _INF, True),
}


def _check_range(key: str, value: Any, low: float, high: float, inclusive: bool) -> None:
    if value is None:  # optional values (batch_per_gpu, conv_clamp, ema_rampup): null means "off"/"auto"
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if math.isnan(value) or (math.isinf(value) and high != _INF):
        raise ConfigError(f"{key} must be a finite number, got {value}")
    above = value >= low if inclusive else value > low
    if not above or value > high:
        lower = f">= {low:g}" if inclusive else f"> {low:g}"
        bound = lower if high == _INF else f"{lower} and <= {high:g}"
        raise ConfigError(f"{key} must be {bound}, got {value:g}")


def validate(cfg: TrainingConfig) -> None:
    """Check values that types alone cannot; raise ConfigError naming the key."""
    res = cfg.data.resolution
    if res < 4 or res > 1024 or res & (res - 1):
        raise ConfigError(f"data.resolution must be a power of two in 4..1024, got {res}")
    for key, allowed in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
    for key, (low, high, inclusive) in _RANGES.items():
        section, name = key.split(".")
        _check_range(key, getattr(getattr(cfg, section), name), low, high, inclusive)
    if len(cfg.train.betas) != 2:
        raise ConfigError(f"train.betas must have two values, got {cfg.train.betas}")
    for i, beta in enumerate(cfg.train.betas):
        if not 0.0 <= beta < 1.0:
            raise ConfigError(f"train.betas[{i}] must be in [0, 1), got {beta}")


def to_dict(cfg: TrainingConfig) -> dict[str, Any]:
    """Plain nested dict of a config (for JSON/YAML run records and trackers)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def save_config(cfg: TrainingConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (temp name, then rename)."""
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.structured(cfg)))
