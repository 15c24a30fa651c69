"""StyleGAN2Loss: finite terms, R1 and path-length behaviour, gradient ownership, D learns."""

import math

import pytest
import torch

from gan.config import LossConfig, ModelConfig
from gan.loss import StyleGAN2Loss, requires_grad
from gan.networks import Discriminator, Generator

TINY = ModelConfig(z_dim=16, w_dim=16, mapping_layers=2, channel_base=128, channel_max=16, mbstd_group=4)
RES = 16


@pytest.fixture()
def nets():
    torch.manual_seed(0)
    return Generator(TINY, RES), Discriminator(TINY, RES)


def _grads(module):
    return [p.grad for p in module.parameters() if p.grad is not None]


def test_all_terms_are_finite_and_r1_positive(nets):
    G, D = nets
    loss = StyleGAN2Loss(G, D, LossConfig(r1_gamma=10.0, pl_weight=2.0))
    z, real = torch.randn(4, TINY.z_dim), torch.rand(4, 3, RES, RES) * 2 - 1
    results = {"g_main": loss.g_main(z), "g_pathlen": loss.g_pathlen(z), "d_main": loss.d_main(real, z), "d_r1": loss.d_r1(real)}
    for name, (value, stats) in results.items():
        assert value.ndim == 0 and torch.isfinite(value), name
        assert all(torch.isfinite(torch.as_tensor(v)).all() for v in stats.values()), name
        assert all(not torch.as_tensor(v).requires_grad for v in stats.values()), name
    d_stats = results["d_main"][1]
    assert {"loss/D", "loss/D_real", "loss/D_fake", "scores/real_sign"} <= set(d_stats)
    assert -1 <= d_stats["scores/real_sign"] <= 1
    assert results["d_r1"][1]["loss/r1"] > 0 and results["d_r1"][0] > 0


