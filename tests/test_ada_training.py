"""Augmentation inside the training loop: every mode (ada / fixed / diffaugment) trains, the
pipe sees every image D sees (G phase, D phase, R1 phase), p and r_t reach metrics.jsonl and
the tracker each tick, ADA's p follows the logged r_t, and p survives a checkpoint/resume."""

from __future__ import annotations

import json
import math

import pytest
import torch
from training_support import OneProcess, make_dataset, one_thread, tiny_config, write_config  # noqa: F401 (autouse fixture)

from gan import checkpoint as ck
from gan import reporting, train
from gan.augment import AugmentPipe
from gan.config import load_config
from gan.diffaugment import DiffAugment
from gan.training_loop import RunOptions, Trainer, training_loop

STEPS = 6  # batch 4, one tick per step (tick_kimg 0.004); R1 every 2 steps


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny-16", count=8)


def _cfg(tmp_path, dataset, augment, **sections):
    # pl off: the path-length phase never shows D an image, so the call count below is exact.
    base = tiny_config(dataset, augment={"interval": 1, **augment}, loss={"pl_weight": 0.0}, log={"sample_seeds": 0}, **sections)
    return load_config(write_config(tmp_path / "c.yaml", base))


def _train(tmp_path, dataset, augment, monkeypatch, steps=STEPS):
    """Run ``steps`` steps; returns (metrics.jsonl rows, tracker calls, augment calls by phase)."""
    tracked = []
    monkeypatch.setattr(reporting, "log_scalars", lambda acc, tracker, scalars, step: tracked.append(dict(scalars)))
    calls = {"G_main": 0, "D_main": 0, "D_reg": 0}
    phase = {"name": None}
    real_run_phase = Trainer._run_phase

    def run_phase(self, ph, reals):
        phase["name"] = ph.name
        return real_run_phase(self, ph, reals)

    monkeypatch.setattr(Trainer, "_run_phase", run_phase)
    cfg = _cfg(tmp_path, dataset, augment)
    trainer_box = {}
    real_build = Trainer._build_augment

    def build(self):
        module, controller = real_build(self)
        trainer_box["module"] = module
        if module is not None:
            module.register_forward_hook(lambda *_: calls.__setitem__(phase["name"], calls[phase["name"]] + 1))
        return module, controller

    monkeypatch.setattr(Trainer, "_build_augment", build)
    result = training_loop(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run", stop_kimg=steps * 0.004))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(result.ticks) == steps
    return rows, tracked, calls, trainer_box["module"]


def _assert_trained(rows):
    for row in rows:
        assert math.isfinite(row["Loss/G_main"]) and math.isfinite(row["Loss/D_main"])
    r1 = [row["loss/r1"] for row in rows if "loss/r1" in row]
    assert len(r1) == STEPS // 2 and all(math.isfinite(v) and v > 0 for v in r1), r1  # R1 through the pipe


@pytest.mark.parametrize(
    "augment, kind",
    [
        ({"mode": "ada", "p": 0.2, "target": 0.0, "speed_kimg": 0.04, "pipe": "bgc"}, AugmentPipe),
        ({"mode": "fixed", "p": 0.5, "pipe": "bgcfn"}, AugmentPipe),
        ({"mode": "diffaugment", "diffaugment_policy": "color,translation,cutout"}, DiffAugment),
    ],
)
def test_each_mode_trains_and_augments_every_image_d_sees(tmp_path, dataset, monkeypatch, augment, kind):
    rows, tracked, calls, module = _train(tmp_path, dataset, augment, monkeypatch)
    assert isinstance(module, kind)
    # G phase and D phase every step, the R1 pass every r1_interval=2 steps: all through the pipe.
    assert calls == {"G_main": STEPS, "D_main": STEPS, "D_reg": STEPS // 2}
    _assert_trained(rows)
    # r_t every tick (interval 1) in the JSONL record and in what the tracker received.
    for record in (rows, tracked):
        assert all(-1.0 <= r["augment/rt"] <= 1.0 for r in record), record
    if kind is DiffAugment:
        assert all("augment/p" not in r for r in rows + tracked)  # no probability to report
    else:
        assert all("augment/p" in r for r in rows + tracked)
        assert [r["augment/p"] for r in rows] == [t["augment/p"] for t in tracked]
    if augment["mode"] == "fixed":
        assert all(r["augment/p"] == 0.5 for r in rows)


def test_ada_p_follows_the_logged_overfitting_signal(tmp_path, dataset, monkeypatch):
    increment = 4 * 1 / (0.04 * 1000)  # batch * interval / (speed_kimg * 1000) = 0.1
    rows, _, _, _ = _train(tmp_path, dataset, {"mode": "ada", "p": 0.2, "target": 0.0, "speed_kimg": 0.04}, monkeypatch)
    p = 0.2
    for row in rows:  # one adjustment per tick: p moves by sign(r_t - target) * increment, clamped
        p = min(max(p + math.copysign(increment, row["augment/rt"]) * (row["augment/rt"] != 0), 0.0), 1.0)
        assert row["augment/p"] == pytest.approx(p, abs=1e-6), rows  # p is a float32 buffer
    assert len({row["augment/p"] for row in rows}) > 1, "p never moved"


def test_no_augmentation_still_measures_rt(tmp_path, dataset, monkeypatch):
    rows, tracked, calls, module = _train(tmp_path, dataset, {"mode": "none"}, monkeypatch, steps=4)
    assert module is None and all("augment/rt" in r and "augment/p" not in r for r in rows + tracked)


def test_p_is_checkpointed_and_resume_continues_with_it(tmp_path, dataset):
    cfg = tiny_config(
        dataset,
        augment={"mode": "ada", "p": 0.0, "target": -1.0, "interval": 1, "speed_kimg": 0.04},
        log={"sample_seeds": 0},
        checkpoint={"every_kimg": 0.016},
    )
    config = write_config(tmp_path / "c.yaml", cfg)
    run = tmp_path / "run"
    assert train.main(["--config", str(config), "--run-dir", str(run), "--max-kimg", "0.016"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    saved = torch.load(ck.latest_checkpoint(run) / "training_state.pt", weights_only=True)["augment"]
    assert saved["p"] == rows[-1]["augment/p"] > 0, (saved, rows[-1])  # target -1: p only rises
    assert saved["r_t"] == rows[-1]["augment/rt"]

    trainer = Trainer(load_config(run / "config.yaml"), OneProcess(), RunOptions(run_dir=run, resume=ck.latest_checkpoint(run)))
    assert trainer.ada.p == saved["p"] and float(trainer.augment_pipe.p) == saved["p"]
    assert trainer.ada.steps == saved["steps"] == 4

    assert train.main(["--resume", str(run), "--max-kimg", "0.024"]) == 0
    after = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][len(rows) :]
    increment = 4 / (0.04 * 1000)
    # The first resumed tick moved on from the saved p by at most one adjustment (not from 0).
    assert after and after[0]["augment/p"] == pytest.approx(min(1.0, saved["p"] + increment), abs=increment + 1e-9)
    assert after[0]["augment/p"] >= saved["p"]
