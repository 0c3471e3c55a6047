from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from bench import BenchError, losses
from bench.losses import UnknownLossError

WITH_FN = [name for name in losses.names() if losses.get(name).fn is not None]


def _softplus(t: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(t))


# Independent numpy formulas on the raw scores r, f.
REFERENCE = {
    "mm_gan": lambda r, f: (_softplus(-r).mean() + _softplus(f).mean(), -_softplus(f).mean()),
    "ns_gan": lambda r, f: (_softplus(-r).mean() + _softplus(f).mean(), _softplus(-f).mean()),
    "lsgan": lambda r, f: (0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(), 0.5 * ((f - 1) ** 2).mean()),
    "wgan": lambda r, f: (f.mean() - r.mean(), -f.mean()),
    "wgan_gp": lambda r, f: (f.mean() - r.mean(), -f.mean()),
    "dragan": lambda r, f: (_softplus(-r).mean() + _softplus(f).mean(), _softplus(-f).mean()),
    "hinge": lambda r, f: (np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean(), -f.mean()),
}


def test_every_loss_with_fn_has_a_reference():
    assert sorted(WITH_FN) == sorted(REFERENCE)


@pytest.mark.parametrize("shape", [(64,), (64, 1)])
@pytest.mark.parametrize("name", WITH_FN)
def test_values_match_numpy_formula(name, shape):
    torch.manual_seed(0)
    # Scale 3 reaches both hinge margins and the non-linear parts of softplus.
    real = 3 * torch.randn(shape, dtype=torch.float64)
    fake = 3 * torch.randn(shape, dtype=torch.float64)
    d_loss, g_loss = losses.get(name).fn(real, fake)
    assert d_loss.shape == g_loss.shape == ()
    d_ref, g_ref = REFERENCE[name](real.numpy(), fake.numpy())
    assert d_loss.item() == pytest.approx(d_ref, abs=1e-6)
    assert g_loss.item() == pytest.approx(g_ref, abs=1e-6)


@pytest.mark.parametrize("name", WITH_FN)
def test_gradient_signs(name):
    # Inside the region where every loss is strictly monotone: hinge is flat outside its margin
    # (r > 1 or f < -1), and LSGAN pulls fake scores toward 0, so its D loss rises with f only for f > 0.
    gen = torch.Generator().manual_seed(1)
    real = (torch.rand(32, generator=gen, dtype=torch.float64) * 1.8 - 0.9).requires_grad_(True)
    fake = (torch.rand(32, generator=gen, dtype=torch.float64) * 0.9 + 0.05).requires_grad_(True)
    d_loss, g_loss = losses.get(name).fn(real, fake)

    d_real, d_fake = torch.autograd.grad(d_loss, (real, fake), retain_graph=True)
    assert (d_real <= 0).all() and (d_real < 0).any()
    assert (d_fake >= 0).all() and (d_fake > 0).any()

    (g_fake,) = torch.autograd.grad(g_loss, fake)
    assert (g_fake <= 0).all() and (g_fake < 0).any()


def test_hinge_is_flat_beyond_the_margin():
    real = torch.tensor([1.5, 3.0], requires_grad=True)
    fake = torch.tensor([-1.5, -3.0], requires_grad=True)
    d_loss, _ = losses.hinge(real, fake)
    assert d_loss.item() == 0
    d_real, d_fake = torch.autograd.grad(d_loss, (real, fake))
    assert (d_real == 0).all() and (d_fake == 0).all()


def test_mm_gan_generator_loss_is_log_one_minus_sigmoid():
    torch.manual_seed(2)
    fake = torch.randn(100, dtype=torch.float64)
    _, g_loss = losses.mm_gan(torch.zeros(100, dtype=torch.float64), fake)
    assert g_loss.item() == pytest.approx(torch.log(1 - torch.sigmoid(fake)).mean().item(), abs=1e-12)


@pytest.mark.parametrize("name", ["mm_gan", "ns_gan"])
def test_cross_entropy_losses_stay_finite_for_extreme_scores(name):
    # log(sigmoid(t)) underflows to -inf in float32 long before |t| = 200; softplus does not.
    real = torch.tensor([-200.0, 200.0], requires_grad=True)
    fake = torch.tensor([200.0, -200.0], requires_grad=True)
    d_loss, g_loss = losses.get(name).fn(real, fake)
    assert torch.isfinite(d_loss) and torch.isfinite(g_loss)
    assert d_loss.item() == pytest.approx(200.0)
    grads = torch.autograd.grad(d_loss + g_loss, (real, fake))
    assert all(torch.isfinite(g).all() for g in grads)


def test_names_in_listing_order():
    assert losses.names() == ["mm_gan", "ns_gan", "lsgan", "wgan", "wgan_gp", "dragan", "hinge", "began", "vae"]


