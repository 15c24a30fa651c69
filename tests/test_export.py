"""Generator export: save/load round trip, the three accepted inputs, and one-line errors on bad ones."""

from __future__ import annotations

import dataclasses
import json
import pickle
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from gan.checkpoint import Progress, Snapshot, save_checkpoint
from gan.config import ModelConfig
from gan.export import FORMAT, GeneratorLoadError, describe_generator, load_generator, save_generator
from gan.networks import Generator

RES = 16
CFG = ModelConfig(z_dim=32, w_dim=32, mapping_layers=2, channel_base=512, channel_max=32)


def make_generator(seed: int, cfg: ModelConfig = CFG) -> Generator:
    torch.manual_seed(seed)
    G = Generator(cfg, RES)
    # Trained-looking: a non-zero w_avg (truncation matters) and noise strengths (noise matters;
    # both start at zero in a fresh generator).
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn_like(G.mapping.w_avg))
        for name, param in G.named_parameters():
            if name.endswith("noise.strength"):
                param.fill_(0.5)
    return G.eval()


def render(G: Generator) -> torch.Tensor:
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        return G(z, psi=0.7, noise_mode="const")


def write_checkpoint(run_dir, G: Generator, nimg: int):
    """A real training checkpoint (gan.checkpoint's writer) holding only G_ema; returns its dir."""
    single_process = SimpleNamespace(is_main_process=True, process_index=0, num_processes=1, wait_for_everyone=lambda: None)
    meta = {"model": dataclasses.asdict(CFG), "resolution": RES, "img_channels": 3, "run": str(run_dir)}
    snap = Snapshot(networks={"G_ema": G}, optimizers={}, progress=Progress(cur_nimg=nimg), meta=meta)
    return save_checkpoint(run_dir, snap, single_process, keep_last=10)


