"""ADA augmentation pipeline, the p controller and DiffAugment (CPU, tiny images)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gan.ada import AdaptiveAugment, from_config
from gan.augment import GROUPS, TRANSFORMS, AugmentPipe, parse_groups
from gan.config import AugmentConfig, ConfigError
from gan.diffaugment import DiffAugment

RES = 16


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only contend on the shared 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _smooth_images(n: int, res: int = RES, seed: int = 0) -> torch.Tensor:
    """Band-limited colour images in [-0.9, 0.9] (smooth, so resampling is near-exact)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=gen) * 1.8 - 0.9
    return F.interpolate(coarse, size=(res, res), mode="bicubic", align_corners=False).clamp(-0.9, 0.9)


def _noise_images(n: int, res: int = RES, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, res, res, generator=gen) * 2 - 1


def _pipe(*transforms: str, p: float = 1.0) -> AugmentPipe:
    pipe = AugmentPipe(transforms=transforms, p=p)
    pipe.record_params = True
    return pipe


def _params(pipe: AugmentPipe, n: int = 4096, res: int = RES, seed: int = 0):
    return pipe.sample_params(n, res, res, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ groups and identity


def test_groups_cover_every_transform_and_reject_unknown_letters():
    assert parse_groups("bgc") == set(GROUPS["b"] + GROUPS["g"] + GROUPS["c"])
    assert parse_groups("bgcfnc") == set(TRANSFORMS)
    with pytest.raises(ValueError, match="'x'"):
        parse_groups("bgx")
    with pytest.raises(ValueError, match="unknown transform"):
        AugmentPipe(transforms=["spin"])


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_transform_is_exact_identity_at_p0(name):
    torch.manual_seed(1)
    images = _noise_images(8)
    assert torch.equal(_pipe(name, p=0.0)(images), images)


def test_full_pipeline_is_exact_identity_at_p0():
    images = _noise_images(8)
    assert torch.equal(AugmentPipe("bgcfn", p=0.0)(images), images)


# ------------------------------------------------------------------ ranges


@pytest.mark.parametrize("name", GROUPS["b"] + ("cutout",))
def test_blit_and_cutout_keep_values_exactly_in_input_range(name):
    torch.manual_seed(2)
    images = _noise_images(16)
    out = _pipe(name)(images)
    assert out.min() >= images.min() and out.max() <= images.max()
    if name != "cutout":  # a permutation with mirroring: every output value is an input value
        for i in range(4):
            assert torch.isin(out[i], images[i]).all()


@pytest.mark.parametrize("name", GROUPS["g"])
def test_geometric_transforms_stay_within_the_filter_overshoot_bound(name):
    torch.manual_seed(3)
    pipe = _pipe(name)
    worst = pipe(_noise_images(32)).abs().max().item()  # white noise: largest overshoot
    assert worst <= pipe.geometric_gain_bound
    smooth = pipe(_smooth_images(32)).abs().max().item()  # painting-like content: nearly none
    assert smooth <= 1.0


@pytest.mark.parametrize("name", GROUPS["c"])
def test_colour_is_unclamped_affine_and_within_its_matrix_bound(name):
    torch.manual_seed(4)
    images = _noise_images(64)
    pipe = _pipe(name)
    out = pipe(images)
    color = pipe.last_params.color
    expected = torch.einsum("nij,njhw->nihw", color[:, :3, :3], images) + color[:, :3, 3, None, None]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)  # exactly A x + b: no clamp
    bound = color[:, :3, :3].abs().sum(dim=2).amax(dim=1) + color[:, :3, 3].abs().amax(dim=1)
    assert (out.flatten(1).abs().amax(dim=1) <= bound + 1e-5).all()


def test_colour_is_not_clamped_by_design():
    pipe = _pipe("brightness")
    params = pipe.identity_params(1)
    params.color[0, :3, 3] = 0.5
    params.color_active[:] = True
    out = pipe.apply(torch.full((1, 3, RES, RES), 0.9), params)
    torch.testing.assert_close(out, torch.full_like(out, 1.4))


