"""Loss terms: what a loss adds to its adversarial part, each weighted by a hyperparameter `w_<term>`.

A loss is a weighted sum (seed 004 §2.3: λ_adv·adv + λ_per·perceptual; seed 003: adversarial + L1 + content): its
adversarial function from bench.losses, plus terms registered here by name, each one short function of a
`Context` returning a scalar, on G's loss or on D's. A study names them (`g_terms: {feature_matching: 1.0}`) and
may search their weights like any hyperparameter. A term says what it needs (D's features, a fixed feature
network, a paired target), so the trial computes only what its terms use: none costs anything unused. Image-to-image
trials (pix2pix, CycleGAN, CUT) add their own G terms: pixel and structural distances to the paired target (l1, l2,
ssim, psnr, cosine), total variation, CycleGAN's cycle and identity losses and CUT's PatchNCE; `perceptual` and
`feature_matching` take their per-pair forms when the trial has a paired target.

A new term: a function of the context, `@register("g")` or `@register("d")` over it, and its name in a study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import BenchError, image_metrics, penalties
from bench.registry import Registry

# What a term reads beyond the batches and D's scores: D's features, a fixed feature network, and in image-to-image
# trials the paired target, the generator itself, CycleGAN's inverse generator, PatchNCE's projection head.
Need = Literal["features", "feature_net", "target", "generator", "inverse", "nce_head"]
# Needs that only an image-to-image trial meets.
TRANSLATION_NEEDS = frozenset({"target", "generator", "inverse", "nce_head"})


@dataclass
class Context:
    """What a term sees at one training step. In a D term, `fake` is detached (D's loss must not train G); in a G
    term it carries G's graph and D is frozen."""

    real: Tensor  # the real batch, images in [0, 1]
    fake: Tensor  # G's batch
    real_scores: Tensor  # D's raw scores, (B,)
    fake_scores: Tensor
    discriminator: nn.Module
    rng: torch.Generator  # the trial's: a term that draws random numbers keeps the run reproducible
    real_features: Tensor | None = None  # D's penultimate features, from the forward pass that gave the scores
    fake_features: Tensor | None = None
    feature_net: Callable[[Tensor], Tensor] | None = None  # a fixed network (perceptual terms)
    # Image-to-image trials. `source` is G's input batch and `fake` = G(source). In a paired task `target` is the true
    # image of each source (and `real` is that target batch); in an unpaired one `target` is None and `real` is drawn
    # apart from the sources. CycleGAN's `inverse` generator maps targets back to sources; `inverse_fake` = F(real).
    target: Tensor | None = None
    source: Tensor | None = None
    generator: nn.Module | None = None
    inverse: nn.Module | None = None
    inverse_fake: Tensor | None = None
    nce_head: nn.Module | None = None  # PatchNCE's projection MLPs, trained with G


TermFn = Callable[[Context], Tensor]


@dataclass(frozen=True)
class Term:
    name: str
    fn: TermFn
    acts_on: Literal["g", "d"]  # added to G's loss or to D's
    needs: frozenset[str]
    description: str  # one line, shown by `gan-bench losses`


TERMS: Registry[Term] = Registry("loss term", lambda name, fn: custom_term(name, fn), "package.module:function")


def register(acts_on: Literal["g", "d"], needs: tuple[Need, ...] = ()) -> Callable[[TermFn], TermFn]:
    """Registers the decorated function as a term under its own name. In a module of one's own, it makes the function
    a custom term, named `package.module:function` in a study or on the command line."""

    def add(fn: TermFn) -> TermFn:
        term = Term(fn.__name__, fn, acts_on, frozenset(needs), (fn.__doc__ or "").strip().split("\n")[0])
        if fn.__module__ == __name__:
            TERMS.add(term.name, term, term.description)
        fn.term = term  # what `get` finds on a custom term
        return fn

    return add


def weight_name(term: str) -> str:
    """The hyperparameter that weighs `term` in a loss: w_<function name>, a custom term's too."""
    return f"w_{term.rpartition(':')[2]}"


def custom_term(name: str, fn: Any) -> Term:
    """A custom term `package.module:function`, which TERMS.get imports: a function decorated with register."""
    if not isinstance(getattr(fn, "term", None), Term):
        raise BenchError(f"custom term {name!r}: decorate it with @bench.terms.register(\"g\") or (\"d\")")
    return Term(name, fn, fn.term.acts_on, fn.term.needs, fn.term.description)


def get(name: str) -> Term:
    """The registered term `name`, or a custom one given as `package.module:function` (custom_term)."""
    return TERMS.get(name)


def weighted_sum(names: list[str], weights: dict[str, float], context: Context) -> Tensor | float:
    """Σ w_t · t(context) over the named terms; 0.0 (adding nothing) when there are none."""
    return sum((weights[weight_name(n)] * get(n).fn(context) for n in names), 0.0)


# ---------------------------------------------------------------------------------------------------------------------
# G terms


@register("g", needs=("features",))
def feature_matching(c: Context) -> Tensor:
    """feature matching, f = D's features: ‖E f(x) − E f(G(z))‖² (Salimans et al. 2016); paired, E|f(x, y) − f(x, G(x))|

    Unpaired, the squared distance of the batch means of D's penultimate features; with a paired target, pix2pixHD's
    per-pair form (Wang et al. 2018, one layer): the mean absolute difference of D's features of (x, y) and (x, G(x)),
    the real pair's detached."""
    if c.target is not None:  # D's features of (source, target) and of (source, G(source)), pair by pair
        return (c.real_features.detach() - c.fake_features).abs().mean()
    return (c.real_features.detach().mean(0) - c.fake_features.mean(0)).square().sum()


@register("g", needs=("feature_net",))
def perceptual(c: Context) -> Tensor:
    """perceptual, φ a fixed network: ‖E φ(x) − E φ(G(z))‖² / dim of batch means; paired, E‖φ(G(x)) − φ(y)‖² / dim

    Unpaired, the squared distance of the batch means of the features; with a paired target y, per pair (Johnson et
    al. 2016): the mean squared difference of each output's features from its target's."""
    paired = c.target is not None
    with torch.no_grad():
        real = c.feature_net(c.target if paired else c.real).flatten(1)
    fake = c.feature_net(c.fake).flatten(1)
    return (real - fake).square().mean() if paired else (real.mean(0) - fake.mean(0)).square().mean()


# ---------------------------------------------------------------------------------------------------------------------
# Image-to-image terms: G's output against its paired target, its smoothness, CycleGAN's and CUT's constraints. In them
# x is a source image (c.source), G(x) its output (c.fake), y its paired target (c.target).


@register("g", needs=("target",))
def l1(c: Context) -> Tensor:
    """L1 (pix2pix): E|G(x) − y|, the mean absolute difference from the paired target"""
    return (c.fake - c.target).abs().mean()


@register("g", needs=("target",))
def l2(c: Context) -> Tensor:
    """L2: E(G(x) − y)², the mean squared difference from the paired target"""
    return (c.fake - c.target).square().mean()


@register("g", needs=("target",))
def ssim(c: Context) -> Tensor:
    """SSIM: 1 − E SSIM(G(x), y), the structural similarity (Wang et al. 2004) of bench.image_metrics"""
    return 1 - image_metrics.ssim(c.fake, c.target).mean()


PSNR_MIN_MSE = 1e-10  # the psnr term's floor on the MSE: PSNR at most 100 dB, so finite where G(x) = y


@register("g", needs=("target",))
def psnr(c: Context) -> Tensor:
    """PSNR: −E PSNR(G(x), y) in dB = E 10·log10 max(MSE, 1e-10) per image, finite (PSNR ≤ 100 dB) where G(x) = y"""
    mse = (c.fake - c.target).square().flatten(1).mean(1)
    return (10 * mse.clamp_min(PSNR_MIN_MSE).log10()).mean()  # clamped, G(x) = y has a gradient of 0, not nan


@register("g", needs=("target",))
def cosine(c: Context) -> Tensor:
    """cosine: 1 − E cos(G(x), y), each image flattened to a vector"""
    return 1 - F.cosine_similarity(c.fake.flatten(1), c.target.flatten(1), dim=1).mean()


@register("g")
def tv(c: Context) -> Tensor:
    """total variation: E|G(x)ᵢ − G(x)ⱼ| over horizontally and vertically neighbouring pixels i, j"""
    down, right = c.fake.diff(dim=-2), c.fake.diff(dim=-1)
    return torch.cat((down.flatten(), right.flatten())).abs().mean()


@register("g", needs=("generator", "inverse"))
def cycle(c: Context) -> Tensor:
    """cycle consistency (CycleGAN, Zhu et al. 2017): E|F(G(a)) − a| + E|G(F(b)) − b|, a a source, b a target image"""
    inverse_fake = c.inverse(c.real) if c.inverse_fake is None else c.inverse_fake
    return (c.inverse(c.fake) - c.source).abs().mean() + (c.generator(inverse_fake) - c.real).abs().mean()


@register("g", needs=("generator",))
def identity(c: Context) -> Tensor:
    """identity (CycleGAN): E|G(b) − b| on target images b, plus E|F(a) − a| on sources when there is an inverse F"""
    loss = (c.generator(c.real) - c.real).abs().mean()
    return loss if c.inverse is None else loss + (c.inverse(c.source) - c.source).abs().mean()


NCE_PATCHES, NCE_TEMPERATURE = 64, 0.07  # CUT's PatchSampleF default and its nce_T


@register("g", needs=("generator", "nce_head"))
def patchnce(c: Context) -> Tensor:
    """PatchNCE (CUT): E −log[exp(q·k₊/τ) / Σₖ exp(q·k/τ)], τ 0.07, q G(x)'s patch, k₊ x's there, k x's sampled ones

    For each layer of G's encoder, 64 positions (all if fewer) drawn with c.rng, one draw per layer for the whole batch
    as CUT's PatchSampleF does; the head projects G.encode(G(x))'s and G.encode(x)'s features there to unit vectors q
    and k. Each query's positive is the source's patch at its position, its negatives the source's other sampled
    patches of the same image (CUT's default); cross-entropy at temperature 0.07, mean over patches and layers. CUT's
    code lists the positive apart and masks the query's own place among the negatives with −10 (e^(−10/0.07) ≈ 1e-62):
    the same softmax. As in CUT's code (models/patchnce.py: feat_k.detach()), the source's projected patches are
    detached: the gradient reaches G and the head through the queries only."""
    losses = []
    for layer, (source, output) in enumerate(zip(c.generator.encode(c.source), c.generator.encode(c.fake))):
        n, _, h, w = output.shape
        at = torch.randperm(h * w, generator=c.rng, device=c.rng.device)[:NCE_PATCHES].to(output.device)
        patches = lambda f: c.nce_head.project(layer, f.flatten(2)[:, :, at].transpose(1, 2).flatten(0, 1))
        q, k = patches(output).view(n, len(at), -1), patches(source).detach().view(n, len(at), -1)
        logits = q @ k.transpose(1, 2) / NCE_TEMPERATURE  # (n, S, S): query i's positive on the diagonal
        losses.append(F.cross_entropy(logits.flatten(0, 1), torch.arange(len(at), device=q.device).repeat(n)))
    return torch.stack(losses).mean()


# ---------------------------------------------------------------------------------------------------------------------
# D terms


@register("d")
def r1(c: Context) -> Tensor:
    """R1 (Mescheder et al. 2018): E‖∇ₓD(x)‖² on real data (weight γ/2 for the paper's γ)"""
    return penalties.r1_penalty(c.discriminator, c.real)


@register("d")
def wgan_gp(c: Context) -> Tensor:
    """WGAN-GP's penalty (Gulrajani et al. 2017): E(‖∇D(x̂)‖ − 1)², x̂ between real and fake"""
    return penalties.gradient_penalty(c.discriminator, c.real, c.fake, c.rng)


@register("d")
def dragan(c: Context) -> Tensor:
    """DRAGAN's penalty (Kodali et al. 2017): E(‖∇D(x̂)‖ − 1)², x̂ real data perturbed"""
    return penalties.dragan_penalty(c.discriminator, c.real, c.fake, c.rng)


CONTRASTIVE_MARGIN = 1.0  # on unit-length features, whose distances lie in [0, 2]


@register("d", needs=("features",))
def contrastive(c: Context) -> Tensor:
    """contrastive, margin form (Hadsell et al. 2006) on D's unit-normalised features: real–real pairs pulled
    together, real–fake pairs pushed past a margin of 1: E d(rᵢ, rⱼ)² + E max(0, 1 − d(rᵢ, fⱼ))²"""
    real, fake = F.normalize(c.real_features, dim=1), F.normalize(c.fake_features, dim=1)
    n = len(real)
    pull = torch.cdist(real, real).square().sum() / (n * (n - 1))  # the diagonal is 0: the mean over pairs i ≠ j
    push = F.relu(CONTRASTIVE_MARGIN - torch.cdist(real, fake)).square().mean()
    return pull + push
