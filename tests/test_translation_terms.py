"""The image-to-image loss terms: each against its formula on hand-computed inputs and for the direction of its
gradient (a small step against it lowers the term), their limiting cases (identical images, identity generators,
orthogonal and parallel images, constant images), PatchNCE's contrast between matching and mismatched patches, and the
per-pair forms of `perceptual` and `feature_matching` with a paired target. Generators and PatchNCE's head are small
stand-ins with the methods the terms call (`encode`, `project`)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench import image_metrics, terms


def context(**given) -> terms.Context:
    fake = given.get("fake", torch.zeros(2, 1, 2, 2))
    zeros = torch.zeros(len(fake))
    fields = dict(real=torch.zeros_like(fake), fake=fake, real_scores=zeros, fake_scores=zeros,
                  discriminator=nn.Identity(), rng=torch.Generator().manual_seed(0))
    return terms.Context(**{**fields, **given})


def descends(term, make, *leaves, step=1e-2) -> tuple[float, float]:
    """term(make(*leaves)) before and after one gradient step of size `step` on the leaves."""
    leaves = [leaf.detach().requires_grad_() for leaf in leaves]
    before = term(make(*leaves))
    grads = torch.autograd.grad(before, leaves)
    with torch.no_grad():
        after = term(make(*(leaf - step * grad for leaf, grad in zip(leaves, grads))))
    return before.item(), after.item()


class Affine(nn.Module):
    """A stand-in generator: scale · x + shift, learnable."""

    def __init__(self, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.scale, self.shift = nn.Parameter(torch.tensor(scale)), nn.Parameter(torch.tensor(shift))

    def forward(self, x):
        return self.scale * x + self.shift


class Encoder(nn.Module):
    """A stand-in for the U-Net's `encode`: the image's channels as features, then 2× and 4× average-pooled."""

    def __init__(self, levels: int = 3):
        super().__init__()
        self.levels = levels

    def encode(self, x):
        return [F.avg_pool2d(x, 2 ** level) if level else x for level in range(self.levels)]


class Head(nn.Module):
    """A stand-in PatchNCEHead: patches weighted channel by channel, rows L2-normalised; records the rows it gets."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.rows = []

    def project(self, layer, patches):
        self.rows.append((layer, len(patches)))
        return F.normalize(patches * self.weight, dim=1)


def nce(source, fake, seed=0, head=None, levels=3, **given):
    return context(real=source, fake=fake, source=source, generator=Encoder(levels),
                   nce_head=head or Head(source.shape[1]), rng=torch.Generator().manual_seed(seed), **given)


# ---------------------------------------------------------------------------------------------------------------------
# Registration


def test_the_terms_are_registered_on_g_with_what_they_need():
    needs = {"l1": {"target"}, "l2": {"target"}, "ssim": {"target"}, "psnr": {"target"}, "cosine": {"target"},
             "tv": set(), "cycle": {"generator", "inverse"}, "identity": {"generator"},
             "patchnce": {"generator", "nce_head"}, "perceptual": {"feature_net"}, "feature_matching": {"features"}}
    for name, need in needs.items():
        term = terms.get(name)
        assert (term.acts_on, term.needs) == ("g", need), name
        assert term.description and "\n" not in term.description and term.description == term.fn.__doc__.split("\n")[0]


# ---------------------------------------------------------------------------------------------------------------------
# Distances to the paired target

FAKE = torch.tensor([[[[0.0, 1.0]]], [[[0.5, 0.5]]]])  # two 1×1×2 images
TARGET = torch.tensor([[[[1.0, 1.0]]], [[[0.0, 0.25]]]])  # differences −1, 0 and 0.5, 0.25


def test_l1_is_the_mean_absolute_difference_and_pulls_the_output_toward_the_target():
    fake = FAKE.clone().requires_grad_()
    value = terms.l1(context(fake=fake, target=TARGET))
    assert value.item() == pytest.approx((1 + 0 + 0.5 + 0.25) / 4)
    value.backward()
    assert torch.equal(fake.grad.flatten(), torch.tensor([-0.25, 0.0, 0.25, 0.25]))  # sign(G(x) − y) / 4


