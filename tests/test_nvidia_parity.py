"""NVIDIA pickles paint the same images in atelier as in NVIDIA's code (the parity criterion).

The expected images and D logits were computed by NVIDIA's stylegan2-ada-pytorch on CPU in fp32
(``tests/fixtures/nvidia/make_fixtures.py``) with its ``generate.py`` conventions; here the same
weights go through a rebuilt pickle, atelier's safe reader and conversion, and atelier's sampling.
Tolerance (the acceptance criterion): at most 2 levels per pixel, mean under 0.5 level; D logits
to 1e-4 relative.
"""

from __future__ import annotations

import pytest
import torch
from nvidia_pickles import CASES, d_inputs, expected_image, load_case, pytorch_snapshot, tf_snapshot

from gan.export import describe_generator, load_generator
from gan.nvidia.convert import build_network, load_pickle_networks, nvidia_to_atelier_name
from gan.sampling import latents_for_seeds, to_uint8_images

MAX_LEVELS, MEAN_LEVELS, LOGIT_RTOL = 2, 0.5, 1e-4


def paint(G, seed: int, psi: float) -> torch.Tensor:
    z = latents_for_seeds([seed], G.z_dim)
    with torch.no_grad():
        img = G(z, psi=psi, noise_mode="const")
    return torch.from_numpy(to_uint8_images(img)[0])


def assert_same_image(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, what
    diff = (got.int() - want.int()).abs()
    assert diff.max() <= MAX_LEVELS and diff.float().mean() < MEAN_LEVELS, (
        f"{what}: max {diff.max().item()} levels, mean {diff.float().mean().item():.4f}"
    )


def assert_same_logits(got: torch.Tensor, want: torch.Tensor) -> None:
    rel = ((got - want).abs() / want.abs().clamp_min(1e-6)).max().item()
    assert rel <= LOGIT_RTOL, f"D logits differ by {rel:.2e} relative"


@pytest.fixture(scope="module", params=CASES)
def case(request):
    return request.param, load_case(request.param)


def test_pytorch_pickle_paints_nvidias_images(case, tmp_path):
    name, c = case
    path = tmp_path / f"{name}.pkl"
    path.write_bytes(pytorch_snapshot(c))
    G = load_generator(path)  # the path generate/eval/refine/studio take
    info = describe_generator(path)
    assert info["kind"] == "nvidia-pickle" and info["resolution"] == c["resolution"]
    for psi in c["psis"]:
        for seed in c["seeds"]:
            assert_same_image(paint(G, seed, psi), expected_image(c, psi, seed), f"{name} seed {seed} psi {psi}")
    D = build_network(load_pickle_networks(path), "D")
    with torch.no_grad():
        assert_same_logits(D(d_inputs(c["resolution"])), c["D_logits"])


@pytest.mark.parametrize("name, flavour", [("c32", "stylegan2"), ("c64", "stylegan2-ada")])
def test_tensorflow_pickle_paints_the_same_images(name, flavour, tmp_path):
    c = load_case(name)
    path = tmp_path / f"{name}-tf.pkl"
    # StyleGAN2-ADA's TensorFlow release names its builders G_synthesis / D_main.
    funcs = dict(synthesis_func="G_synthesis", d_func="D_main") if flavour == "stylegan2-ada" else {}
    path.write_bytes(tf_snapshot(c, **funcs))
    converted = load_pickle_networks(path)
    assert converted.format == "stylegan2-tf"
    assert converted.model_dict()["mapping_layers"] == c["G_kwargs"]["mapping_kwargs"]["num_layers"]
    G = build_network(converted, "G_ema")
    for psi in c["psis"]:
        seed = c["seeds"][0]
        assert_same_image(paint(G, seed, psi), expected_image(c, psi, seed), f"TF {name} seed {seed} psi {psi}")
    with torch.no_grad():
        assert_same_logits(build_network(converted, "D")(d_inputs(c["resolution"])), c["D_logits"])


def test_architecture_comes_from_the_pickle(tmp_path):
    c = load_case("c64")
    path = tmp_path / "c64.pkl"
    path.write_bytes(pytorch_snapshot(c))
    converted = load_pickle_networks(path)
    model = converted.model_dict()
    assert model == {
        "z_dim": 20,
        "w_dim": 24,
        "mapping_layers": 8,
        "mapping_lr_mul": 0.01,
        "channel_base": 512,
        "channel_max": 24,
        "mbstd_group": 4,
        "conv_clamp": 256,
    }
    assert (converted.arch.resolution, converted.arch.img_channels, converted.arch.num_fp16_res) == (64, 3, 2)
    # G, G_ema and D are all carried over, G distinct from G_ema (the snapshot's G is halved).
    w = "synthesis.blocks.1.conv1.weight"
    torch.testing.assert_close(converted.G[w], converted.G_ema[w] * 0.5)
    assert set(converted.D) == set(build_network(converted, "D").state_dict())
    torch.testing.assert_close(converted.G_ema["mapping.w_avg"], c["G"]["mapping.w_avg"])


def test_name_mapping_for_gradient_parity():
    assert nvidia_to_atelier_name("G", "mapping.fc3.bias", 256).name == "mapping.layers.3.bias"
    up = nvidia_to_atelier_name("G", "synthesis.b8.conv0.weight", 256)
    assert (up.name, up.flip) == ("synthesis.blocks.1.conv0.weight", True)
    assert nvidia_to_atelier_name("G", "synthesis.b4.conv1.noise_const", 256).name == "synthesis.blocks.0.conv1.noise.const"
    assert nvidia_to_atelier_name("G", "synthesis.b256.torgb.affine.bias", 256).name == "synthesis.blocks.6.torgb.affine.bias"
    assert nvidia_to_atelier_name("D", "b256.fromrgb.weight", 256).name == "blocks.0.fromrgb.weight"
    assert nvidia_to_atelier_name("D", "b8.skip.weight", 256).name == "blocks.5.skip.weight"
    assert nvidia_to_atelier_name("D", "b4.out.bias", 256).name == "epilogue.out.bias"
    assert nvidia_to_atelier_name("D", "b8.resample_filter", 256) is None
