"""Fine-tuning from an NVIDIA pickle: ``train --init-from x.pkl`` takes the architecture from the
pickle, carries G, D, G_ema and w_avg over, and refuses a config that contradicts the pickle."""

from __future__ import annotations

import pytest
import torch
from nvidia_pickles import load_case, pytorch_snapshot
from safetensors.torch import load_file
from training_support import make_dataset, one_thread, tiny_config, write_config  # noqa: F401 (autouse fixture)

from gan import checkpoint as ck
from gan import train
from gan.config import ConfigError, load_config
from gan.nvidia.source import converted
from gan.transfer import pickle_overrides


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("nvidia-transfer")
    pkl = root / "network-snapshot-000100.pkl"
    pkl.write_bytes(pytorch_snapshot(load_case("c32")))
    data = make_dataset(root / "tiny-32", resolution=32, count=8)
    cfg = tiny_config(data, resolution=32, log={"sample_seeds": 0})
    del cfg["model"]  # the architecture comes from the pickle
    return root, pkl, data, write_config(root / "ft.yaml", cfg)


@pytest.mark.slow
def test_init_from_pickle_fine_tunes_with_its_architecture(setup, tmp_path):
    root, pkl, data, config = setup
    run = tmp_path / "ft"
    argv = ["--config", str(config), "--run-dir", str(run), "--max-kimg", "0.004", "--init-from", str(pkl), "--freeze-d", "1"]
    assert train.main(argv) == 0
    saved = load_config(run / "config.yaml")
    nets = converted(pkl)
    assert saved.model == nets.arch.model and saved.data.resolution == 32
    after = ck.latest_checkpoint(run)
    D = load_file(str(after / "D.safetensors"))
    frozen = [k for k in D if k.startswith("blocks.0.")]
    assert frozen and all(torch.equal(D[k], nets.D[k]) for k in frozen), "FreezeD blocks should keep the pickle's D"
    assert not torch.equal(D["epilogue.out.weight"], nets.D["epilogue.out.weight"]), "the rest of D should train"
    G = load_file(str(after / "G.safetensors"))
    assert torch.allclose(G["mapping.w_avg"], nets.G["mapping.w_avg"], atol=0.1)  # carried over, then moved a little


def test_contradicting_config_is_one_line_error(setup, tmp_path, capsys):
    root, pkl, data, config = setup
    argv = ["--config", str(config), "--run-dir", str(tmp_path / "x"), "--init-from", str(pkl)]
    assert train.main(argv + ["--set", "model.mapping_layers=8"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.mapping_layers=2" in err and "--set sets model.mapping_layers=8" in err
    with pytest.raises(ConfigError, match="data.resolution=32.*sets data.resolution=64"):
        pickle_overrides(str(pkl), None, ["data.resolution=64"])
    # Values that agree with the pickle are fine; unset ones are filled in from it.
    extra = pickle_overrides(str(pkl), None, ["model.z_dim=32", "model.conv_clamp=null"])
    assert "model.mapping_layers=2" in extra and "data.resolution=32" in extra and "model.conv_clamp=null" in extra
    assert pickle_overrides(str(data), None, []) == []  # not a pickle: nothing derived
