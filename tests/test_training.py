"""Training loop: learning on a trivial dataset, EMA math, lazy-regularisation optimisers,
minibatch order, NaN handling, trackers, the CLI and its one-line errors on bad input."""

from __future__ import annotations

import json
import math
import os
import shutil

import pytest
import torch
from training_support import OneProcess, assert_one_line_error, make_dataset, one_thread, tiny_config, write_config  # noqa: F401 (autouse fixture)

from atelier.common.errors import ExitCode
from gan import checkpoint as ck
from gan import train
from gan.config import load_config
from gan.ema import ema_beta, update_ema
from gan.minibatches import EpochItems, MinibatchOrder, epoch_permutation
from gan.trackers import choose_tracker
from gan.training_loop import RunOptions, Trainer, TrainingDiverged, batch_split, lazy_adam, training_loop


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny-16", count=8)


# --------------------------------------------------------------------------- pieces


def test_ema_beta_ramps_up_and_update_is_a_lerp():
    # No ramp-up: half-life ema_kimg*1000 images, so a batch of 32 keeps 0.5 ** (32 / 10000).
    assert ema_beta(32, 10**6, 10.0, None) == pytest.approx(0.5 ** (32 / 10_000))
    # Early on the ramped half-life is cur_nimg * rampup = 1000 * 0.05 = 50 images.
    assert ema_beta(32, 1000, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 50))
    assert ema_beta(32, 0, 10.0, 0.05) == 0.0  # the very first update copies G
    G, G_ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    G_ema.register_buffer("stat", torch.zeros(2))
    G.register_buffer("stat", torch.ones(2))
    before = G_ema.weight.detach().clone()
    update_ema(G_ema, G, 0.75)
    assert torch.allclose(G_ema.weight, 0.75 * before + 0.25 * G.weight)
    assert torch.equal(G_ema.stat, G.stat)  # buffers are copied, not averaged


def test_lazy_adam_corrects_lr_and_betas():
    opt = lazy_adam([torch.nn.Parameter(torch.zeros(1))], lr=0.0025, betas=[0.0, 0.99], eps=1e-8, reg_interval=16)
    group = opt.param_groups[0]
    ratio = 16 / 17
    assert group["lr"] == pytest.approx(0.0025 * ratio)
    assert group["betas"] == pytest.approx((0.0, 0.99**ratio))
    plain = lazy_adam([torch.nn.Parameter(torch.zeros(1))], lr=0.002, betas=[0.0, 0.99], eps=1e-8, reg_interval=None)
    assert plain.param_groups[0]["lr"] == 0.002 and plain.param_groups[0]["betas"] == (0.0, 0.99)


def test_fused_adam_takes_the_same_step_as_the_per_tensor_one():
    torch.manual_seed(0)
    start = [torch.randn(4, 3), torch.randn(7)]
    grads = [torch.randn(4, 3), torch.randn(7)]
    results = []
    for fused in (False, True):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = lazy_adam(params, lr=0.01, betas=[0.0, 0.99], eps=1e-8, reg_interval=4, fused=fused)
        assert opt.defaults["fused"] is (True if fused else None)
        for _ in range(3):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            opt.step()
        results.append([p.detach() for p in params])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_a_non_finite_gradient_with_a_finite_loss_skips_the_update(tmp_path, dataset):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(dataset)))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    params = list(trainer.G.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    assert trainer._average_gradients(params, torch.tensor(0.5))
    params[3].grad.view(-1)[0] = float("inf")
    assert not trainer._average_gradients(params, torch.tensor(0.5))
    params[3].grad.view(-1)[0] = float("nan")
    assert not trainer._average_gradients(params, torch.tensor(0.5))


def test_each_phase_runs_the_loss_it_carries_and_collectives_stay_out_of_the_loss(tmp_path, dataset):
    """The step calls each due phase's own loss once per accumulation round (no dispatch on names)."""
    import inspect

    import gan.loss

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(dataset, train={"batch": 4, "batch_per_gpu": 2})))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    assert [p.name for p in trainer.phases] == ["G_main", "G_reg", "D_main", "D_reg"]
    calls = []

    def counted(loss, name):
        def run(reals):
            calls.append((name, reals.shape[0]))
            return loss(reals)

        return run

    for phase in trainer.phases:
        phase.loss = counted(phase.loss, phase.name)
    trainer.train_step()  # step 0: every phase is due
    assert calls == [(name, 2) for name in ("G_main", "G_reg", "D_main", "D_reg") for _ in range(2)]
    assert [p.regulariser for p in trainer.phases] == [False, True, False, True]
    assert "torch.distributed" not in inspect.getsource(gan.loss)  # processes meet in gan.process_group


