from __future__ import annotations

import numpy as np
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


def _v1_slope_penalty(norms: np.ndarray) -> float:
    """compare_gan v1's E (sqrt(1e-4 + ||g||^2) - 1)^2 from per-sample gradient norms."""
    return float(((np.sqrt(1e-4 + norms**2) - 1) ** 2).mean())


@pytest.mark.parametrize("squeeze", [False, True])
@pytest.mark.parametrize("norm", [0.5, 1.0, 2.0, 3.0])
def test_wgan_gp_on_a_linear_critic_is_v1_formula(norm, squeeze):
    # ||grad D|| = norm everywhere, so the penalty is (sqrt(1e-4 + norm^2) - 1)^2: zero up to v1's 1e-4 at norm 1.
    real, fake = _batches()
    value = penalties.gradient_penalty(_linear_critic(norm, squeeze), real, fake)
    assert value.shape == ()
    assert value.item() == pytest.approx(_v1_slope_penalty(np.full(SHAPE[0], norm)), rel=1e-12, abs=1e-15)


def test_gradient_penalty_evaluates_at_per_sample_interpolates():
    real, fake = _batches()
    critic = _Recorder()
    penalties.gradient_penalty(critic, real, fake, torch.Generator().manual_seed(3))
    # v1: x_hat = x + alpha (G(z) - x), so alpha is recoverable elementwise and must be one per sample.
    alpha = ((critic.seen - real) / (fake - real)).flatten(start_dim=1)
    assert torch.allclose(alpha, alpha[:, :1].expand_as(alpha), atol=1e-9)
    assert ((alpha >= 0) & (alpha < 1)).all()
    assert alpha[:, 0].unique().numel() == SHAPE[0]
    expected = torch.rand(SHAPE[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(alpha[:, 0], expected, atol=1e-9)


def _dragan_draws(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The penalty's random draws in its order: delta ~ U[0, 1) of the batch's shape, then alpha per sample."""
    gen = torch.Generator().manual_seed(seed)
    delta = torch.rand(SHAPE, generator=gen, dtype=torch.float64)
    alpha = torch.rand((SHAPE[0], 1, 1, 1), generator=gen, dtype=torch.float64)
    return delta, alpha


def test_dragan_perturbation_is_v1s():
    # v1 (DRAGAN.py 45-46, 87-89): x_p = x + 0.5 std(x) U[0, 1) elementwise; x_hat = x + alpha (x_p - x).
    real, fake = _batches()
    critic = _Recorder()
    penalties.dragan_penalty(critic, real, fake, torch.Generator().manual_seed(5))
    delta, alpha = _dragan_draws(5)
    scale = 0.5 * real.std(correction=0)  # the authors' numpy x.std(): population std over the whole batch
    assert torch.allclose(critic.seen, real + alpha * scale * delta, rtol=1e-12, atol=1e-14)
    # Its distribution: one-sided, within [0, alpha_i * scale) elementwise, varying within each sample.
    noise = critic.seen - real
    assert ((noise >= 0) & (noise < alpha * scale)).all()
    assert noise.flatten(start_dim=1).std(dim=1).min() > 0


@pytest.mark.parametrize("norm", [0.5, 1.0, 4.0, 40.0])
def test_dragan_penalises_the_gradient_of_the_sigmoid_output(norm):
    # For D(x) = w.x + b: grad sigmoid(D) = sigmoid'(D(x_hat)) w, so per-sample norms sigmoid'(s) ||w||; computed
    # here in numpy from the same draws.
    real, fake = _batches()
    critic = _linear_critic(norm)
    value = penalties.dragan_penalty(critic, real, fake, torch.Generator().manual_seed(7))
    delta, alpha = _dragan_draws(7)
    r = real.numpy()
    x_hat = r + alpha.numpy() * 0.5 * r.std() * delta.numpy()
    w, b = critic[1].weight.detach().numpy()[0], critic[1].bias.item()
    sig = 1 / (1 + np.exp(-(x_hat.reshape(SHAPE[0], -1) @ w + b)))
    assert value.item() == pytest.approx(_v1_slope_penalty(sig * (1 - sig) * norm), rel=1e-10)
    # Not the logit's: that would be (sqrt(1e-4 + norm^2) - 1)^2 for every sample.
    assert value.item() != pytest.approx(_v1_slope_penalty(np.full(SHAPE[0], norm)), rel=1e-3)


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

    # The output bias shifts every score equally, so it cannot change the input gradient of a raw score (WGAN-GP);
    # through DRAGAN's sigmoid it moves sigmoid'(D(x)), so it gets a gradient there.
    output_bias = critic[3].bias
    for param in critic.parameters():
        if param is not output_bias or penalty is penalties.dragan_penalty:
            assert param.grad is not None and param.grad.abs().sum() > 0
    if penalty is penalties.gradient_penalty:
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
    assert penalties.PENALTIES.get("wgan_gp") is penalties.gradient_penalty
    assert penalties.PENALTIES.get("dragan") is penalties.dragan_penalty


def test_every_loss_penalty_is_registered():
    for name in losses.LOSSES.names():
        penalty = losses.get(name).penalty
        if penalty is not None:
            assert penalties.PENALTIES.get(penalty) in [entry for _, entry in penalties.PENALTIES.items()]


def test_get_unknown_penalty_lists_valid_names():
    with pytest.raises(BenchError) as info:
        penalties.PENALTIES.get("r2")
    message = str(info.value)
    assert "\n" not in message and "'r2'" in message
    assert "wgan_gp" in message and "dragan" in message
