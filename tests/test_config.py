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