@pytest.mark.parametrize("perf", [{}, {"device_side_skip": False}, {"fused_adam": False}])
def test_a_nan_phase_leaves_weights_and_optimiser_state_untouched(tmp_path, dataset, monkeypatch, perf):
    """Device-side skip (fused Adam's found_inf) and host-side skip leave the same untouched state."""
    from gan.loss import StyleGAN2Loss

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(dataset, perf=perf)))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    assert trainer.device_side_skip == (perf == {}) and trainer.check_lag == 0  # no lag on CPU
    trainer.train_step()  # Adam state exists from here on
    monkeypatch.setattr(StyleGAN2Loss, "d_main", _nan_loss(StyleGAN2Loss.d_main))
    D_before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    opt_before = {i: {k: v.clone() for k, v in st.items()} for i, st in enumerate(trainer.opt_D.state.values())}
    ada_before = trainer.ada.local_stats()
    trainer.train_step()
    assert trainer.progress.bad_runs["D_main"] == 1 and trainer.progress.bad_runs["G_main"] == 0
    assert all(torch.equal(v, trainer.D.state_dict()[k]) for k, v in D_before.items()), "a NaN step changed D"
    for i, st in enumerate(trainer.opt_D.state.values()):
        for k, v in st.items():
            assert torch.equal(v, opt_before[i][k]), f"a NaN step changed D's Adam {k}"
    assert trainer.ada.local_stats() == ada_before


def test_lagged_finite_check_counts_a_bad_step_one_step_later(tmp_path, dataset, monkeypatch):
    """On GPUs the host reads the skip flags a step late (check_lag=1); nothing is lost or counted twice."""
    from gan.loss import StyleGAN2Loss

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(dataset)))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    trainer.check_lag = 1
    monkeypatch.setattr(StyleGAN2Loss, "d_main", _nan_loss(StyleGAN2Loss.d_main))
    trainer.train_step()
    assert trainer.progress.bad_runs == {}  # not read yet
    trainer.train_step()
    assert trainer.progress.bad_runs["D_main"] == 1
    trainer.check_finite()
    assert trainer.progress.bad_runs["D_main"] == 2
    trainer.check_finite()
    assert trainer.progress.bad_runs["D_main"] == 2


def test_batch_split_accumulates_and_rejects_bad_splits():
    assert batch_split(32, None, 4) == (8, 1)
    assert batch_split(32, 4, 4) == (4, 2)  # 4 per round x 2 rounds x 4 processes
    with pytest.raises(Exception, match="not divisible by the 3 processes"):
        batch_split(32, None, 3)
    with pytest.raises(Exception, match="must divide the per-process batch"):
        batch_split(32, 3, 2)


def test_minibatch_order_shards_epochs_and_resumes():
    n, bpg, world = 6, 2, 2
    ranks = [iter(MinibatchOrder(n, bpg, r, world, seed=3)) for r in range(world)]
    stream = [item for _ in range(6) for r in ranks for item in next(r)]  # 6 steps x 4 items = 4 epochs
    for epoch in range(4):
        items = stream[epoch * n : (epoch + 1) * n]
        assert {e for e, _ in items} == {epoch}
        assert [i for _, i in items] == epoch_permutation(n, 3, epoch).tolist()
    # Starting at a stream position continues exactly where an uninterrupted order would be.
    resumed = iter(MinibatchOrder(n, bpg, 1, world, seed=3, start=3 * bpg * world))
    assert next(resumed) == stream[3 * 4 + 2 : 3 * 4 + 4]

    class Flippy:
        epoch = 0

        def set_epoch(self, e):
            self.epoch = e

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return (self.epoch, i)

    assert EpochItems(Flippy())[(5, 0)] == (5, 0)


