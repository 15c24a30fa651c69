"""Transfer learning (gan.transfer, train.py --init-from / --freeze-d): what is carried over,
what FreezeD keeps still, and the one-line errors for sources that do not fit."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from training_support import OneProcess, assert_one_line_error, make_dataset, one_thread, tiny_config, write_config  # noqa: F401 (autouse fixture)

from gan import checkpoint as ck
from gan import train
from gan.checkpoint import CheckpointError
from gan.config import ConfigError, load_config
from gan.training_loop import RunOptions, Trainer
from gan.transfer import check_freeze_d, num_d_blocks


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A dataset and a short source run (the 'movement' model) trained on it."""
    root = tmp_path_factory.mktemp("transfer")
    data = make_dataset(root / "tiny-16", count=8)
    config = write_config(root / "src.yaml", tiny_config(data, log={"sample_seeds": 0}))
    assert train.main(["--config", str(config), "--run-dir", str(root / "src"), "--max-kimg", "0.008"]) == 0
    return root, data, root / "src"


def _config(root, data, name="ft.yaml", **sections):
    return write_config(root / name, tiny_config(data, log={"sample_seeds": 0}, **sections))


def test_init_from_flag_fine_tunes_with_freeze_d(source, tmp_path):
    root, data, src = source
    start = ck.latest_checkpoint(src)
    run = tmp_path / "ft"
    argv = ["--config", str(_config(root, data)), "--run-dir", str(run), "--max-kimg", "0.008"]
    assert train.main(argv + ["--init-from", str(src), "--freeze-d", "1"]) == 0
    saved = load_config(run / "config.yaml")
    assert saved.transfer.init_from == str(src) and saved.transfer.freeze_d == 1  # the flags map to the config keys
    before, after = load_file(str(start / "D.safetensors")), load_file(str(ck.latest_checkpoint(run) / "D.safetensors"))
    frozen = [k for k in before if k.startswith("blocks.0.")]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), "a FreezeD-frozen block moved"
    trained = [k for k in before if k not in frozen]
    assert all(not torch.equal(before[k], after[k]) for k in trained if k.endswith("weight")), "an unfrozen D layer did not train"
    state = json.loads((ck.latest_checkpoint(run) / "state.json").read_text())
    assert state["progress"]["cur_nimg"] == 8, "a transfer starts its own counters (it is not a resume)"


def test_checkpoint_source_carries_g_d_g_ema_and_w_avg(source, tmp_path):
    root, data, src = source
    start = ck.latest_checkpoint(src)
    cfg = load_config(_config(root, data, transfer={"init_from": str(src)}))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    for name, net in (("G", trainer.G), ("D", trainer.D), ("G_ema", trainer.G_ema)):
        stored = load_file(str(start / f"{name}.safetensors"))
        assert all(torch.equal(stored[k], v) for k, v in net.state_dict().items()), f"{name} not carried over"
    w_avg = load_file(str(start / "G.safetensors"))["mapping.w_avg"]
    assert w_avg.abs().sum() > 0, "the source run never updated w_avg (test would prove nothing)"
    assert torch.equal(trainer.G.mapping.w_avg, w_avg)
    assert torch.equal(trainer.G_ema.mapping.w_avg, load_file(str(start / "G_ema.safetensors"))["mapping.w_avg"])
    assert trainer.ada.p == cfg.augment.p and trainer.progress.cur_nimg == 0  # networks only


def test_export_source_fills_g_and_g_ema_and_leaves_d_fresh(source, tmp_path):
    root, data, src = source
    export = src / "generator.safetensors"
    cfg = load_config(_config(root, data, transfer={"init_from": str(export)}))
    trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    stored = load_file(str(export))
    for net in (trainer.G, trainer.G_ema):
        assert all(torch.equal(stored[k], v) for k, v in net.state_dict().items())
    assert stored["mapping.w_avg"].abs().sum() > 0 and torch.equal(trainer.G.mapping.w_avg, stored["mapping.w_avg"])
    fresh = Trainer(load_config(_config(root, data, name="plain.yaml")), OneProcess(), RunOptions(run_dir=tmp_path / "b"))
    assert all(torch.equal(fresh.D.state_dict()[k], v) for k, v in trainer.D.state_dict().items()), "D should start fresh"


def test_incompatible_sources_fail_in_one_line_before_training(source, tmp_path, capsys):
    root, data, src = source
    run = tmp_path / "run"
    base = ["--config", str(_config(root, data)), "--run-dir", str(run)]
    assert_one_line_error(capsys, base + ["--init-from", str(tmp_path / "nowhere")], "--init-from", "no such file")
    assert_one_line_error(
        capsys, base + ["--init-from", str(src), "--set", "data.resolution=32"], "--init-from", "resolution 16", "data.resolution=32"
    )
    assert_one_line_error(
        capsys,
        base + ["--init-from", str(src), "--set", "model.channel_max=16"],
        "--init-from",
        "model.channel_max=32 there, 16 in the config",
    )
    assert_one_line_error(
        capsys,
        base + ["--init-from", str(src / "generator.safetensors"), "--set", "model.z_dim=16"],
        "generator.safetensors",
        "model.z_dim=32 there, 16 in the config",
    )
    # A checkpoint of greyscale networks (state.json says so): refused before its weights are read.
    grey = tmp_path / "grey"
    shutil.copytree(ck.latest_checkpoint(src), grey)
    state = json.loads((grey / "state.json").read_text())
    (grey / "state.json").write_text(json.dumps({**state, "img_channels": 1}))
    assert_one_line_error(capsys, base + ["--init-from", str(grey)], "1-channel")
    not_a_generator = tmp_path / "weights.safetensors"
    not_a_generator.write_bytes(b"\x00" * 64)
    assert_one_line_error(capsys, base + ["--init-from", str(not_a_generator)], "--init-from", "not a safetensors file")
    assert_one_line_error(capsys, base + ["--init-from", str(src), "--freeze-d", "3"], "transfer.freeze_d must be in 0..2")
    assert not run.exists(), "a refused transfer must not create its run dir"


def test_trainer_api_refuses_a_mismatched_export_in_one_line(source, tmp_path):
    root, data, src = source
    cfg = load_config(_config(root, data, model={"channel_max": 16}, transfer={"init_from": str(src / "generator.safetensors")}))
    with pytest.raises(CheckpointError, match="model.channel_max=32 there, 16 in the config"):
        Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))


def test_freeze_d_range_follows_the_resolution():
    assert [num_d_blocks(r) for r in (4, 8, 16, 256)] == [0, 1, 2, 6]
    check_freeze_d(6, 256)
    with pytest.raises(ConfigError, match="0..6"):
        check_freeze_d(7, 256)
    with pytest.raises(ConfigError):
        check_freeze_d(-1, 16)


@pytest.mark.parametrize("init", ["none", "export", "checkpoint"])
def test_freeze_d_without_a_pretrained_discriminator_warns(source, tmp_path, caplog, init):
    root, data, src = source
    argv = ["--config", str(_config(root, data)), "--freeze-d", "1"]
    if init == "export":
        argv += ["--init-from", str(src / "generator.safetensors")]
    elif init == "checkpoint":
        argv += ["--init-from", str(src)]
    with caplog.at_level("WARNING", logger="train"):
        train.resolve_config(train.build_parser().parse_args(argv))
    warned = [r.getMessage() for r in caplog.records if "freeze_d" in r.getMessage()]
    if init == "checkpoint":
        assert not warned  # a checkpoint carries D: FreezeD as intended
    else:
        assert len(warned) == 1 and "random init" in warned[0]
        assert ("no discriminator" in warned[0]) == (init == "export")