def assert_one_line_error(path, *fragments: str) -> None:
    with pytest.raises(GeneratorLoadError) as info:
        load_generator(path)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_round_trip_gives_identical_outputs(tmp_path):
    G = make_generator(0)
    path = save_generator(G, RES, CFG, tmp_path / "generator.safetensors", extra_meta={"kimg": 12.5, "run": "r"})
    loaded = load_generator(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for name, tensor in G.state_dict().items():  # buffers (w_avg, constant noise) included
        assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert torch.equal(render(G), render(loaded))
    assert not list(tmp_path.glob("*.tmp"))  # the temp file was renamed, not left behind


def test_describe_reads_metadata_only(tmp_path):
    path = save_generator(make_generator(0), RES, CFG, tmp_path / "g.safetensors", extra_meta={"kimg": 12.5})
    info = describe_generator(path)
    assert info["format"] == FORMAT and info["kind"] == "export"
    assert info["model"] == dataclasses.asdict(CFG)
    assert (info["resolution"], info["img_channels"], info["kimg"]) == (RES, 3, 12.5)


def test_extra_meta_cannot_override_core_keys(tmp_path):
    with pytest.raises(ValueError, match="resolution"):
        save_generator(make_generator(0), RES, CFG, tmp_path / "g.safetensors", extra_meta={"resolution": 64})


def test_load_from_checkpoint_dir_and_run_dir(tmp_path):
    older, newer = make_generator(1), make_generator(2)
    run = tmp_path / "run"
    first = write_checkpoint(run, older, 100)
    write_checkpoint(run, newer, 200)
    (run / "checkpoints" / ".tmp-0000000300").mkdir()  # a checkpoint still being written
    assert torch.equal(render(load_generator(first)), render(older))
    assert torch.equal(render(load_generator(first / "G_ema.safetensors")), render(older))
    assert torch.equal(render(load_generator(run)), render(newer))  # latest complete checkpoint
    assert describe_generator(run)["kimg"] == 0.2
    # A run dir's export wins over its checkpoints.
    save_generator(older, RES, CFG, run / "generator.safetensors")
    assert torch.equal(render(load_generator(run)), render(older))


def test_missing_path(tmp_path):
    assert_one_line_error(tmp_path / "nope.safetensors", "does not exist")


def test_empty_run_dir(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    assert_one_line_error(tmp_path, "no complete checkpoint")


def test_foreign_safetensors_file(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(path))
    assert_one_line_error(path, "not an atelier generator")
    save_file({"weight": torch.zeros(3)}, str(path), metadata={"atelier": json.dumps({"format": "someone-else/3"})})
    assert_one_line_error(path, "not an atelier generator", "someone-else/3")


class _Trap:
    """Unpickling this would create a marker file: proof the loader never unpickles."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_named_safetensors_is_rejected_unopened(tmp_path):
    marker = tmp_path / "unpickled"
    path = tmp_path / "generator.safetensors"
    path.write_bytes(pickle.dumps({"G": _Trap(marker)}))
    assert_one_line_error(path, "not a safetensors file")
    assert not marker.exists()


def test_weights_from_a_different_architecture(tmp_path):
    narrow = dataclasses.replace(CFG, channel_max=16)
    G = make_generator(0, narrow)
    path = save_generator(G, RES, CFG, tmp_path / "g.safetensors")  # metadata lies: says channel_max=32
    assert_one_line_error(path, "do not match", "has shape")


def test_missing_and_unexpected_tensors(tmp_path):
    state = {k: v.contiguous().clone() for k, v in make_generator(0).state_dict().items()}
    first = next(iter(state))
    meta = {"atelier": json.dumps({"format": FORMAT, "model": dataclasses.asdict(CFG), "resolution": RES, "img_channels": 3})}
    path = tmp_path / "g.safetensors"
    save_file({k: v for k, v in state.items() if k != first}, str(path), metadata=meta)
    assert_one_line_error(path, f"missing tensor {first!r}")
    save_file({**state, "extra.weight": torch.zeros(1)}, str(path), metadata=meta)
    assert_one_line_error(path, "unexpected tensor 'extra.weight'")


def test_checkpoint_without_model_config_or_foreign_format(tmp_path):
    ckpt = write_checkpoint(tmp_path, make_generator(0), 1)
    (ckpt / "state.json").write_text(json.dumps({"format": "atelier-checkpoint/1", "step": 1}))
    assert_one_line_error(ckpt, "no model config")
    (ckpt / "state.json").write_text(json.dumps({"format": "other/2", "model": {}, "resolution": RES}))
    assert_one_line_error(ckpt, "not an atelier checkpoint", "other/2")
    (ckpt / "state.json").write_text("{not json")
    assert_one_line_error(ckpt, "not valid JSON")


def test_unknown_model_key(tmp_path):
    path = save_generator(make_generator(0), RES, {**dataclasses.asdict(CFG), "wings": 2}, tmp_path / "g.safetensors")
    assert_one_line_error(path, "unknown key 'wings'")


def test_every_model_field_has_a_load_limit():
    from gan.export import MODEL_LIMITS

    assert set(MODEL_LIMITS) == {f.name for f in dataclasses.fields(ModelConfig)}


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("z_dim", 10**9, "model.z_dim must be an integer in 1..4096, got 1000000000"),
        ("channel_base", 2**30, "model.channel_base must be an integer in 1..1048576"),
        ("channel_max", 8192, "model.channel_max must be an integer"),
        ("mapping_layers", 100, "model.mapping_layers"),
        ("w_dim", "512", "model.w_dim must be an integer"),
        ("z_dim", True, "model.z_dim must be an integer"),
        ("mapping_lr_mul", float("nan"), "model.mapping_lr_mul must be a number"),
    ],
)
def test_out_of_range_model_metadata_is_refused_before_building(tmp_path, monkeypatch, key, value, fragment):
    path = save_generator(make_generator(0), RES, {**dataclasses.asdict(CFG), key: value}, tmp_path / "g.safetensors")
    monkeypatch.setattr("gan.export.Generator", _never_built)
    assert_one_line_error(path, fragment)


@pytest.mark.parametrize("resolution, fragment", [(2**20, "power of two in 4..1024"), (24, "power of two"), (True, "positive integer")])
def test_bad_resolution_metadata_is_refused(tmp_path, resolution, fragment):
    G = make_generator(0)
    meta = {"atelier": json.dumps({"format": FORMAT, "model": dataclasses.asdict(CFG), "resolution": resolution, "img_channels": 3})}
    path = tmp_path / "g.safetensors"
    save_file({k: v.contiguous().clone() for k, v in G.state_dict().items()}, str(path), metadata=meta)
    assert_one_line_error(path, fragment)


def test_mismatched_weights_are_refused_before_the_real_network_is_allocated(tmp_path, monkeypatch):
    import gan.export as export

    big = dataclasses.replace(CFG, channel_max=1024, channel_base=2**20)  # in range; ~50M parameters if built
    path = save_generator(make_generator(0), RES, big, tmp_path / "g.safetensors")  # small weights, big claim
    devices = []
    real = export.Generator

    def recording(*args, **kwargs):
        devices.append(torch.empty(0).device.type)  # where the constructor's tensors go
        return real(*args, **kwargs)

    monkeypatch.setattr(export, "Generator", recording)
    assert_one_line_error(path, "do not match", "has shape")
    assert devices == ["meta"]  # only the parameter-free build ran


def _never_built(*args, **kwargs):
    raise AssertionError("the Generator was constructed from out-of-range metadata")


def _flip_last_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # inside the last tensor's bytes: the file still parses, one weight changed
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_the_weights_is_detected(tmp_path):
    """generate / eval / the studio refuse weights that differ from the digest recorded at write time."""
    G = make_generator(3)
    export = save_generator(G, RES, CFG, tmp_path / "gen.safetensors")
    ckpt = write_checkpoint(tmp_path / "run", G, 100)
    assert torch.equal(render(load_generator(export)), render(G)) and torch.equal(render(load_generator(ckpt)), render(G))
    _flip_last_byte(export)
    assert_one_line_error(export, "gen.safetensors: damaged", "sha256 recorded in its metadata")
    _flip_last_byte(ckpt / "G_ema.safetensors")
    assert_one_line_error(ckpt, "G_ema.safetensors: damaged", "state.json")