def test_image_filter_stays_within_kernel_l1_bound():
    torch.manual_seed(5)
    pipe = _pipe("imgfilter")
    images = _noise_images(32)
    out = pipe(images)
    kernels = pipe.last_params.band_gains @ pipe.band_filters
    bound = kernels.abs().sum(dim=1) ** 2
    assert (out.flatten(1).abs().amax(dim=1) <= bound + 1e-5).all()
    assert not torch.allclose(out, images)


def test_octave_filter_bank_sums_to_identity():
    bank = AugmentPipe().band_filters
    impulse = torch.zeros(bank.shape[1])
    impulse[bank.shape[1] // 2] = 1
    torch.testing.assert_close(bank.sum(dim=0), impulse, atol=1e-6, rtol=0)


# ------------------------------------------------------------------ statistics


def _rate(mask: torch.Tensor) -> float:
    return mask.float().mean().item()


def test_xflip_flips_half_of_the_augmented_samples():
    # As in StyleGAN2-ADA, x-flip is "a random flip applied with probability p": p/2 flip.
    params = _params(_pipe("xflip", p=0.6))
    assert _rate(params.xflip) == pytest.approx(0.3, abs=0.03)


def test_rotate90_is_uniform_over_quarter_turns():
    params = _params(_pipe("rotate90"))
    for k in range(4):
        assert _rate(params.rotate90 == k) == pytest.approx(0.25, abs=0.03)


def test_integer_translation_is_whole_pixels_within_an_eighth():
    params = _params(_pipe("xint"), res=32)
    shift = params.xint.float()
    assert shift.abs().max() <= 0.125 * 32
    assert shift.abs().mean().item() == pytest.approx(0.0625 * 32, abs=0.15)  # uniform in +-4 px


def test_rotation_angle_from_composed_matrix_is_uniform():
    params = _params(_pipe("rotate"))
    angle = torch.atan2(params.geom[:, 1, 0], params.geom[:, 0, 0])
    assert angle.abs().mean().item() == pytest.approx(math.pi / 2, abs=0.06)
    assert angle.mean().item() == pytest.approx(0.0, abs=0.1)
    half = _params(_pipe("rotate", p=0.5))
    assert _rate(half.geom_active) == pytest.approx(0.5, abs=0.03)  # pre/post split keeps P(rotate)=p


def test_scale_aniso_and_fractional_translation_strengths():
    scale = _params(_pipe("scale"))
    assert torch.log2(scale.geom[:, 0, 0]).std().item() == pytest.approx(0.2, rel=0.06)
    aniso = _params(_pipe("aniso"))
    torch.testing.assert_close(aniso.geom[:, 0, 0] * aniso.geom[:, 1, 1], torch.ones(4096))  # area kept
    assert torch.log2(aniso.geom[:, 0, 0]).std().item() == pytest.approx(0.2, rel=0.06)
    frac = _params(_pipe("xfrac"), res=32)
    assert (frac.geom[:, :2, 2] / 32).std().item() == pytest.approx(0.125, rel=0.06)


def test_geometric_inverse_matches_forward():
    params = _params(_pipe(*GROUPS["g"]), n=256)
    eye = torch.eye(3).expand(256, 3, 3)
    torch.testing.assert_close(params.geom @ params.geom_inv, eye, atol=1e-4, rtol=0)


def test_brightness_contrast_saturation_strengths_and_gating():
    bright = _params(_pipe("brightness"))
    offset = bright.color[:, 0, 3]
    assert offset.std().item() == pytest.approx(0.2, rel=0.06)
    assert offset.mean().item() == pytest.approx(0.0, abs=0.02)
    contrast = _params(_pipe("contrast"))
    assert torch.log2(contrast.color[:, 0, 0]).std().item() == pytest.approx(0.5, rel=0.06)
    sat = _params(_pipe("saturation"))
    chroma = torch.tensor([1.0, -1.0, 0.0]) / math.sqrt(2)  # orthogonal to luma: scaled by s
    gain = torch.einsum("i,nij,j->n", chroma, sat.color[:, :3, :3], chroma)
    assert torch.log2(gain).std().item() == pytest.approx(1.0, rel=0.06)
    gated = _params(_pipe("brightness", p=0.3))
    assert _rate(gated.color_active) == pytest.approx(0.3, abs=0.03)


def test_hue_rotation_angle_is_uniform_about_the_luma_axis():
    params = _params(_pipe("hue"))
    a = params.color[:, :3, :3]
    luma = torch.ones(3) / math.sqrt(3)
    torch.testing.assert_close(a @ luma, luma.expand(4096, 3), atol=1e-5, rtol=0)  # greys unchanged
    cos = (a.diagonal(dim1=1, dim2=2).sum(dim=1) - 1) / 2
    skew = torch.stack([a[:, 2, 1] - a[:, 1, 2], a[:, 0, 2] - a[:, 2, 0], a[:, 1, 0] - a[:, 0, 1]], dim=1) / 2
    angle = torch.atan2(skew @ luma, cos)
    torch.testing.assert_close(angle, params.draws["hue"], atol=1e-4, rtol=0)
    assert angle.mean().item() == pytest.approx(0.0, abs=0.1)
    assert angle.abs().mean().item() == pytest.approx(math.pi / 2, abs=0.06)


def test_luma_flip_negates_luma_in_half_of_augmented_samples():
    params = _params(_pipe("lumaflip"))
    luma = torch.ones(3) / math.sqrt(3)
    flipped = (params.color[:, :3, :3] @ luma) @ luma < 0
    assert _rate(flipped) == pytest.approx(0.5, abs=0.03)


def test_noise_and_cutout_statistics():
    torch.manual_seed(6)
    images = torch.zeros(512, 3, RES, RES)
    noise = _pipe("noise")
    out = noise(images)
    sigma = noise.last_params.noise_sigma
    assert sigma.mean().item() == pytest.approx(0.1 * math.sqrt(2 / math.pi), rel=0.1)  # E|N(0, 0.1)|
    assert out.std().item() == pytest.approx(sigma.square().mean().sqrt().item(), rel=0.05)
    cut = _pipe("cutout")
    zeroed = (cut(torch.ones(512, 3, RES, RES)) == 0).float().mean().item()
    assert 0.12 < zeroed < 0.25  # a half-size square (1/4 area), partly hanging over edges


# ------------------------------------------------------------------ correctness of application


def test_blit_matches_flip_rot90_and_mirrored_shift():
    images = _noise_images(3)
    pipe = _pipe(*GROUPS["b"])
    params = pipe.identity_params(3)
    params.xflip[0] = True
    params.rotate90[1] = 3
    params.xint[2] = torch.tensor([2, -1])
    out = pipe.apply(images, params)
    assert torch.equal(out[0], images[0].flip(2))
    assert torch.equal(out[1], torch.rot90(images[1], 3, dims=(1, 2)))
    shifted = torch.roll(images[2], shifts=(-1, 2), dims=(1, 2))
    assert torch.equal(out[2, :, :-1, 2:], shifted[:, :-1, 2:])
    # Border columns mirror about the edge pixel: source columns -1, -2 read columns 1, 2.
    assert torch.equal(out[2, :, :-1, 1], images[2, :, 1:, 1])
    assert torch.equal(out[2, :, :-1, 0], images[2, :, 1:, 2])
    assert torch.equal(out[2, :, -1, 2:], images[2, :, -2, :-2])  # bottom row mirrors row H-2


def test_geometric_matrix_predicts_where_content_moves():
    res = 32
    pipe = _pipe("rotate", "scale", "xfrac")
    params = pipe.sample_params(16, res, res, generator=torch.Generator().manual_seed(7))
    # Keep the blob inside the frame: moderate translations only.
    params.geom[:, :2, 2].clamp_(-3, 3)
    params.geom_inv = torch.linalg.inv(params.geom)
    params.geom_active[:] = True
    centre = torch.tensor([4.0, -3.0])
    coords = torch.arange(res) + 0.5 - res / 2
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    blob = torch.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * 1.5**2))
    out = pipe.apply(blob.expand(16, 3, res, res), params)[:, 0].clamp(min=0)
    predicted = (params.geom[:, :2, :2] @ centre) + params.geom[:, :2, 2]
    # Centroid near the prediction only: zoom-outs also bring mirrored copies into view.
    near = (xx - predicted[:, 0, None, None]) ** 2 + (yy - predicted[:, 1, None, None]) ** 2 < 6**2
    out = out * near
    mass = out.sum(dim=(1, 2))
    found = torch.stack([(out * xx).sum(dim=(1, 2)) / mass, (out * yy).sum(dim=(1, 2)) / mass], dim=1)
    torch.testing.assert_close(found, predicted, atol=0.15, rtol=0)


