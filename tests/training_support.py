"""Helpers for the training tests: a tiny prepared dataset and a tiny preset, built in tmp dirs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_dataset(root: Path, resolution: int = 16, count: int = 8, seed: int = 0, trivial: bool = False) -> Path:
    """Write ``count`` RGB PNGs and a dataset.json (atelier-dataset/1) into ``root``.

    ``trivial``: every image is the same two-colour picture (a task D learns within a few steps).
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        pixels = np.zeros((resolution, resolution, 3), np.uint8)
        colour = (230, 40, 40) if trivial else rng.integers(0, 256, 3)
        pixels[:, : resolution // 2] = colour
        pixels[:, resolution // 2 :] = 255 - np.asarray(colour) if trivial else rng.integers(0, 256, 3)
        name = f"{i:05d}.png"
        Image.fromarray(pixels).save(root / name)
        digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
        rows.append({"file": name, "sha256": digest, "source": f"test-{i}", "crop_box": [0, 0, resolution, resolution]})
    info = {
        "format": "atelier-dataset/1",
        "resolution": resolution,
        "count": count,
        "source_manifest_sha256": None,
        "content_sha256": hashlib.sha256("".join(sorted(r["sha256"] for r in rows)).encode()).hexdigest(),
        "images": rows,
        "dropped": [],
    }
    (root / "dataset.json").write_text(json.dumps(info))
    return root


def tiny_config(dataset: Path, resolution: int = 16, **sections: dict) -> dict:
    """A preset dict with tiny networks (channel_max 32, z/w 32), batch 4, no tracker."""
    cfg = {
        "name": "tiny",
        "data": {"path": str(dataset), "resolution": resolution, "workers": 0, "xflip": True},
        "model": {"z_dim": 32, "w_dim": 32, "mapping_layers": 2, "channel_base": 256, "channel_max": 32, "mbstd_group": 2},
        "loss": {"r1_gamma": 0.1, "r1_interval": 2, "pl_interval": 2, "pl_weight": 2.0},
        "train": {"batch": 4, "ema_kimg": 0.01, "ema_rampup": 0.05, "total_kimg": 1.0},
        "augment": {"mode": "none"},
        "checkpoint": {"every_kimg": 1.0, "keep_last": 2},
        "log": {"tracker": "none", "tick_kimg": 0.004, "sample_every_kimg": 1.0, "sample_seeds": 4},
        "metrics": {"metrics": []},  # in-training SWD (on by default) only where a test asks for it
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


class OneProcess:
    """The part of accelerate.Accelerator the Trainer uses, for a plain single CPU process."""

    device = torch.device("cpu")
    is_main_process, is_local_main_process, process_index, num_processes, scaler, trackers = True, True, 0, 1, None, []

    def wait_for_everyone(self) -> None:
        pass

    def autocast(self):
        return torch.autocast("cpu", enabled=False)

    def backward(self, loss) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()  # as accelerate does

    def reduce(self, tensor, reduction="mean"):
        return tensor


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: threads only add overhead, and the CI machine is shared.

    Autouse in every test module that imports it.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def assert_one_line_error(capsys, argv, *needles) -> str:
    """Run ``atelier train`` on ``argv``; it must exit with bad input and one error line holding every needle."""
    from atelier.common.errors import ExitCode
    from gan import train

    code = train.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == ExitCode.BAD_INPUT, err
    assert err.startswith("atelier train: error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
