"""FD_DINOv2 (eval/dinov2.py): timm's DINOv2 ViT loaded from a safetensors file made here (random init)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from eval_support import isolated_caches, paintings, save_pngs, write_dataset  # noqa: F401

from eval import dinov2 as D
from eval import weights as W
from eval.__main__ import main

SMALL = D.MODELS["vits14"]


@pytest.fixture(scope="module")
def dinov2_dir(tmp_path_factory) -> Path:
    """A --weights-dir holding a random-init ViT-S/14 DINOv2 in timm's Hub format (safetensors, same keys)."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(SMALL.timm_name, pretrained=False, num_classes=0)
    folder = tmp_path_factory.mktemp("dinov2")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / SMALL.weights.filename))
    return folder


def error_lines(capsys) -> list[str]:
    prefix = "atelier eval: error: "
    return [line[len(prefix) :] for line in capsys.readouterr().err.strip().splitlines() if line.startswith(prefix)]


def test_features_and_distances_in_dinov2_space(dinov2_dir):
    model = D.build_model("vits14", dinov2_dir / SMALL.weights.filename)
    images = paintings(6, seed=1)
    features = D.extract(model, images, batch_size=4)
    assert features.shape == (6, 384) and features.dtype == torch.float64 and torch.isfinite(features).all()
    assert torch.allclose(D.extract(model, images[3:4]), features[3:4], atol=1e-4)  # batch-independent
    same, _ = D.fd_kid_pr(features, features.clone(), ["fd_dinov2"])
    assert abs(same["fd_dinov2"]) < 1e-6
    shifted, subset = D.fd_kid_pr(features + 1.0, features, ["fd_dinov2", "kid_dinov2", "pr_dinov2"], kid_subsets=5)
    assert shifted["fd_dinov2"] == pytest.approx(384.0, rel=1e-6)  # |mu1 - mu2|^2 with equal covariances
    assert subset == 6 and {"kid_dinov2_mean", "kid_dinov2_std", "precision_dinov2", "recall_dinov2"} <= set(shifted)


def test_cli_reports_fd_dinov2_with_its_feature_space(dinov2_dir, isolated_caches, tmp_path, capsys):
    dataset = write_dataset(paintings(6, seed=1), tmp_path / "ds")
    save_pngs(paintings(6, seed=2), tmp_path / "samples")
    out = tmp_path / "r.json"
    code = main(
        [
            "--samples",
            str(tmp_path / "samples"),
            "--dataset",
            str(dataset),
            "--metrics",
            "fd_dinov2,kid_dinov2,pr_dinov2,swd",
            "--dinov2-model",
            "vits14",
            "--weights-dir",
            str(dinov2_dir),
            "--kid-subsets",
            "5",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    dino = report["dinov2"]
    assert set(dino["metrics"]) == {"fd_dinov2", "kid_dinov2_mean", "kid_dinov2_std", "precision_dinov2", "recall_dinov2"}
    assert dino["metrics"]["fd_dinov2"] > 0 and dino["num_generated"] == 6 and dino["num_reference"] == 6
    assert "DINOv2 ViT-S/14" in dino["feature_space"] and "384-d" in dino["feature_space"]
    assert dino["weights"][0]["file"] == SMALL.weights.filename
    assert dino["weights"][0]["sha256"] == W.file_sha256(dinov2_dir / SMALL.weights.filename)
    assert "no pretrained network" in report["swd"]["feature_space"] and report["swd"]["swd"] > 0
    printed = capsys.readouterr().out
    assert "fd_dinov2=" in printed and "features: DINOv2 ViT-S/14" in printed and "swd=" in printed


def test_offline_missing_or_wrong_weights_are_one_line_errors(dinov2_dir, isolated_caches, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(W.OFFLINE_ENV, "1")
    dataset = write_dataset(paintings(4, seed=1), tmp_path / "ds")
    save_pngs(paintings(4, seed=2), tmp_path / "samples")
    base = [
        "--samples",
        str(tmp_path / "samples"),
        "--dataset",
        str(dataset),
        "--metrics",
        "fd_dinov2",
        "--out",
        str(tmp_path / "r.json"),
        "--device",
        "cpu",
    ]
    assert main(base) == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and W.DINOV2_VITL14.filename in errors[0] and "--weights-dir" in errors[0]
    assert not (tmp_path / "r.json").exists()
    # A ViT-S file under the ViT-L name: refused in one line naming the file, not hundreds of key names.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / W.DINOV2_VITL14.filename).symlink_to(dinov2_dir / SMALL.weights.filename)
    assert main(base + ["--weights-dir", str(wrong)]) == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and W.DINOV2_VITL14.filename in errors[0] and "not DINOv2 ViT-L/14" in errors[0]