def test_l2_is_the_mean_squared_difference_and_pulls_the_output_toward_the_target():
    fake = FAKE.clone().requires_grad_()
    value = terms.l2(context(fake=fake, target=TARGET))
    assert value.item() == pytest.approx((1 + 0 + 0.25 + 0.0625) / 4)
    value.backward()
    assert torch.allclose(fake.grad.flatten(), torch.tensor([-0.5, 0.0, 0.25, 0.125]))  # 2 (G(x) − y) / 4


def test_ssim_is_one_minus_the_mean_ssim_zero_for_identical_images():
    g = torch.Generator().manual_seed(1)
    target, fake = torch.rand(3, 3, 16, 16, generator=g), torch.rand(3, 3, 16, 16, generator=g)
    assert terms.ssim(context(fake=target, target=target)).item() == pytest.approx(0, abs=1e-6)
    value = terms.ssim(context(fake=fake, target=target))
    assert value.item() == pytest.approx(1 - image_metrics.ssim(fake, target).mean().item())
    before, after = descends(terms.ssim, lambda f: context(fake=f, target=target), fake, step=10.0)
    assert after < before


def test_psnr_is_minus_the_mean_psnr_in_db_and_finite_where_the_output_is_the_target():
    target = torch.rand(2, 3, 8, 8) * 0.8
    fake = target + torch.tensor([0.1, 0.01]).view(2, 1, 1, 1)  # MSE 0.01 and 1e-4: 20 and 40 dB
    assert terms.psnr(context(fake=fake, target=target)).item() == pytest.approx(-30, abs=1e-4)
    assert terms.psnr(context(fake=fake, target=target)).item() == pytest.approx(
        -image_metrics.psnr(fake, target).mean().item(), rel=1e-6)
    same = target.clone().requires_grad_()
    value = terms.psnr(context(fake=same, target=target))
    assert value.item() == pytest.approx(-100)  # MSE floored at 1e-10
    value.backward()
    assert torch.equal(same.grad, torch.zeros_like(same))  # finite: no inf or nan
    before, after = descends(terms.psnr, lambda f: context(fake=f, target=target), torch.rand(2, 3, 8, 8))
    assert after < before


def test_cosine_is_one_for_orthogonal_images_zero_for_parallel_ones():
    left = torch.tensor([[[[1.0, 0.0]]]])
    right = torch.tensor([[[[0.0, 1.0]]]])
    assert terms.cosine(context(fake=left, target=right)).item() == pytest.approx(1)
    parallel = terms.cosine(context(fake=0.5 * left + 0.25 * right, target=2 * left + right))
    assert parallel.item() == pytest.approx(0, abs=1e-6)
    # per image, then the mean: 1 − (cos 45° + cos 90°) / 2
    value = terms.cosine(context(fake=torch.cat([left, left]), target=torch.cat([left + right, right])))
    assert value.item() == pytest.approx(1 - (1 / math.sqrt(2) + 0) / 2)
    before, after = descends(terms.cosine, lambda f: context(fake=f, target=left + right), left, step=0.1)
    assert after < before


