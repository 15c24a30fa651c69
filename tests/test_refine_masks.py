"""Masked multi-style transfer: region shares, masked Grams, per-region styles and colours, bad masks.

A small deterministic VGG: torchvision's VGG19 trunk with seeded random weights, run at 32 px.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from eval import refine
from eval.masks import MaskedStyles, free_pixels, load_masks, masked_gram, region_shares, uncovered_fraction
from eval.refine_images import RefineInputError
from eval.style_transfer import (
    FEATURE_LAYERS,
    STYLE_LAYERS,
    TransferSettings,
    gram_matrix,
    luminance,
    match_luminance,
    rgb_to_ycbcr,
    stylise,
    transfer,
)
from eval.vgg import VGG19Features

SIZE = 32


def _texture(kind: int, size: int = SIZE) -> torch.Tensor:
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    if kind == 0:  # vertical red/blue stripes
        t = np.sin(x * 1.3)
        image = np.stack([0.5 + 0.45 * t, 0.2 + 0 * t, 0.5 - 0.45 * t], -1)
    else:  # green/white checkerboard
        t = ((x // 4 + y // 4) % 2) * 0.8
        image = np.stack([t, 0.5 + 0.4 * (t > 0), t], -1)
    return torch.from_numpy(np.round(image * 255) / 255).permute(2, 0, 1).float()


def _content(size: int = SIZE) -> torch.Tensor:
    ramp = torch.linspace(0.25, 0.75, size)
    yy, xx = torch.meshgrid(ramp, ramp, indexing="ij")
    image = torch.stack([xx, yy, torch.full_like(xx, 0.45)])
    image[:, (xx - 0.4) ** 2 + (yy - 0.6) ** 2 < 0.02] *= 0.5
    return ((image * 255).round() / 255).unsqueeze(0)


def _halves(size: int = SIZE) -> torch.Tensor:
    left = torch.zeros(size, size)
    left[:, : size // 2] = 1.0
    return torch.stack([left, 1 - left])


@pytest.fixture(scope="module")
def vgg() -> VGG19Features:
    torch.manual_seed(0)
    return VGG19Features(torchvision.models.vgg19(weights=None).features.state_dict(), FEATURE_LAYERS)


def _region_distance(vgg, image: torch.Tensor, share: torch.Tensor, style: torch.Tensor) -> float:
    """Relative Gram distance, averaged over the style layers, of one region to one style image."""
    with torch.no_grad():
        features, target = vgg(image), vgg(style[None])
    total = 0.0
    for layer in STYLE_LAYERS:
        a = gram_matrix(target[layer])
        total += float((masked_gram(features[layer], share) - a).square().sum() / a.square().sum())
    return total / len(STYLE_LAYERS)


def test_shares_split_overlaps_and_leave_uncovered_pixels_out():
    masks = torch.zeros(2, 2, 3)
    masks[0, :, :2] = 1.0  # columns 0-1
    masks[1, :, 1:] = 1.0  # columns 1-2: column 1 overlaps
    masks[1, 1, 2] = 0.3  # a soft pixel only region 1 covers
    masks[:, 0, 2] = 0.0  # a pixel no mask covers
    shares = region_shares(masks)
    assert torch.allclose(shares[:, 0, 1], torch.tensor([0.5, 0.5]))
    assert torch.allclose(shares[:, 0, 0], torch.tensor([1.0, 0.0]))
    assert torch.allclose(shares[:, 1, 2], torch.tensor([0.0, 0.3]))
    assert torch.equal(shares[:, 0, 2], torch.zeros(2))
    assert uncovered_fraction(masks) == pytest.approx(1 / 6)
    free = free_pixels(shares, (1.0, 0.0))[0, 0]
    assert free[0, 0] == 1.0 and free[0, 1] == 0.5 and free[1, 2] == 0.0 and free[0, 2] == 0.0


def test_masked_gram_is_normalised_by_area():
    features = torch.rand(2, 8, 6, 6)
    assert torch.allclose(masked_gram(features, torch.ones(6, 6)), gram_matrix(features), atol=1e-6)
    # A region holding a copy of the whole pattern has the pattern's Gram, whatever its size.
    tiled = features.repeat(1, 1, 1, 2)  # [2, 8, 6, 12]: the pattern twice side by side
    left = torch.zeros(6, 12)
    left[:, :6] = 1.0
    assert torch.allclose(masked_gram(tiled, left), gram_matrix(features), atol=1e-6)
    # A share map at image resolution is area-averaged to the layer's grid.
    assert torch.allclose(masked_gram(tiled, left.repeat_interleave(4, 0).repeat_interleave(4, 1)), gram_matrix(features), atol=1e-6)


def test_each_region_moves_toward_its_own_style_only(vgg):
    content, masks = _content(), _halves()
    stripes, checks = _texture(0), _texture(1)
    styles = MaskedStyles([stripes, checks], masks, (1.0, 1.0))
    result = stylise(vgg, content, styles, TransferSettings(strength=1.0, steps=30))
    shares = region_shares(masks)
    before = {(r, s): _region_distance(vgg, content, shares[r], style) for r in (0, 1) for s, style in enumerate((stripes, checks))}
    after = {(r, s): _region_distance(vgg, result.images, shares[r], style) for r in (0, 1) for s, style in enumerate((stripes, checks))}
    print({k: (round(before[k], 3), round(after[k], 3)) for k in before})
    for own, other in ((0, 1), (1, 0)):
        assert after[(own, own)] < before[(own, own)] / 2.5  # toward its own style, a lot
        assert after[(own, own)] < after[(own, other)] / 2  # and closer to it than to the other
        gain_own = before[(own, own)] / after[(own, own)]
        gain_other = before[(own, other)] / after[(own, other)]
        assert gain_own > 2 * gain_other
    assert result.region_loss_after[0][0] < result.region_loss_before[0][0]
    assert result.region_loss_after[0][1] < result.region_loss_before[0][1]


def test_zero_weight_region_keeps_the_content(vgg):
    content, masks = _content(), _halves()
    styles = MaskedStyles([_texture(0), _texture(1)], masks, (1.0, 0.0))
    result = stylise(vgg, content, styles, TransferSettings(strength=1.0, steps=20))
    right = masks[1].bool()
    change = (result.images - content).abs()[0]
    assert float(change[:, right].max()) <= 1 / 255 + 1e-6  # 8-bit rounding at most
    assert float(change[:, ~right].mean()) > 0.02  # the styled half did change


def test_uncovered_pixels_keep_the_content(vgg):
    content = _content()
    mask = torch.zeros(1, SIZE, SIZE)
    mask[0, 8:24, 8:24] = 1.0
    result = stylise(vgg, content, MaskedStyles([_texture(0)], mask, (1.0,)), TransferSettings(strength=1.0, steps=10))
    outside = ~mask[0].bool()
    assert float((result.images - content).abs()[0][:, outside].max()) <= 1 / 255 + 1e-6
    assert float((result.images - content).abs()[0][:, ~outside].mean()) > 0.02


def test_preserve_color_matches_each_region_luminance_and_keeps_chroma(vgg):
    content, masks = _content(), _halves()
    shares = region_shares(masks)
    style_y = luminance(_texture(0)[None])[0]
    content_y = luminance(content)[0]
    matched = match_luminance(style_y, content_y, shares[0])
    left = content_y[:, masks[0].bool()]
    assert float(matched.mean()) == pytest.approx(float(left.mean()), abs=1e-5)
    assert float(matched.std(unbiased=False)) == pytest.approx(float(left.std(unbiased=False)), rel=0.05)

    settings = TransferSettings(strength=1.0, steps=15, preserve_color=True)
    result = stylise(vgg, content, MaskedStyles([_texture(0), _texture(1)], masks, (1.0, 1.0)), settings)
    chroma_error = (rgb_to_ycbcr(result.images)[:, 1:] - rgb_to_ycbcr(content)[:, 1:]).abs()
    assert float(chroma_error.max()) < 0.005
    assert all(a < b for a, b in zip(result.region_loss_after[0], result.region_loss_before[0]))


def test_transfer_api_reports_steps_and_stops_when_asked(vgg, tmp_path):
    seen: list[tuple[int, tuple]] = []

    def on_step(done: int, images: torch.Tensor) -> bool:
        seen.append((done, tuple(images.shape)))
        return done >= 4

    mask_file = tmp_path / "m.png"
    Image.fromarray((_halves()[0].numpy() * 255).astype(np.uint8)).save(mask_file)
    settings = TransferSettings(strength=1.0, steps=50, optimizer="adam", lr=0.05)
    result = transfer(
        vgg, _content()[0], [_texture(0), _texture(1)], masks=[mask_file, 1 - _halves()[0]], settings=settings, on_step=on_step
    )
    assert result.stopped and result.iterations == 4 and seen[-1] == (4, (1, 3, SIZE, SIZE))
    assert [done for done, _ in seen] == [1, 2, 3, 4]
    with pytest.raises(RefineInputError, match="2 masks for 1 styles"):
        transfer(vgg, _content()[0], [_texture(0)], masks=[mask_file, mask_file])
    with pytest.raises(RefineInputError, match="every --mask is black"):
        transfer(vgg, _content()[0], [_texture(0)], masks=[torch.zeros(SIZE, SIZE)])


def test_mask_files_are_decoded_checked_and_resized(tmp_path, caplog):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(a)
    Image.fromarray(np.full((8, 12, 3), 128, np.uint8)).save(b)  # RGB, another size
    with caplog.at_level(logging.INFO, logger="eval.masks"):
        masks = load_masks([a, b])
    assert masks.shape == (2, 16, 16) and float(masks[0].min()) == 1.0
    assert float(masks[1].mean()) == pytest.approx(128 / 255, abs=1e-3)
    assert "resized to 16x16" in caplog.text
    black = tmp_path / "black.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(black)
    with pytest.raises(RefineInputError, match="every --mask is black"):
        load_masks([black, black])
    (tmp_path / "text.png").write_text("not a picture")
    with pytest.raises(RefineInputError, match="--mask .*text.png is not a readable image"):
        load_masks([a, tmp_path / "text.png"])


def _png(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("masks-cli")
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg19(weights=None).features.state_dict(), root / "vgg.pth")
    to_uint8 = lambda t: (t.permute(1, 2, 0).numpy() * 255).round()  # noqa: E731
    half = np.zeros((16, 16), np.uint8)
    half[:, :8] = 255
    return {
        "weights": root / "vgg.pth",
        "sample": _png(to_uint8(_content()[0]), root / "sample.png"),
        "a": _png(to_uint8(_texture(0)), root / "a.png"),
        "b": _png(to_uint8(_texture(1)), root / "b.png"),
        "left": _png(half, root / "left.png"),  # 16 px: another size than the 32 px sample
        "right": _png(255 - half, root / "right.png"),
        "black": _png(np.zeros((16, 16)), root / "black.png"),
        "text": root / "notes.txt",
    }


def test_cli_masked_run_writes_region_reports(cli_files, tmp_path, caplog):
    f = cli_files
    out = tmp_path / "out"
    argv = [
        "--input",
        str(f["sample"]),
        "--out",
        str(out),
        "--size",
        str(SIZE),
        "--steps",
        "5",
        "--strength",
        "1",
        "--style",
        str(f["a"]),
        "--mask",
        str(f["left"]),
        "--style",
        f"{f['b']}:0",
        "--mask",
        str(f["right"]),
        "--weights",
        str(f["weights"]),
        "--preserve-color",
    ]
    with caplog.at_level(logging.INFO):
        assert refine.main(argv) == 0
    assert "masks resized to fit" in caplog.text
    report = __import__("json").loads((out / "sample.json").read_text())
    assert report["settings"]["style_mode"] == "masked" and report["loss_space"] == "luminance"
    assert [s["weight"] for s in report["style"]] == [1.0, 0.0] and report["style"][1]["mask"].endswith("right.png")
    assert report["region_loss_after"][0] < report["region_loss_before"][0]
    with Image.open(out / "sample.png") as refined, Image.open(f["sample"]) as sample:
        change = np.abs(np.asarray(refined, float) - np.asarray(sample, float))
    # The 16 px masks are enlarged bilinearly: one soft column at the seam, then the kept half.
    assert change[:, SIZE // 2 + 1 :].max() <= 1 and change[:, : SIZE // 2].mean() > 2


@pytest.mark.parametrize(
    "case, expected",
    [
        ("count", "1 --mask for 2 --style"),
        ("not_image", "is not a readable image"),
        ("all_black", "every --mask is black"),
        ("folder_style", "--mask needs explicit --style images"),
        ("all_zero", "every --style weight is 0"),
    ],
)
def test_cli_bad_masks_fail_in_one_line_before_vgg_loads(case, expected, cli_files, tmp_path, monkeypatch, capsys):
    f = cli_files
    f["text"].write_text("not a picture")
    monkeypatch.setattr(refine, "load_vgg19", lambda *a, **k: pytest.fail("VGG19 loaded"))
    styles = {
        "count": ["--style", str(f["a"]), "--mask", str(f["left"]), "--style", str(f["b"])],
        "not_image": ["--style", str(f["a"]), "--mask", str(f["text"])],
        "all_black": ["--style", str(f["a"]), "--mask", str(f["black"]), "--style", str(f["b"]), "--mask", str(f["black"])],
        "folder_style": ["--style", str(f["a"].parent), "--mask", str(f["left"])],
        "all_zero": ["--style", f"{f['a']}:0", "--mask", str(f["left"])],
    }[case]
    out = tmp_path / "out"
    capsys.readouterr()
    assert refine.main(["--input", str(f["sample"]), "--out", str(out), *styles]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atelier refine: error:") and expected in err[0], err
    assert not out.exists()