@pytest.mark.parametrize("name", losses.names())
def test_every_name_resolves(name):
    spec = losses.get(name)
    assert spec.name == name
    assert spec.description and "\n" not in spec.description
    assert (spec.fn is None) == (spec.discriminator != "critic")


def test_special_entries():
    assert losses.get("wgan_gp").penalty == "wgan_gp"
    assert losses.get("wgan_gp").fn is losses.wgan
    assert losses.get("dragan").penalty == "dragan"
    assert losses.get("dragan").fn is losses.ns_gan
    assert losses.get("wgan").weight_clip
    assert losses.get("began").discriminator == "autoencoder" and losses.get("began").fn is None
    assert losses.get("vae").discriminator == "encoder" and losses.get("vae").latent == "normal"
    assert all(losses.get(n).latent is None for n in losses.names() if n != "vae")
    plain = ["mm_gan", "ns_gan", "lsgan", "hinge"]
    assert all(losses.get(n).penalty is None and not losses.get(n).weight_clip for n in plain)
    assert not losses.get("wgan_gp").weight_clip


ADAM = {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1}
EXPECTED_DEFAULTS = {
    "mm_gan": ADAM,
    "ns_gan": ADAM,
    "lsgan": ADAM,
    "hinge": ADAM,
    "wgan": {"lr": 5e-5, "beta1": 0.5, "beta2": 0.999, "n_disc": 5, "clip": 0.01},
    "wgan_gp": {"lr": 1e-4, "beta1": 0.5, "beta2": 0.9, "n_disc": 5, "gp_lambda": 10},
    "dragan": {"lr": 1e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1, "gp_lambda": 10},
    "began": {"lr": 1e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1, "began_gamma": 0.5, "began_lambda_k": 1e-3},
    "vae": {"lr": 1e-4, "beta1": 0.5, "beta2": 0.999},  # no n_disc: one step updates encoder and decoder
}


@pytest.mark.parametrize("name", losses.names())
def test_defaults(name):
    defaults = losses.get(name).defaults
    assert {"lr", "beta1", "beta2"} <= set(defaults)
    assert dict(defaults) == EXPECTED_DEFAULTS[name]


def test_defaults_are_read_only():
    with pytest.raises(TypeError):
        losses.get("mm_gan").defaults["lr"] = 1.0
    assert losses.get("ns_gan").defaults["lr"] == 2e-4


def test_unknown_name_lists_every_valid_name_on_one_line():
    with pytest.raises(UnknownLossError) as info:
        losses.get("foo")
    message = str(info.value)
    assert isinstance(info.value, BenchError)
    assert "\n" not in message and "'foo'" in message
    for name in losses.names():
        assert name in message
    assert "package.module:function" in message


@pytest.fixture
def custom_package(tmp_path, monkeypatch):
    package = tmp_path / "gb_custom_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mylosses.py").write_text(
        textwrap.dedent(
            """
            def squared(real, fake):
                return (real - fake).square().mean(), -fake.mean()

            NOT_CALLABLE = 3
            """
        )
    )
    (package / "broken.py").write_text("import gb_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "gb_custom_pkg"
    for module in [m for m in sys.modules if m.startswith("gb_custom_pkg")]:
        del sys.modules[module]


def test_custom_loss_is_imported_and_runs(custom_package):
    name = f"{custom_package}.mylosses:squared"
    spec = losses.get(name)
    assert spec.name == name
    assert spec.description == f"custom loss {name}"
    assert spec.penalty is None and not spec.weight_clip and spec.discriminator == "critic" and spec.latent is None
    d_loss, g_loss = spec.fn(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0]))
    assert d_loss.item() == pytest.approx(2.5)
    assert g_loss.item() == pytest.approx(-2.0)


@pytest.mark.parametrize(
    "suffix, expected",
    [
        ("gb_missing_module:f", "gb_missing_module"),
        ("{pkg}.broken:f", "gb_no_such_dependency"),
        ("{pkg}.mylosses:missing", "missing"),
        ("{pkg}.mylosses:NOT_CALLABLE", "not callable"),
        ("{pkg}.mylosses:", "package.module:function"),
        (":squared", "package.module:function"),
    ],
)
def test_bad_custom_names_give_one_line_errors(custom_package, suffix, expected):
    name = suffix.format(pkg=custom_package)
    with pytest.raises(UnknownLossError) as info:
        losses.get(name)
    message = str(info.value)
    assert "\n" not in message
    assert repr(name) in message and expected in message


def test_began_losses():
    real_error = torch.tensor(0.3, dtype=torch.float64)
    fake_error = torch.tensor(0.5, dtype=torch.float64)
    d_loss, g_loss = losses.began_losses(real_error, fake_error, k=0.2)
    assert d_loss.item() == pytest.approx(0.3 - 0.2 * 0.5)
    assert g_loss.item() == pytest.approx(0.5)