def test_tv_is_the_mean_absolute_difference_of_neighbouring_pixels():
    assert terms.tv(context(fake=torch.full((2, 3, 5, 4), 0.3))).item() == 0
    image = torch.tensor([[[[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]])
    # vertical pairs: 0, 1, 0; horizontal pairs: 1, 1, 0, 0: 3 over 7 neighbouring pairs
    assert terms.tv(context(fake=image)).item() == pytest.approx(3 / 7)
    before, after = descends(terms.tv, lambda f: context(fake=f), torch.rand(2, 1, 6, 6))
    assert after < before


# ---------------------------------------------------------------------------------------------------------------------
# CycleGAN


def cyclegan(G, F_, source, real, inverse_fake=True):
    return context(fake=G(source), real=real, source=source, generator=G, inverse=F_,
                   inverse_fake=F_(real) if inverse_fake else None)


def test_cycle_is_zero_for_identity_maps_and_the_two_l1_reconstruction_errors_otherwise():
    a, b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    assert terms.cycle(cyclegan(nn.Identity(), nn.Identity(), a, b)).item() == 0
    G, F_ = Affine(shift=0.1), nn.Identity()  # F(G(a)) = a + 0.1, G(F(b)) = b + 0.1
    assert terms.cycle(cyclegan(G, F_, a, b)).item() == pytest.approx(0.2)
    assert terms.cycle(cyclegan(G, F_, a, b, inverse_fake=False)).item() == pytest.approx(0.2)  # F(b) computed


def test_cycle_trains_both_generators_toward_inverting_each_other():
    a, b = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 4)
    G, F_ = Affine(2.0, 0.1), Affine(0.3, 0.0)
    (terms.cycle(cyclegan(G, F_, a, b))).backward()
    assert G.scale.grad != 0 and F_.scale.grad != 0
    before = terms.cycle(cyclegan(G, F_, a, b)).item()
    with torch.no_grad():
        for p in (*G.parameters(), *F_.parameters()):
            p -= 0.01 * p.grad
    assert terms.cycle(cyclegan(G, F_, a, b)).item() < before


def test_identity_is_zero_for_an_identity_generator_and_adds_the_inverses_when_there_is_one():
    a, b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    assert terms.identity(context(real=b, source=a, generator=nn.Identity())).item() == 0
    assert terms.identity(context(real=b, source=a, generator=nn.Identity(), inverse=nn.Identity())).item() == 0
    G, F_ = Affine(shift=0.1), Affine(shift=0.2)
    assert terms.identity(context(real=b, source=a, generator=G)).item() == pytest.approx(0.1)
    value = terms.identity(context(real=b, source=a, generator=G, inverse=F_))
    assert value.item() == pytest.approx(0.1 + 0.2)
    value.backward()
    assert G.shift.grad > 0 and F_.shift.grad > 0  # a step against it shrinks both shifts toward 0


# ---------------------------------------------------------------------------------------------------------------------
# PatchNCE


def test_patchnce_is_the_infonce_cross_entropy_of_hand_computed_patches():
    """One image, one layer of 1×2 positions (fewer than 64: both used): sources k1 = (1, 0), k2 = (0, 1); outputs
    q1 = (1, 0), q2 = (0.6, 0.8) (unit vectors, which the head keeps)."""
    source = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2 channels, 1, 2)
    fake = torch.tensor([[[[1.0, 0.6]], [[0.0, 0.8]]]])
    t = terms.NCE_TEMPERATURE
    first = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0)))
    second = -math.log(math.exp(0.8 / t) / (math.exp(0.6 / t) + math.exp(0.8 / t)))
    value = terms.patchnce(nce(source, fake, levels=1))
    assert value.item() == pytest.approx((first + second) / 2, rel=1e-5)


def test_patchnce_takes_negatives_from_the_same_image_only():
    """With every position used (8×8 = 64), the batch's loss is the mean of each image's alone."""
    g = torch.Generator().manual_seed(2)
    source, fake = torch.randn(2, 16, 8, 8, generator=g), torch.randn(2, 16, 8, 8, generator=g)
    together = terms.patchnce(nce(source, fake, levels=1)).item()
    alone = [terms.patchnce(nce(source[i:i + 1], fake[i:i + 1], levels=1)).item() for i in range(2)]
    assert together == pytest.approx(sum(alone) / 2, rel=1e-5)


