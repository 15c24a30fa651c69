"""Pretrained feature-extractor weights: where they come from, where they live, how they load.

Every network that scores images (Inception for FID/KID, VGG16 for precision/recall,
AlexNet/VGG16 backbones for LPIPS, VGG19 for the style-transfer refiner) is described
by a :class:`WeightSpec`. :func:`resolve_weights` finds the file in this order:

1. ``weights_dir/<filename>`` (the ``--weights-dir`` folder a user filled by hand),
2. the torch hub cache, ``torch.hub.get_dir()/checkpoints/<filename>`` (where torchvision
   and torch-fidelity would have put it),
3. a download into that cache — unless offline (``ATELIER_OFFLINE=1`` or
   ``download=False``) or the download fails, in which case :class:`MissingWeightsError`
   says in one line which file is missing, its checksum, where to put it and its URL.

Checksum policy (``spec.sha256`` is a full sha256 or a published hex prefix, such as the
suffix torchvision puts in its file names):

* a file we just downloaded must match, otherwise it is deleted and an error raised;
* a file that was already on disk (in ``weights_dir`` or the cache) and does not match
  only logs a warning: the user put it there on purpose (a mirror, a re-export, or a
  random-init file in tests) and the report records the sha256 of the file actually used;
* ``ATELIER_SKIP_CHECKSUM=1`` skips the comparison altogether.

Files are loaded without unpickling code: safetensors, or ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from atelier.common.safe_load import load_tensors
from atelier.common import hashing

log = logging.getLogger(__name__)

OFFLINE_ENV = "ATELIER_OFFLINE"
SKIP_CHECKSUM_ENV = "ATELIER_SKIP_CHECKSUM"


@dataclass(frozen=True)
class WeightSpec:
    """One pretrained weights file.

    ``sha256`` is the file's full sha256 when known, or a published hex prefix of it
    (torchvision names its files ``<arch>-<first 8 hex of sha256>.pth``); None when no
    checksum is published.
    """

    name: str
    filename: str
    url: str
    sha256: str | None


class MissingWeightsError(FileNotFoundError):
    """A pretrained weights file is not available locally and could not be downloaded."""


class WeightsChecksumError(ValueError):
    """A downloaded weights file does not match its published checksum."""


# torch-fidelity's Inception-v3 (converted from TF's 2015-12-05 graph; the FID/KID standard).
# torch-fidelity publishes no checksum for it (its loader calls load_state_dict_from_url
# without check_hash), so none is enforced; the report records the sha256 actually used.
INCEPTION_V3 = WeightSpec(
    name="inception-v3-compat",
    filename="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth",
    sha256=None,
)
# torchvision ImageNet classifiers; the hex suffix of each file name is its sha256 prefix.
VGG16 = WeightSpec(
    name="vgg16",
    filename="vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    sha256="397923af",
)
ALEXNET = WeightSpec(
    name="alexnet",
    filename="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    sha256="7be5be79",
)
VGG19 = WeightSpec(
    name="vgg19",
    filename="vgg19-dcbb9e9d.pth",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    sha256="dcbb9e9d",
)


def _dinov2(timm_name: str) -> WeightSpec:
    # timm's DINOv2 exports on the Hugging Face Hub (safetensors); no checksum is published.
    return WeightSpec(name=timm_name, filename=f"{timm_name}.safetensors",
                      url=f"https://huggingface.co/timm/{timm_name}/resolve/main/model.safetensors", sha256=None)


DINOV2_VITL14 = _dinov2("vit_large_patch14_dinov2.lvd142m")  # FD_DINOv2 (eval/dinov2.py)
DINOV2_VITS14 = _dinov2("vit_small_patch14_dinov2.lvd142m")

# Which file each consumer needs. precision/recall uses torch-fidelity's VGG16 extractor,
# which is torchvision's vgg16 with its ImageNet weights.
REGISTRY: dict[str, WeightSpec] = {
    "inception": INCEPTION_V3,
    "prc_vgg16": VGG16,
    "lpips_alex": ALEXNET,
    "lpips_vgg": VGG16,
    "refiner_vgg19": VGG19,
    "dinov2_vitl14": DINOV2_VITL14,
    "dinov2_vits14": DINOV2_VITS14,
}


def hub_checkpoints_dir() -> Path:
    """The torch hub cache folder torchvision and torch-fidelity download into."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file (``atelier.common.hashing``), memoised by path, size and mtime: weights are large."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_CACHE:
        _SHA_CACHE[key] = hashing.file_sha256(path)
    return _SHA_CACHE[key]


def checksum_matches(spec: WeightSpec, path: str | Path) -> bool:
    """True when the file matches spec.sha256 (full digest or prefix), or none is known."""
    if spec.sha256 is None:
        return True
    return file_sha256(path).startswith(spec.sha256.lower())


