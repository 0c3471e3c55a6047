"""The GAN losses under comparison, and a registry of them with the authors' default hyperparameters.

Every loss maps the discriminator's raw scores (logits, no sigmoid) on a real and a fake batch to
(d_loss, g_loss), each averaged over the batch. Working on logits lets the sigmoid cross-entropy
terms use softplus, which stays finite where log(sigmoid(t)) would underflow:
    -log sigmoid(t) = softplus(-t)        -log(1 - sigmoid(t)) = softplus(t)

The caller decides what is detached: D's loss is normally computed on D(G(z).detach()), G's on D(G(z)).
BEGAN's discriminator is an autoencoder, so it does not fit this signature and has its own functions;
so does the paper's VAE baseline, whose "discriminator" is its encoder.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Literal, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from bench.models import DiscriminatorKind
from bench.registry import Registry, UnknownName

LossFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def mm_gan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Minimax GAN (Goodfellow et al. 2014): G minimises E log(1 - D(G(z))) exactly as in the game."""
    d_loss = F.softplus(-real).mean() + F.softplus(fake).mean()
    g_loss = -F.softplus(fake).mean()
    return d_loss, g_loss


def ns_gan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Non-saturating GAN: G maximises E log D(G(z)) instead, which keeps its gradient alive early on."""
    d_loss = F.softplus(-real).mean() + F.softplus(fake).mean()
    g_loss = F.softplus(-fake).mean()
    return d_loss, g_loss


def lsgan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Least squares with targets 1 (real) and 0 (fake) on D's sigmoid output, as the paper ran it.

    compare_gan v1 (gans/LSGAN.py lines 62-71) squares sigmoid(score), which bounds the loss and saturates
    its gradient; Mao et al. define LSGAN on the raw score: that form is `lsgan_raw`.
    """
    real, fake = torch.sigmoid(real), torch.sigmoid(fake)
    d_loss = 0.5 * ((real - 1).square().mean() + fake.square().mean())
    g_loss = 0.5 * (fake - 1).square().mean()
    return d_loss, g_loss


