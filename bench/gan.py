"""The unconditional GAN trial: a generator of latents and a discriminator trained with one loss of the registry (and
its terms and penalties), scored on generated samples. Three algorithms, each one step function read top to bottom:
a critic's (every adversarial loss), BEGAN's (an autoencoder D balanced by k) and the VAE baseline's (an encoder and a
decoder updated together).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch import Tensor, nn

from bench import feature_nets, losses, models, penalties, polygon_metrics, terms
from bench.config import TrialConfig, step_updates
from bench.data import Dataset, convex
from bench.kind import KINDS, TrialKind, make_optimizer
from bench.metrics import Scorer

# 256 samples estimate the spread (bench.trial.COLLAPSE_SPREAD) well enough for a threshold far from healthy values,
# for one G forward.
SPREAD_SAMPLES = 256


def sample_latent(n: int, z_dim: int, dist: str, generator: torch.Generator) -> Tensor:
    """z ~ U[−1, 1]^z_dim (the paper's choice) or N(0, I), on the generator's device."""
    if dist == "uniform":
        return torch.rand(n, z_dim, generator=generator, device=generator.device).mul_(2).sub_(1)
    return torch.randn(n, z_dim, generator=generator, device=generator.device)


def save_samples(G: nn.Module, config: TrialConfig, path: Path, n: int = 64) -> None:
    """An 8×8 grid of samples from a fixed latent, so grids from different steps are comparable."""
    device = next(G.parameters()).device
    generator = torch.Generator(device).manual_seed(config.metrics.latent_seed)
    with torch.no_grad():
        images = G(sample_latent(n, config.z_dim, config.z_dist, generator)).float().cpu()
    tmp = path.with_name(f".{path.name}.tmp.png")
    torchvision.utils.save_image(images, tmp, nrow=8, padding=1)
    tmp.replace(path)


@KINDS.register("gan", "unconditional generation: G of latents against D, one loss of the registry")
class GanTrial(TrialKind):
    shown = ("fid", "f1")

    def __init__(self, config: TrialConfig, dataset: Dataset, device: torch.device):
        super().__init__(config, dataset, device)
        self.label = f"{config.loss} on {config.dataset}"
        use_amp = config.amp and device.type == "cuda"
        if config.amp and not use_amp:
            warnings.warn("amp is for CUDA only (bfloat16 autocast is ~15× slower on CPU): training in float32")
        self.amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext
        self.spec = spec = losses.get(config.loss)
        self.penalty = penalties.PENALTIES.get(spec.penalty) if spec.penalty else None
        self.adversarial_params = {name: config.loss_params[name] for name in spec.params}
        self.g_terms = [name for name in config.terms if terms.get(name).acts_on == "g"]
        self.d_terms = [name for name in config.terms if terms.get(name).acts_on == "d"]
        needs = set().union(*(terms.get(name).needs for name in config.terms))
        # D's penultimate features come from the forward pass that gives its scores, and only when a term reads them.
        self.scored: Callable[[nn.Module, Tensor], tuple[Tensor, Tensor | None]] = (
            (lambda net, x: net.scores_and_features(x)) if "features" in needs else (lambda net, x: (net(x), None)))
        self.feature_net = feature_nets.load(config.perceptual_net, dataset, device) if "feature_net" in needs else None
        self.algorithm = {"critic": self.critic_step, "autoencoder": self.began_step, "encoder": self.vae_step}[
            spec.discriminator]
        # The running values stay on the device, so that a step never waits for it (a host sync per step stalls a
        # GPU); the driver reads them at its checks. BEGAN's balance term k is float64, as the Python float it was:
        # the same arithmetic, bit for bit. It is 0 at the start as in v1 (BEGAN.py line 103).
        self.k = torch.zeros((), dtype=torch.float64, device=device)
        self.d_value = torch.full((), math.nan, device=device)
        self.g_value = torch.full((), math.nan, device=device)  # the last G loss; kept by steps without a G update
        # The polygons G is inverted on for recall (metrics.prf): the set's hold-out split, never trained on.
        self.holdout = (convex.holdout(config.dataset, config.image_size, **config.dataset_options)
                        if config.metrics.prf else None)

    @classmethod
    def networks(cls, config: TrialConfig, image_shape: tuple[int, int, int]) -> list[nn.Module]:
        spec = losses.get(config.loss)
        return list(models.build(config.model, image_shape, config.z_dim, spec.discriminator, bool(config.d_batchnorm),
                                 init="pytorch"))

    def build(self) -> None:
        # For the VAE, D is its encoder and G its decoder.
        G, D = models.build(self.config.model, self.dataset.image_shape, self.config.z_dim, self.spec.discriminator,
                            self.config.d_batchnorm, init=self.config.init)
        self.G, self.D = G.to(self.device), D.to(self.device)
        self.opt_g, self.opt_d = make_optimizer(self.G.parameters(), self.config), make_optimizer(self.D.parameters(),
                                                                                                 self.config)

    def begin(self, rng: torch.Generator) -> None:
        self.rng = rng
        self.real = self.dataset.train_on(self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "k": self.k.item(), "g_loss": self.g_value.item()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.k.fill_(state["k"])
        self.g_value.fill_(state["g_loss"])

    def step(self, step: int) -> dict[str, Tensor]:
        return self.algorithm(step)

    def real_batch(self) -> Tensor:
        idx = torch.randint(len(self.real), (self.config.batch_size,), generator=self.rng, device=self.device)
        return self.real[idx].float().div_(255.0)

    def latent(self) -> Tensor:
        return sample_latent(self.config.batch_size, self.config.z_dim, self.config.z_dist, self.rng)

    def terms_context(self, x: Tensor, fake: Tensor, real_scores: Tensor, fake_scores: Tensor,
                      real_features: Tensor | None, fake_features: Tensor | None) -> terms.Context:
        return terms.Context(x, fake, real_scores, fake_scores, self.D, self.rng, real_features, fake_features,
                             self.feature_net)

    def critic_step(self, step: int) -> dict[str, Tensor]:
        """n_disc D updates (one with d_steps), each on a fresh real and fake batch, then G's update when the count
        says: the loss, its terms and its penalties."""
        config, spec, G, D, amp = self.config, self.spec, self.G, self.D, self.amp
        d_updates, update_g = step_updates(config.count, step, config.n_disc)
        D.requires_grad_(True)
        for i in range(d_updates):
            x, z = self.real_batch(), self.latent()
            # The last D step's fake batch is kept, with its graph, for the G step (one G forward per batch), unless
            # the loss draws a fresh z for G (WGAN-GP in v1).
            keep = update_g and i == d_updates - 1 and not spec.resample_before_g
            with torch.set_grad_enabled(keep), amp():
                fake = G(z)
            with amp():
                real_scores, real_features = self.scored(D, x)
                fake_scores, fake_features = self.scored(D, fake.detach())
                d_loss, _ = spec.fn(real_scores, fake_scores, **self.adversarial_params)
                if self.d_terms:
                    d_loss = d_loss + terms.weighted_sum(self.d_terms, config.loss_params, self.terms_context(
                        x, fake.detach(), real_scores, fake_scores, real_features, fake_features))
                if self.penalty is not None:
                    d_loss = d_loss + config.gp_lambda * self.penalty(D, x, fake.detach(), self.rng)
                if config.r1_gamma:
                    d_loss = d_loss + config.r1_gamma / 2 * penalties.r1_penalty(D, x)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            if spec.weight_clip:
                penalties.clip_weights(D, config.clip)

        if update_g:
            D.requires_grad_(False)  # its parameter gradients are not computed for nothing
            if spec.resample_before_g:
                with amp():
                    fake = G(self.latent())
            with amp():
                # A relativistic G loss reads D's scores on real data: the current D's, after its update, on the last
                # D step's batch. Other losses get that step's scores (a custom loss may read them).
                if spec.g_reads_real:
                    with torch.no_grad():
                        real_scores = D(x)
                fake_scores, fake_features = self.scored(D, fake)
                _, g_loss = spec.fn(real_scores.detach(), fake_scores, **self.adversarial_params)
                if self.g_terms:
                    # Feature matching's real features are the last D step's: no second forward of D.
                    g_loss = g_loss + terms.weighted_sum(self.g_terms, config.loss_params, self.terms_context(
                        x, fake, real_scores.detach(), fake_scores,
                        None if real_features is None else real_features.detach(), fake_features))
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
            self.g_value = g_loss.detach()
        self.d_value = d_loss.detach()
        return {"d_loss": self.d_value, "g_loss": self.g_value}

    def began_step(self, step: int) -> dict[str, Tensor]:
        """BEGAN: D is an autoencoder whose "score" is its reconstruction error, real errors pushed down and fake ones
        up by k; after the step, k moves towards the balance began_gamma between them."""
        config, G, D, amp = self.config, self.G, self.D, self.amp
        d_updates, update_g = step_updates(config.count, step, config.n_disc)
        D.requires_grad_(True)
        for i in range(d_updates):
            x, z = self.real_batch(), self.latent()
            keep = update_g and i == d_updates - 1  # the last fake batch, with its graph, is G's
            with torch.set_grad_enabled(keep), amp():
                fake = G(z)
            with amp():
                real_error = losses.reconstruction_error(x, D(x))
                fake_error = losses.reconstruction_error(fake.detach(), D(fake.detach()))
                d_loss, _ = losses.began_losses(real_error, fake_error, self.k.float())
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

        if update_g:
            D.requires_grad_(False)
            with amp():
                _, g_loss = losses.began_losses(real_error.detach(), losses.reconstruction_error(fake, D(fake)),
                                                self.k.float())
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
            self.g_value = g_loss.detach()
        # v1 updates k after every step, from errors the updated networks make on the step's own batch and z, in
        # training mode (BEGAN.py lines 162-169).
        with torch.no_grad(), amp():
            real_error_now = losses.reconstruction_error(x, D(x)).double()
            fake_now = G(z)
            fake_error_now = losses.reconstruction_error(fake_now, D(fake_now)).double()
            self.k = losses.began_update_k(self.k, real_error_now, fake_error_now, config.began_gamma,
                                           config.began_lambda_k)
        self.d_value = d_loss.detach()
        return {"d_loss": self.d_value, "g_loss": self.g_value, "k": self.k}

    def vae_step(self, step: int) -> dict[str, Tensor]:
        """The VAE: one update of encoder (D) and decoder (G) on one real batch. Adam is per parameter, so D's and G's
        optimisers stepped together are one Adam over both; rows get d_loss = the KL term, g_loss = the
        reconstruction term."""
        x = self.real_batch()
        with self.amp():
            mu, sigma = self.D(x)
            # Reparameterisation: z ~ q(z|x) as a differentiable function of (mu, sigma).
            z = mu + sigma * torch.randn(mu.shape, generator=self.rng, device=self.device)
            reconstruction = self.G(z)
        # Outside autocast and in float32: under amp the outputs are bfloat16.
        g_loss, d_loss = losses.vae_loss(x, reconstruction.float(), mu.float(), sigma.float())
        self.opt_d.zero_grad(set_to_none=True)
        self.opt_g.zero_grad(set_to_none=True)
        (g_loss + d_loss).backward()
        self.opt_d.step()
        self.opt_g.step()
        self.g_value, self.d_value = g_loss.detach(), d_loss.detach()
        return {"d_loss": self.d_value, "g_loss": self.g_value}

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.G(sample_latent(n, self.config.z_dim, self.config.z_dist, generator))

    def spread(self) -> float:
        """The mean over pixels of the per-pixel std across SPREAD_SAMPLES samples (G in eval mode) from the evaluation
        latent seed: a generator of its own, so training's random stream is untouched."""
        generator = torch.Generator(self.device).manual_seed(self.config.metrics.latent_seed)
        with torch.no_grad():
            return self.sample(SPREAD_SAMPLES, generator).float().std(dim=0).mean().item()

    def polygon_scores(self, images: Tensor) -> dict[str, float]:
        """Precision, recall and F1 of the samples (uint8) and of G on the polygon manifold (bench.polygon_metrics),
        with G in eval mode as it is scored; the inversion's latents come from a generator of their own, so training's
        random stream is untouched, and only z is optimised."""
        protocol = self.config.metrics.prf_protocol()
        targets = self.holdout[:protocol.inversions].to(self.device).float().div_(255.0)
        start = sample_latent(len(targets) * protocol.restarts, self.config.z_dim, self.config.z_dist,
                              torch.Generator(self.device).manual_seed(protocol.seed))
        bounds = (-1.0, 1.0) if self.config.z_dist == "uniform" else None
        self.G.requires_grad_(False)
        try:
            with torch.enable_grad():
                reach = polygon_metrics.invert(self.G, start, targets, protocol.steps, protocol.lr, bounds)
        finally:
            self.G.requires_grad_(True)
        samples = images[:, 0].float().div(255.0).cpu().numpy()
        return polygon_metrics.scores(samples, convex.SHAPES[self.config.dataset], reach.cpu(), protocol)

    def evaluate(self, scorer: Scorer, samples: Path) -> dict[str, Any]:
        self.G.eval()
        # The polygon scores read the very samples the scorer scores: the same fixed latents, G in eval mode.
        polygons = self.polygon_scores(scorer.sample_images(self.sample)) if self.holdout is not None else {}
        row = {**scorer.score(self.sample), **polygons, "spread": self.spread(), "d_loss": self.d_value.item(),
               "g_loss": self.g_value.item()}
        save_samples(self.G, self.config, samples)
        self.G.train()
        return row