def test_geometric_resampling_with_identity_matrix_preserves_the_image():
    images = _smooth_images(4)
    pipe = _pipe("xfrac")
    params = pipe.identity_params(4)
    params.geom_active[:] = True  # force the full pad/upsample/sample/downsample path
    out = pipe.apply(images, params)
    assert (out - images).abs().max() < 0.02


def test_half_precision_in_half_precision_out():
    out = AugmentPipe("bgc", p=0.5)(_noise_images(4).bfloat16())
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_autocast_does_not_lower_the_pipe_precision():
    images = _noise_images(4)
    pipe = AugmentPipe("bgcf", p=1.0)
    params = pipe.sample_params(4, RES, RES, generator=torch.Generator().manual_seed(3))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = pipe.apply(images, params)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, pipe.apply(images, params), atol=1e-6, rtol=0)


def test_bad_images_raise_one_line_errors():
    pipe = AugmentPipe("bgc", p=0.5)
    with pytest.raises(ValueError, match="square"):
        pipe(torch.zeros(2, 3, 16, 8))
    with pytest.raises(ValueError, match="RGB"):
        pipe(torch.zeros(2, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pipe.set_p(1.5)


def test_p_is_a_saved_buffer():
    pipe = AugmentPipe(p=0.37)
    state = pipe.state_dict()
    assert set(state) == {"p"}
    fresh = AugmentPipe()
    fresh.load_state_dict(state)
    assert float(fresh.p) == pytest.approx(0.37)


# ------------------------------------------------------------------ gradients and R1


def test_gradients_flow_through_every_group_to_the_generator():
    torch.manual_seed(8)
    generator = nn.Sequential(nn.Linear(8, 3 * RES * RES), nn.Tanh(), nn.Unflatten(1, (3, RES, RES)))
    pipe = AugmentPipe("bgcfn", p=1.0)
    out = pipe(generator(torch.randn(8, 8)))
    out.square().mean().backward()
    grad = generator[0].weight.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_grid_sample_supports_double_backward():
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    grid = torch.rand(1, 3, 3, 2, dtype=torch.float64, generator=gen) * 1.6 - 0.8
    sample = lambda t: F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.autograd.gradgradcheck(sample, (x,))


def test_pipe_gradients_are_exact_to_second_order():
    # Full Jacobians for the resampling and filter path on a tiny single-channel image...
    pipe = AugmentPipe(transforms=("rotate", "scale", "aniso", "xfrac", "imgfilter"), p=1.0)
    params = pipe.sample_params(1, 6, 6, generator=torch.Generator().manual_seed(10))
    x = (torch.rand(1, 1, 6, 6, dtype=torch.float64) * 2 - 1).requires_grad_()
    apply = lambda t: pipe.apply(t, params)
    assert torch.autograd.gradcheck(apply, (x,)) and torch.autograd.gradgradcheck(apply, (x,))
    # ...and random projections (fast mode) for every group together on an RGB batch.
    pipe = AugmentPipe("bgcf", p=1.0)
    params = pipe.sample_params(2, 8, 8, generator=torch.Generator().manual_seed(10))
    x = (torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_()
    apply = lambda t: pipe.apply(t, params)
    assert torch.autograd.gradcheck(apply, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(apply, (x,), fast_mode=True)


def test_r1_penalty_double_backward_through_augmentation_is_finite():
    torch.manual_seed(11)
    disc = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * RES * RES, 1))
    pipe = AugmentPipe("bgcfn", p=1.0)
    reals = _smooth_images(8).requires_grad_()
    logits = disc(pipe(reals))
    (grad,) = torch.autograd.grad(logits.sum(), reals, create_graph=True)
    penalty = grad.square().sum(dim=(1, 2, 3)).mean()
    penalty.backward()
    weight_grad = disc[0].weight.grad
    assert torch.isfinite(penalty) and penalty > 0
    assert torch.isfinite(weight_grad).all() and weight_grad.abs().sum() > 0


# ------------------------------------------------------------------ controller


def _controller(p: float = 0.0, **kwargs) -> AdaptiveAugment:
    kwargs = {"batch_size": 64, "interval": 4, "speed_kimg": 10.0, **kwargs}
    return AdaptiveAugment(AugmentPipe("bgc", p=p), **kwargs)


def _feed(ada: AdaptiveAugment, steps: int, mean_sign: float, batch: int = 64) -> None:
    for _ in range(steps):
        ada.add_stats(mean_sign * batch, batch)
        ada.step()


def test_p_rises_by_the_exact_increment_when_d_overfits():
    ada = _controller()
    increment = 64 * 4 / (10.0 * 1000)
    assert ada.increment == pytest.approx(increment)
    _feed(ada, 3, 1.0)
    assert ada.p == 0.0 and ada.r_t is None  # no adjustment before `interval` minibatches
    _feed(ada, 1, 1.0)
    assert ada.r_t == 1.0 and ada.p == pytest.approx(increment, abs=1e-7)
    _feed(ada, 4 * 9, 0.9)
    assert ada.p == pytest.approx(10 * increment, abs=1e-6)


def test_p_falls_when_d_does_not_overfit_and_is_clamped():
    ada = _controller(p=0.06)
    _feed(ada, 8, 0.0)
    assert ada.p == pytest.approx(0.06 - 2 * ada.increment, abs=1e-6)
    _feed(ada, 40, -1.0)
    assert ada.p == 0.0
    high = _controller(p=0.99)
    _feed(high, 8, 1.0)
    assert high.p == 1.0


def test_p_holds_at_the_target_and_in_fixed_mode():
    ada = _controller(p=0.2)
    _feed(ada, 8, 0.6)
    assert ada.p == pytest.approx(0.2)
    fixed = _controller(p=0.2, adaptive=False)
    _feed(fixed, 8, 1.0)
    assert fixed.p == pytest.approx(0.2) and fixed.r_t == 1.0
    assert fixed.log_values() == {"augment/p": pytest.approx(0.2), "augment/rt": 1.0}


def test_observe_uses_signs_of_real_logits():
    ada = _controller(interval=1)
    ada.observe(torch.tensor([[3.0], [0.1], [-2.0], [5.0]]))
    ada.step()
    assert ada.r_t == pytest.approx(0.5)


def test_non_finite_statistics_leave_p_unchanged():
    ada = _controller(interval=1, p=0.2)
    ada.add_stats(torch.tensor(float("nan")), 64)
    assert ada.step() is False
    assert ada.p == pytest.approx(0.2) and ada.r_t is None
    _feed(ada, 1, 1.0)  # the next finite measurement works as usual
    assert ada.r_t == 1.0 and ada.p == pytest.approx(0.2 + ada.increment)


def test_statistics_are_reduced_over_processes():
    other_process = torch.tensor([-64.0, 64.0], dtype=torch.float64)  # its D does not overfit
    calls = []

    def all_reduce_sum(stats):
        calls.append(stats.clone())
        return stats + other_process

    ada = _controller(interval=1, reduce_fn=all_reduce_sum)
    ada.add_stats(torch.tensor(32.0), 64)
    ada.step()
    assert len(calls) == 1 and ada.r_t == pytest.approx((32 - 64) / 128)
    assert ada.p == 0.0  # global r_t below target: p must not rise though this process overfits


def test_controller_state_round_trips_through_json():
    ada = _controller()
    _feed(ada, 10, 1.0)
    ada.add_stats(20.0, 64)  # pending statistics mid-interval
    state = json.loads(json.dumps(ada.state_dict()))
    resumed = _controller()
    resumed.load_state_dict(state)
    assert resumed.p == pytest.approx(ada.p) and resumed.r_t == ada.r_t and resumed.steps == ada.steps
    assert float(resumed.pipe.p) == pytest.approx(ada.p)
    _feed(ada, 6, 0.5)
    _feed(resumed, 6, 0.5)
    assert resumed.p == pytest.approx(ada.p) and resumed.r_t == pytest.approx(ada.r_t)
    with pytest.raises(ValueError, match="invalid ADA state"):
        resumed.load_state_dict({"r_t": 0.1})


def test_from_config_builds_each_mode():
    pipe, ada = from_config(AugmentConfig(mode="ada", p=0.1, pipe="bgcf"), batch_size=32)
    assert isinstance(pipe, AugmentPipe) and ada.adaptive and ada.pipe is pipe and ada.p == pytest.approx(0.1)
    assert "imgfilter" in pipe.enabled
    pipe, ada = from_config(AugmentConfig(mode="fixed", p=0.3), batch_size=32)
    assert isinstance(pipe, AugmentPipe) and not ada.adaptive
    module, ada = from_config(AugmentConfig(mode="diffaugment"), batch_size=32)
    assert isinstance(module, DiffAugment) and ada.pipe is None
    module, ada = from_config(AugmentConfig(mode="none"), batch_size=32)
    assert module is None and ada.log_values() == {}
    with pytest.raises(ConfigError, match="augment.pipe"):
        from_config(AugmentConfig(pipe="bgz"), batch_size=32)
    with pytest.raises(ConfigError, match="augment.diffaugment_policy"):
        from_config(AugmentConfig(mode="diffaugment", diffaugment_policy="color,zoom"), batch_size=32)
    with pytest.raises(ConfigError, match="augment.interval"):
        from_config(AugmentConfig(interval=0), batch_size=32)
    with pytest.raises(ConfigError, match="augment.speed_kimg"):
        from_config(AugmentConfig(speed_kimg=0), batch_size=32)
    with pytest.raises(ConfigError, match="augment.mode 'zoom' is unknown"):
        from_config(AugmentConfig(mode="zoom"), batch_size=32)


def _train_tiny_discriminator(mode: str, memorise: bool, p: float = 0.0, steps: int = 100):
    """Train a tiny D against a never-improving "generator" (fresh random smooth images).

    memorise=True: the reals are 4 fixed images (D can memorise them, like a small art
    dataset); False: every real is a fresh image from the fakes' own distribution (an
    infinite dataset: nothing to memorise, so D cannot separate them).
    Returns the (r_t, p) history and E[sign(D(fake))] on unseen fakes at the end.
    """
    torch.manual_seed(12)
    reals = _smooth_images(4, seed=12)
    disc = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 1),
    )
    opt = torch.optim.Adam(disc.parameters(), lr=5e-3, betas=(0.0, 0.99))
    pipe, ada = from_config(AugmentConfig(mode=mode, p=p, interval=4, speed_kimg=10.0), batch_size=16)
    augment = pipe if pipe is not None else nn.Identity()
    history = []
    for step in range(steps):
        real = reals[torch.randint(0, 4, (16,))] if memorise else _smooth_images(16, seed=10**6 + step)
        fake = _smooth_images(16, seed=100 + step)
        real_logits, fake_logits = disc(augment(real)), disc(augment(fake))
        loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ada.observe(real_logits)
        if ada.step():
            history.append((ada.r_t, ada.p))
    with torch.no_grad():
        fake_sign = torch.sign(disc(_smooth_images(64, seed=7))).mean().item()
    return history, fake_sign, ada