def lsgan_raw(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares GAN as Mao et al. (2017) define it: targets 1 and 0 on D's raw score, no sigmoid."""
    d_loss = 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()
    g_loss = 0.5 * (fake - 1).square().mean()
    return d_loss, g_loss


def wgan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Wasserstein GAN: D is a critic whose score gap estimates the Earth mover's distance.

    Only meaningful with a Lipschitz constraint on D: weight clipping (WGAN) or a gradient penalty (WGAN-GP).
    """
    d_loss = fake.mean() - real.mean()
    g_loss = -fake.mean()
    return d_loss, g_loss


def hinge(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D stops being pushed once a score clears its margin of 1."""
    d_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    g_loss = -fake.mean()
    return d_loss, g_loss


# f-GAN (Nowozin, Cseke & Tomioka 2016): D's raw score v passes through the output activation g_f into the domain
# of f*, the Fenchel conjugate of the divergence's generator f; D maximises the variational lower bound
#     F = E_real g_f(v) - E_fake f*(g_f(v))  <=  D_f(P_real || P_fake) = E_fake f(p_real / p_fake),
# tight at g_f(v) = f'(p_real / p_fake). Every f-GAN G here takes the paper's alternative update, the one its
# experiments ran (Section 3.2, after Algorithm 1): G maximises E_fake g_f(v) rather than minimising F, for the same
# reason ns_gan departs from mm_gan. The losses write f*(g_f(v)) simplified by hand, so that no
# intermediate (exp(t), log(-t), 1 - t) overflows or cancels; F_GAN keeps the table's forms for the tests.


def kl(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """f-GAN, KL(P_real || P_fake): g_f(v) = v, f*(t) = exp(t - 1), so f*(g_f(v)) = exp(v - 1).

    d_loss = -(E_real v - E_fake exp(v - 1)); g_loss = -E_fake v (the paper's alternative G update).
    """
    d_loss = torch.exp(fake - 1).mean() - real.mean()
    g_loss = -fake.mean()
    return d_loss, g_loss


def reverse_kl(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """f-GAN, KL(P_fake || P_real): g_f(v) = -exp(-v), f*(t) = -1 - log(-t), so f*(g_f(v)) = v - 1 exactly.

    d_loss = -(E_real -exp(-v) - E_fake (v - 1)) = E_real exp(-v) + E_fake v - 1; g_loss = E_fake exp(-v) (the paper's
    alternative G update, -E_fake g_f(v)).
    """
    d_loss = torch.exp(-real).mean() + fake.mean() - 1
    g_loss = torch.exp(-fake).mean()
    return d_loss, g_loss


def pearson(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """f-GAN, Pearson chi²(P_real || P_fake): g_f(v) = v, f*(t) = t²/4 + t.

    d_loss = -(E_real v - E_fake (v²/4 + v)); g_loss = -E_fake v (the paper's alternative G update). f*(t) = t²/4 + t is
    the conjugate of f(u) = (u - 1)² over all real u; it falls for t < -2, where D's loss pushes a fake score back up.
    """
    d_loss = (fake.square() / 4 + fake).mean() - real.mean()
    g_loss = -fake.mean()
    return d_loss, g_loss


def hellinger(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """f-GAN, squared Hellinger E_fake (sqrt(p_real / p_fake) - 1)²: g_f(v) = 1 - exp(-v), f*(t) = t / (1 - t).

    f*(g_f(v)) = exp(v) - 1, so d_loss = -(E_real (1 - exp(-v)) - E_fake (exp(v) - 1)) = E_real expm1(-v) +
    E_fake expm1(v); g_loss = E_fake expm1(-v) (the paper's alternative G update, -E_fake g_f(v)). expm1 keeps the
    small differences from 1 exact near v = 0, where D starts.
    """
    d_loss = torch.expm1(-real).mean() + torch.expm1(fake).mean()
    g_loss = torch.expm1(-fake).mean()
    return d_loss, g_loss


def js(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """f-GAN, Jensen-Shannon: g_f(v) = log 2 - log(1 + exp(-v)) = log 2 - softplus(-v), f*(t) = -log(2 - exp(t)).

    f*(g_f(v)) = -log(2 - 2 sigmoid(v)) = softplus(v) - log 2, so d_loss = E_real softplus(-v) + E_fake softplus(v) -
    2 log 2 (ns_gan's D loss less log 4) and g_loss = E_fake softplus(-v) - log 2 (the paper's alternative G update,
    -E_fake g_f(v)). Table 6's f(u) = u log u - (u + 1) log((1 + u) / 2) makes D_f twice the Jensen-Shannon divergence.
    """
    log2 = math.log(2)
    d_loss = F.softplus(-real).mean() + F.softplus(fake).mean() - 2 * log2
    g_loss = F.softplus(-fake).mean() - log2
    return d_loss, g_loss


# Table 6 of the f-GAN paper as written, name -> (output activation g_f, conjugate f*): the reference the simplified
# losses above are tested against. The activations are in stable form; each conjugate is the table's raw expression,
# defined on the range of its activation.
F_GAN: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "kl": (lambda v: v, lambda t: torch.exp(t - 1)),
    "reverse_kl": (lambda v: -torch.exp(-v), lambda t: -1 - torch.log(-t)),
    "pearson": (lambda v: v, lambda t: t.square() / 4 + t),
    "hellinger": (lambda v: -torch.expm1(-v), lambda t: t / (1 - t)),
    "js": (lambda v: math.log(2) - F.softplus(-v), lambda t: -torch.log(2 - torch.exp(t))),
}


# Relativistic GANs (Jolicoeur-Martineau 2019): D judges whether real data looks more real than fake data, and G's
# loss is the same judgement with real and fake swapped, so it reads D's scores on a real batch (LossSpec.g_reads_real).
# The averaged ("Ra") forms compare each score with the other batch's mean score. The paper writes the Ra losses as a
# sum of two expectations; its official code (github.com/AlexiaJM/RelativisticGAN, code/GAN_losses_iter.py lines
# 635-641 for D, 697-709 for G), which ran its experiments, halves that sum, and so do these.


def rsgan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Relativistic standard GAN: D(x_r, x_f) = sigmoid(C(x_r) - C(x_f)), real and fake paired sample by sample.

    d_loss = E softplus(-(C(x_r) - C(x_f))); g_loss = E softplus(-(C(x_f) - C(x_r))). Official code lines 635, 697.
    """
    d_loss = F.softplus(fake - real).mean()
    g_loss = F.softplus(real - fake).mean()
    return d_loss, g_loss


def rasgan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Relativistic average standard GAN: D~(x_r) = sigmoid(C(x_r) - E C(x_f)), D~(x_f) = sigmoid(C(x_f) - E C(x_r)).

    d_loss = (-E log D~(x_r) - E log(1 - D~(x_f))) / 2 = (E softplus(-(C(x_r) - E C(x_f))) + E softplus(C(x_f) -
    E C(x_r))) / 2; g_loss = (-E log D~(x_f) - E log(1 - D~(x_r))) / 2, the same with real and fake swapped.
    Official code lines 637, 702.
    """
    real_rel, fake_rel = real - fake.mean(), fake - real.mean()
    d_loss = (F.softplus(-real_rel).mean() + F.softplus(fake_rel).mean()) / 2
    g_loss = (F.softplus(-fake_rel).mean() + F.softplus(real_rel).mean()) / 2
    return d_loss, g_loss


def ralsgan(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Relativistic average least squares: targets 1 and -1 for each score less the other batch's mean score.

    d_loss = (E (C(x_r) - E C(x_f) - 1)² + E (C(x_f) - E C(x_r) + 1)²) / 2; g_loss = (E (C(x_f) - E C(x_r) - 1)² +
    E (C(x_r) - E C(x_f) + 1)²) / 2. Official code lines 639, 705.
    """
    real_rel, fake_rel = real - fake.mean(), fake - real.mean()
    d_loss = ((real_rel - 1).square().mean() + (fake_rel + 1).square().mean()) / 2
    g_loss = ((fake_rel - 1).square().mean() + (real_rel + 1).square().mean()) / 2
    return d_loss, g_loss


def rahinge(real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
    """Relativistic average hinge: margin 1 on each score less the other batch's mean score.

    d_loss = (E relu(1 - (C(x_r) - E C(x_f))) + E relu(1 + (C(x_f) - E C(x_r)))) / 2; g_loss = (E relu(1 - (C(x_f) -
    E C(x_r))) + E relu(1 + (C(x_r) - E C(x_f)))) / 2. Official code lines 641, 709.
    """
    real_rel, fake_rel = real - fake.mean(), fake - real.mean()
    d_loss = (F.relu(1 - real_rel).mean() + F.relu(1 + fake_rel).mean()) / 2
    g_loss = (F.relu(1 - fake_rel).mean() + F.relu(1 + real_rel).mean()) / 2
    return d_loss, g_loss


def reconstruction_error(x: Tensor, reconstruction: Tensor) -> Tensor:
    """BEGAN's L(x): the autoencoder's mean absolute reconstruction error, a scalar."""
    return (x - reconstruction).abs().mean()


def began_losses(real_error: Tensor, fake_error: Tensor, k: float | Tensor) -> tuple[Tensor, Tensor]:
    """BEGAN (Berthelot et al. 2017) from the reconstruction errors L(x) and L(G(z)).

    D reconstructs real images well and fakes badly, weighted by k; G makes its samples easy to reconstruct.
    """
    d_loss = real_error - k * fake_error
    g_loss = fake_error
    return d_loss, g_loss


def began_update_k(k: float | Tensor, real_error: float | Tensor, fake_error: float | Tensor, gamma: float,
                   lambda_k: float) -> float | Tensor:
    """One step of BEGAN's proportional control, keeping E L(G(z)) = gamma * E L(x).

    Unclipped, as in compare_gan v1 (gans/BEGAN.py lines 130-131); Berthelot et al. clip k to [0, 1].
    The trial calls it after every training step with errors recomputed by the updated networks (BEGAN.py
    lines 162-169, abstract_gan.py line 218).
    """
    return k + lambda_k * (gamma * real_error - fake_error)


def began_convergence(real_error: float, fake_error: float, gamma: float) -> float:
    """BEGAN's global convergence measure M = L(x) + |gamma * L(x) - L(G(z))|; lower is better."""
    return real_error + abs(gamma * real_error - fake_error)


def vae_loss(x: Tensor, reconstruction: Tensor, mu: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """The VAE's negative ELBO (Kingma & Welling 2014) as (reconstruction term, KL term), as the paper ran it.

    compare_gan v1 (gans/VAE.py lines 99-110): the decoder's pixels, clipped to [1e-8, 1 - 1e-8], are Bernoulli
    probabilities; the log-likelihood is summed over height and width and averaged over channels and the batch
    (so a 3-channel image weighs as much as a grey one). The KL of q(z|x) = N(mu, diag(sigma²)) from N(0, I) is
    summed over latent dimensions, with log(1e-8 + sigma²) as v1 has it. The loss to minimise is their sum.
    A decoder that blew up gives NaN pixels, hence a NaN term, and the trial counts the run as diverged.

    Computed in float64: in float32 1 - 1e-8 rounds to 1, so v1's clip leaves a saturated sigmoid pixel at exactly
    1 and its log(1 - p) at -inf (NaN where the target is 1). In float64 the clip works as written.
    """
    dtype = mu.dtype
    x, p = x.double(), reconstruction.double().clamp(1e-8, 1 - 1e-8)
    log_likelihood = (x * p.log() + (1 - x) * (1 - p).log()).sum(dim=(2, 3))  # (B, C): summed over H, W
    reconstruction_term = -log_likelihood.mean()
    mu, sigma = mu.double(), sigma.double()
    kl_term = 0.5 * (mu.square() + sigma.square() - (1e-8 + sigma.square()).log() - 1).sum(1).mean()
    return reconstruction_term.to(dtype), kl_term.to(dtype)


# Every hyperparameter a study may search or a trial take; which of them a loss reads is LossSpec.hyperparameters.
HYPERPARAMETERS = ("lr", "beta1", "beta2", "n_disc", "gp_lambda", "clip", "began_gamma", "began_lambda_k",
                   "r1_gamma", "d_batchnorm", "optimizer")
# Read by every loss: the optimiser's settings (RMSProp ignores the betas, as in the paper's code) and batch norm in
# whatever sits in D's place.
COMMON_HYPERPARAMETERS = ("lr", "beta1", "beta2", "optimizer", "d_batchnorm")
@dataclass(frozen=True)
class LossSpec:
    name: str
    fn: LossFn | None  # None exactly when D is not a critic: began and vae have their own functions
    description: str  # one line, shown by `gan-bench losses`
    penalty: str | None = None  # name of a penalty in bench.penalties, added to D's loss weighted by gp_lambda
    weight_clip: bool = False  # WGAN: clip D's weights to [-clip, clip] after each D step
    resample_before_g: bool = False  # draw a fresh z for the G step instead of reusing the last D step's
    # G's loss needs D's scores on a real batch, computed by the current D at the G step (relativistic losses compare
    # fakes with reals); the trial loop passes them.
    g_reads_real: bool = False
    discriminator: DiscriminatorKind = "critic"  # what D is: a critic of raw scores, BEGAN's autoencoder, an encoder
    latent: Literal["uniform", "normal"] | None = None  # a latent distribution the loss requires, overriding z_dist
    defaults: Mapping[str, float | int | bool | str] = field(default_factory=dict)  # the authors' defaults
    params: tuple[str, ...] = ()  # a custom loss's own hyperparameters: its keyword arguments with defaults

    @property
    def hyperparameters(self) -> tuple[str, ...]:
        """Every hyperparameter this loss reads: a value given for any other would silently do nothing."""
        if self.discriminator == "none":  # no D: only G's optimiser
            return (*(name for name in COMMON_HYPERPARAMETERS if name != "d_batchnorm"), *self.params)
        names = list(COMMON_HYPERPARAMETERS)
        if self.discriminator != "encoder":  # the VAE updates encoder and decoder together, once per step
            names.append("n_disc")
        if self.discriminator == "critic":
            names.append("r1_gamma")
        if self.penalty:
            names.append("gp_lambda")
        if self.weight_clip:
            names.append("clip")
        if self.discriminator == "autoencoder":
            names += ["began_gamma", "began_lambda_k"]
        return (*names, *self.params)


def _defaults(**values: float | int | bool | str) -> Mapping[str, float | int | bool | str]:
    # Read-only: a caller overriding one run's settings must not change the registry for the next run.
    return MappingProxyType(values)


# The paper's models take the default configuration of compare_gan v1's params.py (wide range): lr, beta1, disc_iters
# (n_disc) and discriminator_batchnorm per model; beta2 is Adam's default 0.999 everywhere (v1 never sets it).
_ADAM = dict(lr=2e-4, beta1=0.5, beta2=0.999, n_disc=1)
_V1_GAN = dict(lr=5e-5, beta1=0.0, beta2=0.999, n_disc=1, d_batchnorm=True)  # params.py lines 111-113

LOSSES: Registry[LossSpec] = Registry("loss", lambda name, fn: custom_loss(name, fn), "package.module:function")  # `gan-bench losses` lists them in this order


def _add(*specs: LossSpec) -> None:
    for spec in specs:
        LOSSES.add(spec.name, spec, spec.description)


_add(
    LossSpec("mm_gan", mm_gan, "minimax GAN: G minimises log(1 - D(G(z)))", defaults=_defaults(**_V1_GAN)),
    LossSpec("ns_gan", ns_gan, "non-saturating GAN: G maximises log D(G(z))", defaults=_defaults(**_V1_GAN)),
    LossSpec("lsgan", lsgan, "least squares on D's sigmoid output, targets 1 and 0 (the paper's LSGAN)",
             defaults=_defaults(lr=2e-4, beta1=0.5, beta2=0.999, n_disc=1, d_batchnorm=True)),  # lines 127-129
    LossSpec("lsgan_raw", lsgan_raw, "least squares on D's raw score, targets 1 and 0 (Mao et al.'s LSGAN)",
             defaults=_defaults(lr=2e-4, beta1=0.5, beta2=0.999, n_disc=1, d_batchnorm=True)),
    LossSpec(
        "wgan",
        wgan,
        "Wasserstein GAN with weight clipping",
        weight_clip=True,
        defaults=_defaults(lr=5e-5, beta1=0.5, beta2=0.999, n_disc=5, d_batchnorm=True, clip=0.01),  # 146-150
    ),
    LossSpec(
        "wgan_gp",
        wgan,
        "Wasserstein GAN with a gradient penalty on real-fake interpolates",
        penalty="wgan_gp",
        resample_before_g=True,  # gans/WGAN_GP.py lines 111-112
        defaults=_defaults(lr=1e-4, beta1=0.5, beta2=0.999, n_disc=5, d_batchnorm=False, gp_lambda=10.0),
    ),
    LossSpec(
        "dragan",
        ns_gan,
        "non-saturating GAN with a gradient penalty around the real data",
        penalty="dragan",
        defaults=_defaults(lr=1e-4, beta1=0.5, beta2=0.999, n_disc=1, d_batchnorm=True, gp_lambda=10.0),
    ),
    LossSpec("hinge", hinge, "hinge loss with margin 1", defaults=_defaults(**_ADAM)),
    LossSpec("kl", kl, "f-GAN estimating KL(real || fake); G maximises E g_f(D(G(z)))",
             defaults=_defaults(**_ADAM)),
    LossSpec("reverse_kl", reverse_kl, "f-GAN estimating KL(fake || real); G maximises E g_f(D(G(z)))",
             defaults=_defaults(**_ADAM)),
    LossSpec("pearson", pearson, "f-GAN estimating Pearson chi^2(real || fake); G maximises E g_f(D(G(z)))",
             defaults=_defaults(**_ADAM)),
    LossSpec("hellinger", hellinger, "f-GAN estimating the squared Hellinger distance; G maximises E g_f(D(G(z)))",
             defaults=_defaults(**_ADAM)),
    LossSpec("js", js, "f-GAN estimating 2 x Jensen-Shannon; G maximises E g_f(D(G(z)))",
             defaults=_defaults(**_ADAM)),
    LossSpec("rsgan", rsgan, "relativistic standard GAN: is a real sample more real than its paired fake?",
             g_reads_real=True, defaults=_defaults(**_ADAM)),
    LossSpec("rasgan", rasgan, "relativistic average standard GAN: scores against the other batch's mean score",
             g_reads_real=True, defaults=_defaults(**_ADAM)),
    LossSpec("ralsgan", ralsgan, "relativistic average least squares: targets +1/-1 against the other batch's mean",
             g_reads_real=True, defaults=_defaults(**_ADAM)),
    LossSpec("rahinge", rahinge, "relativistic average hinge: margin 1 against the other batch's mean score",
             g_reads_real=True, defaults=_defaults(**_ADAM)),
    LossSpec(
        "began",
        None,
        "boundary equilibrium GAN: autoencoder D balanced by a control variable k",
        discriminator="autoencoder",
        defaults=_defaults(lr=1e-4, beta1=0.5, beta2=0.999, n_disc=5, d_batchnorm=False, began_gamma=0.75,
                           began_lambda_k=1e-3),  # params.py lines 231-237
    ),
    # The paper's non-adversarial baseline, listed as a loss so it sits in the same tables. One step is one
    # Adam update of encoder and decoder together, so n_disc, the penalties and r1_gamma do not apply;
    # d_batchnorm puts batch norm in the encoder as in D. The encoder's KL term is reported as d_loss and the
    # decoder's reconstruction term as g_loss.
    LossSpec(
        "vae",
        None,
        "VAE baseline: Gaussian encoder as D, Bernoulli decoder as G; d_loss = KL, g_loss = reconstruction",
        discriminator="encoder",
        latent="normal",  # the prior: decoding z ~ N(0, I) is how a VAE samples
        defaults=_defaults(lr=5e-5, beta1=0.5, beta2=0.999, d_batchnorm=True),  # params.py 63-74, 209-210
    ),
    # No adversarial part: an image-to-image loss made of its terms alone (L1, SSIM, ... regression), the
    # baseline every adversarial combination has to beat. pix2pix's Adam settings (Isola et al. 2017, §4).
    LossSpec("none", None, "no adversarial loss and no D: the terms alone (image-to-image tasks only)",
             discriminator="none", defaults=_defaults(lr=2e-4, beta1=0.5, beta2=0.999)),
)


def users(hyperparameter: str) -> list[str]:
    """The registered losses that read `hyperparameter`."""
    return [name for name, spec in LOSSES.items() if hyperparameter in spec.hyperparameters]


def unused_message(hyperparameter: str, loss: str) -> str:
    """One line: `loss` does not read `hyperparameter`, and which losses do."""
    using = users(hyperparameter)
    return f"loss {loss} does not use {hyperparameter}" + (f"; losses that do: {', '.join(using)}" if using else "")


def _custom_params(name: str, fn: Callable) -> dict[str, float | int | bool | str]:
    """A custom loss's hyperparameters: the keyword arguments after (real, fake), each with a default."""
    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return {}  # a builtin or C function: no introspectable hyperparameters
    params = {}
    for p in parameters[2:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty or not isinstance(p.default, (bool, int, float, str)):
            raise UnknownName(f"custom loss {name!r}: parameter {p.name!r} needs a default of type bool, int, "
                                   "float or str (a loss's hyperparameters are keyword arguments with defaults)")
        if p.name in HYPERPARAMETERS:
            raise UnknownName(f"custom loss {name!r}: parameter {p.name!r} is one of gan-bench's own "
                                   "hyperparameters; rename it")
        params[p.name] = p.default
    return params


def custom_loss(name: str, fn: Any) -> LossSpec:
    """A custom loss `package.module:function`, which LOSSES.get imports and which will run during training (so only
    name code you trust). The function maps (real, fake) raw scores to (d_loss, g_loss) like the built-ins; keyword
    arguments with defaults after those two are its own hyperparameters, which a trial sets and a study may search."""
    if not callable(fn):
        raise UnknownName(f"custom loss {name!r}: {name.partition(':')[2]!r} is not callable")
    params = _custom_params(name, fn)
    return LossSpec(name, fn, f"custom loss {name}", defaults=_defaults(**params), params=tuple(params))


def get(name: str) -> LossSpec:
    """The registered loss `name`, or a custom loss given as `package.module:function` (custom_loss)."""
    return LOSSES.get(name)