def test_patchnce_is_near_zero_for_matching_patches_and_log_s_for_unrelated_ones():
    g = torch.Generator().manual_seed(3)
    source = torch.randn(2, 4096, 16, 16, generator=g)  # random directions: near-orthogonal in 4096 dimensions
    head = Head(4096)
    matching = terms.patchnce(nce(source, source, head=head)).item()
    # 64 of 16×16 and of 8×8 positions, all 16 of 4×4, for each of the 2 images, in source and output alike
    assert head.rows == [(0, 128), (0, 128), (1, 128), (1, 128), (2, 32), (2, 32)]
    shuffled = source.flatten(2)[:, :, torch.randperm(256, generator=g)].view_as(source)  # each patch elsewhere
    mismatched = terms.patchnce(nce(source, shuffled)).item()
    unrelated = terms.patchnce(nce(source, torch.randn(source.shape, generator=g))).item()
    assert matching < 1e-3 < mismatched
    # Unrelated queries: chance among S candidates, log S, plus a little for the logits' spread (q·k/τ, q·k ~ 1/√4096)
    assert unrelated == pytest.approx((2 * math.log(64) + math.log(16)) / 3, abs=0.1)


def test_patchnce_draws_its_positions_with_the_trials_generator():
    g = torch.Generator().manual_seed(4)
    source, fake = torch.randn(2, 8, 16, 16, generator=g), torch.randn(2, 8, 16, 16, generator=g)
    assert terms.patchnce(nce(source, fake, seed=5)).item() == terms.patchnce(nce(source, fake, seed=5)).item()
    assert terms.patchnce(nce(source, fake, seed=5)).item() != terms.patchnce(nce(source, fake, seed=6)).item()


def test_patchnce_trains_the_output_and_the_head_not_through_the_source():
    g = torch.Generator().manual_seed(6)
    source, fake = torch.randn(2, 8, 16, 16, generator=g), torch.randn(2, 8, 16, 16, generator=g)
    before, after = descends(terms.patchnce, lambda f: nce(source, f), fake, step=0.5)
    assert after < before
    source.requires_grad_()
    head = Head(8)
    terms.patchnce(nce(source, fake.requires_grad_(), head=head)).backward()
    assert source.grad is None  # the source's patches are detached, as in CUT's PatchNCELoss
    assert head.weight.grad.abs().sum() > 0 and fake.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------------
# Per-pair perceptual and feature matching


def test_perceptual_with_a_paired_target_compares_each_output_with_its_own_target():
    double = lambda x: 2 * x
    target = torch.tensor([[[[1.0, 1.0]]], [[[0.0, 2.0]]]])  # features (2, 2) and (0, 4)
    fake = torch.tensor([[[[0.0, 1.0]]], [[[0.0, 3.0]]]], requires_grad=True)  # features (0, 2) and (0, 6)
    value = terms.perceptual(context(real=target, fake=fake, target=target, feature_net=double))
    assert value.item() == pytest.approx((4 + 0 + 0 + 4) / 4)
    assert value.item() == pytest.approx(image_metrics.perceptual_distance(double, fake, target).mean().item())
    assert terms.perceptual(context(real=target, fake=fake, feature_net=double)).item() == pytest.approx(
        ((1 - 0) ** 2 + (3 - 4) ** 2) / 2)  # no target: the batch-mean form, feature means (1, 3) against (0, 4)
    value.backward()
    assert torch.allclose(fake.grad.flatten(), torch.tensor([-2.0, 0.0, 0.0, 2.0]))  # 2·2·(φ(G(x)) − φ(y)) / 4


def test_feature_matching_with_a_paired_target_is_the_mean_absolute_difference_pair_by_pair():
    real = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)  # D's features of (x, y)
    fake = torch.tensor([[0.0, 0.0], [2.0, 5.0]], requires_grad=True)  # of (x, G(x))
    value = terms.feature_matching(context(real_features=real, fake_features=fake, target=torch.zeros(2, 1, 2, 2)))
    assert value.item() == pytest.approx((1 + 2 + 1 + 1) / 4)
    value.backward()
    assert real.grad is None  # the real pair's features are detached
    assert torch.equal(fake.grad, torch.tensor([[-0.25, -0.25], [-0.25, 0.25]]))  # toward each pair's own
    unpaired = terms.feature_matching(context(real_features=real, fake_features=fake))
    assert unpaired.item() == pytest.approx((2 - 1) ** 2 + (3 - 2.5) ** 2)  # Salimans' batch means, unchanged