def test_began_update_k():
    # gamma * L(x) = 0.25 > L(G(z)) = 0.1: fakes are reconstructed too well, so k grows to push D on them.
    assert losses.began_update_k(0.5, 0.5, 0.1, gamma=0.5, lambda_k=0.1) == pytest.approx(0.5 + 0.1 * 0.15)
    assert losses.began_update_k(0.5, 0.5, 0.4, gamma=0.5, lambda_k=0.1) == pytest.approx(0.5 - 0.1 * 0.15)
    assert losses.began_update_k(0.5, 0.5, 0.25, gamma=0.5, lambda_k=0.1) == pytest.approx(0.5)
    assert losses.began_update_k(0.99, 10.0, 0.0, gamma=1.0, lambda_k=1.0) == 1.0
    assert losses.began_update_k(0.01, 0.0, 10.0, gamma=1.0, lambda_k=1.0) == 0.0


def test_began_convergence():
    assert losses.began_convergence(0.4, 0.1, gamma=0.5) == pytest.approx(0.4 + 0.1)
    assert losses.began_convergence(0.4, 0.3, gamma=0.5) == pytest.approx(0.4 + 0.1)
    assert losses.began_convergence(0.4, 0.2, gamma=0.5) == pytest.approx(0.4)


def test_reconstruction_error():
    torch.manual_seed(3)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    reconstruction = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    error = losses.reconstruction_error(x, reconstruction)
    assert error.shape == ()
    assert error.item() == pytest.approx(np.abs(x.numpy() - reconstruction.numpy()).mean(), abs=1e-12)


def _vae_reference(x: np.ndarray, p: np.ndarray, mu: np.ndarray, logvar: np.ndarray) -> tuple[float, float]:
    bce = -(x * np.log(p) + (1 - x) * np.log(1 - p)).reshape(len(x), -1).sum(1).mean()
    kl = (0.5 * (mu**2 + np.exp(logvar) - 1 - logvar)).sum(1).mean()
    return bce, kl


def _vae_inputs(seed: int = 4) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(5, 1, 6, 6, generator=gen, dtype=torch.float64)  # grey levels, not only 0 and 1
    reconstruction = torch.rand(5, 1, 6, 6, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    mu = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    logvar = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    return x, reconstruction, mu, logvar


def test_vae_loss_matches_numpy_formula():
    x, reconstruction, mu, logvar = _vae_inputs()
    reconstruction_term, kl_term = losses.vae_loss(x, reconstruction, mu, logvar)
    assert reconstruction_term.shape == kl_term.shape == ()
    bce_ref, kl_ref = _vae_reference(x.numpy(), reconstruction.numpy(), mu.numpy(), logvar.numpy())
    assert reconstruction_term.item() == pytest.approx(bce_ref, abs=1e-6)
    assert kl_term.item() == pytest.approx(kl_ref, abs=1e-6)


def test_vae_kl_is_zero_at_the_prior():
    x, reconstruction, _, _ = _vae_inputs()
    _, kl_term = losses.vae_loss(x, reconstruction, torch.zeros(5, 3), torch.zeros(5, 3))
    assert kl_term.item() == 0


def test_vae_gradient_directions():
    x, reconstruction, mu, logvar = _vae_inputs()
    reconstruction.requires_grad_(True)
    mu.requires_grad_(True)
    reconstruction_term, kl_term = losses.vae_loss(x, reconstruction, mu, logvar)
    (d_reconstruction,) = torch.autograd.grad(reconstruction_term, reconstruction)
    # Descending the BCE moves every pixel toward its target.
    assert ((d_reconstruction * (reconstruction - x)) > 0).all()
    (d_mu,) = torch.autograd.grad(kl_term, mu)
    # A larger |mu| costs more KL.
    assert ((d_mu * mu) > 0).all()


def test_vae_loss_stays_finite_for_saturated_pixels():
    # A sigmoid saturates to exactly 0 or 1 in float32; a wrong pixel then costs a bounded amount, not inf.
    x = torch.tensor([[0.0, 1.0, 0.5]])
    reconstruction = torch.tensor([[1.0, 0.0, 1.0]], requires_grad=True)
    reconstruction_term, _ = losses.vae_loss(x, reconstruction, torch.zeros(1, 2), torch.zeros(1, 2))
    assert torch.isfinite(reconstruction_term)
    assert torch.isfinite(torch.autograd.grad(reconstruction_term, reconstruction)[0]).all()


def test_vae_loss_of_a_blown_up_decoder_is_nan_not_an_error():
    # F.binary_cross_entropy raises on NaN; the trial must see a NaN loss and record the run as diverged.
    reconstruction = torch.tensor([[0.5, float("nan")]], requires_grad=True)
    reconstruction_term, kl_term = losses.vae_loss(torch.zeros(1, 2), reconstruction, torch.ones(1, 2),
                                                   torch.zeros(1, 2))
    assert torch.isnan(reconstruction_term) and kl_term.item() == pytest.approx(1.0)
    (reconstruction_term + kl_term).backward()  # still differentiable, as the training step needs
