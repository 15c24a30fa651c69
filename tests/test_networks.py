"""StyleGAN2 layers and networks: shapes, gradients, reference computations, parameter counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from gan.config import ModelConfig
from gan.layers import (
    Conv2d,
    FullyConnected,
    MinibatchStdDev,
    conv2d_resample,
    depthwise_fir,
    downsample2d,
    equalised_lr_gain,
    fir_filter,
    modulated_conv2d,
    upfirdn2d,
    upsample2d,
)
from gan.networks import Discriminator, Generator

TINY = ModelConfig(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16, mbstd_group=4)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _set_noise_strength(G: Generator, value: float) -> None:
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise.strength"):
                p.fill_(value)


# ----------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("resolution", [4, 8, 16, 32, 64])
def test_generator_and_discriminator_shapes(resolution):
    G, D = Generator(TINY, resolution), Discriminator(TINY, resolution)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    z = torch.randn(3, TINY.z_dim)
    img, ws = G(z, return_ws=True)
    assert img.shape == (3, 3, resolution, resolution)
    assert ws.shape == (3, G.num_ws, TINY.w_dim)
    assert G.mapping(z).shape == ws.shape
    assert G.synthesis(ws).shape == img.shape
    logits = D(img)
    assert logits.shape == (3, 1) and torch.isfinite(logits).all()


def test_bad_resolution_and_inputs_are_one_line_errors():
    with pytest.raises(ValueError, match="power of two"):
        Generator(TINY, 48)
    with pytest.raises(ValueError, match="power of two"):
        Discriminator(TINY, 2048)
    G, D = Generator(TINY, 16), Discriminator(TINY, 16)
    with pytest.raises(ValueError, match="z must be"):
        G(torch.randn(2, TINY.z_dim + 1))
    with pytest.raises(ValueError, match="noise_mode"):
        G(torch.randn(2, TINY.z_dim), noise_mode="loud")
    with pytest.raises(ValueError, match="D expects images"):
        D(torch.randn(2, 3, 32, 32))


def test_matched_config_parameter_counts_equal_stylegan2_ada():
    """Issue 8's "matched" config: NVIDIA stylegan2-ada-pytorch reports these counts."""
    cfg = ModelConfig(z_dim=512, w_dim=512, mapping_layers=2, channel_base=4096, channel_max=256, mbstd_group=4, conv_clamp=None)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(Generator(cfg, 32)) == 5_238_419
    assert count(Discriminator(cfg, 32)) == 4_608_897


# -------------------------------------------------------------------------- gradients


def test_gradients_reach_every_parameter():
    G, D = Generator(TINY, 16), Discriminator(TINY, 16)
    _set_noise_strength(G, 0.1)
    z = torch.randn(4, TINY.z_dim)
    D(G(z, style_mix_prob=0.5)).square().sum().backward()
    for module in (G, D):
        for name, p in module.named_parameters():
            assert p.grad is not None, name
            assert torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0, name


def test_bf16_autocast_and_channels_last():
    G, D = Generator(TINY, 16), Discriminator(TINY, 16)
    z = torch.randn(4, TINY.z_dim)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        img = G(z, noise_mode="const")
        logits = D(img)
    assert torch.isfinite(img.float()).all() and torch.isfinite(logits.float()).all()
    img32 = G(z, noise_mode="const")
    assert (img.float() - img32).abs().max() < 0.1  # bf16 close to fp32
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(D(x.contiguous(memory_format=torch.channels_last)), D(x), rtol=1e-4, atol=1e-5)
    # Backward through every layer (FIR up/down included) under autocast: gradients in bf16 flow back.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = D(G(z)).float().square().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.synthesis.parameters())


# -------------------------------------------------------------- equalised learning rate


