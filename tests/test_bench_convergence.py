"""scripts/bench_convergence.py: runs x seeds trained in process, SWD points with training time, the plot."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from training_support import make_dataset, tiny_config, write_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_convergence", REPO / "scripts" / "bench_convergence.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_run_specs_and_aggregation_over_seeds(bench):
    spec = bench.RunSpec.parse("ADA off:augment.mode=none, train.batch=4")
    assert spec.label == "ADA off" and spec.overrides == ["augment.mode=none", "train.batch=4"]
    assert spec.folder == "ADA-off"
    with pytest.raises(ValueError, match="key=value"):
        bench.RunSpec.parse("x:augment.mode")
    points = [
        {"run": "a", "seed": 0, "cur_nimg": 500, "kimg": 0.5, "train_sec": 10.0, "swd": 100.0},
        {"run": "a", "seed": 1, "cur_nimg": 500, "kimg": 0.5, "train_sec": 14.0, "swd": 110.0},
        {"run": "a", "seed": 2, "cur_nimg": 500, "kimg": 0.5, "train_sec": 12.0, "swd": 120.0},
        {"run": "b", "seed": 0, "cur_nimg": 500, "kimg": 0.5, "train_sec": 5.0, "swd": 90.0},
    ]
    by_time = bench.aggregate(points, "swd", "train_sec")
    assert by_time["a"] == [(12.0, 110.0, pytest.approx(10.0), 3)]  # sample std of 100, 110, 120 is 10
    assert by_time["b"] == [(5.0, 90.0, 0.0, 1)]
    assert bench.aggregate(points, "swd", "kimg")["a"][0][0] == 0.5
    assert bench.aggregate(points, "kid", "kimg") == {}


@pytest.mark.slow  # four tiny trainings in process
def test_two_runs_two_seeds_give_points_jsonl_and_plot(bench, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    dataset = make_dataset(tmp_path / "ds", resolution=16, count=8)
    config = write_config(tmp_path / "tiny.yaml", tiny_config(dataset))
    out = tmp_path / "bench"
    argv = [
        "--config",
        str(config),
        "--kimg",
        "0.016",
        "--every-kimg",
        "0.008",
        "--seeds",
        "0",
        "1",
        "--run",
        "plain",
        "--run",
        "ada:augment.mode=ada",
        "--num-samples",
        "8",
        "--out",
        str(out),
    ]
    assert bench.main(argv) == 0
    points = [json.loads(line) for line in (out / "convergence.jsonl").read_text().splitlines()]
    assert len(points) == 2 * 2 * 2  # runs x seeds x points
    assert {(p["run"], p["seed"]) for p in points} == {(r, s) for r in ("plain", "ada") for s in (0, 1)}
    for run in ("plain", "ada"):
        for seed in (0, 1):
            mine = sorted((p for p in points if p["run"] == run and p["seed"] == seed), key=lambda p: p["cur_nimg"])
            assert [p["cur_nimg"] for p in mine] == [8, 16]
            assert 0 < mine[0]["train_sec"] < mine[1]["train_sec"]
            assert all(math.isfinite(p["swd"]) and p["swd"] > 0 and "swd_16" in p for p in mine)
            assert all(-1 <= p["r_t"] <= 1 for p in mine)  # D's overfitting signal at the same tick
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "| kimg | swd plain | swd ada | r_t plain | r_t ada |"
    assert printed[2].startswith("| 0.008 | ") and " ± " in printed[2]
    cfg = json.loads(json.dumps(__import__("yaml").safe_load((out / "ada" / "seed1" / "config.yaml").read_text())))
    assert cfg["augment"]["mode"] == "ada" and cfg["train"]["seed"] == 1 and cfg["metrics"]["metrics"] == ["swd"]
    with Image.open(out / "convergence.png") as image:
        assert image.format == "PNG" and image.width > 400
    # Run again: every (run, seed) is finished, so nothing trains and the points are the same.
    (out / "convergence.png").unlink()
    assert bench.main(argv) == 0
    assert [json.loads(line) for line in (out / "convergence.jsonl").read_text().splitlines()] == points
    assert bench.main(["--plot-only", "--out", str(out)]) == 0 and (out / "convergence.png").is_file()
    assert bench.main(["--plot-only", "--out", str(tmp_path / "nothing")]) == 2
