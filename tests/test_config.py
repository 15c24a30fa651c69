from pathlib import Path

import pytest

from gan.config import ConfigError, TrainingConfig, load_config, save_config

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the suite passes from any working directory
CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
SMOKE = CONFIG_DIR / "smoke.yaml"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_preset_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, TrainingConfig)
    assert cfg.name == path.stem


def test_override_changes_value():
    cfg = load_config(SMOKE, ["train.batch=4", "loss.r1_gamma=2.5"])
    assert cfg.train.batch == 4 and cfg.loss.r1_gamma == 2.5


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.bacth=3", "train.bacth"),
        ("train.batch=abc", "train.batch"),
        ("augment.mode=foo", "augment.mode"),
        ("data.resolution=48", "data.resolution"),
        ("train.batch=0", "train.batch"),
        ("nonsense", "key=value"),
    ],
)
def test_bad_override_names_the_key(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, [override])
    message = str(info.value)
    assert needle in message and "\n" not in message


def test_typo_in_yaml_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  bath: 4\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: train.bath"):
        load_config(bad)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config(CONFIG_DIR / "does-not-exist.yaml")


def test_a_mistyped_preset_name_lists_the_presets_beside_it():
    configs = Path(__file__).resolve().parents[1] / "configs"
    with pytest.raises(ConfigError, match=r"smok.yaml \(that folder has: .*smoke.yaml, .*stylegan2-256.yaml"):
        load_config(configs / "smok.yaml")


def test_save_and_reload_roundtrip(tmp_path):
    cfg = load_config(SMOKE, ["train.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "override, needle",
    [
        ("data.workers=-1", "data.workers must be >= 0"),
        ("train.g_lr=-1", "train.g_lr must be > 0"),
        ("train.d_lr=0", "train.d_lr must be > 0"),
        ("train.g_lr=nan", "train.g_lr must be a finite number"),
        ("model.mapping_layers=0", "model.mapping_layers must be >= 1"),
        ("checkpoint.every_kimg=0", "checkpoint.every_kimg must be > 0"),
        ("loss.r1_gamma=-1", "loss.r1_gamma must be >= 0"),
        ("loss.style_mixing=1.5", "loss.style_mixing must be >= 0 and <= 1"),
        ("augment.interval=0", "augment.interval must be >= 1"),
        ("log.tick_kimg=0", "log.tick_kimg must be > 0"),
        ("train.batch_per_gpu=0", "train.batch_per_gpu must be >= 1"),
        ("train.max_bad_steps=0", "train.max_bad_steps must be >= 1"),
        ("train.betas=[0.0,1.0]", "train.betas[1] must be in [0, 1)"),
    ],
)
def test_out_of_range_values_are_one_line_errors(override, needle):
    with pytest.raises(ConfigError) as info:
        load_config(SMOKE, [override])
    message = str(info.value)
    assert needle in message and "\n" not in message, message


def test_a_batch_far_beyond_the_machine_is_refused_with_the_estimate(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from training_support import assert_one_line_error, make_dataset

    data = make_dataset(tmp_path / "data", resolution=32, count=4)
    err = assert_one_line_error(
        capsys,
        ["--config", str(SMOKE), "--data", str(data), "--run-dir", str(tmp_path / "run"), "--set", "train.batch=100000", "--no-wandb"],
        "train.batch=100000 needs at least",
        "GiB",
        "batch_per_gpu",
    )
    assert not (tmp_path / "run").exists(), err  # refused before anything was written
    from gan import memory

    cfg = load_config(SMOKE)
    assert memory.estimate(cfg, 1).per_process * 2 < memory.estimate(cfg, 1).available  # the preset itself fits