def test_choose_tracker(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert choose_tracker("wandb") == "wandb"
    assert __import__("os").environ["WANDB_MODE"] == "offline"  # no key: offline, not a prompt
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert choose_tracker("wandb") is None
    monkeypatch.setenv("WANDB_MODE", "online")
    assert choose_tracker("wandb", no_wandb=True) is None
    assert choose_tracker("wandb", cli_choice="tensorboard") == "tensorboard"
    assert choose_tracker("none") is None


# --------------------------------------------------------------------------- training


def test_a_few_steps_reduce_d_loss_on_a_trivial_dataset(tmp_path):
    data = make_dataset(tmp_path / "trivial", count=4, trivial=True)
    cfg = load_config(
        write_config(
            tmp_path / "c.yaml", tiny_config(data, train={"d_lr": 0.01, "g_lr": 0.0005}, loss={"pl_weight": 0.0}, log={"sample_seeds": 0})
        )
    )
    result = training_loop(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run", stop_kimg=0.032))
    d_losses = [tick["Loss/D_main"] for tick in result.ticks]
    assert len(d_losses) == 8
    assert sum(d_losses[-2:]) / 2 < sum(d_losses[:2]) / 2 - 0.05, d_losses
    assert math.isclose(d_losses[0], 2 * math.log(2), abs_tol=0.1)  # an untrained D guesses: 2 ln 2
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [line["cur_nimg"] for line in lines] == [4 * (i + 1) for i in range(8)]
    logged = set().union(*lines)
    assert {"sec_per_kimg", "memory_gb", "lr/G", "Loss/G_main", "Loss/D_reg", "loss/r1", "augment/rt"} <= logged


def test_non_finite_losses_skip_steps_then_stop(tmp_path, dataset, monkeypatch):
    from gan.loss import StyleGAN2Loss

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(dataset, train={"max_bad_steps": 3})))
    good_run = tmp_path / "run"
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--run-dir", str(good_run), "--max-kimg", "0.004"]) == 0
    good = ck.latest_checkpoint(good_run)
    before = (good / "G.safetensors").read_bytes()

    real_d_main = StyleGAN2Loss.d_main

    def nan_d_main(self, *args):
        loss, stats = real_d_main(self, *args)
        return loss * float("nan"), stats

    monkeypatch.setattr(StyleGAN2Loss, "d_main", nan_d_main)
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=good_run, resume=good))
    D_before = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    trainer.train_step()
    assert trainer.progress.bad_steps == 1
    assert all(torch.equal(v, trainer.D.state_dict()[k]) for k, v in D_before.items()), "a NaN step changed D"

    code = train.main(["--resume", str(good_run), "--max-kimg", "1"])
    assert code == ExitCode.DIVERGED
    assert ck.latest_checkpoint(good_run) == good and (good / "G.safetensors").read_bytes() == before


def test_tensorboard_tracker_gets_scalars_and_sample_grids(tmp_path, dataset):
    config = write_config(tmp_path / "c.yaml", tiny_config(dataset, log={"sample_every_kimg": 0.004}))
    run = tmp_path / "tb-run"
    assert train.main(["--config", str(config), "--run-dir", str(run), "--max-kimg", "0.008", "--tracker", "tensorboard"]) == 0
    events = list(run.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent)).Reload()
    assert "Loss/D_main" in acc.Tags()["scalars"] and "samples" in acc.Tags()["images"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "fakes-0000000000.png",
        "fakes-0000000004.png",
        "fakes-0000000008.png",
        "reals.png",
    ]
    from atelier.common.disclosure import read_disclosure

    # Generated grids say in standard metadata that they are AI-made; the grid of real works does not.
    facts = read_disclosure(run / "samples" / "fakes-0000000008.png")
    assert facts is not None and facts["digital_source_type"].endswith("/trainedAlgorithmicMedia"), facts
    assert read_disclosure(run / "samples" / "reals.png") is None
    assert (run / "generator.safetensors").is_file() and (run / "config.yaml").is_file()


# --------------------------------------------------------------------------- CLI and bad input


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        train.main(["--help"])
    text = capsys.readouterr().out
    for option in ("--config", "--set", "--run-dir", "--data", "--max-kimg", "--resume", "--tracker", "--no-wandb", "--deterministic"):
        assert option in text


