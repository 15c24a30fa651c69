"""`python -m eval` end to end on an exported tiny generator, and the in-training hook."""

import json

import pytest
from eval_support import isolated_caches, paintings, tiny_generator, weights_dir, write_dataset  # noqa: F401

from eval import weights as W
from eval.__main__ import run
from eval.in_training import run_training_metrics


@pytest.fixture()
def exported(tmp_path):
    from gan.export import save_generator

    G, model_cfg = tiny_generator()
    return G, save_generator(G, 32, model_cfg, tmp_path / "generator.safetensors")


def test_cli_scores_a_checkpoint_and_writes_report_and_grid(exported, weights_dir, isolated_caches, tmp_path, monkeypatch):
    from gan import sampling

    _, export = exported
    generated_seeds = []
    real_generate = sampling.generate_images

    def counting(G, seeds, *args, **kwargs):
        generated_seeds.extend(seeds)
        return real_generate(G, seeds, *args, **kwargs)

    monkeypatch.setattr(sampling, "generate_images", counting)
    dataset = write_dataset(paintings(4, seed=1), tmp_path / "ds")
    out = tmp_path / "out" / "report.json"
    code = run(
        [
            "--checkpoint",
            str(export),
            "--dataset",
            str(dataset),
            "--metrics",
            "kid,lpips_div,nn",
            "--num-samples",
            "4",
            "--lpips-samples",
            "4",
            "--kid-subsets",
            "5",
            "--lpips-resolution",
            "64",
            "--weights-dir",
            str(weights_dir),
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    assert generated_seeds == [0, 1, 2, 3]  # generated once: KID, LPIPS and nn share the images
    report = json.loads(out.read_text())
    fidelity = report["fidelity"]
    assert fidelity["kid_subset_size"] == 4 and "kid_mean" in fidelity["metrics"]
    assert fidelity["weights"][0] == {
        "extractor": "inception-v3-compat (pool3, 2048-d)",
        "file": W.INCEPTION_V3.filename,
        "sha256": W.file_sha256(weights_dir / W.INCEPTION_V3.filename),
    }
    assert report["diversity"]["num_samples"] == 4 and report["diversity"]["lpips_diversity"] > 0
    memo = report["memorisation"]
    assert memo["num_samples"] == 4 and len(memo["worst"]) == 4 and 0 <= memo["flagged_fraction"] <= 1
    assert memo["grid"] == str(tmp_path / "out" / "report_nn.png") and (tmp_path / "out" / "report_nn.png").is_file()
    from atelier.common.disclosure import read_disclosure

    # The grid shows generated images beside real works: a composite, disclosed as such.
    facts = read_disclosure(tmp_path / "out" / "report_nn.png")
    assert facts["digital_source_type"].endswith("/compositeWithTrainedAlgorithmicMedia"), facts
    assert "AI-generated images (left)" in facts["description"] and facts["ModelWeightsSHA256"] == report["generator_weights_sha256"]
    # Each row names the generate.py seed that regenerates its sample (--seed 0: samples 0..3 are seeds 0..3).
    assert sorted(row["seed"] for row in memo["worst"]) == [row["sample"] for row in sorted(memo["worst"], key=lambda r: r["sample"])]
    assert report["psi"] == 1.0
    assert report["generator_sha256"] == W.file_sha256(export)
    assert report["dataset_content_sha256"] == json.loads((dataset / "dataset.json").read_text())["content_sha256"]


def samples_argv(samples, dataset, weights, out, *extra: str) -> list[str]:
    """``atelier eval`` on a folder of samples, on the CPU (LPIPS at 64 px keeps it quick)."""
    return [
        "--samples",
        str(samples),
        "--dataset",
        str(dataset),
        "--weights-dir",
        str(weights),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--lpips-resolution",
        "64",
        *extra,
    ]


def error_lines(capsys) -> list[str]:
    """The command's error lines (atelier eval: error: ...), without the prefix."""
    prefix = "atelier eval: error: "
    lines = capsys.readouterr().err.strip().splitlines()
    return [line[len(prefix) :] for line in lines if line.startswith(prefix)]


def test_cli_bad_inputs_exit_with_one_line_errors(exported, weights_dir, isolated_caches, tmp_path, capsys):
    _, export = exported
    wrong = write_dataset(paintings(4, seed=1, size=16), tmp_path / "ds16")
    out = tmp_path / "r.json"
    base = ["--checkpoint", str(export), "--out", str(out), "--device", "cpu", "--num-samples", "4"]
    assert run(base + ["--dataset", str(wrong), "--weights-dir", str(weights_dir)]) == 2
    assert "16x16 but the generator makes 32x32" in error_lines(capsys)[0]
    right = write_dataset(paintings(4, seed=1), tmp_path / "ds32")
    assert run(base + ["--dataset", str(right), "--metrics", "kid", "--weights-dir", str(tmp_path / "empty")]) == 2
    err = error_lines(capsys)[0]
    assert W.INCEPTION_V3.filename in err and "put it in" in err
    assert run(base + ["--dataset", str(right), "--metrics", "kid", "--kid-subset-size", "50", "--weights-dir", str(weights_dir)]) == 2
    assert "too few samples for KID subset size 50" in error_lines(capsys)[0]
    assert run(base + ["--dataset", str(right), "--metrics", "fid,bogus"]) == 2
    assert not out.exists()


def test_cli_truncated_sample_png_is_a_one_line_error(weights_dir, isolated_caches, tmp_path, capsys):
    from eval_support import save_pngs

    dataset = write_dataset(paintings(4, seed=1), tmp_path / "ds")
    save_pngs(paintings(3, seed=2), tmp_path / "samples")
    broken = tmp_path / "samples" / "00001.png"
    broken.write_bytes(broken.read_bytes()[:-40])  # cut inside the image data
    out = tmp_path / "r.json"
    code = run(samples_argv(tmp_path / "samples", dataset, weights_dir, out, "--metrics", "lpips_div"))
    assert code == 2 and not out.exists()
    errors = error_lines(capsys)
    assert len(errors) == 1
    assert "00001.png" in errors[0] and "truncated" in errors[0]


def test_in_training_hook_returns_scalars_and_writes_under_the_run(weights_dir, isolated_caches, tmp_path):
    from gan.config import MetricsConfig

    G, _ = tiny_generator()
    G.train()
    dataset = write_dataset(paintings(4, seed=1), tmp_path / "ds")
    cfg = MetricsConfig(metrics=["kid", "lpips_div"], num_samples=4, weights_dir=str(weights_dir))
    result = run_training_metrics(G, cfg, dataset, tmp_path / "run", kimg=12.0, device="cpu")
    assert set(result.scalars) == {"kid", "kid_std", "lpips_div", "lpips_div_train"}
    assert result.nn_panel is None and result.report.is_file()
    assert result.report.parent == tmp_path / "run" / "metrics"
    assert json.loads(result.report.read_text())["extra"]["kimg"] == 12.0
    assert G.training  # the hook leaves the module's mode as it found it


def test_cli_names_every_missing_weights_file_before_generating(exported, weights_dir, isolated_caches, tmp_path, monkeypatch, capsys):
    from gan import sampling

    _, export = exported
    generated = []
    monkeypatch.setattr(sampling, "generate_images", lambda G, seeds, *a, **k: generated.extend(seeds))
    dataset = write_dataset(paintings(4, seed=1), tmp_path / "ds")
    only_inception = tmp_path / "only-inception"
    only_inception.mkdir()
    (only_inception / W.INCEPTION_V3.filename).symlink_to(weights_dir / W.INCEPTION_V3.filename)
    out = tmp_path / "r.json"
    base = [
        "--checkpoint",
        str(export),
        "--dataset",
        str(dataset),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--num-samples",
        "4",
        "--lpips-samples",
        "4",
    ]
    assert run(base + ["--metrics", "kid,pr,lpips_div", "--weights-dir", str(only_inception)]) == 2
    errors = error_lines(capsys)
    assert len(errors) == 1 and "\n" not in errors[0]
    assert W.VGG16.filename in errors[0] and W.ALEXNET.filename in errors[0]
    assert W.INCEPTION_V3.filename not in errors[0]
    assert generated == [] and not out.exists()  # nothing computed before the missing files were named


def test_cli_weights_of_another_network_are_a_one_line_error(isolated_caches, tmp_path, capsys):
    import torch
    import torchvision
    from eval_support import record_sha256, save_pngs

    dataset = write_dataset(paintings(4, seed=1), tmp_path / "ds")
    save_pngs(paintings(4, seed=2), tmp_path / "samples")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    # Readable, tensors-only files holding the wrong network: AlexNet under Inception's name,
    # and a truncated AlexNet (a shape and a key mismatch) under AlexNet's.
    torch.save(torchvision.models.alexnet().state_dict(), wrong / W.INCEPTION_V3.filename)
    record_sha256(wrong / W.INCEPTION_V3.filename)  # past the checksum, to the shape check
    torch.save({"features.0.weight": torch.zeros(3, 3, 3, 3)}, wrong / W.ALEXNET.filename)
    base = samples_argv(tmp_path / "samples", dataset, wrong, tmp_path / "r.json")
    for metrics, name, network in (("kid", W.INCEPTION_V3.filename, "inception-v3-compat"), ("lpips_div", W.ALEXNET.filename, "alexnet")):
        capsys.readouterr()
        assert run(base + ["--metrics", metrics]) == 2
        errors = error_lines(capsys)
        assert len(errors) == 1 and "\n" not in errors[0], errors
        assert name in errors[0] and f"not {network} weights" in errors[0]
    assert not (tmp_path / "r.json").exists()


def test_report_names_and_hashes_the_weights_a_run_dir_resolved_to(exported, weights_dir, isolated_caches, tmp_path):
    _, export = exported  # tmp_path/generator.safetensors: tmp_path is a run dir holding its export
    dataset = write_dataset(paintings(4, seed=1), tmp_path / "ds")
    out = tmp_path / "r.json"
    assert (
        run(
            [
                "--checkpoint",
                str(tmp_path),
                "--dataset",
                str(dataset),
                "--metrics",
                "lpips_div",
                "--lpips-samples",
                "3",
                "--lpips-resolution",
                "64",
                "--weights-dir",
                str(weights_dir),
                "--out",
                str(out),
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert report["generator"] == str(tmp_path)
    assert report["generator_weights"] == str(export)
    assert report["generator_sha256"] == W.file_sha256(export)
    from gan.checkpoint import weights_sha256
    from gan.export import load_generator

    assert report["generator_weights_sha256"] == weights_sha256(load_generator(export))  # generate.py's PNG tag


def test_samples_folder_smaller_than_the_requested_count_is_an_error(weights_dir, isolated_caches, tmp_path, capsys):
    from eval_support import save_pngs

    dataset = write_dataset(paintings(4, seed=1), tmp_path / "ds")
    save_pngs(paintings(3, seed=2), tmp_path / "samples")
    out = tmp_path / "r.json"
    base = samples_argv(tmp_path / "samples", dataset, weights_dir, out, "--metrics", "lpips_div")
    for option in ("--num-samples", "--lpips-samples"):
        capsys.readouterr()
        assert run(base + [option, "50"]) == 2 and not out.exists()
        errors = error_lines(capsys)
        assert len(errors) == 1 and "holds 3 images, fewer than " + option + " 50" in errors[0]
    # By default a folder is scored whole, and the summary says on how many images.
    assert run(base) == 0
    summary = capsys.readouterr().out
    assert "over 3 samples" in summary and "over 3 real works" in summary
    assert json.loads(out.read_text())["diversity"]["num_samples"] == 3
