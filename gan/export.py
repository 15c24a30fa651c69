"""Generator export: one self-describing safetensors file, and loading a generator from any run artefact.

An export holds the ``G_ema`` state dict (parameters and buffers such as ``mapping.w_avg``
and the constant noise maps) plus JSON metadata under the safetensors header key
``"atelier"``::

    {"format": "atelier-generator/1", "model": {...ModelConfig...}, "resolution": 256,
     "img_channels": 3, "created": "...", "kimg": ..., "run": ..., "weights_sha256": "...",
     "provenance": {"artists": [...], "work_count": ..., "dataset_sha256": ..., "licence": ...}}

so ``generate`` needs nothing else. :func:`load_generator` also accepts a checkpoint dir
(``G_ema.safetensors`` + ``state.json``) and a run dir (its ``generator.safetensors``, else
its latest complete checkpoint). Nothing is ever unpickled: weights come from safetensors,
everything else from JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

from atelier.common.dataset_format import DatasetError, load_dataset_info
from atelier.common.disclosure import dataset_provenance, unknown_provenance
from atelier.common.errors import first_line, one_line
from atelier.common.fileio import atomic_write
from atelier.common.hashing import tensors_sha256
from gan.checkpoint import CHECKPOINTS_DIR, NETWORK_FILES, STATE_FILE, latest_checkpoint
from gan.checkpoint import FORMAT as CHECKPOINT_FORMAT
from gan.config import ModelConfig
from gan.networks import Generator

log = logging.getLogger(__name__)

FORMAT = "atelier-generator/1"
METADATA_KEY = "atelier"  # safetensors header metadata is str -> str, so the JSON lives under one key
EXPORT_NAME = "generator.safetensors"  # a run dir's latest export
CHECKPOINT_WEIGHTS = NETWORK_FILES["G_ema"]  # a training checkpoint's (gan.checkpoint) sampling weights
CHECKPOINT_STATE = STATE_FILE
_CORE_KEYS = ("format", "model", "resolution", "img_channels", "weights_sha256")
PROVENANCE_KEY = "provenance"  # what the model learnt from (atelier.common.disclosure)
RUN_CONFIG = "config.yaml"  # a run dir's resolved training config
MIN_RESOLUTION, MAX_RESOLUTION = 4, 1024  # gan.config's data.resolution range
MAX_IMG_CHANNELS = 4
# Plausible ranges of stored ModelConfig values, checked before anything is built: generous
# for real StyleGAN2 configs (z/w 512, 8 mapping layers, channel_max 512), but a typo such as
# z_dim=10**9 or channel_base=2**30 stops here rather than allocating gigabytes.
MODEL_LIMITS: dict[str, tuple[float, float]] = {
    "z_dim": (1, 4096),
    "w_dim": (1, 4096),
    "mapping_layers": (1, 16),
    "mapping_lr_mul": (1e-6, 1e3),
    "channel_base": (1, 2**20),
    "channel_max": (1, 4096),
    "mbstd_group": (1, 256),
    "conv_clamp": (1e-3, 1e6),
}
# Wrappers that prefix state-dict keys (DDP, torch.compile); stripped so their checkpoints load too.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class GeneratorLoadError(ValueError):
    """A path is not a loadable atelier generator; the message is one line naming the problem."""


@dataclass(frozen=True)
class GeneratorSource:
    """Where a generator's weights live and what architecture they describe."""

    kind: str  # "export" | "checkpoint" | "nvidia-pickle"
    weights: Path  # the safetensors file holding the G_ema state dict
    meta: dict[str, Any]  # format, model, resolution, img_channels and any extras


# --------------------------------------------------------------------------- saving