def test_r1_equals_manual_gradient_penalty_and_stays_fp32_under_autocast(nets):
    G, D = nets
    loss = StyleGAN2Loss(G, D, LossConfig(r1_gamma=4.0))
    real = torch.randn(3, 3, RES, RES)
    x = real.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x).sum(), x)
    expected = 4.0 / 2 * grad.square().sum(dim=[1, 2, 3]).mean()
    value, _ = loss.d_r1(real)
    torch.testing.assert_close(value, expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value_bf16, _ = loss.d_r1(real)
    torch.testing.assert_close(value_bf16, expected)  # exact: the penalty ignored autocast


def test_path_length_updates_pl_mean_and_state_round_trips(nets):
    G, D = nets
    cfg = LossConfig(pl_weight=2.0, pl_decay=0.01, pl_batch_shrink=2)
    loss = StyleGAN2Loss(G, D, cfg)
    assert loss.pl_mean.item() == 0.0
    value, stats = loss.g_pathlen(torch.randn(4, TINY.z_dim))
    assert stats["pl/length"] > 0
    torch.testing.assert_close(loss.pl_mean, stats["pl/length"] * 0.01)
    value.backward()
    assert _grads(G) and not _grads(D)
    state = loss.state_dict()
    other = StyleGAN2Loss(G, D, cfg)
    other.load_state_dict(state)
    torch.testing.assert_close(other.pl_mean, loss.pl_mean)
    with pytest.raises(ValueError, match="pl_mean"):
        other.load_state_dict({"nope": torch.zeros([])})


def test_g_phase_only_fills_g_grads_and_d_phase_only_d_grads(nets):
    G, D = nets
    loss = StyleGAN2Loss(G, D, LossConfig())
    z, real = torch.randn(4, TINY.z_dim), torch.randn(4, 3, RES, RES)
    g_loss, _ = loss.g_main(z)
    g_loss.backward()
    assert _grads(G) and not _grads(D)
    assert all(p.requires_grad for p in D.parameters())  # restored after the G phase
    G.zero_grad(set_to_none=True)
    for term in (loss.d_main(real, z)[0], loss.d_r1(real)[0]):
        term.backward()
    assert _grads(D) and not _grads(G)


def test_every_training_pass_through_g_updates_w_avg_as_nvidias_does(nets):
    """NVIDIA's loss moves w_avg in each mapping pass of training: G main, path length, D main."""
    G, D = nets
    loss = StyleGAN2Loss(G, D, LossConfig(pl_batch_shrink=1))
    seen = [G.mapping.w_avg.clone()]
    for run in (
        lambda: loss.d_main(torch.randn(2, 3, RES, RES), torch.randn(2, TINY.z_dim)),
        lambda: loss.g_main(torch.randn(2, TINY.z_dim)),
        lambda: loss.g_pathlen(torch.randn(2, TINY.z_dim)),
    ):
        run()
        assert not torch.equal(G.mapping.w_avg, seen[-1])
        seen.append(G.mapping.w_avg.clone())
    loss.d_r1(torch.randn(2, 3, RES, RES))  # no G pass
    assert torch.equal(G.mapping.w_avg, seen[-1])


def test_requires_grad_restores_each_parameters_flag(nets):
    _, D = nets
    D.freeze_blocks(1)
    with requires_grad(D, True):
        assert all(p.requires_grad for p in D.parameters())
    assert not any(p.requires_grad for p in D.blocks[0].parameters())
    assert all(p.requires_grad for p in D.blocks[1].parameters())


def test_augment_pipe_sees_every_image_d_sees(nets):
    G, D = nets
    seen = []

    def pipe(img):
        seen.append(img.shape[0])
        return img.flip(3)

    loss = StyleGAN2Loss(G, D, LossConfig(), augment_pipe=pipe)
    z, real = torch.randn(3, TINY.z_dim), torch.randn(3, 3, RES, RES)
    loss.g_main(z)
    loss.d_main(real, z)
    loss.d_r1(real)
    assert seen == [3, 6, 3]  # reals and fakes in one D forward
    with pytest.raises(ValueError, match="as many latents"):
        loss.d_main(real, torch.randn(2, TINY.z_dim))


def test_a_few_d_steps_reduce_d_loss_on_a_trivial_dataset(nets):
    G, D = nets
    loss = StyleGAN2Loss(G, D, LossConfig(r1_gamma=0.01))
    pattern = torch.zeros(1, 3, RES, RES)
    pattern[:, :, ::2, ::2] = 1.0  # real = one fixed dotted pattern; fakes from a fixed G
    opt = torch.optim.Adam(D.parameters(), lr=0.005, betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(1)
    eval_z = torch.randn(8, TINY.z_dim, generator=gen)

    def held_out_loss():
        with torch.no_grad():
            return loss.d_main(pattern.expand(8, -1, -1, -1), eval_z)[0].item()

    before = held_out_loss()
    for step in range(15):
        value, stats = loss.d_main(pattern.expand(4, -1, -1, -1), torch.randn(4, TINY.z_dim, generator=gen))
        if step % 4 == 0:  # lazy R1, weighted by its interval as the training loop does
            value = value + loss.d_r1(pattern.expand(4, -1, -1, -1))[0] * 4
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.7 * before and after < 2 * math.log(2)  # better than chance
    assert stats["scores/real_sign"].item() == 1.0


def test_a_non_finite_batch_leaves_pl_mean_and_w_avg_untouched(nets):
    # A NaN batch makes the loss NaN (the loop then skips the step) but must not be blended
    # into the running statistics, or every later step would be NaN too.
    G, D = nets
    loss = StyleGAN2Loss(G, D, LossConfig(pl_weight=2.0, pl_decay=0.01, pl_batch_shrink=1))
    loss.g_pathlen(torch.randn(4, TINY.z_dim))
    loss.g_main(torch.randn(4, TINY.z_dim))
    pl_before, w_before = loss.pl_mean.clone(), G.mapping.w_avg.clone()
    assert pl_before > 0 and w_before.abs().sum() > 0
    poisoned = torch.randn(4, TINY.z_dim)
    poisoned[1, 0] = float("nan")
    value, stats = loss.g_pathlen(poisoned)
    assert not torch.isfinite(value) and not torch.isfinite(stats["pl/length"])
    assert torch.equal(loss.pl_mean, pl_before)
    g_value, _ = loss.g_main(poisoned)
    assert not torch.isfinite(g_value)
    assert torch.equal(G.mapping.w_avg, w_before)
    # A finite batch afterwards blends as usual.
    _, stats = loss.g_pathlen(torch.randn(4, TINY.z_dim))
    torch.testing.assert_close(loss.pl_mean, pl_before.lerp(stats["pl/length"], 0.01))


# ------------------------------------------------------- known values (hand-computed, stub networks)


class _LinearSynthesis(torch.nn.Module):
    """G stub: ws = (z M) broadcast to ``layers`` ws; img = sum_{l,d} ws[l, d] * A[l, d] (no randomness).

    Its Jacobian is known in closed form: J^T y = <A[l, d], y> for every (l, d).
    """

    def __init__(self, z_dim=3, w_dim=2, layers=3, shape=(3, 4, 8)):
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.M = torch.nn.Parameter(torch.randn(z_dim, w_dim, generator=gen))
        self.A = torch.randn(layers, w_dim, *shape, generator=gen)
        self.layers = layers

    def forward(self, z, style_mix_prob=0.0, return_ws=False, update_w_avg=False):
        ws = (z @ self.M)[:, None, :].expand(-1, self.layers, -1)
        img = torch.einsum("nld,ldchw->nchw", ws, self.A)
        return (img, ws) if return_ws else img


class _LinearCritic(torch.nn.Module):
    """D stub: logit = scale * mean(img) (so reals and fakes get known logits)."""

    def __init__(self, scale=2.0):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(scale))

    def forward(self, img, mbstd_split=1):
        return (img.mean(dim=[1, 2, 3]) * self.scale)[:, None]


def test_path_length_penalty_matches_a_hand_computed_jacobian():
    G, D = _LinearSynthesis(), _LinearCritic()
    cfg = LossConfig(pl_weight=2.0, pl_decay=0.01, pl_batch_shrink=2)
    loss = StyleGAN2Loss(G, D, cfg)
    z = torch.randn(6, 3)
    torch.manual_seed(11)
    value, stats = loss.g_pathlen(z)
    # Same draw as the loss: y ~ N(0, I) / sqrt(H * W) with H=4, W=8, on the first 6 // 2 samples.
    torch.manual_seed(11)
    y = torch.randn(3, 3, 4, 8) / math.sqrt(4 * 8)
    jty = torch.einsum("ldchw,nchw->nld", G.A, y)  # J^T y w.r.t. every per-layer w
    lengths = jty.square().sum(dim=2).mean(dim=1).sqrt()  # |J^T y|, averaged over the layers' ws
    pl_mean = 0.01 * lengths.mean()  # first update of a zero running mean
    torch.testing.assert_close(loss.pl_mean, pl_mean)
    torch.testing.assert_close(stats["pl/length"], lengths.mean())
    torch.testing.assert_close(value, 2.0 * (lengths - pl_mean).square().mean())


def test_r1_is_taken_wrt_the_unaugmented_reals():
    # D(aug(x)) with aug(x) = 3 * flip(x) and a linear D = 2 * mean: the gradient w.r.t. x is
    # 3 * 2 / numel at every pixel, so R1 = gamma / 2 * (6 / numel)^2 * numel per sample.
    G, D = _LinearSynthesis(), _LinearCritic(2.0)
    loss = StyleGAN2Loss(G, D, LossConfig(r1_gamma=10.0), augment_pipe=lambda x: 3 * x.flip(3))
    real = torch.randn(4, 3, 4, 8)
    numel = 3 * 4 * 8
    value, stats = loss.d_r1(real)
    expected_penalty = torch.tensor((6 / numel) ** 2 * numel)
    torch.testing.assert_close(stats["loss/r1"], expected_penalty)
    torch.testing.assert_close(value, 5.0 * expected_penalty)


def test_non_saturating_losses_on_known_logits():
    G, D = _LinearSynthesis(), _LinearCritic(2.0)
    with torch.no_grad():
        G.M.zero_()  # every fake is the zero image: logit 0
    loss = StyleGAN2Loss(G, D, LossConfig())
    z, real = torch.randn(4, 3), torch.full((4, 3, 4, 8), 0.5)  # real logit 2 * 0.5 = 1
    g_value, _ = loss.g_main(z)
    torch.testing.assert_close(g_value, torch.tensor(math.log(2.0)))  # softplus(-0)
    d_value, stats = loss.d_main(real, z)
    # softplus(D(fake)) + softplus(-D(real)) = log 2 + log(1 + e^-1)
    torch.testing.assert_close(d_value, torch.tensor(math.log(2.0) + math.log1p(math.exp(-1.0))))
    assert stats["scores/real_sign"].item() == 1.0