def test_tiny_discriminator_overfits_four_images_and_ada_raises_p():
    history, fake_sign, _ = _train_tiny_discriminator("none", memorise=True)
    assert all(r_t == 1.0 for r_t, _ in history[-5:]) and fake_sign < -0.5  # memorised: r_t -> 1
    history, _, ada = _train_tiny_discriminator("ada", memorise=True)
    assert history[-1][1] >= 10 * ada.increment  # p climbed while D overfitted...
    assert sum(r_t for r_t, _ in history[-10:]) / 10 < 0.9  # ...and pulled r_t back toward the target


def test_ada_lowers_p_when_the_discriminator_cannot_overfit():
    history, _, ada = _train_tiny_discriminator("ada", memorise=False, p=0.2)
    assert history[-1][1] <= 0.2 - 10 * ada.increment
    assert abs(sum(r_t for r_t, _ in history) / len(history)) < 0.3


# ------------------------------------------------------------------ DiffAugment


def test_diffaugment_policy_shapes_gradients_and_errors():
    torch.manual_seed(13)
    images = _noise_images(64).requires_grad_()
    out = DiffAugment()(images)
    assert out.shape == images.shape
    out.sum().backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="zoom"):
        DiffAugment("color,zoom")


def test_diffaugment_translation_is_a_zero_filled_shift():
    images = _noise_images(64) * 0.5 + 1.5  # strictly positive: zeros come only from the fill
    out = DiffAugment("translation")(images)
    assert (out == 0).any(dim=(1, 2, 3)).float().mean() > 0.5  # most samples moved
    for i in range(64):
        rows, cols = (out[i, 0] == 0).all(dim=1), (out[i, 0] == 0).all(dim=0)  # zero-filled lines
        dy, dx = int(rows.sum()), int(cols.sum())
        assert dx <= 2 and dy <= 2  # at most 1/8 of 16 px
        kept = out[i][:, ~rows][:, :, ~cols]
        assert torch.isin(kept, images[i]).all()


