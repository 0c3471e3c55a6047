from __future__ import annotations

import pytest
import torch
from torch import nn

from bench import BenchError, losses, penalties

SHAPE = (8, 3, 4, 4)
DIM = 3 * 4 * 4
UNIT_NORM = [penalties.gradient_penalty, penalties.dragan_penalty]


def _batches(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    real = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    fake = torch.randn(SHAPE, generator=gen, dtype=torch.float64)
    return real, fake


def _linear_critic(norm: float, squeeze: bool = False) -> nn.Module:
    """D(x) = w . flatten(x) + b with ||w||_2 = norm, so ||grad D|| = norm everywhere."""
    torch.manual_seed(0)
    layers = [nn.Flatten(), nn.Linear(DIM, 1)]
    if squeeze:
        layers.append(nn.Flatten(start_dim=0))  # scores of shape (B,) rather than (B, 1)
    critic = nn.Sequential(*layers).double()
    with torch.no_grad():
        critic[1].weight.mul_(norm / critic[1].weight.norm())
    return critic


def _mlp_critic(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    # tanh keeps the input gradient a smooth function of every weight and of the input.
    return nn.Sequential(nn.Flatten(), nn.Linear(DIM, 16), nn.Tanh(), nn.Linear(16, 1)).double()


class _Recorder(nn.Module):
    """A linear critic that remembers the points it was evaluated at."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(DIM, 1).double()
        self.seen: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return self.linear(x.flatten(start_dim=1))


@pytest.mark.parametrize("squeeze", [False, True])
@pytest.mark.parametrize("penalty", UNIT_NORM)
def test_unit_norm_linear_critic_has_zero_penalty(penalty, squeeze):
    real, fake = _batches()
    value = penalty(_linear_critic(1.0, squeeze), real, fake)
    assert value.shape == ()
    assert value.item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("norm, expected", [(2.0, 1.0), (3.0, 4.0), (0.5, 0.25)])
@pytest.mark.parametrize("penalty", UNIT_NORM)
def test_linear_critic_penalty_is_squared_distance_from_unit_norm(penalty, norm, expected):
    real, fake = _batches()
    value = penalty(_linear_critic(norm), real, fake)
    assert value.item() == pytest.approx(expected, abs=1e-10)


def test_gradient_penalty_evaluates_at_per_sample_interpolates():
    real, fake = _batches()
    critic = _Recorder()
    penalties.gradient_penalty(critic, real, fake)
    # x_hat = eps * real + (1 - eps) * fake, so eps is recoverable elementwise and must be one per sample.
    eps = ((critic.seen - fake) / (real - fake)).flatten(start_dim=1)
    assert torch.allclose(eps, eps[:, :1].expand_as(eps), atol=1e-9)
    assert ((eps >= 0) & (eps < 1)).all()
    assert eps[:, 0].unique().numel() == SHAPE[0]


def test_dragan_penalty_perturbs_real_with_positive_elementwise_noise():
    real, fake = _batches()
    critic = _Recorder()
    penalties.dragan_penalty(critic, real, fake)
    noise = critic.seen - real
    scale = 0.5 * real.std(correction=0)
    assert ((noise >= 0) & (noise < scale)).all()
    # Elementwise, not per sample: the noise varies within each sample too.
    assert noise.flatten(start_dim=1).std(dim=1).min() > 0.1 * scale
    # One U[0, 1) draw of real's shape, scaled by the population std (the authors' numpy x.std()).
    delta = torch.rand(SHAPE, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    penalties.dragan_penalty(critic, real, fake, torch.Generator().manual_seed(5))
    assert torch.allclose(critic.seen - real, scale * delta, rtol=1e-12, atol=0)


@pytest.mark.parametrize("penalty", UNIT_NORM)
def test_penalty_gradient_reaches_discriminator_but_not_inputs(penalty):
    real, _ = _batches()
    # A fake batch straight from a generator: the penalty must not push gradient back into G.
    generator_layer = nn.Linear(5, DIM).double()
    fake = generator_layer(torch.randn(SHAPE[0], 5, dtype=torch.float64)).view(SHAPE)
    critic = _mlp_critic()

    value = penalty(critic, real, fake)
    assert value.item() > 0
    value.backward()

    # The output bias shifts every score equally, so it cannot change an input gradient.
    output_bias = critic[3].bias
    for param in critic.parameters():
        if param is not output_bias:
            assert param.grad is not None and param.grad.abs().sum() > 0
    assert output_bias.grad is None or (output_bias.grad == 0).all()
    assert all(p.grad is None for p in generator_layer.parameters())
    assert real.grad is None and not real.requires_grad


@pytest.mark.parametrize("norm", [0.5, 2.0, 3.0])
def test_r1_on_linear_critic_is_squared_weight_norm(norm):
    real, _ = _batches()
    assert penalties.r1_penalty(_linear_critic(norm), real).item() == pytest.approx(norm**2, abs=1e-10)


def test_r1_on_constant_critic_is_zero():
    real, _ = _batches()
    critic = _linear_critic(1.0)
    with torch.no_grad():
        critic[1].weight.zero_()
        critic[1].bias.fill_(3.0)
    assert penalties.r1_penalty(critic, real).item() == 0.0


def test_r1_gradient_reaches_discriminator():
    real, _ = _batches()
    critic = _mlp_critic()
    value = penalties.r1_penalty(critic, real)
    assert value.item() > 0
    value.backward()
    assert critic[1].weight.grad.abs().sum() > 0
    assert critic[3].weight.grad.abs().sum() > 0
    assert not real.requires_grad


@pytest.mark.parametrize("penalty", UNIT_NORM)
def test_same_generator_seed_gives_same_penalty(penalty):
    real, fake = _batches()
    critic = _mlp_critic()

    def run(seed: int) -> float:
        return penalty(critic, real, fake, torch.Generator().manual_seed(seed)).item()

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_clip_weights():
    critic = _mlp_critic()
    with torch.no_grad():
        for param in critic.parameters():
            param.normal_(std=1.0)
    clip = 0.5
    before = [p.detach().clone() for p in critic.parameters()]
    flat = torch.cat([p.flatten() for p in before])
    assert (flat.abs() <= clip).any() and (flat.abs() > clip).any()
    penalties.clip_weights(critic, clip)
    for old, new in zip(before, critic.parameters()):
        assert new.requires_grad
        assert (new.abs() <= clip).all()
        inside = old.abs() <= clip
        assert torch.equal(new[inside], old[inside])
        assert torch.equal(new[~inside], clip * old[~inside].sign())


def test_get_known_penalties():
    assert penalties.get("wgan_gp") is penalties.gradient_penalty
    assert penalties.get("dragan") is penalties.dragan_penalty


def test_every_loss_penalty_is_registered():
    for name in losses.names():
        penalty = losses.get(name).penalty
        if penalty is not None:
            assert penalties.get(penalty) in penalties.PENALTIES.values()


def test_get_unknown_penalty_lists_valid_names():
    with pytest.raises(BenchError) as info:
        penalties.get("r2")
    message = str(info.value)
    assert "\n" not in message and "'r2'" in message
    assert "wgan_gp" in message and "dragan" in message