def test_equalised_lr_runtime_scale_and_init():
    assert equalised_lr_gain(400) == pytest.approx(0.05) and equalised_lr_gain(400, 0.01) == pytest.approx(0.0005)
    torch.manual_seed(1)
    fc = FullyConnected(400, 300, lr_mul=1.0)
    assert fc.weight_gain == pytest.approx(1 / math.sqrt(400))
    assert fc.weight.std().item() == pytest.approx(1.0, abs=0.01)
    slow = FullyConnected(400, 300, bias_init=0.5, lr_mul=0.01)
    assert slow.weight_gain == pytest.approx(0.01 / math.sqrt(400))
    assert slow.bias_gain == 0.01
    # Stored N(0, 1/lr_mul^2): the effective weight starts at N(0, 1/fan_in) either way.
    assert (slow.weight * slow.weight_gain).std().item() == pytest.approx(1 / math.sqrt(400), rel=0.01)
    x = torch.randn(5, 400)
    expected = F.linear(x, slow.weight * 0.01 / 20, slow.bias * 0.01)
    torch.testing.assert_close(slow(x), expected)
    assert torch.allclose(slow.bias * slow.bias_gain, torch.full([300], 0.5))

    conv = Conv2d(20, 30, 3)
    assert conv.weight_gain == pytest.approx(1 / math.sqrt(20 * 9))
    assert conv.weight.std().item() == pytest.approx(1.0, abs=0.05)
    x = torch.randn(2, 20, 8, 8)
    torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight * conv.weight_gain, conv.bias, padding=1))
    lrelu = Conv2d(20, 30, 3, activation="lrelu")
    with torch.no_grad():
        lrelu.weight.copy_(conv.weight)
    torch.testing.assert_close(lrelu(x), F.leaky_relu(conv(x), 0.2) * math.sqrt(2))


# ------------------------------------------------------------------------- FIR filters


def test_fir_filter_is_normalised_and_separable():
    f = fir_filter()
    assert f.sum().item() == pytest.approx(1.0)
    f2 = torch.outer(f, f)
    assert f2.sum().item() == pytest.approx(1.0)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(
        upfirdn2d(x, f, up=2, down=1, padding=(2, 1, 2, 1), gain=4.0), upfirdn2d(x, f2, up=2, down=1, padding=(2, 1, 2, 1), gain=4.0)
    )
    torch.testing.assert_close(upfirdn2d(x, f, down=2, padding=(1, 1, 1, 1)), upfirdn2d(x, f2, down=2, padding=(1, 1, 1, 1)))


def test_fir_resampling_keeps_a_constant_image_constant():
    f = fir_filter()
    x = torch.full((1, 2, 8, 8), 0.7)
    up = upsample2d(x, f)
    down = downsample2d(x, f)
    assert up.shape == (1, 2, 16, 16) and down.shape == (1, 2, 4, 4)
    torch.testing.assert_close(up[:, :, 2:-2, 2:-2], torch.full_like(up[:, :, 2:-2, 2:-2], 0.7))
    torch.testing.assert_close(down[:, :, 1:-1, 1:-1], torch.full_like(down[:, :, 1:-1, 1:-1], 0.7))


def _upsample_then_conv(x, w, groups=1):
    """Reference: zero-insert, pad (k//2 more than upsample2d), FIR filter, valid conv."""
    k = w.shape[-1]
    p0, p1 = 2 + k // 2, 1 + k // 2
    up = upfirdn2d(x, fir_filter(), up=2, padding=(p0, p1, p0, p1), gain=4.0)
    return F.conv2d(up, w, groups=groups)