def save_generator(
    G: torch.nn.Module,
    resolution: int,
    model_cfg: ModelConfig | Mapping[str, Any],
    path: str | os.PathLike,
    extra_meta: Optional[Mapping[str, Any]] = None,
    provenance: Optional[Mapping[str, Any]] = None,
    model_card: bool = True,
) -> Path:
    """Write ``G``'s state dict and its architecture as one safetensors file (temp name, then rename).

    ``extra_meta`` (JSON-serialisable, e.g. ``{"kimg": 120.5, "run": "runs/x"}``) is stored next
    to the core keys, which it may not override. ``provenance`` (atelier.common.disclosure) says what
    the model learnt from; by default it is read from the run (``extra_meta["run"]``: its
    config.yaml names the dataset) or, for a converted NVIDIA pickle, says the data is unknown.
    It is stored with the tensors' hash (``weights_sha256``), and a MODEL_CARD.md is written beside
    the file (gan.model_card) unless ``model_card`` is False. Returns the written path.
    """
    path = Path(path)
    extra_meta = dict(extra_meta or {})
    if provenance is None:
        provenance = extra_meta.pop(PROVENANCE_KEY, None) or provenance_for_export(extra_meta)
    model = dataclasses.asdict(model_cfg) if dataclasses.is_dataclass(model_cfg) else dict(model_cfg)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "model": model,
        "resolution": int(resolution),
        "img_channels": int(getattr(G, "img_channels", 3)),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for key, value in (extra_meta or {}).items():
        if key in _CORE_KEYS:
            raise ValueError(f"extra_meta may not override the core key {key!r}")
        meta[key] = value
    # clone(): safetensors refuses tensors that share storage, and we must not hold views into G.
    tensors = {name: t.detach().to("cpu").contiguous().clone() for name, t in G.state_dict().items()}
    meta[PROVENANCE_KEY] = dict(provenance)
    meta["weights_sha256"] = tensors_sha256(tensors)
    header = {METADATA_KEY: json.dumps(meta, sort_keys=True), "format": "pt"}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))
    if model_card:
        from gan.model_card import write_model_card

        try:
            write_model_card(path, meta)
        except (OSError, ValueError) as exc:  # the weights are saved; a card can be rewritten later
            log.warning("%s: model card not written: %s", path, one_line(exc, None))
    return path


# --------------------------------------------------------------------------- provenance


def _base_model_name(init_from: Any) -> Optional[str]:
    if not init_from:
        return None
    text = str(init_from)
    return text.rstrip("/").rsplit("/", 1)[-1] if text.startswith(("http://", "https://")) else text


def _find_dataset(data_path: str, run_dir: Optional[Path]) -> Path:
    """The dataset dir a run trained on: as written (relative to where training ran), else relative
    to the run dir's parent's parent (``runs/<run>`` sits in the project root)."""
    path = Path(data_path)
    if path.is_absolute() or path.exists() or run_dir is None:
        return path
    beside = run_dir.resolve().parent.parent / path
    return beside if beside.exists() else path


def training_provenance(config: Mapping[str, Any], run_dir: Optional[Path] = None) -> dict[str, Any]:
    """Provenance from a resolved training config: the dataset named by ``data.path`` (its
    dataset.json: artists, work count, content hash, licences) and the base model
    (``transfer.init_from``). A dataset that cannot be read gives honest "unknown" provenance."""
    data_path = (config.get("data") or {}).get("path") if isinstance(config.get("data"), Mapping) else None
    transfer = config.get("transfer") if isinstance(config.get("transfer"), Mapping) else {}
    base = _base_model_name(transfer.get("init_from"))
    if not data_path:
        return unknown_provenance(base, "the training config names no dataset")
    dataset = _find_dataset(str(data_path), run_dir)
    try:
        info = load_dataset_info(dataset)
    except DatasetError as exc:
        return unknown_provenance(base, f"training dataset not readable: {exc}")
    return {**dataset_provenance(info, name=dataset.name), "base_model": base}