def missing_message(spec: WeightSpec, weights_dir: str | Path | None = None) -> str:
    """One line naming the file, its checksum, where to put it and where to get it."""
    checksum = f"sha256 starting {spec.sha256}" if spec.sha256 else "sha256 not published"
    places = ([f"{weights_dir}/"] if weights_dir else ["the --weights-dir folder"]) + [f"{hub_checkpoints_dir()}/"]
    return (
        f"missing pretrained weights {spec.filename} ({spec.name}, {checksum}): "
        f"put it in {' or '.join(places)}; download it from {spec.url}"
    )


_WARNED: set[tuple[str, int, int]] = set()


def _check_existing(spec: WeightSpec, path: Path) -> Path:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _WARNED:
        return path  # one warning per file, however often a run resolves it
    if not _env_flag(SKIP_CHECKSUM_ENV) and not checksum_matches(spec, path):
        _WARNED.add(key)
        log.warning(
            "%s: sha256 %s does not match the published %s; using it anyway (placed by hand)",
            path, file_sha256(path)[:16], spec.sha256,
        )
    return path


def _download(spec: WeightSpec, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", spec.filename, spec.url)
    # download_url_to_file writes a temp file and renames it: no half-written weights.
    torch.hub.download_url_to_file(spec.url, str(target), progress=True)
    if not _env_flag(SKIP_CHECKSUM_ENV) and not checksum_matches(spec, target):
        actual = file_sha256(target)
        target.unlink(missing_ok=True)
        raise WeightsChecksumError(
            f"downloaded {spec.filename} has sha256 {actual}, expected one starting {spec.sha256}; deleted it"
        )
    return target


def resolve_weights(spec: WeightSpec, weights_dir: str | Path | None = None, download: bool | None = None) -> Path:
    """Return a local path to ``spec``'s file, downloading it into the torch hub cache if allowed.

    ``download=None`` means "download unless ATELIER_OFFLINE=1". Raises MissingWeightsError
    (one line: file, checksum, where to put it, URL) when the file is absent and cannot be
    fetched. See the module docstring for the checksum policy.
    """
    if weights_dir is not None:
        candidate = Path(weights_dir) / spec.filename
        if candidate.is_file():
            return _check_existing(spec, candidate)
    cached = hub_checkpoints_dir() / spec.filename
    if cached.is_file():
        return _check_existing(spec, cached)
    if download is None:
        download = not _env_flag(OFFLINE_ENV)
    if not download:
        raise MissingWeightsError(missing_message(spec, weights_dir))
    try:
        return _download(spec, cached)
    except WeightsChecksumError:
        raise
    except Exception as exc:  # network errors come from urllib, ssl, socket, ...
        raise MissingWeightsError(f"{missing_message(spec, weights_dir)} (download failed: {exc})") from exc


def resolve_all(specs: list[WeightSpec], weights_dir: str | Path | None = None) -> dict[str, Path]:
    """Resolve every spec before any work starts; one MissingWeightsError naming all absent files.

    An evaluation needs up to three networks; finding the second one missing after an hour of
    FID sampling (or learning of the third only on the next attempt) wastes the user's time.
    """
    found: dict[str, Path] = {}
    missing: list[str] = []
    for spec in dict.fromkeys(specs):  # unique, in order
        try:
            found[spec.name] = resolve_weights(spec, weights_dir)
        except MissingWeightsError as exc:
            missing.append(str(exc))
    if len(missing) == 1:
        raise MissingWeightsError(missing[0])
    if missing:
        raise MissingWeightsError(f"{len(missing)} pretrained weight files are missing: " + "; ".join(missing))
    return found


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a tensors-only state dict without unpickling code (safetensors or weights_only torch.load)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = load_tensors(path)  # UnreadableTensorsFile is a ValueError naming the file
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors")
    return dict(state)


@contextlib.contextmanager
def loading_weights(path: str | Path, network: str):
    """Turn torch's many-line ``load_state_dict`` key/shape mismatch into one ValueError naming the file.

    A readable tensors-only file with the wrong content (another network's weights, a file
    renamed by mistake) otherwise ends in hundreds of lines of missing key names.
    """
    try:
        yield
    except RuntimeError as exc:
        message = str(exc)
        if "Error(s) in loading state_dict" not in message:
            raise
        counts = [f"{len(_QUOTED.findall(part))} {kind}" for kind, part in _mismatch_parts(message)]
        detail = ", ".join(counts) or "shape mismatch"
        raise ValueError(f"{path}: not {network} weights ({detail})") from exc


_QUOTED = re.compile(r'"[^"]+"')


def _mismatch_parts(message: str):
    for kind, label in (("missing keys", "Missing key(s)"), ("unexpected keys", "Unexpected key(s)")):
        start = message.find(label)
        if start >= 0:
            yield kind, message[start:].split(". ", 1)[0]
    if "size mismatch" in message:
        yield "shape mismatches", " ".join(f'"{m}"' for m in re.findall(r"size mismatch for ([^:]+):", message))


def weights_identity(path: str | Path) -> dict[str, str]:
    """What the report records about a weights file: its name and the sha256 of its bytes."""
    path = Path(path)
    return {"file": path.name, "sha256": file_sha256(path)}
