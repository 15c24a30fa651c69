"""Test support for eval/: random-init weight files in the real formats, synthetic paintings, datasets.

The weight files are what a user would drop into --weights-dir (same file names, same
state-dict layout), only randomly initialised; the code under test loads them for real.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image, ImageDraw

from eval import weights as W


def write_inception_weights(folder: Path, seed: int = 0) -> Path:
    """A random-init torch-fidelity Inception state dict saved under its official file name."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    torch.manual_seed(seed)
    # The constructor insists on loading weights; let it load nothing so we can read its layout.
    with (
        mock.patch.object(fe, "load_state_dict_from_url", return_value={}),
        mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None),
    ):
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    # PyTorch's default conv init shrinks activations ~2.5x per layer; through Inception's
    # depth the pool features would all be ~0. He init keeps them informative.
    for module in model.modules():
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = folder / W.INCEPTION_V3.filename
    torch.save(model.state_dict(), path)
    record_sha256(path)  # not the published file: record its digest, as a user with a mirror would
    return path


def record_sha256(path: Path) -> None:
    """Add ``path``'s sha256 to the SHA256SUMS beside it (what ``sha256sum FILE >> SHA256SUMS`` writes)."""
    sums = path.parent / W.RECORDED_SUMS
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    kept = [line for line in (sums.read_text().splitlines() if sums.exists() else []) if not line.endswith(path.name)]
    sums.write_text("".join(f"{line}\n" for line in kept + [f"{digest}  {path.name}"]))


def write_torchvision_weights(folder: Path, spec: W.WeightSpec, build, seed: int = 0) -> Path:
    """A random-init torchvision classifier state dict under the official file name."""
    torch.manual_seed(seed)
    path = folder / spec.filename
    torch.save(build().state_dict(), path)
    return path


def write_all_weights(folder: Path, vgg16: bool = False) -> Path:
    """Inception + AlexNet (and VGG16, 528 MB, only when asked) random-init files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_inception_weights(folder)
    write_torchvision_weights(folder, W.ALEXNET, torchvision.models.alexnet)
    if vgg16:
        write_torchvision_weights(folder, W.VGG16, torchvision.models.vgg16)
    return folder


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory) -> Path:
    """A --weights-dir with random-init Inception and AlexNet files, built once per test session."""
    return write_all_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(autouse=False)
def isolated_caches(tmp_path, monkeypatch) -> Path:
    """Keep torch hub and reference-statistics caches inside the test's tmp dir."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return tmp_path


def tiny_generator(resolution: int = 32, seed: int = 0):
    """A smoke-sized atelier Generator with random weights."""
    from gan.config import load_config
    from gan.networks import Generator

    torch.manual_seed(seed)
    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml")
    return Generator(cfg.model, resolution=resolution).eval(), cfg.model


def painting(rng: np.random.RandomState, size: int = 32) -> np.ndarray:
    """A synthetic 'painting': a smooth colour field with a few strokes and shapes (uint8 HWC)."""
    base = rng.randint(0, 256, size=(4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(base).resize((size, size), Image.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(3, 7)):
        x0, y0 = rng.randint(0, size, 2)
        x1, y1 = x0 + rng.randint(3, size // 2), y0 + rng.randint(3, size // 2)
        colour = tuple(int(c) for c in rng.randint(0, 256, 3))
        if rng.rand() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.line([x0, y0, x1, y1], fill=colour, width=int(rng.randint(1, 4)))
    return np.asarray(image, dtype=np.uint8)


def paintings(count: int, seed: int, size: int = 32) -> torch.Tensor:
    rng = np.random.RandomState(seed)
    return torch.from_numpy(np.stack([painting(rng, size) for _ in range(count)])).permute(0, 3, 1, 2).contiguous()


def jpeg_recompressed(image: torch.Tensor, quality: int = 75) -> torch.Tensor:
    buffer = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return torch.from_numpy(np.asarray(Image.open(buffer).convert("RGB")).copy()).permute(2, 0, 1)


def slightly_cropped(image: torch.Tensor, border: int = 2) -> torch.Tensor:
    size = image.shape[-1]
    crop = Image.fromarray(image.permute(1, 2, 0).numpy()).crop((border, border, size - border, size - border))
    return torch.from_numpy(np.asarray(crop.resize((size, size), Image.BICUBIC)).copy()).permute(2, 0, 1)


def save_pngs(images: torch.Tensor, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, image in enumerate(images):
        name = f"{i:05d}.png"
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / name)
        names.append(name)
    return names


def write_dataset(images: torch.Tensor, folder: Path) -> Path:
    """A prepared dataset dir (dataset.json + PNGs) following the atelier-dataset/1 contract."""
    names = save_pngs(images, folder)
    entries = [{"file": n, "sha256": hashlib.sha256((folder / n).read_bytes()).hexdigest()} for n in names]
    content = hashlib.sha256("".join(sorted(e["sha256"] for e in entries)).encode()).hexdigest()
    info = {
        "format": "atelier-dataset/1",
        "resolution": int(images.shape[-1]),
        "count": len(names),
        "source_manifest_sha256": None,
        "content_sha256": content,
        "images": [dict(e, source=None, crop_box=None) for e in entries],
        "dropped": [],
    }
    (folder / "dataset.json").write_text(json.dumps(info))
    return folder
