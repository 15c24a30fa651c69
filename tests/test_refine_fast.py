"""The fast transfer network: architecture, model file, training (resume, targets) and ``refine --fast``.

Tiny everything: a 32 px crop, a network 4-8 filters wide, VGG19 with seeded random weights
written as a features-only state dict (the real loading code reads it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file

from eval import refine, refine_train
from eval.fast_refiner import apply, load_fast_refiner, save_fast_refiner
from eval.refine_images import RefineInputError
from eval.style_transfer import STYLE_LAYERS, gram_matrix
from eval.transfer_net import ResidualBlock, TransferNet, TransferNetConfig, UpsampleConv
from eval.vgg import VGG19Features

TINY = ["--image-size", "32", "--batch", "2", "--channels", "4", "--residual-blocks", "1", "--log-every", "1", "--cpu", "--tracker", "none"]


def _save(array: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fast")
    torch.manual_seed(0)
    weights = root / "vgg19-features.pth"
    torch.save(torchvision.models.vgg19(weights=None).features.state_dict(), weights)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:40, 0:48] / 48.0
    for i in range(5):
        base = np.stack([x, y, np.full_like(x, 0.2 * i)], -1)
        _save(base + 0.05 * rng.standard_normal(base.shape), root / "content" / f"c{i}.png")
    _save(rng.random((29, 37, 3)), root / "content" / "odd.png")  # no multiple of 4
    for i in range(3):
        t = 0.5 + 0.45 * np.sin(np.mgrid[0:32, 0:32][1] * (0.6 + 0.5 * i))
        _save(np.stack([t, 0.5 * t, 1 - t], -1), root / "works" / f"w{i}.png")
    return {"root": root, "weights": weights, "content": root / "content", "works": root / "works"}


def _train(files, out: Path, *extra: str) -> int:
    argv = [
        "--content",
        str(files["content"]),
        "--style",
        str(files["works"]),
        "--out",
        str(out),
        "--weights",
        str(files["weights"]),
        *TINY,
        *extra,
    ]
    return refine_train.main(argv)


def test_network_reads_like_the_paper_keeps_any_size_and_paints_no_checkerboard():
    net = TransferNet()
    assert sum(isinstance(m, ResidualBlock) for m in net.modules()) == 5
    assert sum(isinstance(m, UpsampleConv) for m in net.modules()) == 2
    assert not any(isinstance(m, (torch.nn.ConvTranspose2d, torch.nn.BatchNorm2d)) for m in net.modules())
    assert sum(isinstance(m, torch.nn.InstanceNorm2d) for m in net.modules()) == 3 + 2 * 5 + 2
    torch.manual_seed(1)
    small = TransferNet(TransferNetConfig(channels=8, residual_blocks=2))
    with torch.no_grad():
        for shape in ((1, 3, 17, 23), (2, 3, 32, 32), (1, 3, 5, 6)):
            out = small(torch.rand(shape))
            assert out.shape == shape and out.min() >= 0 and out.max() <= 1
        # A flat input stays flat: every output pixel is computed the same way (a stride-2
        # transposed convolution would paint a period-2 checkerboard here).
        flat = small(torch.full((1, 3, 32, 32), 0.3))
    assert float(flat.std(dim=(2, 3)).max()) < 1e-5


def test_model_file_round_trip_strength_blend_and_bad_files(tmp_path):
    torch.manual_seed(2)
    net = TransferNet(TransferNetConfig(channels=4, residual_blocks=1)).eval()
    path = tmp_path / "model.safetensors"
    save_fast_refiner(path, net, {"sources": {"style": "works"}, "step": 7})
    refiner = load_fast_refiner(path)
    images = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        expected = net(images)
    assert torch.allclose(apply(refiner, images, 1.0), expected, atol=1e-6)
    assert torch.allclose(apply(refiner, images, 0.5), (expected + images) / 2, atol=1e-6)
    assert apply(refiner, images, 0.0) is images
    assert apply(refiner, images[0]).shape == (3, 20, 28)
    assert refiner.training["step"] == 7 and len(refiner.sha256) == 64

    with pytest.raises(RefineInputError, match="no such model file"):
        load_fast_refiner(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(RefineInputError, match="not a safetensors model file"):
        load_fast_refiner(tmp_path / "junk.safetensors")
    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "something-else"})
    with pytest.raises(RefineInputError, match="not an atelier transfer network"):
        load_fast_refiner(tmp_path / "other.safetensors")
    state = load_file(str(path))
    state.pop(next(iter(state)))
    save_file(
        state,
        str(tmp_path / "partial.safetensors"),
        metadata={"format": "atelier-transfer-net/1", "config": json.dumps({"channels": 4, "residual_blocks": 1})},
    )
    with pytest.raises(RefineInputError, match="weights do not fit"):
        load_fast_refiner(tmp_path / "partial.safetensors")


def test_training_resumes_exactly_and_lowers_the_loss(files, tmp_path, capsys):
    full, split = tmp_path / "full", tmp_path / "split"
    assert _train(files, full, "--steps", "8", "--lr", "0.01", "--checkpoint-every", "4") == 0
    assert _train(files, split, "--steps", "8", "--lr", "0.01", "--checkpoint-every", "4", "--max-steps", "3") == 0
    assert "stopped at step 3 of 8" in capsys.readouterr().out
    assert refine_train.main(["--out", str(split), "--resume", "--weights", str(files["weights"]), "--cpu", "--tracker", "none"]) == 0
    a, b = load_file(str(full / refine_train.MODEL_NAME)), load_file(str(split / refine_train.MODEL_NAME))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    metrics = [json.loads(line) for line in (full / refine_train.METRICS).read_text().splitlines()]
    resumed = [json.loads(line) for line in (split / refine_train.METRICS).read_text().splitlines()]
    assert [m["step"] for m in resumed] == list(range(1, 9))
    assert [m["total"] for m in resumed] == [m["total"] for m in metrics]
    assert np.mean([m["total"] for m in metrics[-3:]]) < np.mean([m["total"] for m in metrics[:3]])
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["step-0000004", "step-0000008"]
    record = json.loads((full / "train.json").read_text())
    assert record["settings"]["style_target"] == "mean" and record["works"] == 3
    # The run's model is what refine --fast loads.
    assert load_fast_refiner(full / refine_train.MODEL_NAME).training["step"] == 8
    # Files follow the umask (0644 under 022), so teammates can read them: not safetensors' 0600.
    for written in (
        full / refine_train.MODEL_NAME,
        full / "checkpoints" / "step-0000008" / "net.safetensors",
        full / "checkpoints" / "step-0000008" / "optimizer.pt",
    ):
        assert written.stat().st_mode & 0o777 == 0o666 & ~_umask(), written


def test_style_targets_mean_gram_and_sampled_works(files, tmp_path):
    torch.manual_seed(0)
    vgg = VGG19Features(torchvision.models.vgg19(weights=None).features.state_dict(), STYLE_LAYERS)
    works = [torch.rand(3, 16, 16), torch.rand(3, 16, 16) * 0.5]
    target = refine_train.mean_grams(vgg, works)
    with torch.no_grad():
        for layer in STYLE_LAYERS:
            manual = (gram_matrix(vgg(works[0][None])[layer]) + gram_matrix(vgg(works[1][None])[layer]))[0] / 2
            assert torch.allclose(target[layer], manual, rtol=1e-5, atol=1e-8)
    settings = refine_train.TrainSettings(seed=3)
    assert refine_train.draw_works(10, settings, 5, 4) == refine_train.draw_works(10, settings, 5, 4)
    assert _train(files, tmp_path / "sampled", "--steps", "2", "--style-target", "sampled") == 0
    assert json.loads((tmp_path / "sampled" / "train.json").read_text())["settings"]["style_target"] == "sampled"


def test_refine_fast_stylises_a_folder_at_every_size(files, tmp_path):
    torch.manual_seed(3)
    model = tmp_path / "model.safetensors"
    save_fast_refiner(model, TransferNet(TransferNetConfig(channels=4, residual_blocks=1)), {"step": 1})
    out = tmp_path / "out"
    assert refine.main(["--input", str(files["content"]), "--fast", str(model), "--out", str(out), "--strength", "0.6"]) == 0
    for sample in sorted(files["content"].iterdir()):
        report = json.loads((out / f"{sample.stem}.json").read_text())
        assert report["mode"] == "fast" and report["model"]["sha256"] == load_fast_refiner(model).sha256
        with Image.open(sample) as before, Image.open(out / report["output"]) as after:
            assert after.size == before.size and after.mode == "RGB"
            assert np.abs(np.asarray(after, float) - np.asarray(before, float)).mean() > 1
    zero = tmp_path / "zero"
    assert refine.main(["--input", str(files["content"] / "odd.png"), "--fast", str(model), "--out", str(zero), "--strength", "0"]) == 0
    assert (zero / "odd.png").read_bytes() == (files["content"] / "odd.png").read_bytes()


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no_style", "--style is required"),
        ("no_content", "give the content images"),
        ("empty_content", "holds no images"),
        ("resume_nothing", "has no train.json"),
        ("bad_size", "--image-size must be at least 16 px"),
        ("existing_run", "already holds a run"),
    ],
)
def test_refine_train_bad_input_is_one_line_before_vgg_loads(case, expected, files, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(refine_train, "load_vgg19", lambda *a, **k: pytest.fail("VGG19 loaded"))
    out = tmp_path / "out"
    argv = ["--content", str(files["content"]), "--style", str(files["works"]), "--out", str(out), *TINY]
    if case == "no_style":
        argv = ["--content", str(files["content"]), "--out", str(out), *TINY]
    elif case == "no_content":
        argv = ["--style", str(files["works"]), "--out", str(out), *TINY]
    elif case == "empty_content":
        (tmp_path / "empty").mkdir()
        argv[1] = str(tmp_path / "empty")
    elif case == "resume_nothing":
        argv = ["--out", str(out), "--resume", *TINY]
    elif case == "bad_size":
        argv += ["--image-size", "8"]
    elif case == "existing_run":
        (out / "checkpoints" / "step-0000001").mkdir(parents=True)
        (out / "checkpoints" / "step-0000001" / "state.json").write_text("{}")
    capsys.readouterr()
    assert refine_train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("atelier refine-train: error:") and expected in err[0], err


def test_refine_fast_bad_model_and_mixed_options(files, tmp_path, capsys):
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    cases = [
        (["--fast", str(tmp_path / "junk.safetensors")], "not a safetensors model file"),
        (["--fast", str(tmp_path / "junk.safetensors"), "--style", str(files["works"])], "drop --style"),
    ]
    for extra, expected in cases:
        capsys.readouterr()
        assert refine.main(["--input", str(files["content"]), "--out", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "out").exists()


def test_training_logs_to_tensorboard(files, tmp_path):
    out = tmp_path / "tb"
    assert _train(files, out, "--tracker", "tensorboard", "--steps", "2") == 0  # the later --tracker wins
    assert list(out.rglob("events.out.tfevents.*"))


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