def run_provenance(run_dir: str | os.PathLike) -> dict[str, Any]:
    """:func:`training_provenance` of a run dir's ``config.yaml``."""
    run_dir = Path(run_dir)
    try:
        config = yaml.safe_load((run_dir / RUN_CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return unknown_provenance(None, f"{run_dir / RUN_CONFIG} not readable ({first_line(exc)})")
    if not isinstance(config, dict):
        return unknown_provenance(None, f"{run_dir / RUN_CONFIG} is not a mapping")
    return training_provenance(config, run_dir)


def _nvidia_name(origin: Mapping[str, Any]) -> str:
    parts = [f"NVIDIA {origin.get('format') or 'StyleGAN2'} pickle {origin.get('file') or '?'}"]
    if origin.get("sha256"):
        parts.append(f"(sha256 {str(origin['sha256'])[:16]})")
    return " ".join(parts)


def provenance_for_export(extra_meta: Mapping[str, Any]) -> dict[str, Any]:
    """What an export being written learnt from, judged from its extra metadata (see save_generator)."""
    if isinstance(extra_meta.get("nvidia"), Mapping):
        return unknown_provenance(_nvidia_name(extra_meta["nvidia"]), "converted from an NVIDIA pickle")
    if extra_meta.get("run"):
        return run_provenance(extra_meta["run"])
    return unknown_provenance(None, "no training run recorded")


def generator_provenance(source: "GeneratorSource") -> dict[str, Any]:
    """Provenance of any loadable generator: the export's recorded one; for a checkpoint, its
    training config; for an NVIDIA pickle or an export written before provenance was recorded,
    an honest "training data unknown"."""
    meta = source.meta
    if isinstance(meta.get(PROVENANCE_KEY), Mapping):
        return dict(meta[PROVENANCE_KEY])
    if source.kind == "nvidia-pickle" or isinstance(meta.get("nvidia"), Mapping):
        origin = dict(meta.get("nvidia") or {})
        origin.setdefault("file", source.weights.name)
        return unknown_provenance(_nvidia_name(origin), "NVIDIA pickle")
    if source.kind == "checkpoint":
        try:
            state = json.loads((source.weights.parent / CHECKPOINT_STATE).read_text())
        except (OSError, ValueError):
            state = {}
        config = state.get("config") if isinstance(state, dict) else None
        if isinstance(config, Mapping):
            run = state.get("run")
            return training_provenance(config, Path(run) if run else source.weights.parent.parent.parent)
    if meta.get("run") and (Path(meta["run"]) / RUN_CONFIG).is_file():
        return run_provenance(meta["run"])
    return unknown_provenance(None, "exported before atelier recorded provenance")


# --------------------------------------------------------------------------- finding


def resolve_source(path: str | os.PathLike) -> GeneratorSource:
    """Find the weights file and architecture metadata for an export file, checkpoint dir or run dir,
    an NVIDIA StyleGAN2(-ADA) ``.pkl`` (read safely, see gan.nvidia) or an https URL of one."""
    from gan.nvidia import source as nvidia

    try:
        path, url, digest = nvidia.localize(path)  # an https URL is downloaded into the cache first
        if nvidia.is_nvidia_pickle(path):
            return GeneratorSource(nvidia.KIND, path, nvidia.generator_meta(path, FORMAT, url, digest))
    except ValueError as exc:  # PickleRefused, UnsupportedNetwork, DownloadError: one line each
        raise GeneratorLoadError(str(exc)) from None
    if not path.exists():
        raise GeneratorLoadError(f"generator not found: {path} does not exist")
    if path.is_file():
        if path.name == CHECKPOINT_WEIGHTS and (path.parent / CHECKPOINT_STATE).is_file():
            return _checkpoint_source(path.parent)  # a checkpoint's G_ema file, named directly
        return GeneratorSource("export", path, _export_meta(path))
    if (path / CHECKPOINT_WEIGHTS).is_file() or (path / CHECKPOINT_STATE).is_file():
        return _checkpoint_source(path)
    if (path / EXPORT_NAME).is_file():
        return GeneratorSource("export", path / EXPORT_NAME, _export_meta(path / EXPORT_NAME))
    if (path / CHECKPOINTS_DIR).is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise GeneratorLoadError(f"{path}: run dir has no {EXPORT_NAME} and no complete checkpoint under {CHECKPOINTS_DIR}/")
        return _checkpoint_source(latest)
    raise GeneratorLoadError(
        f"{path}: not a generator export, checkpoint dir ({CHECKPOINT_WEIGHTS} + {CHECKPOINT_STATE}) "
        f"or run dir ({EXPORT_NAME} or {CHECKPOINTS_DIR}/)"
    )


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, list[int]]]:
    """Header metadata and tensor shapes of a safetensors file, without loading the weights."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            shapes = {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers
        reason = first_line(exc)
        raise GeneratorLoadError(f"{path}: not a safetensors file ({reason})") from exc
    return metadata, shapes


def _export_meta(path: Path) -> dict[str, Any]:
    metadata, _ = _read_header(path)
    if METADATA_KEY not in metadata:
        raise GeneratorLoadError(f"{path}: not an atelier generator (no {METADATA_KEY!r} metadata in the header)")
    try:
        meta = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise GeneratorLoadError(f"{path}: {METADATA_KEY!r} metadata is not valid JSON ({exc})") from exc
    _check_meta(meta, path)
    return meta


def _checkpoint_source(ckpt: Path) -> GeneratorSource:
    weights, state_path = ckpt / CHECKPOINT_WEIGHTS, ckpt / CHECKPOINT_STATE
    for required in (weights, state_path):
        if not required.is_file():
            raise GeneratorLoadError(f"{ckpt}: incomplete checkpoint, {required.name} is missing")
    try:
        state = json.loads(state_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GeneratorLoadError(f"{state_path}: not valid JSON ({exc})") from exc
    meta = _meta_from_state(state, state_path)
    _check_meta(meta, state_path)
    return GeneratorSource("checkpoint", weights, meta)


def _meta_from_state(state: Any, where: Path) -> dict[str, Any]:
    """Architecture metadata from a checkpoint's state.json.

    The model config and resolution are read from the top level (``model``, ``resolution``)
    or from the resolved training config stored there (``config.model``, ``config.data.resolution``).
    """
    if not isinstance(state, dict):
        raise GeneratorLoadError(f"{where}: expected a JSON object")
    if state.get("format", CHECKPOINT_FORMAT) != CHECKPOINT_FORMAT:
        raise GeneratorLoadError(f"{where}: not an atelier checkpoint (format {state['format']!r}, expected {CHECKPOINT_FORMAT!r})")
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    model = state.get("model", config.get("model"))
    resolution = state.get("resolution", (config.get("data") or {}).get("resolution"))
    if model is None or resolution is None:
        raise GeneratorLoadError(f"{where}: not an atelier checkpoint (no model config or resolution)")
    meta = {"format": FORMAT, "model": model, "resolution": resolution, "img_channels": state.get("img_channels", 3)}
    for key in ("kimg", "step", "run"):
        if key in state:
            meta[key] = state[key]
    return meta


def _check_meta(meta: Any, where: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise GeneratorLoadError(f"{where}: not an atelier generator (format {found!r}, expected {FORMAT!r})")
    if not isinstance(meta.get("model"), dict):
        raise GeneratorLoadError(f"{where}: metadata has no 'model' config")
    for key in ("resolution", "img_channels"):
        if not _is_int(meta.get(key)) or meta[key] <= 0:
            raise GeneratorLoadError(f"{where}: metadata {key!r} must be a positive integer, got {meta.get(key)!r}")
    res = meta["resolution"]
    if not MIN_RESOLUTION <= res <= MAX_RESOLUTION or res & (res - 1):
        raise GeneratorLoadError(f"{where}: metadata 'resolution' must be a power of two in {MIN_RESOLUTION}..{MAX_RESOLUTION}, got {res}")
    if meta["img_channels"] > MAX_IMG_CHANNELS:
        raise GeneratorLoadError(f"{where}: metadata 'img_channels' must be at most {MAX_IMG_CHANNELS}, got {meta['img_channels']}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- loading


def describe_generator(path: str | os.PathLike) -> dict[str, Any]:
    """Metadata of a generator (export, checkpoint dir or run dir) without loading its weights.

    Returns the stored metadata plus ``kind`` ("export" | "checkpoint") and ``weights`` (path).
    """
    source = resolve_source(path)
    return {**source.meta, "kind": source.kind, "weights": str(source.weights)}


def model_config_from_meta(model: Mapping[str, Any], where: Path | str = "metadata") -> ModelConfig:
    """Build a ModelConfig from a stored dict; unknown keys are an error, missing ones take defaults.

    Every value is type- and range-checked (:data:`MODEL_LIMITS`) so a typo'd or hostile file
    is a one-line GeneratorLoadError instead of a network of billions of parameters.
    """
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(model) - known)
    if unknown:
        raise GeneratorLoadError(f"{where}: model config has unknown key {unknown[0]!r} (written by a newer atelier?)")
    missing = sorted(known - set(model))
    if missing:
        log.warning("%s: model config lacks %s; using defaults", where, ", ".join(missing))
    for key, value in model.items():
        _check_model_value(key, value, where)
    return ModelConfig(**dict(model))


def _check_model_value(key: str, value: Any, where: Path | str) -> None:
    if key == "conv_clamp" and value is None:
        return  # no clamping
    if key not in MODEL_LIMITS:  # tests require a limit for every ModelConfig field
        return
    low, high = MODEL_LIMITS[key]
    if isinstance(low, int):
        ok_type, kind = _is_int(value), "an integer"
    else:  # floats: ints are fine too, NaN/inf are not (the range test fails for NaN)
        ok_type, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    if not ok_type or not low <= value <= high:
        raise GeneratorLoadError(f"{where}: model.{key} must be {kind} in {low}..{high}, got {value!r}")


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """Load an eval-mode, frozen Generator from an export file, a checkpoint dir or a run dir.

    Raises GeneratorLoadError (one line) when the path is missing, is not an atelier generator,
    or its weights do not match the architecture its metadata describes.
    """
    source = resolve_source(path)
    if source.kind == "nvidia-pickle":
        from gan.nvidia.source import pickle_generator

        return pickle_generator(source.weights, device)
    cfg = model_config_from_meta(source.meta["model"], source.weights)
    _, shapes = _read_header(source.weights)
    rename = _prefix_stripper(shapes)
    shapes = {rename(k): v for k, v in shapes.items()}
    # Compare shapes against a parameter-free (meta-device) build first: a file whose tensors do
    # not fit its metadata is refused before any memory is allocated for the described network.
    _check_weights(shapes, _build(cfg, source, device="meta"), source.weights)
    G = _build(cfg, source, device="cpu")
    data = source.weights.read_bytes()  # read once: verified and loaded from the same bytes
    tensors = {rename(k): v for k, v in load_safetensors_bytes(data).items()}
    _verify_weights(source, data, tensors)
    G.load_state_dict(tensors, strict=True)
    return G.to(device).eval().requires_grad_(False)


def _verify_weights(source: GeneratorSource, data: bytes, tensors: Mapping[str, torch.Tensor]) -> None:
    """Refuse weights that differ from the digest recorded when they were written (a flipped
    byte, a half-copied file): an export's ``weights_sha256``, a checkpoint's state.json
    ``files_sha256`` or, for older checkpoints, process-0.json's G_ema digest."""
    expected, where = None, None
    if source.kind == "export":
        expected, where = source.meta.get("weights_sha256"), "its metadata"
    elif source.kind == "checkpoint":
        from gan.checkpoint import process_digests

        try:
            state = json.loads((source.weights.parent / CHECKPOINT_STATE).read_text())
            files = state.get("files_sha256") if isinstance(state, dict) else None
            recorded = files.get(source.weights.name) if isinstance(files, dict) else None
            if not isinstance(recorded, str):
                expected, where = process_digests(source.weights.parent).get(0, {}).get("G_ema"), "process-0.json"
        except (OSError, ValueError, KeyError, TypeError):
            return  # state.json was read and checked by resolve_source; old checkpoints may lack digests
        if isinstance(recorded, str):
            if hashlib.sha256(data).hexdigest() != recorded:
                raise GeneratorLoadError(f"{source.weights}: damaged, its sha256 differs from the one recorded in {CHECKPOINT_STATE}")
            return
    if isinstance(expected, str) and tensors_sha256(tensors) != expected:
        raise GeneratorLoadError(f"{source.weights}: damaged, its weights do not match the sha256 recorded in {where}")


