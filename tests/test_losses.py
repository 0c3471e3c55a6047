from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from bench import BenchError, losses
from bench.registry import UnknownName

WITH_FN = [name for name in losses.LOSSES.names() if losses.get(name).fn is not None]


def _softplus(t: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(t))


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-t))


# Independent numpy formulas on the raw scores r, f.
REFERENCE = {
    "mm_gan": lambda r, f: (_softplus(-r).mean() + _softplus(f).mean(), -_softplus(f).mean()),
    "ns_gan": lambda r, f: (_softplus(-r).mean() + _softplus(f).mean(), _softplus(-f).mean()),
    # v1 (gans/LSGAN.py 62-71): on sigmoid(score).
    "lsgan": lambda r, f: (0.5 * (((_sigmoid(r) - 1) ** 2).mean() + (_sigmoid(f) ** 2).mean()),
                           0.5 * ((_sigmoid(f) - 1) ** 2).mean()),
    "lsgan_raw": lambda r, f: (0.5 * ((r - 1) ** 2).mean() + 0.5 * (f**2).mean(), 0.5 * ((f - 1) ** 2).mean()),
    "wgan": lambda r, f: (f.mean() - r.mean(), -f.mean()),
    "wgan_gp": lambda r, f: (f.mean() - r.mean(), -f.mean()),
    "dragan": lambda r, f: (_softplus(-r).mean() + _softplus(f).mean(), _softplus(-f).mean()),
    "hinge": lambda r, f: (np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean(), -f.mean()),
    # f-GAN: -(E_r g_f(r) - E_f f*(g_f(f))) and -E_f g_f(f), with f*(g_f(v)) worked out by hand.
    "kl": lambda r, f: (np.exp(f - 1).mean() - r.mean(), -f.mean()),
    "reverse_kl": lambda r, f: (np.exp(-r).mean() + f.mean() - 1, np.exp(-f).mean()),
    "pearson": lambda r, f: ((f**2 / 4 + f).mean() - r.mean(), -f.mean()),
    "hellinger": lambda r, f: ((np.exp(-r) - 1).mean() + (np.exp(f) - 1).mean(), (np.exp(-f) - 1).mean()),
    "js": lambda r, f: (_softplus(-r).mean() + _softplus(f).mean() - 2 * np.log(2), _softplus(-f).mean() - np.log(2)),
    # Relativistic, halved as in the official code (AlexiaJM/RelativisticGAN, code/GAN_losses_iter.py 635-709).
    "rsgan": lambda r, f: (_softplus(f - r).mean(), _softplus(r - f).mean()),
    "rasgan": lambda r, f: ((_softplus(f.mean() - r).mean() + _softplus(f - r.mean()).mean()) / 2,
                            (_softplus(r.mean() - f).mean() + _softplus(r - f.mean()).mean()) / 2),
    "ralsgan": lambda r, f: ((((r - f.mean() - 1) ** 2).mean() + ((f - r.mean() + 1) ** 2).mean()) / 2,
                             (((f - r.mean() - 1) ** 2).mean() + ((r - f.mean() + 1) ** 2).mean()) / 2),
    "rahinge": lambda r, f: ((np.maximum(0, 1 - r + f.mean()).mean() + np.maximum(0, 1 + f - r.mean()).mean()) / 2,
                             (np.maximum(0, 1 - f + r.mean()).mean() + np.maximum(0, 1 + r - f.mean()).mean()) / 2),
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
    assert losses.LOSSES.names() == ["mm_gan", "ns_gan", "lsgan", "lsgan_raw", "wgan", "wgan_gp", "dragan", "hinge",
                                     "kl", "reverse_kl", "pearson", "hellinger", "js", "rsgan", "rasgan", "ralsgan",
                                     "rahinge", "began", "vae", "none"]


@pytest.mark.parametrize("name", losses.LOSSES.names())
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
    assert all(losses.get(n).latent is None for n in losses.LOSSES.names() if n != "vae")
    plain = ["mm_gan", "ns_gan", "lsgan", "lsgan_raw", "hinge"]
    assert all(losses.get(n).penalty is None and not losses.get(n).weight_clip for n in plain)
    assert not losses.get("wgan_gp").weight_clip
    # v1 draws a fresh z before WGAN-GP's generator step only (gans/WGAN_GP.py 111-112, abstract_gan.py 208-210).
    assert [n for n in losses.LOSSES.names() if losses.get(n).resample_before_g] == ["wgan_gp"]


# The default configuration of each of the paper's models, as compare_gan v1's params.py gives it (wide range;
# beta2 is never set there, so Adam's 0.999). Line numbers are params.py's.
V1_GAN = {"lr": 5e-5, "beta1": 0.0, "beta2": 0.999, "n_disc": 1, "d_batchnorm": True}  # lines 111-113
EXPECTED_DEFAULTS = {
    "mm_gan": V1_GAN,
    "ns_gan": V1_GAN,
    "lsgan": {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1, "d_batchnorm": True},  # lines 127-129
    "lsgan_raw": {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1, "d_batchnorm": True},  # as lsgan
    "wgan": {"lr": 5e-5, "beta1": 0.5, "beta2": 0.999, "n_disc": 5, "d_batchnorm": True, "clip": 0.01},  # 146-150
    "wgan_gp": {"lr": 1e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 5, "d_batchnorm": False, "gp_lambda": 10},
    "dragan": {"lr": 1e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1, "d_batchnorm": True, "gp_lambda": 10},
    "began": {"lr": 1e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 5, "d_batchnorm": False, "began_gamma": 0.75,
              "began_lambda_k": 1e-3},  # lines 231-237
    # lines 63-74 (the wide range's own defaults: beta1 0.5, batch norm on) and 209-210; no n_disc: one step
    # updates encoder and decoder
    "vae": {"lr": 5e-5, "beta1": 0.5, "beta2": 0.999, "d_batchnorm": True},
    "hinge": {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1},  # not in the paper
    # Not in the paper either: hinge's Adam settings.
    **{name: {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1}
       for name in ["kl", "reverse_kl", "pearson", "hellinger", "js", "rsgan", "rasgan", "ralsgan", "rahinge"]},
    "none": {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999},  # pix2pix's Adam (Isola et al. 2017, section 4)
}


@pytest.mark.parametrize("name", losses.LOSSES.names())
def test_defaults(name):
    defaults = losses.get(name).defaults
    assert {"lr", "beta1", "beta2"} <= set(defaults)
    assert dict(defaults) == EXPECTED_DEFAULTS[name]


def test_defaults_are_read_only():
    with pytest.raises(TypeError):
        losses.get("mm_gan").defaults["lr"] = 1.0
    assert losses.get("ns_gan").defaults["lr"] == 5e-5


def test_unknown_name_lists_every_valid_name_on_one_line():
    with pytest.raises(UnknownName) as info:
        losses.get("foo")
    message = str(info.value)
    assert isinstance(info.value, BenchError)
    assert "\n" not in message and "'foo'" in message
    for name in losses.LOSSES.names():
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
    with pytest.raises(UnknownName) as info:
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
    # Unclipped, as in compare_gan v1 (gans/BEGAN.py 130-131): k may leave [0, 1].
    assert losses.began_update_k(0.99, 10.0, 0.0, gamma=1.0, lambda_k=1.0) == pytest.approx(10.99)
    assert losses.began_update_k(0.01, 0.0, 10.0, gamma=1.0, lambda_k=1.0) == pytest.approx(-9.99)


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


def _vae_reference(x: np.ndarray, p: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> tuple[float, float]:
    """compare_gan v1 (gans/VAE.py 99-110) in numpy: clip, sum the log-likelihood over H and W, then average over
    batch and channels; KL with log(1e-8 + sigma^2)."""
    p = np.clip(p, 1e-8, 1 - 1e-8)
    log_likelihood = (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=(2, 3))
    kl = (0.5 * (mu**2 + sigma**2 - np.log(1e-8 + sigma**2) - 1)).sum(1).mean()
    return -log_likelihood.mean(), kl


def _vae_inputs(seed: int = 4, channels: int = 1) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(5, channels, 6, 6, generator=gen, dtype=torch.float64)  # grey levels, not only 0 and 1
    reconstruction = torch.rand(5, channels, 6, 6, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    mu = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    sigma = torch.rand(5, 3, generator=gen, dtype=torch.float64) * 2 + 0.05
    return x, reconstruction, mu, sigma


@pytest.mark.parametrize("channels", [1, 3])
def test_vae_loss_matches_v1_formula(channels):
    x, reconstruction, mu, sigma = _vae_inputs(channels=channels)
    reconstruction_term, kl_term = losses.vae_loss(x, reconstruction, mu, sigma)
    assert reconstruction_term.shape == kl_term.shape == ()
    nll_ref, kl_ref = _vae_reference(x.numpy(), reconstruction.numpy(), mu.numpy(), sigma.numpy())
    assert reconstruction_term.item() == pytest.approx(nll_ref, rel=1e-12)
    assert kl_term.item() == pytest.approx(kl_ref, rel=1e-12)


def test_vae_reconstruction_is_averaged_over_channels():
    # Three identical channels cost what one does (v1 sums over H, W only, then averages over batch and channels);
    # a sum over channels would triple it.
    x, reconstruction, mu, sigma = _vae_inputs(channels=1)
    grey, _ = losses.vae_loss(x, reconstruction, mu, sigma)
    colour, _ = losses.vae_loss(x.expand(-1, 3, -1, -1), reconstruction.expand(-1, 3, -1, -1), mu, sigma)
    assert colour.item() == pytest.approx(grey.item(), rel=1e-12)
    # And a 3-channel image whose channels differ is the mean of the three one-channel terms.
    x3, r3, _, _ = _vae_inputs(seed=9, channels=3)
    per_channel = [losses.vae_loss(x3[:, [c]], r3[:, [c]], mu, sigma)[0].item() for c in range(3)]
    assert losses.vae_loss(x3, r3, mu, sigma)[0].item() == pytest.approx(np.mean(per_channel), rel=1e-12)


def test_vae_kl_is_zero_at_the_prior():
    x, reconstruction, _, _ = _vae_inputs()
    _, kl_term = losses.vae_loss(x, reconstruction, torch.zeros(5, 3, dtype=torch.float64),
                                 torch.ones(5, 3, dtype=torch.float64))
    # v1's 1e-8 inside the log leaves 0.5 * 3 * -log(1 + 1e-8) per sample.
    assert kl_term.item() == pytest.approx(-1.5 * np.log1p(1e-8), abs=1e-12)


def test_vae_gradient_directions():
    x, reconstruction, mu, sigma = _vae_inputs()
    reconstruction.requires_grad_(True)
    mu.requires_grad_(True)
    sigma.requires_grad_(True)
    reconstruction_term, kl_term = losses.vae_loss(x, reconstruction, mu, sigma)
    (d_reconstruction,) = torch.autograd.grad(reconstruction_term, reconstruction)
    # Descending the negative log-likelihood moves every pixel toward its target.
    assert ((d_reconstruction * (reconstruction - x)) > 0).all()
    d_mu, d_sigma = torch.autograd.grad(kl_term, (mu, sigma))
    # A larger |mu| costs more KL; sigma is pulled toward 1 (d KL / d sigma = sigma - 1/sigma, near enough).
    assert ((d_mu * mu) > 0).all()
    assert ((d_sigma * (sigma - 1)) > 0).all()


def test_vae_loss_stays_finite_for_saturated_pixels():
    # A sigmoid saturates to exactly 0 or 1 in float32; v1 clips to [1e-8, 1 - 1e-8], so a wrong pixel costs
    # -log(1e-8) ~ 18.4, not inf (the clip is applied in float64, where 1 - 1e-8 is not 1).
    x = torch.tensor([[[[0.0, 1.0, 0.5]]]])
    reconstruction = torch.tensor([[[[1.0, 0.0, 1.0]]]], requires_grad=True)
    reconstruction_term, _ = losses.vae_loss(x, reconstruction, torch.zeros(1, 2), torch.ones(1, 2))
    assert torch.isfinite(reconstruction_term)
    assert reconstruction_term.item() == pytest.approx(-2.5 * np.log(1e-8), rel=1e-4)
    assert torch.isfinite(torch.autograd.grad(reconstruction_term, reconstruction)[0]).all()


def test_vae_loss_of_a_blown_up_decoder_is_nan_not_an_error():
    # The trial must see a NaN loss and record the run as diverged.
    reconstruction = torch.tensor([[[[0.5, float("nan")]]]], requires_grad=True)
    reconstruction_term, kl_term = losses.vae_loss(torch.zeros(1, 1, 1, 2), reconstruction, torch.ones(1, 2),
                                                   torch.ones(1, 2))
    assert torch.isnan(reconstruction_term) and torch.isfinite(kl_term)
    (reconstruction_term + kl_term).backward()  # still differentiable, as the training step needs
