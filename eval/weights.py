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

One reader: :func:`read_weights` opens a file once, hashes those bytes, verifies the hash
and builds the tensors from the same bytes; nothing opens the file again (a file swapped
between a check and a load could otherwise reach a loader), and no library gets the path:
torch-fidelity and lpips are handed modules built from these tensors (:mod:`eval.features`).
Tensors come from safetensors or ``torch.load(weights_only=True)``; nothing unpickles code.

Checksum policy (``spec.sha256`` is a full sha256 or a published hex prefix, such as the
suffix torchvision puts in its file names):

* a sha256 recorded in a ``SHA256SUMS`` file beside the weights (``sha256sum`` format; for a
  mirror, a re-export, or a random-init file in tests) is the one the bytes must match;
* otherwise a full published sha256 (Inception, LPIPS's calibration layers) is enforced: a
  file that does not match is refused with one line, and a fresh download is deleted;
* a published prefix (torchvision's 8 hex digits, a download-integrity check rather than a
  security one) must match for a download; a file placed by hand that does not match is used
  with a warning, and the report records the sha256 of the bytes actually loaded;
* ``ATELIER_SKIP_CHECKSUM=1`` downgrades every mismatch to a warning.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

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
# The file name carries the first 8 hex digits of its sha256 (torch hub's convention); the full
# digest is enforced, since this file is what every FID/KID number rests on.
INCEPTION_V3 = WeightSpec(
    name="inception-v3-compat",
    filename="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    sha256="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
)
# torchvision ImageNet classifiers; the hex suffix of each file name is its sha256 prefix.
VGG16 = WeightSpec(
    name="vgg16", filename="vgg16-397923af.pth", url="https://download.pytorch.org/models/vgg16-397923af.pth", sha256="397923af"
)
ALEXNET = WeightSpec(
    name="alexnet",
    filename="alexnet-owt-7be5be79.pth",
    url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    sha256="7be5be79",
)
VGG19 = WeightSpec(
    name="vgg19", filename="vgg19-dcbb9e9d.pth", url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", sha256="dcbb9e9d"
)


def _dinov2(timm_name: str) -> WeightSpec:
    # timm's DINOv2 exports on the Hugging Face Hub (safetensors); no checksum is published.
    return WeightSpec(
        name=timm_name,
        filename=f"{timm_name}.safetensors",
        url=f"https://huggingface.co/timm/{timm_name}/resolve/main/model.safetensors",
        sha256=None,
    )


DINOV2_VITL14 = _dinov2("vit_large_patch14_dinov2.lvd142m")  # FD_DINOv2 (eval/dinov2.py)
DINOV2_VITS14 = _dinov2("vit_small_patch14_dinov2.lvd142m")


def _lpips_linear(net: str, sha256: str) -> WeightSpec:
    # LPIPS's calibration layers ship inside the pinned lpips package (0.1.4); the digests are
    # those of that release's files, so a file changed on disk is refused.
    return WeightSpec(
        name=f"lpips-v0.1-{net}-linear", filename=f"{net}.pth", url=f"lpips package: lpips/weights/v0.1/{net}.pth", sha256=sha256
    )


LPIPS_LINEAR = {
    "alex": _lpips_linear("alex", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
    "vgg": _lpips_linear("vgg", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
}


def lpips_linear_path(net: str) -> Path:
    """Where the installed lpips package keeps its v0.1 calibration layers for ``net``."""
    import lpips

    return Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / LPIPS_LINEAR[net].filename


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


_WARNED: set[tuple[str, str]] = set()
RECORDED_SUMS = "SHA256SUMS"


def _check_existing(spec: WeightSpec, path: Path) -> Path:
    # The checksum is checked on the bytes that are loaded (read_weights), not here: a check on
    # one read and a load from another would let a file swapped in between through.
    return path


def _download(spec: WeightSpec, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", spec.filename, spec.url)
    # download_url_to_file writes a temp file and renames it: no half-written weights.
    torch.hub.download_url_to_file(spec.url, str(target), progress=True)
    if not _env_flag(SKIP_CHECKSUM_ENV) and not checksum_matches(spec, target):
        actual = file_sha256(target)
        target.unlink(missing_ok=True)
        raise WeightsChecksumError(f"downloaded {spec.filename} has sha256 {actual}, expected one starting {spec.sha256}; deleted it")
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


@dataclass(frozen=True)
class LoadedWeights(os.PathLike):
    """A weights file read once: where it was, the sha256 of the bytes read, the tensors built from them.

    It is also a path (``os.fspath``) so code that only names the file keeps working; the
    identity a report records is that of the bytes loaded, never of a later read.
    """

    path: Path
    sha256: str
    tensors: dict[str, torch.Tensor] = field(repr=False)
    spec: WeightSpec | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def identity(self) -> dict[str, str]:
        """``{"file", "sha256"}`` for the report."""
        return {"file": self.path.name, "sha256": self.sha256}


def recorded_sha256(path: Path) -> str | None:
    """The sha256 a ``SHA256SUMS`` file beside ``path`` records for it (``sha256sum`` format), if any."""
    sums = path.parent / RECORDED_SUMS
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and parts[1].lstrip("*").strip() == path.name and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            return parts[0].lower()
    return None


def verify(spec: WeightSpec | None, path: Path, sha256: str) -> None:
    """Apply the module's checksum policy to the sha256 of the bytes read from ``path``."""
    recorded = recorded_sha256(path)
    expected = recorded or (spec.sha256.lower() if spec is not None and spec.sha256 else None)
    if expected is None or sha256.startswith(expected):
        return
    source = f"recorded in {path.parent / RECORDED_SUMS}" if recorded else "published"
    enforced = recorded is not None or len(expected) == 64
    message = f"{path}: sha256 {sha256} does not match the {source} {expected}{'' if len(expected) == 64 else '…'}"
    if enforced and not _env_flag(SKIP_CHECKSUM_ENV):
        raise WeightsChecksumError(
            f"{message}; refused (replace the file, record its sha256 in {RECORDED_SUMS} beside it, or set {SKIP_CHECKSUM_ENV}=1)"
        )
    if (str(path), sha256) not in _WARNED:  # one warning per file, however often a run loads it
        _WARNED.add((str(path), sha256))
        log.warning("%s; using it anyway (placed by hand)", message)


def tensors_from_bytes(data: bytes, path: str | Path) -> dict[str, torch.Tensor]:
    """A tensors-only state dict from a file's bytes: safetensors, or ``torch.load(weights_only=True)``.

    One-line ValueErrors name ``path``; pickled code is refused, never run.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load as load_safetensors

        try:
            return dict(load_safetensors(data))
        except Exception as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({str(exc).splitlines()[0] if str(exc) else exc})") from exc
    if not data.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip archive, or its legacy pickle stream
        raise ValueError(f"{path}: truncated or corrupt (not a torch.save file)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ValueError(f"{path}: holds more than tensors and numbers; refused, since loading it could run code") from exc
    except Exception as exc:  # truncated or corrupt; torch's first sentence says which
        raise ValueError(f"{path}: truncated or corrupt, cannot be loaded ({str(exc).split('. ')[0].splitlines()[0]})") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a dict of tensors")
    return dict(state)


def read_weights_file(path: str | Path, spec: WeightSpec | None = None) -> LoadedWeights:
    """Open ``path`` once: hash its bytes, verify them (see the module docstring), build the tensors from them.

    ``spec`` defaults to the known file of that name, if any.
    """
    path = Path(path)
    if spec is None:
        spec = _spec_named(path.name)
    with open(path, "rb") as handle:  # the only open: hash, check and tensors all come from `data`
        data = handle.read()
    sha256 = hashlib.sha256(data).hexdigest()
    verify(spec, path, sha256)
    return LoadedWeights(path=path, sha256=sha256, tensors=tensors_from_bytes(data, path), spec=spec)


def read_weights(spec: WeightSpec, weights_dir: str | Path | None = None) -> LoadedWeights:
    """Resolve ``spec`` (:func:`resolve_weights`), then read, verify and load it in one read."""
    return read_weights_file(resolve_weights(spec, weights_dir), spec)


def _spec_named(filename: str) -> WeightSpec | None:
    for spec in list(REGISTRY.values()):
        if spec.filename == filename:
            return spec
    return None


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a tensors-only state dict without unpickling code, in one read, verified if the file is a known one."""
    return read_weights_file(path).tensors


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


def weights_identity(path: str | Path | LoadedWeights) -> dict[str, str]:
    """What the report records about a weights file: its name and the sha256 of its bytes
    (of the bytes loaded, for a :class:`LoadedWeights`)."""
    if isinstance(path, LoadedWeights):
        return path.identity()
    path = Path(path)
    return {"file": path.name, "sha256": file_sha256(path)}
