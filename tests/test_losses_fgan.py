"""The f-GAN losses (Nowozin et al. 2016) and the relativistic ones (Jolicoeur-Martineau 2019): values against formulas
worked by hand, gradient directions, the f-GAN conjugates against sup_u (t u - f(u)), and the f-GAN bound reaching the
true divergence between two Gaussians once its critic is trained."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, optimize, stats

from bench import losses
from bench.cli import main

F_GANS = ["kl", "reverse_kl", "pearson", "hellinger", "js"]
RELATIVISTIC = ["rsgan", "rasgan", "ralsgan", "rahinge"]

# Table 6's generators f(u), u = p_real / p_fake: D_f(P || Q) = E_Q f(p / q).
GENERATORS = {
    "kl": lambda u: u * np.log(u),
    "reverse_kl": lambda u: -np.log(u),
    "pearson": lambda u: (u - 1) ** 2,
    "hellinger": lambda u: (np.sqrt(u) - 1) ** 2,
    "js": lambda u: -(u + 1) * np.log((1 + u) / 2) + u * np.log(u),
}

# Table 6's output activations g_f and conjugates f*, written out again in plain math.
TABLE_6 = {
    "kl": (lambda v: v, lambda t: math.exp(t - 1)),
    "reverse_kl": (lambda v: -math.exp(-v), lambda t: -1 - math.log(-t)),
    "pearson": (lambda v: v, lambda t: t * t / 4 + t),
    "hellinger": (lambda v: 1 - math.exp(-v), lambda t: t / (1 - t)),
    "js": (lambda v: math.log(2) - math.log(1 + math.exp(-v)), lambda t: -math.log(2 - math.exp(t))),
}

REAL = [-1.0, 0.0, 0.5, 2.0]
FAKE = [-0.5, 0.3, 1.0, 1.5]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _softplus(t: float) -> float:
    return math.log1p(math.exp(t))


def _f_gan_by_hand(name: str, real: list[float], fake: list[float]) -> tuple[float, float]:
    g, f_star = TABLE_6[name]
    bound = _mean(g(v) for v in real) - _mean(f_star(g(v)) for v in fake)
    return -bound, -_mean(g(v) for v in fake)


def _relativistic_by_hand(name: str, real: list[float], fake: list[float]) -> tuple[float, float]:
    mean_real, mean_fake = _mean(real), _mean(fake)
    real_rel = [r - mean_fake for r in real]
    fake_rel = [f - mean_real for f in fake]
    if name == "rsgan":
        return (_mean(_softplus(f - r) for r, f in zip(real, fake)),
                _mean(_softplus(r - f) for r, f in zip(real, fake)))
    if name == "rasgan":  # -log sigmoid(t) = softplus(-t), -log(1 - sigmoid(t)) = softplus(t)
        return ((_mean(_softplus(-t) for t in real_rel) + _mean(_softplus(t) for t in fake_rel)) / 2,
                (_mean(_softplus(-t) for t in fake_rel) + _mean(_softplus(t) for t in real_rel)) / 2)
    if name == "ralsgan":
        return ((_mean((t - 1) ** 2 for t in real_rel) + _mean((t + 1) ** 2 for t in fake_rel)) / 2,
                (_mean((t - 1) ** 2 for t in fake_rel) + _mean((t + 1) ** 2 for t in real_rel)) / 2)
    assert name == "rahinge"
    return ((_mean(max(0.0, 1 - t) for t in real_rel) + _mean(max(0.0, 1 + t) for t in fake_rel)) / 2,
            (_mean(max(0.0, 1 - t) for t in fake_rel) + _mean(max(0.0, 1 + t) for t in real_rel)) / 2)


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
@pytest.mark.parametrize("name", F_GANS + RELATIVISTIC)
def test_values_match_the_formulas_worked_by_hand(name, shape):
    real = torch.tensor(REAL, dtype=torch.float64).reshape(shape)
    fake = torch.tensor(FAKE, dtype=torch.float64).reshape(shape)
    d_loss, g_loss = losses.get(name).fn(real, fake)
    assert d_loss.shape == g_loss.shape == ()
    by_hand = _f_gan_by_hand if name in F_GANS else _relativistic_by_hand
    d_ref, g_ref = by_hand(name, REAL, FAKE)
    assert d_loss.item() == pytest.approx(d_ref, abs=1e-12)
    assert g_loss.item() == pytest.approx(g_ref, abs=1e-12)


@pytest.mark.parametrize("name", F_GANS)
def test_f_gan_losses_are_the_bound_on_the_table_activation_and_conjugate(name):
    # The losses simplify f*(g_f(v)) by hand; F_GAN keeps the table's forms: the two agree wherever both are finite.
    activation, conjugate = losses.F_GAN[name]
    gen = torch.Generator().manual_seed(0)
    real, fake = (2 * torch.randn(2, 256, generator=gen, dtype=torch.float64)).unbind()
    d_loss, g_loss = losses.get(name).fn(real, fake)
    assert d_loss.item() == pytest.approx(-(activation(real).mean() - conjugate(activation(fake)).mean()).item())
    assert g_loss.item() == pytest.approx(-activation(fake).mean().item())


@pytest.mark.parametrize("name, fake", [("reverse_kl", -100.0), ("hellinger", 20.0), ("js", 20.0)])
def test_simplified_conjugates_stay_finite_where_the_table_forms_overflow(name, fake):
    # float32: -exp(100) is -inf; 1 - exp(-20) and log 2 - softplus(-20) round to 1 and log 2, the poles of f*.
    activation, conjugate = losses.F_GAN[name]
    scores = torch.tensor([fake])
    assert not torch.isfinite(conjugate(activation(scores))).all()
    d_loss, _ = losses.get(name).fn(torch.zeros(1), scores)
    assert d_loss.item() == pytest.approx(_f_gan_by_hand(name, [0.0], [fake])[0], rel=1e-6)  # float64 by hand


@pytest.mark.parametrize("name", F_GANS + RELATIVISTIC)
def test_gradient_directions(name):
    # Inside the region where every one is strictly monotone: pearson's f*(t) = t²/4 + t falls below t = -2, and the
    # least-squares targets and hinge margins sit at relative scores of -1 and 1.
    gen = torch.Generator().manual_seed(1)
    scale = 1.5 if name in F_GANS else 0.4
    real, fake = (scale * (2 * torch.rand(2, 32, generator=gen, dtype=torch.float64) - 1)).unbind()
    real.requires_grad_(True)
    fake.requires_grad_(True)
    d_loss, g_loss = losses.get(name).fn(real, fake)

    d_real, d_fake = torch.autograd.grad(d_loss, (real, fake), retain_graph=True)
    assert (d_real < 0).all()  # raising a real score lowers D's loss
    assert (d_fake > 0).all()  # raising a fake score raises it
    (g_fake,) = torch.autograd.grad(g_loss, fake)
    assert (g_fake < 0).all()


def test_pearson_d_loss_pulls_fake_scores_below_minus_2_back_up():
    fake = torch.tensor([-3.0, -2.5], requires_grad=True)
    d_loss, _ = losses.pearson(torch.zeros(2), fake)
    (d_fake,) = torch.autograd.grad(d_loss, fake)
    assert (d_fake < 0).all()


# Points inside each conjugate's domain (the range of its activation), with maximisers u* = (f')^-1(t) inside (0, 100).
CONJUGATE_POINTS = {
    "kl": [-1.0, 0.0, 0.5, 1.5],
    "reverse_kl": [-3.0, -1.0, -0.5],
    "pearson": [-1.5, 0.0, 1.0, 3.0],  # t >= -2: f is defined on u >= 0
    "hellinger": [-2.0, 0.0, 0.5, 0.8],
    "js": [-2.0, 0.0, 0.4, 0.6],
}


@pytest.mark.parametrize("name", F_GANS)
def test_conjugates_are_the_supremum_over_u(name):
    _, conjugate = losses.F_GAN[name]
    f = GENERATORS[name]
    for t in CONJUGATE_POINTS[name]:
        result = optimize.minimize_scalar(lambda u: f(u) - t * u, bounds=(1e-12, 100.0), method="bounded",
                                          options={"xatol": 1e-10})
        assert conjugate(torch.tensor(t, dtype=torch.float64)).item() == pytest.approx(-result.fun, abs=1e-8)


def _true_divergence(name: str) -> float:
    # D_f(P || Q) = ∫ q f(p / q) dx by quadrature; beyond [-12, 13] both densities are below 1e-30.
    p, q = stats.norm(0, 1), stats.norm(1, 1)
    value, _ = integrate.quad(lambda x: q.pdf(x) * GENERATORS[name](p.pdf(x) / q.pdf(x)), -12, 13)
    return value


def test_the_true_divergences_have_their_closed_forms():
    # P = N(0, 1), Q = N(1, 1): both KLs are 1/2; chi² = exp(1) - 1; squared Hellinger 2 (1 - exp(-1/8)).
    assert _true_divergence("kl") == pytest.approx(0.5)
    assert _true_divergence("reverse_kl") == pytest.approx(0.5)
    assert _true_divergence("pearson") == pytest.approx(math.e - 1)
    assert _true_divergence("hellinger") == pytest.approx(2 * (1 - math.exp(-1 / 8)))


@pytest.mark.parametrize("name", F_GANS)
def test_a_trained_critic_estimates_the_divergence_between_two_gaussians(name):
    # P = N(0, 1) real, Q = N(1, 1) fake. The bound is tight at g_f(v) = f'(p / q), where log(p / q) = 1/2 - x. For
    # kl, reverse_kl, hellinger and js that v is affine in log(p / q), so a quadratic critic holds it; pearson's
    # g_f is the identity and v = 2 (p / q - 1), so its critic is exp(a x + b) + c.
    torch.manual_seed(0)
    params = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    if name == "pearson":
        def critic(x: torch.Tensor) -> torch.Tensor:
            return torch.exp(params[0] * x + params[1]) + params[2]
    else:
        def critic(x: torch.Tensor) -> torch.Tensor:
            return params[0] * x.square() + params[1] * x + params[2]
    loss = losses.get(name).fn
    steps = 800
    opt = torch.optim.Adam([params], lr=0.02)
    # Annealed: pearson's gradients carry heavy tails (powers of p / q), and a constant step keeps the critic jittering.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        d_loss, _ = loss(critic(torch.randn(2048, dtype=torch.float64)),
                         critic(torch.randn(2048, dtype=torch.float64) + 1))
        opt.zero_grad()
        d_loss.backward()
        opt.step()
        schedule.step()
    with torch.no_grad():  # F on fresh samples: 10⁶ keep pearson's Monte Carlo error near 1%
        d_loss, _ = loss(critic(torch.randn(10**6, dtype=torch.float64)),
                         critic(torch.randn(10**6, dtype=torch.float64) + 1))
    # Within 1% for seeds 0-3; 5% leaves pearson's Monte Carlo error four standard deviations.
    assert -d_loss.item() == pytest.approx(_true_divergence(name), rel=0.05)


def test_only_the_relativistic_g_losses_read_real_scores():
    assert [name for name in losses.LOSSES.names() if losses.get(name).g_reads_real] == RELATIVISTIC
    fake = torch.tensor(FAKE)
    for name in F_GANS + RELATIVISTIC:
        _, g_a = losses.get(name).fn(torch.tensor(REAL), fake)
        _, g_b = losses.get(name).fn(torch.tensor(REAL) + 0.3, fake)
        assert (g_a.item() != g_b.item()) == (name in RELATIVISTIC)


def test_rsgan_pairs_samples_and_the_averaged_losses_use_batch_means():
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    shuffled = fake[[2, 0, 3, 1]]
    assert losses.rsgan(real, fake)[0].item() != pytest.approx(losses.rsgan(real, shuffled)[0].item())
    for name in ["rasgan", "ralsgan", "rahinge"]:
        fn = losses.get(name).fn
        for a, b in zip(fn(real, fake), fn(real, shuffled)):
            assert a.item() == pytest.approx(b.item())


def test_new_losses_have_the_adam_defaults():
    for name in F_GANS + RELATIVISTIC:
        assert dict(losses.get(name).defaults) == {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1}


def test_listing_shows_each_new_loss_with_its_description(capsys):
    assert main(["losses"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in F_GANS + RELATIVISTIC:
        line = next(line for line in lines if line.split()[0] == name)
        assert losses.get(name).description in line