def test_bad_input_fails_in_one_line_before_training(tmp_path, dataset, capsys):
    config = write_config(tmp_path / "c.yaml", tiny_config(dataset))
    run = tmp_path / "run"
    base = ["--config", str(config), "--run-dir", str(run)]
    assert_one_line_error(capsys, base + ["--data", str(tmp_path / "nowhere")], "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(capsys, base + ["--data", str(empty)], "dataset.json")
    assert_one_line_error(capsys, base + ["--set", "data.resolution=32"], "resolution 32")
    assert_one_line_error(capsys, base + ["--set", "train.bacth=8"], "bacth")
    typo = write_config(tmp_path / "typo.yaml", {**tiny_config(dataset), "trian": {"batch": 8}})
    assert_one_line_error(capsys, ["--config", str(typo), "--run-dir", str(run)], "trian")
    assert_one_line_error(capsys, base + ["--resume", str(tmp_path)], "not a checkpoint")
    assert not run.exists(), "a bad-input run must not create its run dir"

    # A real checkpoint of a wider network, resumed with the tiny config.
    wide = write_config(tmp_path / "wide.yaml", tiny_config(dataset, model={"channel_max": 16}))
    assert train.main(["--config", str(wide), "--run-dir", str(tmp_path / "wide"), "--max-kimg", "0.004"]) == 0
    capsys.readouterr()  # drop that run's progress bar
    assert_one_line_error(capsys, base + ["--resume", str(tmp_path / "wide")], "model.channel_max=16 there, 32 in the config")
    assert not run.exists()


def test_in_training_metrics_hook_logs_scores_without_touching_training_noise(tmp_path, dataset, monkeypatch):
    import eval.in_training as in_training

    calls = []

    def fake_metrics(G_ema, metrics_cfg, dataset_path, run_dir, kimg, device, seed=0):
        calls.append((kimg, str(dataset_path)))
        torch.rand(100)  # a real evaluation samples latents; the loop must shield its own RNG
        return in_training.TrainingMetrics({"kid": 0.5 / (len(calls))}, None, run_dir / "metrics" / "r.json")

    monkeypatch.setattr(in_training, "run_training_metrics", fake_metrics)
    base = tiny_config(dataset, log={"sample_seeds": 0}, metrics={"metrics": []})  # SWD is on by default
    plain = write_config(tmp_path / "plain.yaml", base)
    with_metrics = write_config(tmp_path / "m.yaml", {**base, "metrics": {"metrics": ["kid"], "every_kimg": 0.004}})
    assert train.main(["--config", str(plain), "--run-dir", str(tmp_path / "a"), "--max-kimg", "0.008"]) == 0
    assert train.main(["--config", str(with_metrics), "--run-dir", str(tmp_path / "b"), "--max-kimg", "0.008"]) == 0
    assert calls == [(0.004, str(dataset)), (0.008, str(dataset))]
    lines = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [line["metrics/kid"] for line in lines if "metrics/kid" in line] == [0.5, 0.25]
    a = (ck.latest_checkpoint(tmp_path / "a") / "G.safetensors").read_bytes()
    b = (ck.latest_checkpoint(tmp_path / "b") / "G.safetensors").read_bytes()
    assert a == b, "running metrics changed the training trajectory"

    bad = write_config(tmp_path / "bad.yaml", {**base, "metrics": {"metrics": ["fdi"]}})
    assert train.main(["--config", str(bad), "--run-dir", str(tmp_path / "c")]) == ExitCode.BAD_INPUT
    assert not (tmp_path / "c").exists()


def test_transfer_init_from_with_freeze_d(tmp_path, dataset):
    from safetensors.torch import load_file

    source = write_config(tmp_path / "src.yaml", tiny_config(dataset, log={"sample_seeds": 0}))
    assert train.main(["--config", str(source), "--run-dir", str(tmp_path / "src"), "--max-kimg", "0.004"]) == 0
    start = ck.latest_checkpoint(tmp_path / "src")
    cfg = tiny_config(dataset, log={"sample_seeds": 0}, transfer={"init_from": str(tmp_path / "src"), "freeze_d": 1})
    config = write_config(tmp_path / "ft.yaml", cfg)
    assert train.main(["--config", str(config), "--run-dir", str(tmp_path / "ft"), "--max-kimg", "0.008"]) == 0
    before, after = load_file(str(start / "D.safetensors")), load_file(str(ck.latest_checkpoint(tmp_path / "ft") / "D.safetensors"))
    frozen = [k for k in before if k.startswith("blocks.0.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), "FreezeD block moved"
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in frozen), "D did not train"
    # The frozen block holds the source run's *trained* values, not a fresh init with the same seed.
    from gan.networks import Discriminator

    torch.manual_seed(0)
    fresh = Discriminator(load_config(config).model, 16).state_dict()
    assert any(not torch.equal(fresh[k], after[k]) for k in frozen)


# --------------------------------------------------------------------------- robustness and bookkeeping


def _nan_loss(real):
    def poisoned(self, *args):
        loss, stats = real(self, *args)
        return loss * float("nan"), stats

    return poisoned


def test_a_lazy_phase_failing_every_run_stops_the_run(tmp_path, dataset, monkeypatch):
    from gan.loss import StyleGAN2Loss
    from gan.training_loop import TrainingDiverged

    cfg = load_config(
        write_config(
            tmp_path / "c.yaml", tiny_config(dataset, train={"max_bad_steps": 3}, loss={"pl_interval": 2}, log={"sample_seeds": 0})
        )
    )
    monkeypatch.setattr(StyleGAN2Loss, "g_pathlen", _nan_loss(StyleGAN2Loss.g_pathlen))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    steps = 0
    with pytest.raises(TrainingDiverged, match="3 consecutive G_reg runs"):
        while steps < 10:
            trainer.train_step()  # G_reg runs (and fails) on steps 0, 2, 4; the steps between succeed
            steps += 1
            assert torch.isfinite(trainer.loss.pl_mean)
    assert steps == 4 and trainer.progress.bad_runs["G_reg"] == 3 and trainer.progress.bad_runs["D_main"] == 0


def test_a_skipped_d_step_does_not_move_ada_p(tmp_path, dataset, monkeypatch):
    from gan.loss import StyleGAN2Loss

    cfg = load_config(
        write_config(
            tmp_path / "c.yaml",
            tiny_config(dataset, augment={"mode": "ada", "p": 0.5, "interval": 1, "speed_kimg": 0.01}, log={"sample_seeds": 0}),
        )
    )
    monkeypatch.setattr(StyleGAN2Loss, "d_main", _nan_loss(StyleGAN2Loss.d_main))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    trainer.train_step()
    assert trainer.ada.p == 0.5 and trainer.ada.r_t is None, "statistics of a skipped D step moved p"
    assert trainer.progress.bad_runs["D_main"] == 1
    monkeypatch.undo()
    trainer.train_step()  # a good step measures r_t and moves p as usual
    assert trainer.ada.r_t is not None and trainer.ada.p != 0.5


class TwoProcessesOfOne(OneProcess):
    """Claims two processes and records every reduction (each 'reduces' only its own tensor)."""

    num_processes = 2

    def __init__(self):
        self.reduced = []

    def reduce(self, tensor, reduction="mean"):
        self.reduced.append(tuple(tensor.shape))
        return tensor.clone()


def test_only_w_avg_is_synchronised_among_g_buffers(tmp_path, dataset):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(dataset, log={"sample_seeds": 0})))
    acc = TwoProcessesOfOne()
    trainer = Trainer(cfg, acc, RunOptions(run_dir=tmp_path / "run"))
    assert sum(1 for b in trainer.G.buffers() if b.is_floating_point()) > 2  # filters, noise maps, w_avg
    trainer._sync_buffers()
    assert acc.reduced == [tuple(trainer.G.mapping.w_avg.shape)]