def test_upsampling_conv_equals_upsample_then_conv():
    f = fir_filter()
    x = torch.randn(2, 4, 6, 6)
    w = torch.randn(5, 4, 3, 3)
    out = conv2d_resample(x, w, f, up=2)
    torch.testing.assert_close(out, _upsample_then_conv(x, w), rtol=1e-4, atol=1e-5)
    # Away from the border it is simply upsample2d followed by a 'same' conv.
    same = F.conv2d(upsample2d(x, f), w, padding=1)
    torch.testing.assert_close(out[:, :, 1:-1, 1:-1], same[:, :, 1:-1, 1:-1], rtol=1e-4, atol=1e-5)
    # Grouped (batch folded into groups), as the fused modulated conv uses it.
    wg = torch.randn(2 * 5, 4, 3, 3)
    xg = x.reshape(1, 8, 6, 6)
    torch.testing.assert_close(conv2d_resample(xg, wg, f, up=2, groups=2), _upsample_then_conv(xg, wg, groups=2), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k, pad", [(3, 2), (1, 1)])
def test_downsampling_conv_equals_fir_filter_then_strided_conv(k, pad):
    # Reference written with plain F.conv2d: pad by k//2 + (taps-1)//2 = 2 (1 for a 1x1 kernel)
    # on every side, apply the 2-D FIR filter as a true (flipped) depthwise convolution, then a
    # stride-2 'valid' conv. An asymmetric filter makes a wrong flip or offset visible.
    torch.manual_seed(0)
    f = fir_filter([1, 2, 4, 1])
    x, w = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(5, 4, k, k, dtype=torch.float64)
    f2 = torch.outer(f, f).to(torch.float64).flip([0, 1])
    filtered = F.conv2d(F.pad(x, [pad] * 4), f2.expand(4, 1, 4, 4), groups=4)
    expected = F.conv2d(filtered, w, stride=2)
    out = conv2d_resample(x, w, f, down=2)
    assert out.shape == (2, 5, 4, 4)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("up, down", [(1, 1), (2, 1), (1, 2), (3, 2)])
def test_upfirdn2d_matches_scipy_upfirdn(up, down):
    # Independent reference: scipy.signal.upfirdn (zero insertion, full convolution, decimation).
    # Padding (taps-1 before, taps-up after) makes upfirdn2d's output the same 'full' length.
    upfirdn = pytest.importorskip("scipy.signal").upfirdn
    gen = torch.Generator().manual_seed(1)
    h = torch.tensor([1.0, 3.0, -2.0, 0.5, 2.0], dtype=torch.float64)  # asymmetric: checks the flip
    x = torch.randn(1, 1, 1, 11, generator=gen, dtype=torch.float64)
    t = h.numel()
    out = upfirdn2d(x, h[None], up=up, down=down, padding=(t - 1, t - up, 0, 0))  # 2-D [1, taps]: 1-D along W
    torch.testing.assert_close(out[0, 0, 0], torch.from_numpy(upfirdn(h.numpy(), x[0, 0, 0].numpy(), up, down)))

    # Separable 2-D: the 1-D filter along W, then along H, with the gain.
    f = torch.tensor([1.0, 2.0, 4.0, -1.0], dtype=torch.float64)
    t = f.numel()
    x = torch.randn(2, 3, 7, 9, generator=gen, dtype=torch.float64)
    out = upfirdn2d(x, f, up=up, down=down, padding=(t - 1, t - up, t - 1, t - up), gain=3.0)
    ref = upfirdn(f.numpy(), upfirdn(f.numpy(), x.numpy(), up, down, axis=-1), up, down, axis=-2) * 3.0
    torch.testing.assert_close(out, torch.from_numpy(ref))


def _naive_upfirdn2d(x, f2, up, down, padding):
    """Zero insertion, explicit pad (negative = crop), flipped-filter conv, decimation."""
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, h * up, w * up)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, list(padding))
    k = f2.flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    return F.conv2d(z, k, stride=down, groups=c)


