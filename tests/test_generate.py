"""Sampling: seed parsing, per-seed determinism, truncation, grids, GIFs and the generate CLI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.checkpoint import weights_sha256
from gan.config import ModelConfig
from gan.export import load_generator, save_generator
from gan.networks import Generator
from gan.sampling import SeedError, generate_images, interpolate, latents_for_seeds, make_grid, parse_seeds, save_gif

REPO = Path(__file__).resolve().parents[1]
RES = 16
CFG = ModelConfig(z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32)


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    G = Generator(CFG, RES)
    # Trained-looking: a non-zero w_avg (truncation matters) and noise strengths (noise matters;
    # both start at zero in a fresh generator).
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))
        for name, param in G.named_parameters():
            if name.endswith("noise.strength"):
                param.fill_(0.5)
    return G.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def export(G, tmp_path_factory) -> Path:
    return save_generator(G, RES, CFG, tmp_path_factory.mktemp("gen") / "generator.safetensors", {"kimg": 3.0})


def _load_cli():
    from gan import generate

    return generate


def run_cli(*args: str) -> int:
    return _load_cli().main([*args, "--no-progress", "--device", "cpu"])


def test_parse_seeds():
    assert parse_seeds("0-3,70,80-82") == [0, 1, 2, 3, 70, 80, 81, 82]
    assert parse_seeds(" 5 , 2-3 ,5") == [5, 2, 3]  # order kept, duplicates dropped
    for bad, fragment in [
        ("", "no seeds"),
        ("3-1", "backwards"),
        ("1,,2", "empty"),
        ("x", "'x'"),
        ("-4", "'-4'"),
        ("1-2-3", "'1-2-3'"),
        ("4294967296", "too large"),
        ("0-999999", "too many"),
    ]:
        with pytest.raises(SeedError, match=fragment):
            parse_seeds(bad)


def test_latents_depend_only_on_their_seed():
    together = latents_for_seeds([7, 3, 9], 32)
    assert torch.equal(together[1], latents_for_seeds([3], 32)[0])
    assert torch.equal(together[2], latents_for_seeds([9, 1], 32)[0])
    assert together.dtype == torch.float32 and not torch.equal(together[0], together[1])


@pytest.mark.parametrize("noise_mode", ["const", "random", "none"])
def test_images_depend_only_on_their_seed(G, noise_mode):
    batched = generate_images(G, [4, 5, 6], psi=0.7, noise_mode=noise_mode, batch=3)
    alone = generate_images(G, [5], psi=0.7, noise_mode=noise_mode, batch=1)
    assert batched[0].shape == (RES, RES, 3) and batched[0].dtype == np.uint8
    assert np.array_equal(batched[1], alone[0])
    assert not np.array_equal(batched[0], batched[1])


def test_random_noise_differs_from_const_but_repeats(G):
    const = generate_images(G, [1], noise_mode="const")[0]
    random_a = generate_images(G, [1], noise_mode="random")[0]
    random_b = generate_images(G, [1], noise_mode="random")[0]
    assert np.array_equal(random_a, random_b)
    assert not np.array_equal(const, random_a)


def test_psi_zero_gives_one_image_for_all_seeds(G):
    images = generate_images(G, [0, 1, 2, 3], psi=0.0, noise_mode="const", batch=2)
    assert all(np.array_equal(images[0], image) for image in images[1:])
    varied = generate_images(G, [0, 1], psi=1.0, noise_mode="const")
    assert not np.array_equal(varied[0], varied[1])


def test_make_grid_layout():
    images = [np.full((4, 6, 3), i, np.uint8) for i in range(5)]
    grid = make_grid(images)  # ceil(sqrt(5)) = 3 columns, 2 rows
    assert grid.shape == (8, 18, 3)
    assert grid[4, 6, 0] == 4 and grid[7, 17, 0] == 0  # 5th image at row 1 col 1; last cell empty
    assert make_grid(images, cols=5).shape == (4, 30, 3)


def test_interpolation_endpoints_and_gif(G, tmp_path):
    frames = interpolate(G, 2, 9, frames=5, psi=1.0, batch=2)
    assert len(frames) == 5
    assert np.array_equal(frames[0], generate_images(G, [2], psi=1.0)[0])
    assert np.array_equal(frames[-1], generate_images(G, [9], psi=1.0)[0])
    gif = save_gif(frames, tmp_path / "walk.gif", fps=10)
    with Image.open(gif) as im:
        assert im.n_frames == 5 and im.info["duration"] == 100


def test_cli_writes_identical_files_with_metadata(export, tmp_path):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    for out in (out_a, out_b):
        assert (
            run_cli(
                "--checkpoint",
                str(export),
                "--seeds",
                "0-4",
                "--psi",
                "0.7",
                "--out",
                str(out),
                "--grid",
                "--interpolate",
                "1",
                "2",
                "--frames",
                "4",
                "--batch",
                "2",
            )
            == 0
        )
    names = sorted(p.name for p in out_a.iterdir())
    assert names == ["grid.png", "interp-seed0001-seed0002-psi0.70.gif"] + [f"seed{s:04d}-psi0.70.png" for s in range(5)]
    for name in names:
        assert (out_a / name).read_bytes() == (out_b / name).read_bytes(), name
    with Image.open(out_a / "seed0003-psi0.70.png") as im:
        assert im.size == (RES, RES)
        assert im.text["seed"] == "3" and im.text["psi"] == "0.7" and im.text["noise_mode"] == "const"
        assert im.text["weights_sha256"] == weights_sha256(load_generator(export))
    with Image.open(out_a / "grid.png") as im:
        assert im.size == (3 * RES, 2 * RES)
    with Image.open(out_a / "interp-seed0001-seed0002-psi0.70.gif") as im:
        assert im.n_frames == 4


def test_cli_bad_input_is_one_line(export, tmp_path, capsys):
    assert run_cli("--checkpoint", str(tmp_path / "missing"), "--seeds", "0", "--out", str(tmp_path)) == 2
    assert run_cli("--checkpoint", str(export), "--seeds", "3-1", "--out", str(tmp_path)) == 2
    assert run_cli("--checkpoint", str(export), "--out", str(tmp_path)) == 2
    (tmp_path / "a-file").write_text("not a folder")
    assert run_cli("--checkpoint", str(export), "--seeds", "0", "--out", str(tmp_path / "a-file")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("atelier generate: error:") for line in lines)
    assert "does not exist" in lines[0] and "backwards" in lines[1] and "nothing to do" in lines[2]
    assert "a-file exists and is not a directory" in lines[3]
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.slow
def test_script_runs_standalone_with_help():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "generate.py"), "--help"], capture_output=True, text=True, timeout=120, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    for option in (
        "--checkpoint",
        "--seeds",
        "--psi",
        "--noise-mode",
        "--grid",
        "--interpolate",
        "--frames",
        "--fps",
        "--batch",
        "--device",
    ):
        assert option in result.stdout


def test_other_noise_modes_get_their_own_file_names(export, tmp_path):
    """A random-noise run into a folder of const images adds files instead of overwriting them."""
    out = tmp_path / "out"
    for mode in ("const", "random", "none"):
        assert (
            run_cli(
                "--checkpoint",
                str(export),
                "--seeds",
                "1",
                "--noise-mode",
                mode,
                "--out",
                str(out),
                "--interpolate",
                "1",
                "2",
                "--frames",
                "2",
            )
            == 0
        )
    assert sorted(p.name for p in out.iterdir()) == [
        "interp-seed0001-seed0002-psi0.70-noise-none.gif",
        "interp-seed0001-seed0002-psi0.70-noise-random.gif",
        "interp-seed0001-seed0002-psi0.70.gif",
        "seed0001-psi0.70-noise-none.png",
        "seed0001-psi0.70-noise-random.png",
        "seed0001-psi0.70.png",
    ]
    with Image.open(out / "seed0001-psi0.70-noise-random.png") as im:
        assert im.text["noise_mode"] == "random"