def test_maintenance_time_is_logged_apart_from_training_speed(tmp_path, dataset, monkeypatch):
    import gan.training_loop as loop

    clock = [1000.0]
    monkeypatch.setattr(loop, "time", type("FakeTime", (), {"time": staticmethod(lambda: clock[0])}))
    from gan.reporting import Reporter

    real_step, real_samples = Trainer.train_step, Reporter.write_samples

    def step(self):  # every training step takes 2 s, every sample grid 100 s
        real_step(self)
        clock[0] += 2.0

    def samples(self, *args, **kwargs):
        real_samples(self, *args, **kwargs)
        clock[0] += 100.0

    monkeypatch.setattr(Trainer, "train_step", step)
    monkeypatch.setattr(Reporter, "write_samples", samples)
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(dataset, log={"sample_every_kimg": 0.008})))
    result = training_loop(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run", stop_kimg=0.016))
    # one step (4 images) per tick; grids after ticks 2 and 4 (and before training)
    assert [t["sec_per_tick"] for t in result.ticks] == [2.0] * 4
    assert [t["sec_per_kimg"] for t in result.ticks] == [500.0] * 4
    assert [t["timing/maintenance_sec"] for t in result.ticks] == [0.0, 0.0, 100.0, 0.0]


def test_resume_drops_logged_ticks_it_trains_again(tmp_path, dataset):
    """A kill after ticks were logged but before the next checkpoint: the resumed run logs each kimg once."""
    cfg = tiny_config(
        dataset, checkpoint={"every_kimg": 0.008, "keep_last": 3}, log={"tick_kimg": 0.004}, metrics={"metrics": []}
    )  # tick records only
    write_config(tmp_path / "c.yaml", cfg)
    run = tmp_path / "run"
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--run-dir", str(run), "--max-kimg", "0.016"]) == 0
    # Pretend the run died between the tick at 16 images and its checkpoint, mid-way through a line.
    last = ck.latest_checkpoint(run)
    assert last.name == ck.checkpoint_name(16)
    shutil.rmtree(last)
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"cur_nimg": 20, "tick"')
    assert train.main(["--resume", str(run), "--max-kimg", "0.016"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["cur_nimg"] for r in records] == [4, 8, 12, 16]
    assert [r["tick"] for r in records] == [1, 2, 3, 4]


def test_ctrl_c_ends_in_one_line_naming_the_checkpoint_to_resume(tmp_path, dataset, monkeypatch, capsys):
    write_config(tmp_path / "c.yaml", tiny_config(dataset, checkpoint={"every_kimg": 0.004}))
    run = tmp_path / "run"
    real_step, calls = Trainer.train_step, []

    def step_then_ctrl_c(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real_step(self)

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--run-dir", str(run)]) == ExitCode.INTERRUPTED
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("atelier train: interrupted: ") and "Traceback" not in err
    assert f"checkpoints/{ck.checkpoint_name(8)} (kimg 0.008)" in err and f"--resume {run}" in err


def test_resume_at_or_past_the_stop_point_trains_nothing_and_says_so(tmp_path, dataset, caplog):
    """--max-kimg below where the run stands (or a finished run resumed): no traceback, nothing written."""
    write_config(tmp_path / "c.yaml", tiny_config(dataset, checkpoint={"every_kimg": 0.008}))
    run = tmp_path / "run"
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--run-dir", str(run), "--max-kimg", "0.008"]) == 0
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    metrics = (run / "metrics.jsonl").read_bytes()
    with caplog.at_level("INFO", logger="gan.training_loop"):
        assert train.main(["--resume", str(run), "--max-kimg", "0.004"]) == 0
    assert "nothing to train" in caplog.text
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert (run / "metrics.jsonl").read_bytes() == metrics


def test_a_resume_that_fails_to_load_keeps_the_runs_config(tmp_path, dataset, capsys):
    """--resume --set ... with a damaged checkpoint: one-line error, and config.yaml still holds the run's settings."""
    write_config(tmp_path / "c.yaml", tiny_config(dataset, checkpoint={"every_kimg": 0.008}))
    run = tmp_path / "run"
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--run-dir", str(run), "--max-kimg", "0.008"]) == 0
    saved = (run / "config.yaml").read_bytes()
    weights = ck.latest_checkpoint(run) / "G.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short
    assert train.main(["--resume", str(run), "--set", "train.g_lr=0.001"]) == ExitCode.BAD_INPUT
    assert "G.safetensors" in capsys.readouterr().err
    assert (run / "config.yaml").read_bytes() == saved


@pytest.mark.parametrize("before, after", [(False, True), (True, False)])
def test_resume_runs_adam_the_way_this_run_is_configured(tmp_path, dataset, before, after):
    """perf.fused_adam is this run's choice: a checkpoint made with the other setting resumes and trains."""
    run = tmp_path / "run"
    write_config(tmp_path / "c.yaml", tiny_config(dataset, perf={"fused_adam": before}))
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--run-dir", str(run), "--max-kimg", "0.004"]) == 0
    cfg = load_config(write_config(tmp_path / "c2.yaml", tiny_config(dataset, perf={"fused_adam": after})))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=run, resume=ck.latest_checkpoint(run)))
    for opt in (trainer.opt_G, trainer.opt_D):
        assert all(bool(group["fused"]) is after for group in opt.param_groups)
    steps = [st["step"].item() for st in trainer.opt_D.state.values()]
    trainer.train_step()
    assert [st["step"].item() for st in trainer.opt_D.state.values()] == [s + 1 for s in steps]
    assert trainer.device_side_skip is after


def test_resume_with_channels_last_switched_keeps_adam_state_in_the_parameters_layout(tmp_path, dataset):
    run = tmp_path / "run"
    write_config(tmp_path / "c.yaml", tiny_config(dataset, perf={"channels_last": False}))
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--run-dir", str(run), "--max-kimg", "0.004"]) == 0
    cfg = load_config(write_config(tmp_path / "c2.yaml", tiny_config(dataset, perf={"channels_last": True})))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=run, resume=ck.latest_checkpoint(run)))
    conv = trainer.D.blocks[0].conv0.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for p_ema, p in zip(trainer.G_ema.parameters(), trainer.G.parameters()):
        assert p_ema.stride() == p.stride()  # G_ema follows G's layout (fast foreach EMA)
    for opt in (trainer.opt_G, trainer.opt_D):
        for param, state in opt.state.items():
            assert state["exp_avg"].stride() == param.stride() and state["exp_avg_sq"].stride() == param.stride()
    # The resumed fused step equals a per-tensor Adam step from the same state.
    reference = torch.optim.Adam(
        [torch.nn.Parameter(conv.detach().clone())],
        lr=trainer.opt_D.param_groups[0]["lr"],
        betas=trainer.opt_D.param_groups[0]["betas"],
        eps=trainer.opt_D.param_groups[0]["eps"],
    )
    ref_param = reference.param_groups[0]["params"][0]
    reference.state[ref_param] = {k: v.clone() for k, v in trainer.opt_D.state[conv].items()}
    reference.state[ref_param]["step"] = reference.state[ref_param]["step"].cpu()
    grad = torch.randn_like(conv)
    for p in trainer.opt_D.param_groups[0]["params"]:
        p.grad = grad if p is conv else torch.zeros_like(p)
    ref_param.grad = grad.clone()
    trainer.opt_D.step()
    reference.step()
    torch.testing.assert_close(conv.detach(), ref_param.detach())


