"""ProGAN's sliced Wasserstein distance (eval/swd.py): hand-computed values and its behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eval import swd as S


def textured(count: int, resolution: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 NHWC images with structure at every scale (smooth colour fields plus fine grain) and a
    palette: each channel has its own tone curve, as a painter's palette is not channel-symmetric."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((count, 3, 4, 4), dtype=np.float32))
    smooth = F.interpolate(coarse, size=(resolution, resolution), mode="bicubic", align_corners=False)
    grain = torch.from_numpy(rng.normal(0.0, 0.12, (count, 3, resolution, resolution)).astype(np.float32))
    gamma = torch.tensor([0.5, 1.0, 2.5]).view(1, 3, 1, 1)
    images = (smooth + grain).clamp(0, 1) ** gamma * 255
    return images.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def flat(colours: list[tuple[int, int, int]], resolution: int = 16) -> np.ndarray:
    return np.stack([np.full((resolution, resolution, 3), c, np.uint8) for c in colours])


# --------------------------------------------------------------------------- hand-computed


def test_pyramid_filters_match_hand_computed_binomial_weights():
    impulse = torch.zeros(1, 1, 16, 16)
    impulse[0, 0, 4, 4] = 1.0
    down = S.pyr_down(impulse)[0, 0]
    assert down.shape == (8, 8)
    assert down[2, 2].item() == pytest.approx(36 / 256)  # centre tap 6 x 6
    assert down[2, 1].item() == pytest.approx(6 / 256)  # two pixels off: tap 6 x 1
    assert down[1, 1].item() == pytest.approx(1 / 256)  # corner tap 1 x 1
    assert down.sum().item() == pytest.approx(1 / 256 * 64)  # only (even, even) outputs are kept
    constant = torch.full((1, 3, 16, 16), 5.0)
    assert torch.allclose(S.pyr_down(constant), torch.full((1, 3, 8, 8), 5.0))
    assert torch.allclose(S.pyr_up(torch.full((1, 3, 8, 8), 5.0)), torch.full((1, 3, 16, 16), 5.0))
    band, low = S.laplacian_pyramid(constant, 2)
    assert band.abs().max().item() < 1e-5 and torch.allclose(low, torch.full((1, 3, 8, 8), 5.0))
    x = torch.rand(2, 3, 32, 32)
    levels = S.laplacian_pyramid(x, 3)
    rebuilt = levels[2]
    for level in reversed(levels[:2]):
        rebuilt = level + S.pyr_up(rebuilt)
    assert torch.allclose(rebuilt, x, atol=1e-5)
    assert S.pyramid_resolutions(128) == [128, 64, 32, 16] and S.pyramid_resolutions(16) == [16]


def test_wasserstein_1d_hand_computed_equal_and_unequal_sizes():
    a = torch.tensor([[1.0, 0.0]])
    assert S.wasserstein_1d(a, torch.tensor([[3.0, 0.0]])).item() == pytest.approx(1.0)  # |0-0| and |1-3|, mean 1
    # F_a = 1/2 on [0,1), F_b = 3/4 on [0,3): area |1/2-3/4| * 1 + |1-3/4| * 2 = 0.75
    b = torch.tensor([[0.0, 0.0, 3.0, 0.0]])
    assert S.wasserstein_1d(a, b).item() == pytest.approx(0.75)
    # the CDF path on equal sizes agrees with the sorted-difference path
    x, y = torch.randn(4, 50), torch.randn(4, 50) + 0.3
    doubled = torch.cat([y, y], dim=1)  # same distribution as y, twice the size
    assert torch.allclose(S.wasserstein_1d(x, doubled), S.wasserstein_1d(x, y), atol=1e-5)


def test_sliced_wasserstein_of_a_translated_set_is_the_mean_projected_shift():
    generator = torch.Generator().manual_seed(3)
    a = torch.randn(200, 6, generator=generator)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0, 1.0])
    directions = S.random_directions(6, 40, generator)
    assert torch.allclose(directions.norm(dim=0), torch.ones(40))
    expected = (shift @ directions).abs().mean()
    assert S.sliced_wasserstein(a, a + shift, directions).item() == pytest.approx(expected.item(), rel=1e-5)


def test_swd_of_flat_colour_sets_matches_the_closed_form():
    # 16 px: one level. Real = black, white: each channel normalises to -1 / +1, so the
    # descriptors are -u and +u (u = all ones, 147-d). Fake = blue, yellow: R and G as before,
    # B opposite, descriptors -v and +v. Along d the sorted projections are 128 x -|u.d| then
    # 128 x +|u.d| (likewise v), so W1 = ||u.d| - |v.d||.
    real = flat([(0, 0, 0), (255, 255, 255)])
    fake = flat([(0, 0, 255), (255, 255, 0)])
    result = S.swd(real, fake, seed=7)
    u = torch.ones(3, 49)
    v = torch.ones(3, 49)
    v[2] = -1
    directions = S.random_directions(147, 512, torch.Generator().manual_seed(7))
    expected = ((u.flatten() @ directions).abs() - (v.flatten() @ directions).abs()).abs().mean().item() * 1e3
    assert list(result["levels"]) == [16]
    assert result["levels"][16] == pytest.approx(expected, rel=1e-5)
    assert result["swd"] == pytest.approx(expected, rel=1e-5)
    assert result["num_real"] == 2 and result["directions"] == 512 and result["patches_per_image"] == 128


# --------------------------------------------------------------------------- behaviour


def test_identical_sets_score_zero_and_the_result_is_deterministic_and_order_free():
    real, fake = textured(24, seed=1), textured(24, seed=2)
    same = S.swd(real, real.copy(), seed=0)
    assert same["swd"] == 0.0 and all(v == 0.0 for v in same["levels"].values())
    first = S.swd(real, fake, seed=0)
    assert first["swd"] > 0 and list(first["levels"]) == [32, 16]
    assert S.swd(real, fake, seed=0) == first
    order = np.random.default_rng(5).permutation(24)
    assert S.swd(real[order], fake[::-1].copy(), seed=0) == first  # bit-identical in any order
    assert S.swd(real, fake, seed=1)["swd"] != first["swd"]


def test_swd_grows_with_colour_shift():
    real = textured(32, seed=3)
    fake = textured(32, seed=4)
    rotated = fake[..., [1, 2, 0]].astype(np.float32)

    def shifted(t: float) -> np.ndarray:  # hue rotation: channels mixed toward (G, B, R)
        return ((1 - t) * fake + t * rotated).round().astype(np.uint8)

    values = [S.swd(real, shifted(t), seed=0)["swd"] for t in (0.0, 0.3, 0.7)]
    assert values[0] < values[1] < values[2], values


def test_swd_grows_with_blur():
    real = textured(32, seed=5)
    fake = torch.from_numpy(textured(32, seed=6)).permute(0, 3, 1, 2).float()

    def blurred(sigma: float) -> torch.Tensor:
        if sigma == 0:
            return fake.round().to(torch.uint8)
        taps = torch.exp(-(torch.arange(-3, 4.0) ** 2) / (2 * sigma**2))
        kernel = (torch.outer(taps, taps) / taps.sum() ** 2).expand(3, 1, 7, 7)
        return F.conv2d(F.pad(fake, (3, 3, 3, 3), mode="reflect"), kernel, groups=3).round().to(torch.uint8)

    values = [S.swd(real, blurred(s), seed=0)["levels"][32] for s in (0, 0.7, 1.5)]
    assert values[0] < values[1] < values[2], values


def test_input_formats_agree_and_bad_input_is_one_line():
    real, fake = textured(8, seed=7), textured(8, seed=8)
    from_numpy = S.swd(real, fake, seed=0)
    nchw = torch.from_numpy(fake).permute(0, 3, 1, 2)
    assert S.swd(real, nchw, seed=0) == from_numpy
    assert S.swd(real, [image for image in nchw], seed=0, batch_size=3) == from_numpy
    as_float = S.swd(real, nchw.float() / 127.5 - 1.0, seed=0)  # a generator's [-1, 1] range
    assert as_float["swd"] == pytest.approx(from_numpy["swd"], rel=0.5)
    with pytest.raises(S.SWDInputError, match="power-of-two"):
        S.swd(real, np.zeros((2, 24, 24, 3), np.uint8))
    with pytest.raises(S.SWDInputError, match="at least 16"):
        S.swd(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(S.SWDInputError, match="NHWC"):
        S.swd(real, np.zeros((2, 3, 32, 32), np.uint8))
    with pytest.raises(S.SWDInputError, match="different resolutions"):
        S.swd(real, textured(4, resolution=16))


def test_compare_runs_shows_the_in_training_swd_column_and_its_basis(tmp_path, capsys):
    import importlib.util
    import json
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("compare_runs_swd", Path(__file__).resolve().parents[1] / "scripts" / "compare_runs.py")
    compare_runs = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = compare_runs
    spec.loader.exec_module(compare_runs)
    runs = []
    for name, values in (("on", (120.0, 100.0)), ("off", (125.0, 140.0))):
        run = tmp_path / name
        (run / "metrics").mkdir(parents=True)
        rows = []
        for tick, value in zip((1, 2), values):
            rows.append({"tick": tick, "cur_nimg": 500 * tick, "scores/real_sign": 0.5, "scores/real": 1.0, "scores/fake": -1.0})
            rows.append({"kimg": 0.5 * tick, "cur_nimg": 500 * tick, "metrics/swd": value})
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        report = {
            "dataset_content_sha256": "d" * 64,
            "swd": {"swd": values[-1], "num_generated": 256, "num_reference": 48, "patches_per_image": 128, "directions": 512},
        }
        (run / "metrics" / "kimg000001.0.json").write_text(json.dumps(report))
        runs.append(str(run))
    assert compare_runs.main(runs + ["--labels", "on", "off", "--every-kimg", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("| SWD×10³ on | SWD×10³ off |")
    assert lines[2].endswith("| 120.0 | 125.0 |") and lines[3].endswith("| 100.0 | 140.0 |")
    assert "SWD: 256 generated vs 48 real images (dataset dddddddddddd), 128 patches per image and level, 512 directions" in lines
