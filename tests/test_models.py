"""Every model at every shape it supports: output shapes and ranges, batch norm switch, determinism; the InfoGAN
pair, BEGAN's autoencoder and the VAE against compare_gan v1's layer lists (gans/abstract_gan.py, BEGAN.py, VAE.py);
the initialisations."""

import math

import pytest
import torch
from torch import nn

from bench import BenchError, models
from bench.config import TrialConfig

# The shapes each model must take; every registered model is listed.
VALID = {
    "mlp": [(1, 16, 16), (1, 28, 28), (3, 32, 32)],
    "infogan": [(1, 16, 16), (1, 28, 28), (3, 32, 32), (3, 64, 64)],
    "dcgan": [(1, 16, 16), (3, 32, 32), (3, 64, 64)],
}
CASES = [pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}")
         for name, shapes in VALID.items() for shape in shapes]
KINDS = ["critic", "autoencoder", "encoder"]
Z_DIM, BATCH = 8, 4
MNIST, PAPER_Z_DIM = (1, 28, 28), 64


def _images(shape):
    return torch.rand(BATCH, *shape, generator=torch.Generator().manual_seed(0))


def _batchnorms(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _parameters(module):
    return sum(p.numel() for p in module.parameters())


def _layers(module):
    """The leaf modules in order, without the Identity placeholders some models use for switched-off batch norm."""
    return [type(m) for m in module.modules() if not list(m.children()) and not isinstance(m, nn.Identity)]


def _state(G, D):
    return {**{f"G.{k}": v for k, v in G.state_dict().items()}, **{f"D.{k}": v for k, v in D.state_dict().items()}}


def test_every_model_is_covered():
    assert list(VALID) == models.MODELS.names()


@pytest.mark.parametrize("name, shape", CASES)
def test_generator_and_critic(name, shape):
    torch.manual_seed(0)
    G, D = models.build(name, shape, Z_DIM)
    images = G(torch.randn(BATCH, Z_DIM))
    assert images.shape == (BATCH, *shape)
    assert images.min() >= 0 and images.max() <= 1
    assert D(images).shape == D(_images(shape)).shape == (BATCH,)
    assert _batchnorms(D)

    _, plain = models.build(name, shape, Z_DIM, d_batchnorm=False)
    assert plain(_images(shape)).shape == (BATCH,)
    assert not _batchnorms(plain)


@pytest.mark.parametrize("batchnorm", [True, False], ids=["bn", "no-bn"])
@pytest.mark.parametrize("name, shape", CASES)
def test_autoencoder_and_encoder(name, shape, batchnorm):
    torch.manual_seed(0)
    _, autoencoder = models.build(name, shape, Z_DIM, "autoencoder", batchnorm)
    reconstruction = autoencoder(_images(shape))
    assert reconstruction.shape == (BATCH, *shape)
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1
    assert bool(_batchnorms(autoencoder)) == batchnorm

    decoder, encoder = models.build(name, shape, Z_DIM, "encoder", batchnorm)
    mu, sigma = encoder(_images(shape))
    assert mu.shape == sigma.shape == (BATCH, Z_DIM)
    assert (sigma > 0).all()
    assert bool(_batchnorms(encoder)) == batchnorm
    assert decoder(mu).shape == (BATCH, *shape)


@pytest.mark.parametrize("name", models.MODELS.names())
@pytest.mark.parametrize("discriminator", KINDS)
@pytest.mark.parametrize("init", models.INITS)
def test_same_seed_same_parameters(name, discriminator, init):
    def parameters(seed):
        torch.manual_seed(seed)
        return _state(*models.build(name, VALID[name][0], Z_DIM, discriminator, init=init))

    first, second, other = parameters(0), parameters(0), parameters(1)
    assert first.keys() == second.keys() == other.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


# ---- compare_gan v1's architectures, on MNIST with the paper's z_dim 64 (h/4 · w/4 · 128 = 7 · 7 · 128 = 6272).

def _conv(c_in, c_out):  # a 4×4 (transposed) convolution: weights and biases
    return 4 * 4 * c_in * c_out + c_out


def _fc(n_in, n_out):
    return n_in * n_out + n_out


def _bn(n):  # scale and offset; the moving averages are buffers, not parameters, in TF and PyTorch alike
    return 2 * n


def test_infogan_parameter_counts_match_v1():
    G, D = models.build("infogan", MNIST, PAPER_Z_DIM)
    # abstract_gan.py 102-114: g_fc1, g_bn1, g_fc2, g_bn2, g_dc3, g_bn3, g_dc4.
    g = _fc(64, 1024) + _bn(1024) + _fc(1024, 6272) + _bn(6272) + _conv(128, 64) + _bn(64) + _conv(64, 1)
    assert _parameters(G) == g == 6_642_241

    # abstract_gan.py 82-93: d_conv1, d_conv2, [d_bn2], d_fc3, [d_bn3], d_fc4.
    d_plain = _conv(1, 64) + _conv(64, 128) + _fc(6272, 1024) + _fc(1024, 1)
    assert _parameters(D) == d_plain + _bn(128) + _bn(1024) == 6_559_169
    _, D_plain = models.build("infogan", MNIST, PAPER_Z_DIM, d_batchnorm=False)
    assert _parameters(D_plain) == d_plain == 6_556_865

    # BEGAN.py 68-91: d_conv1, d_conv2, d_fc6 (the code), [d_bn1], d_fc1, [d_bn2], d_deconv1, [d_bn3], d_deconv2.
    _, autoencoder = models.build("infogan", MNIST, PAPER_Z_DIM, "autoencoder", d_batchnorm=False)
    ae_plain = _conv(1, 64) + _conv(64, 128) + _fc(6272, 64) + _fc(64, 6272) + _conv(128, 64) + _conv(64, 1)
    assert _parameters(autoencoder) == ae_plain == 1_073_601
    _, autoencoder = models.build("infogan", MNIST, PAPER_Z_DIM, "autoencoder", d_batchnorm=True)
    assert _parameters(autoencoder) == ae_plain + _bn(64) + _bn(6272) + _bn(64) == 1_073_601 + 12_800

    # VAE.py 42-54: en_conv1, en_conv2, [en_bn2], en_fc3, [en_bn3], en_fc4 (to 2·z_dim); de_* as G's layers.
    decoder, encoder = models.build("infogan", MNIST, PAPER_Z_DIM, "encoder", d_batchnorm=False)
    enc_plain = _conv(1, 64) + _conv(64, 128) + _fc(6272, 1024) + _fc(1024, 2 * 64)
    assert _parameters(encoder) == enc_plain == 6_687_040
    assert _parameters(decoder) == g
    _, encoder = models.build("infogan", MNIST, PAPER_Z_DIM, "encoder", d_batchnorm=True)
    assert _parameters(encoder) == enc_plain + _bn(128) + _bn(1024) == 6_689_344


def test_infogan_sizes_match_v1s_own_comparison():
    # BEGAN.py line 51: the autoencoder "has less parameters (1.3M vs 8.5M)" than the standard D (CIFAR-10's shape).
    _, D = models.build("infogan", (3, 32, 32), PAPER_Z_DIM, d_batchnorm=False)
    _, autoencoder = models.build("infogan", (3, 32, 32), PAPER_Z_DIM, "autoencoder", d_batchnorm=False)
    assert round(_parameters(autoencoder) / 1e6, 1) == 1.3 and round(_parameters(D) / 1e6, 1) == 8.5


LRELU, RELU = nn.LeakyReLU, nn.ReLU
BN1, BN2 = nn.BatchNorm1d, nn.BatchNorm2d
CONV, DECONV, FC = nn.Conv2d, nn.ConvTranspose2d, nn.Linear
FLAT, UNFLAT = nn.Flatten, nn.Unflatten


def _g_layers(act):  # abstract_gan.py 102-115 with act = lrelu; VAE.py 65-75 with act = relu
    return [FC, BN1, act, FC, BN1, act, UNFLAT, DECONV, BN2, act, DECONV, nn.Sigmoid]


@pytest.mark.parametrize("discriminator, batchnorm, g_layers, d_layers", [
    # abstract_gan.py 82-93 (the last Flatten turns (B, 1) into (B,) scores).
    ("critic", True, _g_layers(LRELU), [CONV, LRELU, CONV, BN2, LRELU, FLAT, FC, BN1, LRELU, FC, FLAT]),
    ("critic", False, _g_layers(LRELU), [CONV, LRELU, CONV, LRELU, FLAT, FC, LRELU, FC, FLAT]),
    # BEGAN.py 68-92: no activation after d_conv2; lrelu after the code.
    ("autoencoder", True, _g_layers(LRELU), [CONV, LRELU, CONV, FLAT, FC, BN1, LRELU,
                                             FC, BN1, LRELU, UNFLAT, DECONV, BN2, LRELU, DECONV, nn.Sigmoid]),
    ("autoencoder", False, _g_layers(LRELU), [CONV, LRELU, CONV, FLAT, FC, LRELU,
                                              FC, LRELU, UNFLAT, DECONV, LRELU, DECONV, nn.Sigmoid]),
    # VAE.py 42-54 and 65-75: the decoder uses ReLU.
    ("encoder", True, _g_layers(RELU), [CONV, LRELU, CONV, BN2, LRELU, FLAT, FC, BN1, LRELU, FC]),
    ("encoder", False, _g_layers(RELU), [CONV, LRELU, CONV, LRELU, FLAT, FC, LRELU, FC]),
])
def test_infogan_layers_match_v1(discriminator, batchnorm, g_layers, d_layers):
    G, D = models.build("infogan", MNIST, PAPER_Z_DIM, discriminator, batchnorm)
    assert _layers(G) == g_layers
    assert _layers(D) == d_layers
    assert all(m.negative_slope == 0.2 for m in [*G.modules(), *D.modules()] if isinstance(m, LRELU))


def test_infogan_autoencoder_reconstructs_images_in_the_unit_range():
    torch.manual_seed(0)
    _, autoencoder = models.build("infogan", MNIST, PAPER_Z_DIM, "autoencoder")
    reconstruction = autoencoder(_images(MNIST))
    assert reconstruction.shape == (BATCH, *MNIST)
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1


@pytest.mark.parametrize("name", models.MODELS.names())
@pytest.mark.parametrize("batchnorm", [True, False], ids=["bn", "no-bn"])
def test_encoder_sigma_is_v1s_softplus(name, batchnorm):
    torch.manual_seed(0)
    _, encoder = models.build(name, VALID[name][0], Z_DIM, "encoder", batchnorm)
    x = _images(VALID[name][0])
    mu, sigma = encoder(x)
    raw = encoder.head(encoder.body(x))
    assert torch.equal(mu, raw[:, :Z_DIM])
    assert torch.allclose(sigma, 1e-6 + nn.functional.softplus(raw[:, Z_DIM:]), rtol=0, atol=1e-7)
    assert (sigma > 0).all()

    with torch.no_grad():  # where softplus underflows to 0, sigma is still 1e-6
        encoder.head.bias[Z_DIM:] = -1e4
    _, sigma = encoder(x)
    assert (sigma == torch.tensor(1e-6)).all()


# ---- Initialisations.

def _truncated_std(sigma, cut):
    """The standard deviation of N(0, sigma²) re-drawn beyond ±cut·sigma."""
    pdf = math.exp(-cut**2 / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(cut / math.sqrt(2))
    return sigma * math.sqrt(1 - 2 * cut * pdf / mass)


def _weights(nets, kinds):
    return torch.cat([m.weight.detach().flatten() for net in nets for m in net.modules() if type(m) in kinds])


def _assert_distribution(weights, std):
    """Mean 0 and the given std, each within 5 standard errors for this many draws."""
    n = weights.numel()
    assert weights.mean().abs().item() < 5 * std / math.sqrt(n)
    assert weights.std().item() == pytest.approx(std, abs=5 * std / math.sqrt(2 * n))


COMPARE_GAN_CASES = [("infogan", MNIST, "model"), *[(name, VALID[name][0], "compare_gan") for name in VALID]]


@pytest.mark.parametrize("name, shape, init", COMPARE_GAN_CASES)
@pytest.mark.parametrize("discriminator", KINDS)
def test_compare_gan_initialisation(name, shape, init, discriminator):
    torch.manual_seed(0)
    nets = models.build(name, shape, PAPER_Z_DIM, discriminator, d_batchnorm=True, init=init)
    # ops.py 50-53 and 85-87: Linear and transposed convolutions N(0, 0.02).
    _assert_distribution(_weights(nets, {nn.Linear, nn.ConvTranspose2d}), 0.02)
    if name != "mlp":  # ops.py 73-75: convolutions from a normal truncated at 2 standard deviations
        conv = _weights(nets, {nn.Conv2d})
        assert conv.abs().max() <= 0.04
        _assert_distribution(conv, _truncated_std(0.02, 2))

    layers = [m for net in nets for m in net.modules() if hasattr(m, "bias") and m.bias is not None]
    assert all(torch.count_nonzero(m.bias) == 0 for m in layers)
    batchnorms = [bn for net in nets for bn in _batchnorms(net)]
    assert batchnorms
    # ops.py 59-68: scale 1, offset 0 (checked with the biases above), decay 0.999, epsilon 0.001.
    assert all(torch.all(bn.weight == 1) for bn in batchnorms)
    assert all(bn.momentum == 0.001 and bn.eps == 1e-3 for bn in batchnorms)


@pytest.mark.parametrize("name", models.MODELS.names())
@pytest.mark.parametrize("discriminator", KINDS)
def test_pytorch_initialisation_redraws_nothing(name, discriminator):
    shape = VALID[name][0]
    torch.manual_seed(0)
    G, D = models.build(name, shape, Z_DIM, discriminator, init="pytorch")
    # What the module's own functions construct, under the same seed and in the same order.
    module = models.MODELS.get(name)
    torch.manual_seed(0)
    constructed_g = module.decoder(shape, Z_DIM) if discriminator == "encoder" else module.generator(shape, Z_DIM)
    constructed_d = {"critic": lambda: module.discriminator(shape, True),
                     "autoencoder": lambda: module.autoencoder(shape, True),
                     "encoder": lambda: module.encoder(shape, Z_DIM, True)}[discriminator]()
    built, constructed = _state(G, D), _state(constructed_g, constructed_d)
    assert built.keys() == constructed.keys()
    assert all(torch.equal(built[k], constructed[k]) for k in built)
    assert all(bn.momentum == 0.1 and bn.eps == 1e-5 for bn in _batchnorms(G) + _batchnorms(D))
    assert any(torch.count_nonzero(m.bias) for m in G.modules() if isinstance(m, nn.Linear))


@pytest.mark.parametrize("name, own", [("infogan", "compare_gan"), ("mlp", "pytorch")])
@pytest.mark.parametrize("discriminator", KINDS)
def test_model_initialisation_is_the_models_own(name, own, discriminator):
    def parameters(init):
        torch.manual_seed(0)
        return _state(*models.build(name, VALID[name][0], Z_DIM, discriminator, init=init))

    model, expected = parameters("model"), parameters(own)
    assert all(torch.equal(model[k], expected[k]) for k in model)


def test_dcgan_initialisation():
    torch.manual_seed(0)
    G, D = models.build("dcgan", (3, 64, 64), Z_DIM)
    weights = _weights([G, D], {nn.Conv2d, nn.ConvTranspose2d, nn.Linear})
    scales = torch.cat([m.weight for m in _batchnorms(G) + _batchnorms(D)])
    assert weights.mean().abs() < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.01)
    assert scales.mean().item() == pytest.approx(1.0, abs=0.01) and scales.std().item() == pytest.approx(0.02, rel=0.2)
    assert all(bn.momentum == 0.1 for bn in _batchnorms(G) + _batchnorms(D))  # Radford's, not compare_gan's


def test_dcgan_has_no_batchnorm_on_its_first_layer():
    _, D = models.build("dcgan", (3, 32, 32), Z_DIM)
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert [type(m) for m in layers] == [nn.Conv2d, nn.Conv2d, nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 48, 48), (3, 32, 64), (1, 4, 4)])
def test_dcgan_rejects_other_shapes_in_one_line(shape):
    with pytest.raises(BenchError, match="model dcgan") as info:
        models.build("dcgan", shape, Z_DIM)
    assert "\n" not in str(info.value) and f"{shape[1]}×{shape[2]}" in str(info.value)


def test_trial_config_rejects_a_shape_the_model_cannot_take():
    with pytest.raises(BenchError, match="4·2\\^k"):
        TrialConfig(dataset="digits", model="dcgan", image_size=28)


def test_unknown_model():
    with pytest.raises(BenchError, match="unknown model 'nope'"):
        models.build("nope", (1, 16, 16), Z_DIM)


def test_unknown_init():
    assert models.INITS == ("model", "compare_gan", "pytorch")
    with pytest.raises(BenchError, match="unknown init 'xavier'; valid: model, compare_gan, pytorch"):
        models.build("infogan", (1, 16, 16), Z_DIM, init="xavier")