def test_precision_falls_back_where_the_machine_cannot_run_it(monkeypatch):
    assert train._supported_precision("bf16") == "bf16"  # CPU autocast runs bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert train._supported_precision("fp16") == "no"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # A pre-Ampere GPU: bf16 only by emulation, which torch counts as "supported" by default.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert train._supported_precision("bf16") == "no"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert train._supported_precision("bf16") == "bf16"
    assert train._supported_precision("fp16") == "fp16"


def test_deterministic_from_the_config_sets_up_cublas(tmp_path, dataset, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "unset")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    write_config(tmp_path / "c.yaml", tiny_config(dataset, train={"deterministic": True}))
    assert train.main(["--config", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run"), "--max-kimg", "0.004"]) == 0
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG") == ":4096:8"


def test_fp16_overflow_with_no_scale_left_counts_as_a_bad_run(tmp_path, dataset, monkeypatch):
    """With a GradScaler (fp16), non-finite gradients at scale <= 1 are divergence, not overflow."""
    from gan.loss import StyleGAN2Loss

    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(dataset, train={"max_bad_steps": 2})))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    trainer.acc = OneProcess()
    trainer.acc.scaler = torch.amp.GradScaler("cpu", init_scale=4.0)
    weight = trainer.D.blocks[0].conv0.weight
    real_d_main = StyleGAN2Loss.d_main

    def nan_gradient(self, *args):
        loss, stats = real_d_main(self, *args)
        # sqrt at 0: the value stays 0 (finite loss) while the gradient is 0 * inf = NaN.
        return loss + (weight - weight.detach()).square().sum().sqrt(), stats

    monkeypatch.setattr(StyleGAN2Loss, "d_main", nan_gradient)
    trainer.train_step()  # scale 4 -> 2: the scaler's business
    trainer.train_step()  # 2 -> 1
    assert trainer.progress.bad_runs.get("D_main", 0) == 0
    trainer.train_step()  # 1 -> 0.5: no headroom left
    assert trainer.progress.bad_runs["D_main"] == 1
    with pytest.raises(TrainingDiverged, match="D_main"):
        trainer.train_step()


def test_loader_workers_share_one_preloaded_copy_of_the_dataset(tmp_path, dataset):
    cfg = load_config(write_config(tmp_path / "c.yaml", tiny_config(dataset, data={"workers": 1, "cache": True})))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    assert trainer.dataset.preloaded
    trainer.train_step()
    assert trainer.progress.step == 1
