"""gan/perf.py: perf.* options change how G and D run, never what they compute; compile falls back cleanly."""

from __future__ import annotations

import warnings

import pytest
import torch

from gan import perf
from gan.config import ModelConfig, PerfConfig
from gan.networks import Discriminator, Generator, SynthesisLayer

TINY = ModelConfig(z_dim=16, w_dim=16, mapping_layers=1, channel_base=64, channel_max=16, mbstd_group=2)


def nets():
    torch.manual_seed(0)
    return Generator(TINY, 16), Discriminator(TINY, 16)


def fused_flags(G):
    return {m.fused for m in G.modules() if isinstance(m, SynthesisLayer)}


@pytest.mark.parametrize("choice, fused", [("auto", False), ("batched", False), ("grouped", True)])
def test_modconv_choice_sets_the_layers(choice, fused):
    G, D = nets()
    _, _, applied = perf.apply_perf(PerfConfig(modconv=choice), G, D, torch.device("cpu"))
    assert fused_flags(G) == {fused} and applied.modconv == ("grouped" if fused else "batched")


def test_channels_last_keeps_outputs():
    G, D = nets()
    z = torch.randn(4, 16)
    img = G(z, noise_mode="const")
    logits = D(img)
    perf.apply_perf(PerfConfig(channels_last=True, modconv="grouped"), G, D, torch.device("cpu"))
    assert D.blocks[0].conv0.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(G(z, noise_mode="const"), img, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(D(img), logits, rtol=1e-4, atol=1e-5)


def test_compile_failure_warns_once_and_runs_eagerly(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler")

    def compile_stub(module):
        return broken  # compiling "succeeds", the first call fails (as inductor does lazily)

    monkeypatch.setattr(torch, "compile", compile_stub)
    G, D = nets()
    G_run, D_run, applied = perf.apply_perf(PerfConfig(compile=True), G, D, torch.device("cpu"))
    img = torch.randn(2, 3, 16, 16)
    with pytest.warns(RuntimeWarning, match="torch.compile of D failed"):
        out = D_run(img)
    torch.testing.assert_close(out, D(img))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning
        D_run(img)
    assert D_run.failed and not D_run.compiled
    assert list(D_run.parameters()) == list(D.parameters())  # same parameters, no duplicates
    assert G_run.z_dim == G.z_dim  # attributes reach through the wrapper


def test_compiled_module_is_bypassed_in_eager_phases(monkeypatch):
    calls = []

    def compile_stub(module):
        def run(*args, **kwargs):
            calls.append("compiled")
            return module(*args, **kwargs)

        return run

    monkeypatch.setattr(torch, "compile", compile_stub)
    G, D = nets()
    _, D_run, _ = perf.apply_perf(PerfConfig(compile=True), G, D, torch.device("cpu"))
    img = torch.randn(2, 3, 16, 16)
    D_run(img)
    perf.set_eager((D_run,), True)
    D_run(img)
    assert calls == ["compiled"]


def test_trainer_step_with_compile_falling_back(tmp_path, monkeypatch):
    from training_support import OneProcess, make_dataset

    from gan.config import load_config
    from gan.training_loop import RunOptions, Trainer

    monkeypatch.setattr(torch, "compile", lambda module: (_ for _ in ()).throw(RuntimeError("unsupported")))
    data = make_dataset(tmp_path / "data", resolution=16, count=4)
    cfg = load_config(
        None,
        [
            f"data.path={data}",
            "data.resolution=16",
            "data.workers=0",
            "model.z_dim=16",
            "model.w_dim=16",
            "model.mapping_layers=1",
            "model.channel_base=64",
            "model.channel_max=16",
            "model.mbstd_group=2",
            "train.batch=4",
            "augment.mode=none",
            "perf.compile=true",
            "log.tracker=none",
        ],
    )
    with pytest.warns(RuntimeWarning, match="torch.compile of . failed"):
        trainer = Trainer(cfg, OneProcess(), RunOptions(run_dir=tmp_path / "run"))
    trainer.train_step()  # step 0: all four phases, eager
    assert trainer.progress.step == 1 and not trainer.perf.compiled


def test_compile_builds_the_backward_inside_the_fallback_guard(monkeypatch):
    import torch._functorch.config as functorch_config

    monkeypatch.setattr(functorch_config, "force_non_lazy_backward_lowering", False)
    monkeypatch.setattr(torch, "compile", lambda module: module)
    G, D = nets()
    perf.apply_perf(PerfConfig(compile=True), G, D, torch.device("cpu"))
    assert functorch_config.force_non_lazy_backward_lowering is True
