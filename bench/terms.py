"""Loss terms: what a loss adds to its adversarial part, each weighted by a hyperparameter `w_<term>`.

A loss is a weighted sum (seed 004 §2.3: λ_adv·adv + λ_per·perceptual; seed 003: adversarial + L1 + content): its
adversarial function from bench.losses, plus terms registered here by name, each one short function of a
`Context` returning a scalar, on G's loss or on D's. A study names them (`g_terms: {feature_matching: 1.0}`) and
may search their weights like any hyperparameter. A term says what it needs (D's features, a fixed feature
network, a paired target), so the trial computes only what its terms use: none costs anything unused.

A new term: a function of the context, `@register("g")` or `@register("d")` over it, and its name in a study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import BenchError, penalties

Need = Literal["features", "feature_net", "target"]


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
    target: Tensor | None = None  # the paired target of an image-to-image study


TermFn = Callable[[Context], Tensor]


@dataclass(frozen=True)
class Term:
    name: str
    fn: TermFn
    acts_on: Literal["g", "d"]  # added to G's loss or to D's
    needs: frozenset[str]
    description: str  # one line, shown by `gan-bench losses`


TERMS: dict[str, Term] = {}


def register(acts_on: Literal["g", "d"], needs: tuple[Need, ...] = ()) -> Callable[[TermFn], TermFn]:
    """Registers the decorated function as a term under its own name. In a module of one's own, it makes the function
    a custom term, named `package.module:function` in a study or on the command line."""

    def add(fn: TermFn) -> TermFn:
        term = Term(fn.__name__, fn, acts_on, frozenset(needs), (fn.__doc__ or "").strip().split("\n")[0])
        if fn.__module__ == __name__:
            TERMS[fn.__name__] = term
        fn.term = term  # what `get` finds on a custom term
        return fn

    return add


def weight_name(term: str) -> str:
    """The hyperparameter that weighs `term` in a loss: w_<function name>, a custom term's too."""
    return f"w_{term.rpartition(':')[2]}"


def get(name: str) -> Term:
    """The registered term `name`, or a custom one given as `package.module:function` (imported as custom losses are,
    so only name code you trust)."""
    if name in TERMS:
        return TERMS[name]
    if ":" not in name:
        raise BenchError(f"unknown loss term {name!r}; valid: {', '.join(TERMS)}, or package.module:function")
    from bench.losses import import_custom  # the same search path as custom losses

    fn = import_custom(name, "term")
    if not isinstance(getattr(fn, "term", None), Term):
        raise BenchError(f"custom term {name!r}: decorate it with @bench.terms.register(\"g\") or (\"d\")")
    return Term(name, fn, fn.term.acts_on, fn.term.needs, fn.term.description)


def weighted_sum(names: list[str], weights: dict[str, float], context: Context) -> Tensor | float:
    """Σ w_t · t(context) over the named terms; 0.0 (adding nothing) when there are none."""
    return sum((weights[weight_name(n)] * get(n).fn(context) for n in names), 0.0)


# ---------------------------------------------------------------------------------------------------------------------
# G terms


@register("g", needs=("features",))
def feature_matching(c: Context) -> Tensor:
    """feature matching (Salimans et al. 2016): ‖E f(x) − E f(G(z))‖², f = D's penultimate features, batch means"""
    return (c.real_features.detach().mean(0) - c.fake_features.mean(0)).square().sum()


@register("g", needs=("feature_net",))
def perceptual(c: Context) -> Tensor:
    """perceptual: ‖E φ(x) − E φ(G(z))‖² / dim, φ a fixed pretrained network's features, batch means"""
    with torch.no_grad():
        real = c.feature_net(c.real).flatten(1).mean(0)
    return (real - c.feature_net(c.fake).flatten(1).mean(0)).square().mean()


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
