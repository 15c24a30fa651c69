"""Style-transfer refiner: VGG19 loading, the Gatys optimisation, style selection and the CLI.

Runs on CPU with 32 px images and a VGG19 weights file of the official format (random
init, written by the test under the official file name), so the real loading code runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from eval import refine
from eval.refine_images import RefineInputError
from eval.style_select import dataset_works, nearest_works, parse_style_args
from eval.style_transfer import (
    FEATURE_LAYERS,
    StyleBank,
    TransferSettings,
    content_loss,
    rgb_to_ycbcr,
    scale_schedule,
    stylise,
    ycbcr_to_rgb,
)
from eval.vgg import VGG19Features, load_vgg19
from eval.weights import VGG19

SIZE = 32
REPO = Path(__file__).resolve().parents[1]


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


def _smooth(size: int = SIZE, tint: float = 0.0) -> np.ndarray:
    """A blurry composition (soft gradient, a dark disc, a light block): what a small GAN paints."""
    ramp = np.linspace(0.25, 0.75, size)
    xx, yy = np.meshgrid(ramp, ramp)
    image = np.stack([xx, yy, np.full_like(xx, 0.4 + tint)], axis=-1)
    y, x = np.mgrid[0:size, 0:size] / size
    image[(x - 0.35) ** 2 + (y - 0.6) ** 2 < 0.04] *= 0.4
    image[(x > 0.6) & (x < 0.85) & (y > 0.15) & (y < 0.45)] = (0.85, 0.8, 0.6)
    return image


def _texture(kind: int, size: int = SIZE) -> np.ndarray:
    """Distinct high-contrast textures standing in for different paintings."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    if kind == 0:  # vertical red/blue stripes
        t = np.sin(x * 1.3)
        return np.stack([0.5 + 0.45 * t, 0.2 + 0 * t, 0.5 - 0.45 * t], -1)
    if kind == 1:  # checkerboard, green/white
        t = ((x // 4 + y // 4) % 2) * 0.8
        return np.stack([t, 0.5 + 0.4 * (t > 0), t], -1)
    if kind == 2:  # diagonal waves, yellow
        t = 0.5 + 0.45 * np.sin((x + y) * 0.7)
        return np.stack([t, t, 0.1 + 0 * t], -1)
    rng = np.random.default_rng(kind)  # coloured noise
    return rng.random((size, size, 3))


def _tensor(array: np.ndarray) -> torch.Tensor:
    quantised = np.round(np.clip(array, 0, 1) * 255) / 255
    return torch.from_numpy(quantised).permute(2, 0, 1).float()


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    """A random-init torchvision VGG19 state dict under the official file name."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg19(weights=None).state_dict(), folder / VGG19.filename)
    return folder


@pytest.fixture(scope="module")
def vgg(weights_dir) -> VGG19Features:
    return load_vgg19(FEATURE_LAYERS, weights_dir=weights_dir)


@pytest.fixture(scope="module")
def pair():
    """Content (smooth, blue-ish) and a style (red/blue stripes) at 32 px."""
    return _tensor(_smooth()).unsqueeze(0), _tensor(_texture(0))


@pytest.fixture(scope="module")
def full_transfer(vgg, pair):
    content, style = pair
    return stylise(vgg, content, StyleBank([style], torch.ones(1, 1)), TransferSettings(strength=1.0, steps=20))


def test_vgg19_loads_official_layout_frozen_with_avg_pooling(vgg):
    responses = vgg(torch.rand(1, 3, SIZE, SIZE))
    assert set(responses) == set(FEATURE_LAYERS)
    assert responses["conv1_1"].shape == (1, 64, 32, 32)
    assert responses["conv4_2"].shape == (1, 512, 4, 4)
    assert responses["conv5_1"].shape == (1, 512, 2, 2)
    assert all(not p.requires_grad for p in vgg.parameters()) and not vgg.training
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in vgg.trunk)
    assert vgg.weights_path.name == "vgg19-dcbb9e9d.pth"


def test_vgg19_rejects_a_state_dict_of_another_network():
    with pytest.raises(ValueError, match="not a torchvision VGG19 state dict: missing features.2.weight"):
        VGG19Features({"features.0.weight": torch.zeros(64, 3, 3, 3), "features.0.bias": torch.zeros(64)}, ["conv1_2"])


def test_optimisation_lowers_style_loss_a_lot_and_keeps_content(vgg, pair, full_transfer):
    before, after = full_transfer.style_loss_before[0], full_transfer.style_loss_after[0]
    assert before / after >= 5.0, (before, after)
    # Relative conv4_2 error: below 1 (the composition is off by less than its own size) and
    # below what the style image itself would score as a "refinement" of the sample.
    content, style = pair
    with torch.no_grad():
        style_as_output = content_loss(vgg(style[None])["conv4_2"], vgg(content)["conv4_2"]).item()
    print(f"style {before:.3f} -> {after:.4f}, content {full_transfer.content_loss[0]:.3f} (style image: {style_as_output:.3f})")
    assert 0.0 < full_transfer.content_loss[0] < min(1.0, style_as_output)
    images = full_transfer.images
    assert images.shape == (1, 3, SIZE, SIZE) and images.min() >= 0 and images.max() <= 1
    assert torch.equal(images, (images * 255).round() / 255)  # exactly what the PNG holds


def test_strength_is_monotone(vgg, pair, full_transfer):
    content, style = pair
    half = stylise(vgg, content, StyleBank([style], torch.ones(1, 1)), TransferSettings(strength=0.4, steps=20))
    assert full_transfer.style_loss_after[0] < half.style_loss_after[0] < half.style_loss_before[0]
    assert half.content_loss[0] < full_transfer.content_loss[0]
    assert TransferSettings(strength=1.0).strength_factor() == 1.0
    factors = [TransferSettings(strength=s / 10).strength_factor() for s in range(11)]
    assert factors[0] == 0.0 and all(a < b for a, b in zip(factors, factors[1:]))


def test_strength_zero_returns_the_input_unchanged(vgg, pair):
    content, style = pair
    result = stylise(vgg, content, StyleBank([style], torch.ones(1, 1)), TransferSettings(strength=0.0))
    assert result.images is content and result.iterations == 0
    assert result.style_loss_before == result.style_loss_after and result.content_loss == [0.0]


def test_preserve_color_keeps_the_sample_chroma(vgg, pair, full_transfer):
    content, style = pair
    kept = stylise(vgg, content, StyleBank([style], torch.ones(1, 1)), TransferSettings(strength=1.0, steps=20, preserve_color=True))
    chroma = rgb_to_ycbcr(content)[:, 1:]
    kept_error = (rgb_to_ycbcr(kept.images)[:, 1:] - chroma).abs()
    full_error = (rgb_to_ycbcr(full_transfer.images)[:, 1:] - chroma).abs()
    assert kept_error.max() < 0.005, kept_error.max()  # 8-bit rounding only
    assert full_error.mean() > 5 * kept_error.mean()
    assert kept.style_loss_after[0] < kept.style_loss_before[0] / 3  # the luminance did take the style
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(content)), content, atol=1e-5)


def test_large_sizes_run_coarse_to_fine(vgg, pair):
    assert scale_schedule(1100, 800, 512) == [(275, 200), (550, 400), (1100, 800)]
    assert scale_schedule(512, 512, 512) == [(512, 512)]
    content, style = pair
    settings = TransferSettings(strength=1.0, steps=4, optimizer="adam", lr=0.05, max_single_scale=16)
    result = stylise(vgg, content, StyleBank([style], torch.ones(1, 1)), settings)
    assert result.scales == [(16, 16), (32, 32)] and result.iterations == 4 + 2
    assert result.images.shape == content.shape
    assert result.style_loss_after[0] < result.style_loss_before[0]


def test_batch_uses_each_samples_own_style_blend(vgg, pair):
    content, _ = pair
    styles = [_tensor(_texture(0)), _tensor(_texture(2))]
    mix = torch.tensor([[1.0, 0.0], [0.2, 0.8]])
    result = stylise(vgg, content.repeat(2, 1, 1, 1), StyleBank(styles, mix), TransferSettings(strength=1.0, steps=4))
    assert result.style_loss_before[0] != pytest.approx(result.style_loss_before[1])
    assert all(a < b for a, b in zip(result.style_loss_after, result.style_loss_before))


def test_nearest_works_picks_the_planted_work(vgg, tmp_path):
    works = [_save(_texture(kind), tmp_path / "works" / f"{kind:05d}.png") for kind in range(4)]
    index = {"format": "atelier-dataset/1", "resolution": SIZE, "count": 4, "images": [{"file": w.name} for w in works]}
    (tmp_path / "works" / "dataset.json").write_text(json.dumps(index))
    planted = np.roll(_texture(1), shift=(3, 5), axis=(0, 1))  # same painting, shifted
    planted = planted + np.random.default_rng(1).normal(0, 0.02, planted.shape)
    samples = [_save(planted, tmp_path / "samples" / "a.png"), _save(_texture(2), tmp_path / "samples" / "b.png")]

    assert dataset_works(tmp_path / "works") == works
    choices = nearest_works(vgg, samples, works, k=2, size=SIZE)
    assert choices[0].paths[0] == works[1] and choices[1].paths[0] == works[2]
    assert choices[0].weights == (0.5, 0.5)
    assert choices[0].distances[0] < choices[0].distances[1]


def test_style_arguments_parse_weights_and_reject_bad_sources(tmp_path):
    a = _save(_texture(0), tmp_path / "a.png")
    b = _save(_texture(1), tmp_path / "b.png")
    request = parse_style_args([f"{a}:0.7", f"{b}:0.3"])
    assert request.explicit.paths == (a, b) and request.explicit.weights == pytest.approx((0.7, 0.3))
    assert parse_style_args([str(a)]).explicit.weights == (1.0,)
    with pytest.raises(RefineInputError, match="no such style image or dataset folder"):
        parse_style_args([str(tmp_path / "missing")])
    with pytest.raises(RefineInputError, match="blend weight must be a positive number"):
        parse_style_args([f"{a}:0"])
    with pytest.raises(RefineInputError, match="blend weight must be a positive number, got inf"):
        parse_style_args([f"{a}:inf", f"{b}:1"])
    with pytest.raises(RefineInputError, match="blend weight 'abc' is not a number"):
        parse_style_args([f"{a}:abc"])
    with pytest.raises(RefineInputError, match="holds no images"):
        (tmp_path / "empty").mkdir()
        parse_style_args([str(tmp_path / "empty")])


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    samples = [_save(_smooth(tint=0.1 * i), root / "samples" / f"s{i}.png") for i in range(2)]
    works = root / "works"
    for kind in range(3):
        _save(_texture(kind), works / f"w{kind}.png")
    return root, samples, works


def test_cli_refines_a_folder_and_writes_reports(cli_files, weights_dir, tmp_path, capsys):
    root, samples, works = cli_files
    out = tmp_path / "out"
    argv = [
        "--input",
        str(root / "samples"),
        "--style",
        str(works),
        "--out",
        str(out),
        "--size",
        str(SIZE),
        "--steps",
        "5",
        "--strength",
        "1",
        "--k",
        "2",
        "--select-size",
        str(SIZE),
        "--weights-dir",
        str(weights_dir),
        "--run-dir",
        str(tmp_path / "run"),
    ]
    assert refine.main(argv) == 0, capsys.readouterr().err
    for sample in samples:
        report = json.loads((out / f"{sample.stem}.json").read_text())
        assert report["output"] == f"{sample.stem}.png" and report["sample"] == str(sample)
        assert report["style_loss_after"] < report["style_loss_before"]
        assert report["content_loss"] > 0 and len(report["style"]) == 2
        assert report["settings"]["strength"] == 1.0 and report["settings"]["style_mode"] == "nearest"
        with Image.open(out / report["output"]) as image:
            assert image.size == (SIZE, SIZE) and image.mode == "RGB"
    summary = json.loads((out / refine.SUMMARY_NAME).read_text())
    assert len(summary["images"]) == 2
    assert not list(out.glob(".*.tmp"))


def test_cli_strength_zero_copies_the_sample_byte_for_byte(cli_files, weights_dir, tmp_path):
    root, samples, works = cli_files
    out = tmp_path / "out"
    argv = [
        "--input",
        str(samples[0]),
        "--style",
        f"{works / 'w0.png'}:1",
        "--out",
        str(out),
        "--size",
        str(SIZE),
        "--strength",
        "0",
        "--weights-dir",
        str(weights_dir),
    ]
    assert refine.main(argv) == 0
    assert (out / samples[0].name).read_bytes() == samples[0].read_bytes()
    report = json.loads((out / f"{samples[0].stem}.json").read_text())
    assert report["style_loss_after"] == report["style_loss_before"] and report["iterations"] == 0


@pytest.mark.parametrize(
    "case, expected",
    [
        ("unreadable", "cannot read image"),
        ("unreadable_style", "cannot read image"),
        ("missing_style_dir", "no such style image or dataset folder"),
        ("size_zero", "--size must be at least 16 px, got 0"),
        ("strength_too_big", "--strength must be between 0 and 1"),
        ("missing_weights", "missing pretrained weights vgg19-dcbb9e9d.pth"),
        ("not_weights", "not a torch.save file"),
    ],
)
def test_cli_bad_input_fails_with_one_clear_line(case, expected, cli_files, weights_dir, tmp_path, monkeypatch, capsys):
    root, samples, works = cli_files
    inputs, style, weights = root / "samples", str(works), ["--weights-dir", str(weights_dir)]
    extra: list[str] = []
    if case == "unreadable":
        inputs = tmp_path / "bad"
        _save(_smooth(), inputs / "fine.png")
        (inputs / "broken.png").write_bytes(b"<html>not a picture</html>")
    elif case == "unreadable_style":
        (tmp_path / "style.jpg").write_text("not a picture")
        style = f"{tmp_path / 'style.jpg'}:1"
    elif case == "missing_style_dir":
        style = str(tmp_path / "no-such-dataset")
    elif case == "size_zero":
        extra = ["--size", "0"]
    elif case == "strength_too_big":
        extra = ["--strength", "1.5"]
    elif case == "missing_weights":
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty hub cache
        weights = ["--weights-dir", str(tmp_path / "empty-weights")]
    elif case == "not_weights":
        (tmp_path / "fake.pth").write_bytes(b"definitely not a checkpoint")
        weights = ["--weights", str(tmp_path / "fake.pth")]
    argv = ["--input", str(inputs), "--style", style, "--out", str(tmp_path / "out"), *weights, *extra]
    capsys.readouterr()
    assert refine.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    if case.startswith("unreadable"):
        assert ("broken.png" if case == "unreadable" else "style.jpg") in err[0]
    assert not (tmp_path / "out").exists()  # nothing half-written


@pytest.mark.slow
def test_cli_missing_weights_in_a_real_process(cli_files, tmp_path):
    root, samples, works = cli_files
    env = {**os.environ, "ATELIER_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch-home")}
    proc = subprocess.run(
        [sys.executable, "-m", "eval.refine", "--input", str(samples[0]), "--style", str(works), "--out", str(tmp_path / "o")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "vgg19-dcbb9e9d.pth" in lines[0] and "dcbb9e9d" in lines[0], proc.stderr


def test_help_explains_every_option():
    text = refine.build_parser().format_help()
    for option in ("--input", "--style", "--out", "--strength", "--preserve-color", "--steps", "--size", "--weights"):
        assert option in text
    assert text.count("(default:") >= 10