def test_diffaugment_cutout_and_colour_ranges():
    torch.manual_seed(14)
    out = DiffAugment("cutout")(torch.ones(512, 3, RES, RES))
    assert 0.15 < (out == 0).float().mean().item() < 0.25
    grey = torch.zeros(512, 3, RES, RES)
    shifted = DiffAugment("color")(grey)  # greys: only brightness moves them, U(-0.5, 0.5)
    offsets = shifted[:, 0, 0, 0]
    assert offsets.abs().max() <= 0.5 and offsets.std().item() == pytest.approx(1 / math.sqrt(12), rel=0.15)


# ---------------------------------------------------------------- GPU-minded behaviour


def test_parameters_are_drawn_in_fp32_under_autocast():
    """Under the training loop's bf16 autocast the pipe draws the same fp32 transforms as without it."""
    pipe = AugmentPipe(groups="bgcf", p=0.8)
    pipe.record_params = True
    images = _smooth_images(4)
    torch.manual_seed(3)
    plain = pipe(images)
    expected = pipe.last_params
    torch.manual_seed(3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = pipe(images)
    got = pipe.last_params
    assert got.geom_inv.dtype == torch.float32 and got.color.dtype == torch.float32
    torch.testing.assert_close(got.geom_inv, expected.geom_inv)
    torch.testing.assert_close(got.color, expected.color)
    torch.testing.assert_close(auto, plain)


def test_p_zero_returns_the_batch_without_drawing_random_numbers():
    pipe = AugmentPipe(groups="bgcfnc", p=0.0)
    images = _smooth_images(3)
    state = torch.get_rng_state()
    assert pipe(images) is images
    assert torch.equal(torch.get_rng_state(), state)
    restored = AugmentPipe(groups="bgc", p=0.0)
    restored.load_state_dict(AugmentPipe(groups="bgc", p=0.5).state_dict())
    assert restored(images) is not images  # p came back with the state dict, so the pipe is on again


def test_geometric_canvas_takes_few_shapes(monkeypatch):
    """The reflect-padded canvas is sized in coarse steps, so cuDNN sees a handful of shapes, not one per batch."""
    import gan.augment as augment

    shapes = set()
    real_pad = augment._reflect_pad

    def recording_pad(x, *margins):
        out = real_pad(x, *margins)
        shapes.add(tuple(out.shape[-2:]))
        return out

    monkeypatch.setattr(augment, "_reflect_pad", recording_pad)
    pipe = AugmentPipe(groups="g", p=0.5)
    images = _smooth_images(4, res=32)
    torch.manual_seed(0)
    for _ in range(60):
        pipe(images)
    assert 1 < len(shapes) <= 8, shapes
    assert all(h == w and (h - 32) % 8 == 0 for h, w in shapes)


def test_multi_process_checkpoint_saves_the_summed_pending_statistics_once():
    """Two processes (reduce = sum of both) save the total; on resume one of them takes it back."""
    other_process = torch.tensor([5.0, 16.0], dtype=torch.float64)
    ada = AdaptiveAugment(AugmentPipe(groups="bgc", p=0.2), batch_size=32, reduce_fn=lambda stats: stats + other_process)
    ada.add_stats(3.0, 16)
    state = ada.state_dict()
    assert (state["pending_sign_sum"], state["pending_count"]) == (8.0, 32.0)
    assert ada.local_stats() == (3.0, 16.0)  # saving does not consume the statistics
    first, second = _controller(), _controller()
    first.load_state_dict(state, keep_pending=True)
    second.load_state_dict(state, keep_pending=False)
    assert first.local_stats() == (8.0, 32.0) and second.local_stats() == (0.0, 0.0)
