"""Every model at every shape it supports: output shapes and ranges, batch norm switch, determinism."""

import pytest
import torch
from torch import nn

from bench import BenchError, models
from bench.trial import TrialConfig

# The shapes each model must take; every registered model is listed.
VALID = {
    "mlp": [(1, 16, 16), (1, 28, 28), (3, 32, 32)],
    "infogan": [(1, 16, 16), (1, 28, 28), (3, 32, 32), (3, 64, 64)],
    "dcgan": [(1, 16, 16), (3, 32, 32), (3, 64, 64)],
}
CASES = [pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}")
         for name, shapes in VALID.items() for shape in shapes]
Z_DIM, BATCH = 8, 4


def _images(shape):
    return torch.rand(BATCH, *shape, generator=torch.Generator().manual_seed(0))


def _batchnorms(module):
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_every_model_is_covered():
    assert list(VALID) == models.names()


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


@pytest.mark.parametrize("name, shape", CASES)
def test_autoencoder_and_encoder(name, shape):
    torch.manual_seed(0)
    _, autoencoder = models.build(name, shape, Z_DIM, discriminator="autoencoder")
    reconstruction = autoencoder(_images(shape))
    assert reconstruction.shape == (BATCH, *shape)
    assert reconstruction.min() >= 0 and reconstruction.max() <= 1

    _, encoder = models.build(name, shape, Z_DIM, discriminator="encoder")
    mu, logvar = encoder(_images(shape))
    assert mu.shape == logvar.shape == (BATCH, Z_DIM)
    assert not _batchnorms(encoder)


@pytest.mark.parametrize("name", models.names())
@pytest.mark.parametrize("discriminator", ["critic", "autoencoder", "encoder"])
def test_same_seed_same_parameters(name, discriminator):
    def parameters(seed):
        torch.manual_seed(seed)
        G, D = models.build(name, VALID[name][0], Z_DIM, discriminator)
        return {**{f"G.{k}": v for k, v in G.state_dict().items()}, **{f"D.{k}": v for k, v in D.state_dict().items()}}

    first, second, other = parameters(0), parameters(0), parameters(1)
    assert first.keys() == second.keys() == other.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_dcgan_initialisation():
    torch.manual_seed(0)
    G, D = models.build("dcgan", (3, 64, 64), Z_DIM)
    weights = torch.cat([m.weight.flatten() for m in [*G.modules(), *D.modules()]
                         if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))])
    scales = torch.cat([m.weight for m in _batchnorms(G) + _batchnorms(D)])
    assert weights.mean().abs() < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.01)
    assert scales.mean().item() == pytest.approx(1.0, abs=0.01) and scales.std().item() == pytest.approx(0.02, rel=0.2)


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