def _build(cfg: ModelConfig, source: GeneratorSource, device: str) -> Generator:
    try:
        with torch.device(device):
            return Generator(cfg, resolution=source.meta["resolution"], img_channels=source.meta["img_channels"])
    except Exception as exc:  # an impossible combination of in-range values fails inside the constructor
        reason = one_line(exc, None)
        raise GeneratorLoadError(f"{source.weights}: cannot build the described generator ({reason})") from exc


def _prefix_stripper(shapes: Mapping[str, Any]):
    for prefix in _WRAPPER_PREFIXES:
        if shapes and all(k.startswith(prefix) for k in shapes):
            return lambda k, n=len(prefix): k[n:]
    return lambda k: k


def _check_weights(shapes: Mapping[str, list[int]], G: torch.nn.Module, where: Path) -> None:
    """Compare stored tensor names/shapes with the built generator; name the first offender."""
    expected = {name: list(t.shape) for name, t in G.state_dict().items()}
    for name, shape in expected.items():  # module order, so "first" means first in the network
        if name not in shapes:
            raise GeneratorLoadError(f"{where}: weights do not match the described architecture: missing tensor {name!r}")
        if shapes[name] != shape:
            raise GeneratorLoadError(
                f"{where}: weights do not match the described architecture: {name!r} has shape {shapes[name]}, expected {shape}"
            )
    unexpected = [name for name in shapes if name not in expected]
    if unexpected:
        raise GeneratorLoadError(f"{where}: weights do not match the described architecture: unexpected tensor {sorted(unexpected)[0]!r}")
