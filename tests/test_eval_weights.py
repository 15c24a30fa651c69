"""eval/weights.py: resolution order, offline errors, checksum policy, safe loading (no network: file:// URLs)."""

import logging
import os
from dataclasses import replace

import pytest
import torch
from eval_support import isolated_caches  # noqa: F401  (fixture)

from eval import weights as W


def _tensor_file(path):
    torch.save({"weight": torch.arange(6.0).view(2, 3)}, path)
    return path


def test_missing_weights_message_names_file_checksum_location_and_url(isolated_caches, tmp_path):
    with pytest.raises(W.MissingWeightsError) as info:
        W.resolve_weights(W.VGG19, weights_dir=tmp_path / "mine")
    message = str(info.value)
    assert "\n" not in message
    # The URL is only read from the spec and printed: nothing is downloaded (ATELIER_OFFLINE=1).
    for part in ("vgg19-dcbb9e9d.pth", "dcbb9e9d", str(tmp_path / "mine"), str(tmp_path / "hub" / "checkpoints"), W.VGG19.url):
        assert part in message


def test_weights_dir_is_searched_before_the_hub_cache(isolated_caches, tmp_path):
    spec = W.WeightSpec("toy", "toy.pth", "file:///nonexistent", None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    cached = _tensor_file(tmp_path / "hub" / "checkpoints" / "toy.pth")
    assert W.resolve_weights(spec) == cached
    (tmp_path / "mine").mkdir()
    mine = _tensor_file(tmp_path / "mine" / "toy.pth")
    assert W.resolve_weights(spec, weights_dir=tmp_path / "mine") == mine


def test_placed_file_with_wrong_prefix_checksum_is_used_with_a_warning(isolated_caches, tmp_path, caplog):
    path = _tensor_file(tmp_path / W.ALEXNET.filename)
    with caplog.at_level(logging.WARNING):
        loaded = W.read_weights(W.ALEXNET, weights_dir=tmp_path)
    assert loaded.path == path and loaded.sha256 == W.file_sha256(path)
    assert "does not match" in caplog.text


def test_download_is_verified_and_a_bad_one_deleted(isolated_caches, tmp_path):
    source = _tensor_file(tmp_path / "source.pth")
    digest = W.file_sha256(source)
    good = W.WeightSpec("toy", "toy-good.pth", source.as_uri(), digest[:8])
    path = W.resolve_weights(good, download=True)
    assert path == tmp_path / "hub" / "checkpoints" / "toy-good.pth" and W.file_sha256(path) == digest
    bad = replace(good, filename="toy-bad.pth", sha256="00000000")
    with pytest.raises(W.WeightsChecksumError, match="expected one starting 00000000"):
        W.resolve_weights(bad, download=True)
    assert not (tmp_path / "hub" / "checkpoints" / "toy-bad.pth").exists()


def test_offline_env_refuses_to_download(isolated_caches, tmp_path, monkeypatch):
    source = _tensor_file(tmp_path / "source.pth")
    monkeypatch.setenv(W.OFFLINE_ENV, "1")
    with pytest.raises(W.MissingWeightsError):
        W.resolve_weights(W.WeightSpec("toy", "toy.pth", source.as_uri(), None))


def test_failed_download_is_a_missing_weights_error(isolated_caches, tmp_path):
    spec = W.WeightSpec("toy", "toy.pth", (tmp_path / "absent.pth").as_uri(), None)
    with pytest.raises(W.MissingWeightsError, match="download failed"):
        W.resolve_weights(spec, download=True)


class _Payload:
    def __reduce__(self):
        return (os.getcwd, ())


def test_load_state_dict_refuses_pickled_code(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "x": _Payload()}, path)
    with pytest.raises(ValueError, match="refused, since loading it could run code"):
        W.load_state_dict(path)


def test_load_state_dict_reads_safetensors_and_torch_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.ones(2)}, str(tmp_path / "w.safetensors"))
    assert torch.equal(W.load_state_dict(tmp_path / "w.safetensors")["a"], torch.ones(2))
    assert W.load_state_dict(_tensor_file(tmp_path / "w.pth"))["weight"].shape == (2, 3)