@pytest.mark.parametrize("padding", [(2, 1, 2, 1), (1, 0, 3, 2), (0, -1, 2, 2), (3, 3, 1, 1), (1, 1, 1, 1)])
@pytest.mark.parametrize("up, down", [(1, 1), (2, 1), (1, 2)])
def test_upfirdn2d_fast_paths_equal_zero_insert_pad_and_conv(up, down, padding):
    # upfirdn2d folds symmetric padding into the conv and 2x upsampling into a transposed
    # conv where the padding allows; every split must give the textbook result, twice differentiable.
    gen = torch.Generator().manual_seed(2)
    f2 = torch.rand(4, 3, generator=gen, dtype=torch.float64)  # asymmetric: checks the flips
    x = torch.randn(2, 3, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    out = upfirdn2d(x, f2, up=up, down=down, padding=padding, gain=2.0)
    torch.testing.assert_close(out, _naive_upfirdn2d(x, f2, up, down, padding) * 2.0)
    fn = lambda t: upfirdn2d(t, f2, up=up, down=down, padding=padding)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# ----------------------------------------------------------------- modulated convolution


def _reference_modconv(x, weight, styles, demodulate, up=1):
    """Per-sample: explicit modulated/demodulated weights and one F.conv2d per sample."""
    outs = []
    for xn, sn in zip(x, styles):
        w = weight * sn.reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xn = xn[None]
        if up > 1:
            outs.append(_upsample_then_conv(xn, w))
        else:
            outs.append(F.conv2d(xn, w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_equals_reference(fused, demodulate, up):
    x = torch.randn(3, 6, 8, 8)
    weight = torch.randn(5, 6, 3, 3)
    styles = torch.randn(3, 6)
    out = modulated_conv2d(x, weight, styles, demodulate=demodulate, up=up, resample_filter=fir_filter(), fused=fused)
    ref = _reference_modconv(x, weight, styles, demodulate, up)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate", [True, False])
@pytest.mark.parametrize("up", [1, 2])
def test_modulated_conv_folds_weight_gain_bias_and_gain(fused, demodulate, up):
    # The equalised-lr gain goes into the styles and gain/bias into the demodulation
    # multiply: same result as scaling the weight and adding them afterwards.
    gen = torch.Generator().manual_seed(3)
    x, weight, styles = torch.randn(3, 6, 8, 8, generator=gen), torch.randn(5, 6, 3, 3, generator=gen), torch.randn(3, 6, generator=gen)
    bias = torch.randn(5, generator=gen)
    out = modulated_conv2d(
        x, weight, styles, demodulate=demodulate, up=up, resample_filter=fir_filter(), fused=fused, weight_gain=0.3, bias=bias, gain=1.7
    )
    ref = _reference_modconv(x, weight * 0.3, styles, demodulate, up) * 1.7 + bias.reshape(1, -1, 1, 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("down", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv2d_layer_equals_scaled_weight_conv_then_bias_act(down, kernel):
    # Conv2d adds the bias inside the conv (divided by the weight gain) and applies the gain
    # to the output; the textbook order is: scale the weight, conv, + bias, lrelu, * gain, clamp.
    torch.manual_seed(4)
    conv = Conv2d(6, 5, kernel, activation="lrelu", down=down, conv_clamp=1.5)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 6, 8, 8)
    y = conv2d_resample(x, conv.weight * conv.weight_gain, conv.resample_filter, down=down)
    ref = (F.leaky_relu(y + conv.bias.reshape(1, -1, 1, 1), 0.2) * math.sqrt(2) * 0.7).clamp(-1.5 * 0.7, 1.5 * 0.7)
    torch.testing.assert_close(conv(x, gain=0.7), ref)


def test_grouped_and_unfused_generators_agree():
    G = Generator(TINY, 32)
    _set_noise_strength(G, 0.3)
    z = torch.randn(3, TINY.z_dim)
    grouped = G(z, noise_mode="const")
    G.set_fused_modconv(False)
    unfused = G(z, noise_mode="const")
    torch.testing.assert_close(grouped, unfused, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- mapping & truncation


def test_truncation_psi_and_cutoff():
    G = Generator(TINY, 16)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(TINY.w_dim))
    z = torch.randn(4, TINY.z_dim)
    ws = G.mapping(z)
    torch.testing.assert_close(G.mapping(z, psi=1.0), ws)
    at_avg = G.mapping(z, psi=0.0)
    torch.testing.assert_close(at_avg, G.mapping.w_avg.expand_as(ws))
    half = G.mapping(z, psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], 0.5 * (ws[:, :2] + G.mapping.w_avg))
    torch.testing.assert_close(half[:, 2:], ws[:, 2:])


def test_w_avg_tracks_an_ema_only_when_asked():
    G = Generator(TINY, 16)
    z = torch.randn(8, TINY.z_dim)
    G(z)
    assert G.mapping.w_avg.abs().sum() == 0
    ws = G.mapping(z)[:, 0]
    G(z, update_w_avg=True)
    torch.testing.assert_close(G.mapping.w_avg, ws.mean(0) * (1 - 0.995))


def test_style_mixing_gives_two_styles_split_at_one_cutoff():
    G = Generator(TINY, 32)
    z = torch.randn(2, TINY.z_dim)
    _, ws = G(z, style_mix_prob=0.0, return_ws=True)
    assert (ws == ws[:, :1]).all()
    for _ in range(5):
        _, mixed = G(z, style_mix_prob=1.0, return_ws=True)
        first = (mixed == mixed[:, :1]).all(dim=2).all(dim=0)  # layers using the first z
        torch.testing.assert_close(mixed[:, 0], ws[:, 0])
        cutoff = int(first.sum())
        assert 1 <= cutoff < G.num_ws
        assert first[:cutoff].all() and not first[cutoff:].any()
        assert (mixed[:, cutoff:] == mixed[:, -1:]).all()


# ----------------------------------------------------------------------------- noise


def test_const_noise_is_deterministic_and_random_noise_is_not():
    G = Generator(TINY, 16)
    _set_noise_strength(G, 0.5)
    z = torch.randn(2, TINY.z_dim)
    torch.testing.assert_close(G(z, noise_mode="const"), G(z, noise_mode="const"), rtol=0, atol=0)
    assert not torch.equal(G(z, noise_mode="random"), G(z, noise_mode="random"))
    assert not torch.equal(G(z, noise_mode="none"), G(z, noise_mode="const"))
    # The const noise is saved with the weights: a copy paints the same picture.
    clone = Generator(TINY, 16)
    clone.load_state_dict(G.state_dict())
    torch.testing.assert_close(clone(z, noise_mode="const"), G(z, noise_mode="const"), rtol=0, atol=0)
    # Noise strength starts at zero: a fresh generator ignores the noise.
    fresh = Generator(TINY, 16)
    torch.testing.assert_close(fresh(z, noise_mode="random"), fresh(z, noise_mode="none"))


# ------------------------------------------------------------------- discriminator bits


def test_minibatch_stddev_channel_and_groups():
    layer = MinibatchStdDev(group_size=4, num_channels=1)
    x = torch.randn(8, 5, 4, 4)
    y = layer(x)
    assert y.shape == (8, 6, 4, 4)
    torch.testing.assert_close(y[:, :5], x)
    for k in (0, 1):  # NVIDIA's strided groups: of 2 groups, sample i is in group i mod 2
        group = x[k::2]
        expected = (group.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        torch.testing.assert_close(y[k::2, 5], expected.expand(4, 4, 4))
    # Batches not divisible by the group size use the largest divisor that fits.
    assert layer(torch.randn(6, 5, 4, 4)).shape == (6, 6, 4, 4)  # groups of 3
    odd = layer(torch.randn(5, 5, 4, 4))  # groups of 1: no spread
    torch.testing.assert_close(odd[:, 5], torch.full((5, 4, 4), 1e-4))
    # split=2: the first half's statistic ignores the second half entirely.
    a, b = torch.randn(3, 5, 4, 4), torch.randn(3, 5, 4, 4)
    y1, y2 = layer(torch.cat([a, b]), split=2), layer(torch.cat([a, b * 10]), split=2)
    torch.testing.assert_close(y1[:3], y2[:3])


def test_discriminator_on_batches_not_divisible_by_group():
    D = Discriminator(TINY, 16)
    for n in (1, 3, 5, 6, 7):
        out = D(torch.randn(n, 3, 16, 16))
        assert out.shape == (n, 1) and torch.isfinite(out).all()


def test_freeze_blocks_freezes_highest_resolution_first():
    D = Discriminator(TINY, 32)
    assert len(D.blocks) == 3  # 32, 16, 8
    assert D.blocks[0].fromrgb is not None
    D.freeze_blocks(2)
    assert not any(p.requires_grad for b in D.blocks[:2] for p in b.parameters())
    assert all(p.requires_grad for p in D.blocks[2].parameters())
    assert all(p.requires_grad for p in D.epilogue.parameters())
    with pytest.raises(ValueError, match="freeze_d"):
        D.freeze_blocks(4)


@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 2), (2, 1)])
@pytest.mark.parametrize("size", [(8, 8), (9, 7)])  # 9x7: the strided conv drops a row/column
@pytest.mark.parametrize("padding", [(0, 0), (2, 1)])
def test_depthwise_fir_equals_grouped_conv_and_differentiates_twice(stride, size, padding):
    torch.manual_seed(0)
    c = 3
    x = torch.randn(2, c, *size, dtype=torch.float64, requires_grad=True)
    k = torch.rand(c, 1, 4, 3, dtype=torch.float64)
    reference = F.conv2d(x, k, stride=stride, padding=padding, groups=c)
    out = depthwise_fir(x, k, stride, padding)
    torch.testing.assert_close(out, reference)
    gy = torch.randn_like(out)
    (g_ref,) = torch.autograd.grad(reference, x, gy)
    (g,) = torch.autograd.grad(out, x, gy)
    torch.testing.assert_close(g, g_ref)
    assert torch.autograd.gradcheck(lambda t: depthwise_fir(t, k, stride, padding), (x,))
    assert torch.autograd.gradgradcheck(lambda t: depthwise_fir(t, k, stride, padding), (x,))


def test_style_mixing_cutoff_is_uniform_over_the_crossover_points():
    # StyleGAN Sec. 3.1 / StyleGAN2-ADA: with probability p one crossover point per minibatch,
    # uniform over 1 .. num_ws - 1 (w1 before it, w2 from it on); otherwise no mixing.
    torch.manual_seed(3)
    G = Generator(TINY, 32)  # 8 ws: 7 possible crossover points
    z = torch.randn(2, TINY.z_dim)
    ws = G.mapping(z)
    counts = torch.zeros(G.num_ws + 1)
    draws = 1400
    for _ in range(draws):
        mixed = G.mix_styles(z, ws, prob=0.5)
        counts[int((mixed == ws).all(dim=2).all(dim=0).sum())] += 1
    assert counts[0] == 0  # the first layer always keeps w1
    assert counts[G.num_ws] / draws == pytest.approx(0.5, abs=0.05)  # no mixing
    per_cutoff = counts[1 : G.num_ws] / (draws / 2)
    torch.testing.assert_close(per_cutoff, torch.full((G.num_ws - 1,), 1 / 7), atol=0.045, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv2d_layer_in_half_precision_matches_fp32(dtype):
    # fp16 keeps the scaled weight (unscaled sums could overflow it); bf16 takes the folded path.
    torch.manual_seed(5)
    conv = Conv2d(4, 5, 3, activation="lrelu", down=2, conv_clamp=256.0)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 4, 8, 8)
    out = conv(x.to(dtype))
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), conv(x), rtol=0.05, atol=0.05)
