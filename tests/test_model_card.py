"""Model cards: every export gets a MODEL_CARD.md (Hugging Face front matter + provenance, latest
metrics with sample counts and feature spaces, memorisation verdict, disclosure, intended use);
``atelier eval`` puts its report into the card of the weights it scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from test_disclosure import dataset  # tests/ is on sys.path under pytest

from eval.report import EvalReport, FidelityResult, MemorisationResult, NearestNeighbour, SWDResult, WeightsUsed, to_json
from gan.config import ModelConfig
from gan.export import resolve_source, save_generator
from gan.model_card import CARD_NAME, card_path, existing_card, update_with_eval
from gan.networks import Generator

RES = 16
CFG = ModelConfig(z_dim=16, w_dim=16, mapping_layers=1, channel_base=256, channel_max=16)


def front_matter(card: Path) -> tuple[dict, str]:
    text = card.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def report(weights_sha256=None, flagged=0) -> dict:
    worst = [
        NearestNeighbour(
            sample=0,
            lpips_distance=0.31,
            lpips_nearest="00001.png",
            inception_distance=None,
            inception_nearest=None,
            flagged=bool(flagged),
            seed=0,
        )
    ]
    rep = EvalReport(
        generator="runs/r1",
        generator_sha256=None,
        samples_dir=None,
        dataset="ds",
        dataset_content_sha256="cd" * 32,
        resolution=RES,
        created="2026-12-01T00:00:00Z",
        generator_weights_sha256=weights_sha256,
        psi=1.0,
        fidelity=FidelityResult(
            metrics={"kid_mean": 0.0123, "kid_std": 0.001},
            num_generated=500,
            num_reference=3,
            seed=0,
            kid_subset_size=3,
            kid_subsets=100,
            kid_subset_size_note=None,
            weights=[WeightsUsed("inception-v3-compat", "pt_inception.pth", "00")],
            reference_cache=None,
        ),
        swd=SWDResult(
            swd=12.5, levels={16: 12.5}, num_generated=64, num_reference=3, seed=0, patches_per_image=128, patch_size=7, directions=512
        ),
        memorisation=MemorisationResult(
            flagged_fraction=flagged / 8,
            num_flagged=flagged,
            num_samples=8,
            num_reference=3,
            seed=0,
            lpips_threshold=0.05,
            inception_threshold=None,
            calibration="0.5 x 5th percentile of real-real LPIPS",
            worst=worst,
            grid="r_nn.png",
            lpips_resolution=64,
            weights=[],
        ),
        extra={"kimg": 1.5},
    )
    return json.loads(to_json(rep))


def make_run(tmp_path: Path, init_from=None) -> Path:
    dataset(tmp_path / "ds")
    run = tmp_path / "runs" / "r1"
    (run / "metrics").mkdir(parents=True)
    config = {"data": {"path": str(tmp_path / "ds")}, "transfer": {"init_from": init_from}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    (run / "metrics.jsonl").write_text(json.dumps({"kimg": 1.5, "metrics/kid": 0.0123}) + "\n{torn")
    (run / "metrics" / "kimg000001.5.json").write_text(json.dumps(report(flagged=2)))
    return run


def export(run: Path) -> Path:
    torch.manual_seed(0)
    return save_generator(Generator(CFG, RES).eval(), RES, CFG, run / "generator.safetensors", extra_meta={"kimg": 1.5, "run": str(run)})


def test_export_writes_a_card_with_provenance_metrics_verdict_and_disclosure(tmp_path):
    run = make_run(tmp_path)
    path = export(run)
    card = run / CARD_NAME
    assert card_path(path) == card and card.is_file()
    meta, body = front_matter(card)
    assert meta["license"] and "ai-generated" in meta["tags"] and "stylegan2-ada" in meta["tags"]
    assert "base_model" not in meta
    data = meta["training_data"]
    assert data == {
        "known": True,
        "artists": ["Claude Monet"],
        "work_count": 3,
        "image_count": 3,
        "all_public_domain": True,
        "licence": "public domain (WikiArt labels)",
        "source": "WikiArt",
        "dataset": "ds",
        "dataset_sha256": "cd" * 32,
    }
    assert len(meta["model_weights_sha256"]) == 64
    assert "| fidelity: kid_mean | 0.0123 | 500 generated vs 3 real | inception-v3-compat |" in body
    assert "| swd: swd (x10^3) | 12.5 | 64 generated vs 3 real | Laplacian-pyramid 7x7 RGB patches" in body
    assert "**2 of 8 samples flagged as near-copies**" in body
    assert ("> AI-generated image: made by atelier in the style of Claude Monet, trained on 3 public-domain works from WikiArt.") in body
    assert "## Intended use" in body and "Not for passing images off" in body


def test_fine_tuned_card_names_its_base_model_and_other_exports_get_their_own_card(tmp_path):
    run = make_run(tmp_path, init_from="runs/impressionism-256")
    meta, body = front_matter(card_path(export(run)))
    assert meta["base_model"] == "runs/impressionism-256" and meta["base_model_relation"] == "finetune"
    assert "fine-tuned from runs/impressionism-256." in body
    torch.manual_seed(1)
    other = save_generator(
        Generator(CFG, RES).eval(),
        RES,
        CFG,
        tmp_path / "models" / "ffhq.safetensors",
        extra_meta={"nvidia": {"file": "ffhq.pkl", "format": "StyleGAN2-ADA"}},
    )
    meta, body = front_matter(tmp_path / "models" / "ffhq.MODEL_CARD.md")
    assert meta["training_data"]["known"] is False and "training data unknown." in body
    assert meta["base_model"].startswith("NVIDIA StyleGAN2-ADA pickle ffhq.pkl")
    assert existing_card(resolve_source(other)) == tmp_path / "models" / "ffhq.MODEL_CARD.md"


def test_eval_report_of_the_same_weights_goes_into_the_card(tmp_path):
    run = make_run(tmp_path)
    source = resolve_source(export(run))
    assert update_with_eval(source, tmp_path / "other.json", report("00" * 32)) is None  # other weights
    assert "other.json" not in (run / CARD_NAME).read_text()
    card = update_with_eval(source, tmp_path / "r.json", report(source.meta["weights_sha256"], flagged=0))
    assert card == run / CARD_NAME
    _, body = front_matter(card)
    assert f"`atelier eval` report `{tmp_path / 'r.json'}`" in body
    assert "No near-copies: none of 8 samples" in body  # the eval report's verdict comes first


@pytest.mark.slow
def test_eval_command_prints_where_the_card_is(tmp_path, capsys):
    from eval.__main__ import main

    run = make_run(tmp_path)
    export(run)
    from training_support import make_dataset  # noqa: PLC0415

    ds = make_dataset(tmp_path / "real", resolution=RES, count=8)
    code = main(
        [
            "--checkpoint",
            str(run),
            "--dataset",
            str(ds),
            "--metrics",
            "swd",
            "--num-samples",
            "8",
            "--out",
            str(tmp_path / "rep.json"),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"model card: {run / CARD_NAME}" in out
    assert str(tmp_path / "rep.json") in (run / CARD_NAME).read_text()


def test_card_fields_are_escaped(tmp_path):
    run = make_run(tmp_path)
    info = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    for row in info["images"]:
        row["work"]["artist"] = "<img src=x onerror=alert(1)> & Co"
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(info))
    meta, body = front_matter(card_path(export(run)))
    assert meta["training_data"]["artists"] == ["<img src=x onerror=alert(1)> & Co"]  # YAML keeps the value
    assert "<img" not in body and "&lt;img src=x onerror=alert(1)&gt; &amp; Co" in body
