"""One reader for all weights: each file is opened once, verified, and loaded from those bytes.

A hostile pickle swapped in after the read must never reach an unpickler, inside atelier or
inside torch-fidelity and lpips; torch.load is only ever called with weights_only=True.
"""

import builtins
import os
from pathlib import Path

import pytest
import torch
from eval_support import isolated_caches, paintings, record_sha256, weights_dir, write_dataset  # noqa: F401

from eval import features, fidelity
from eval import weights as W
from eval.fidelity import compute_fidelity
from eval.samples import TensorImages, load_reference


class _Payload:
    """Unpickling this makes a directory: proof that code from the file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _hostile(path: Path, marker: Path) -> None:
    torch.save({"weight": torch.zeros(1), "payload": _Payload(marker)}, path)


@pytest.fixture
def guarded(monkeypatch):
    """torch.load refuses any call without an explicit weights_only=True; every open for reading is recorded."""
    real_load, real_open = torch.load, builtins.open
    opened: list[str] = []

    def load(*args, **kwargs):
        if kwargs.get("weights_only") is not True:
            raise AssertionError(f"torch.load called with weights_only={kwargs.get('weights_only')!r}")
        return real_load(*args, **kwargs)

    def tracking_open(file, *args, **kwargs):
        mode = args[0] if args else kwargs.get("mode", "r")
        if isinstance(file, (str, os.PathLike)) and not set(mode) & set("wax+"):  # reads only
            opened.append(os.path.realpath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    monkeypatch.setattr(builtins, "open", tracking_open)
    return opened


@pytest.fixture
def swap_after_read(monkeypatch, tmp_path):
    """After each weights file is read, replace it on disk with a hostile pickle."""
    marker = tmp_path / "code-ran"
    real = W.read_weights_file

    def read_then_swap(path, spec=None):
        loaded = real(path, spec)
        if Path(path).name != W.lpips_linear_path("alex").name:  # never write into the installed package
            _hostile(Path(path), marker)
        return loaded

    monkeypatch.setattr(W, "read_weights_file", read_then_swap)
    return marker


def _copy_weights(source: Path, target: Path) -> Path:
    target.mkdir()
    for name in (W.INCEPTION_V3.filename, W.ALEXNET.filename, W.RECORDED_SUMS):
        (target / name).write_bytes((source / name).read_bytes())
    return target


def test_fid_kid_weights_swapped_after_the_read_never_reach_an_unpickler(weights_dir, isolated_caches, tmp_path, guarded, swap_after_read):
    folder = _copy_weights(weights_dir, tmp_path / "weights")
    inception = folder / W.INCEPTION_V3.filename
    digest = W.file_sha256(inception)
    dataset = write_dataset(paintings(3, seed=1), tmp_path / "dataset")
    guarded.clear()
    result = compute_fidelity(TensorImages(paintings(3, seed=2)), load_reference(dataset), ["kid"], weights_dir=folder, kid_subsets=2)
    assert not swap_after_read.exists(), "pickled code from the weights file ran"
    assert result.weights[0].sha256 == digest  # the identity of the bytes scored with, not of the swapped file
    assert guarded.count(os.path.realpath(inception)) == 1, "the Inception file was opened more than once"
    # torch-fidelity's own cache is pickles read back with weights_only=False: ours holds tensors only.
    cache = isolated_caches / "xdg" / "atelier" / "fidelity"
    assert fidelity.default_cache_dir() == cache
    assert [f.suffix for f in cache.iterdir()] == [".safetensors"]


def test_lpips_reads_backbone_and_calibration_once_without_unpickling(weights_dir, tmp_path, guarded, swap_after_read):
    folder = _copy_weights(weights_dir, tmp_path / "weights")
    alexnet = folder / W.ALEXNET.filename
    guarded.clear()
    model, loaded = features.lpips_model("alex", folder)
    assert not swap_after_read.exists()
    assert guarded.count(os.path.realpath(alexnet)) == 1
    assert guarded.count(os.path.realpath(W.lpips_linear_path("alex"))) == 1
    # The calibration layers are the package's, copied in from the one read.
    assert torch.equal(
        model.lins[0].model[-1].weight,
        torch.load(W.lpips_linear_path("alex"), map_location="cpu", weights_only=True)["lin0.model.1.weight"],
    )
    assert W.weights_identity(loaded)["sha256"] != W.file_sha256(alexnet)  # the file on disk is the hostile one now


def test_hostile_inception_file_is_refused_by_checksum_before_any_load(weights_dir, isolated_caches, tmp_path, guarded):
    folder = tmp_path / "weights"
    folder.mkdir()
    marker = tmp_path / "code-ran"
    _hostile(folder / W.INCEPTION_V3.filename, marker)
    with pytest.raises(W.WeightsChecksumError, match="does not match the published 6726825d"):
        W.read_weights(W.INCEPTION_V3, folder)
    # Recorded as the file to use, it still cannot run code: tensors only.
    record_sha256(folder / W.INCEPTION_V3.filename)
    with pytest.raises(ValueError, match="refused, since loading it could run code"):
        W.read_weights(W.INCEPTION_V3, folder)
    assert not marker.exists()


def test_inception_checksum_is_enforced_and_a_recorded_one_accepted(weights_dir, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "weights"
    folder.mkdir()
    path = folder / W.INCEPTION_V3.filename
    path.write_bytes((weights_dir / W.INCEPTION_V3.filename).read_bytes())
    with pytest.raises(W.WeightsChecksumError) as info:
        W.read_weights(W.INCEPTION_V3, folder)
    assert "\n" not in str(info.value) and str(path) in str(info.value) and W.RECORDED_SUMS in str(info.value)
    record_sha256(path)
    assert W.read_weights(W.INCEPTION_V3, folder).sha256 == W.file_sha256(path)
    # A recorded digest is enforced too: a changed byte is refused.
    data = bytearray(path.read_bytes())
    data[-100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(W.WeightsChecksumError, match=f"recorded in {folder / W.RECORDED_SUMS}"):
        W.read_weights(W.INCEPTION_V3, folder)
    monkeypatch.setenv(W.SKIP_CHECKSUM_ENV, "1")  # the explicit way out downgrades it to a warning
    with caplog.at_level("WARNING"):
        assert W.read_weights(W.INCEPTION_V3, folder).sha256 == W.file_sha256(path)
    assert "does not match" in caplog.text


def test_changed_lpips_calibration_file_is_refused(weights_dir, tmp_path, monkeypatch):
    copy = tmp_path / "alex.pth"
    data = bytearray(W.lpips_linear_path("alex").read_bytes())
    data[-50] ^= 1
    copy.write_bytes(bytes(data))
    monkeypatch.setattr(W, "lpips_linear_path", lambda net: copy)
    with pytest.raises(W.WeightsChecksumError, match="alex.pth"):
        features.lpips_model("alex", weights_dir)


def test_inception_extractor_carries_the_identity_of_the_bytes_it_was_built_from(weights_dir):
    loaded = W.read_weights(W.INCEPTION_V3, weights_dir)
    extractor = features.inception_extractor(loaded)
    assert extractor.weights_identity == {"file": W.INCEPTION_V3.filename, "sha256": loaded.sha256}
    assert torch.equal(extractor.fc.weight, loaded.tensors["fc.weight"])
