"""One image-to-image trial: a U-Net G learns a task's map from sources to targets (bench.tasks), trained with an
adversarial loss from the registry (or none) plus weighted terms (bench.terms), and is scored on the test split's
true pairs.

- Paired task (pix2pix, Isola et al. 2017): D is a PatchGAN conditioned on the source, scoring (source, image).
- Unpaired task: sources and D's real targets come from disjoint halves of the training split (tasks.sampler), so
  no true pair is ever seen. With a term that needs the inverse map (cycle), CycleGAN (Zhu et al. 2017): G: A → B
  and F: B → A, each with its own unconditional PatchGAN. Otherwise one G and one D, as CUT (Park et al. 2020), whose
  PatchNCE term trains a projection head with G.
Metrics at each evaluation, on the first `metrics.num_samples` test pairs (the same sources every time): PSNR and
SSIM (torchmetrics, bench.image_metrics), the perceptual distance on the fixed feature network (`perceptual_net`),
and FID (with KID / IS as configured) of the outputs against the test targets through torch-fidelity.

The driver loop (bench.trial) does what every trial does; this kind gives it the networks, one step and one
evaluation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from bench import BenchError, feature_nets, image_metrics, losses, penalties, tasks, terms
from bench.config import TrialConfig, step_updates
from bench.data import Dataset
from bench.kind import KINDS, TrialKind, make_optimizer
from bench.metrics import Scorer, to_uint8
from bench.models import translation as nets
from bench.models.common import init_compare_gan, init_pytorch

GRID_PAIRS = 8  # test pairs in samples.png: a row of sources, one of outputs, one of targets


class Conditioned(nn.Module):
    """A pix2pix D seen as a critic of images alone: it scores (source, image) pairs for one batch of sources, so the
    losses, penalties and terms written for unconditional critics apply unchanged (the penalties differentiate with
    respect to the image only)."""

    def __init__(self, critic: nets.PatchGAN, source: Tensor):
        super().__init__()
        self.critic, self.source = critic, source

    def forward(self, images: Tensor) -> Tensor:
        return self.critic(torch.cat([self.source, images], dim=1))

    def scores_and_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.critic.scores_and_features(torch.cat([self.source, images], dim=1))


def save_grid(sources: Tensor, outputs: Tensor, targets: Tensor, path: Path) -> None:
    """Rows: sources, outputs, targets, GRID_PAIRS test pairs wide (grey sources shown as grey RGB beside colour)."""
    c = targets.shape[1]
    sources = sources.expand(-1, c, -1, -1) if sources.shape[1] != c else sources
    images = torch.cat([sources[:GRID_PAIRS], outputs[:GRID_PAIRS], targets[:GRID_PAIRS]]).float().cpu()
    tmp = path.with_name(f".{path.name}.tmp.png")
    torchvision.utils.save_image(images, tmp, nrow=min(GRID_PAIRS, len(targets)), padding=1)
    tmp.replace(path)


def networks(config: TrialConfig, target_c: int, side: int) -> nn.ModuleDict:
    """The trial's networks, by PyTorch's layer defaults (the trial initialises them as `init` says): the U-Net G; the
    PatchGAN D of an adversarial loss; CycleGAN's inverse F (and its D_A) when a term needs the inverse; the PatchNCE
    head when a term needs it."""
    task, needs = config.task, set().union(*(terms.get(name).needs for name in config.terms))
    adversarial = losses.get(config.loss).discriminator == "critic"
    source_c = task.source_channels(target_c)
    models = nn.ModuleDict({"G": nets.UNet(source_c, target_c, side)})
    if adversarial:  # pix2pix's D sees the source beside the image; an unpaired task's sees the image alone
        models["D"] = nets.PatchGAN((0 if task.unpaired else source_c) + target_c, side, config.d_batchnorm)
    if "inverse" in needs:
        models["F"] = nets.UNet(target_c, source_c, side)
        if adversarial:
            models["D_A"] = nets.PatchGAN(source_c, side, config.d_batchnorm)
    if "nce_head" in needs:
        models["head"] = nets.PatchNCEHead(models["G"].encoder_channels)
    return models


@KINDS.register("translation", "image-to-image: a U-Net G maps a task's sources to targets (pix2pix, CycleGAN, CUT)")
class TranslationTrial(TrialKind):
    """A step is counted as `count` says (n_disc D updates then one G update, or one D update with G following every
    n_disc-th), each D update on a fresh batch and G on the last one; without a D, one G update on a fresh batch."""

    shown = ("psnr", "ssim", "fid")

    def __init__(self, config: TrialConfig, dataset: Dataset, device: torch.device):
        super().__init__(config, dataset, device)
        self.task = config.task
        self.label = f"{config.loss} on {self.task.label} {config.dataset}"
        self.n_eval = config.metrics.num_samples
        if self.n_eval > len(dataset.test):
            raise BenchError(f"metrics.num_samples: {self.n_eval} test outputs asked for, but the test split of "
                             f"{dataset.name} has {len(dataset.test)} pairs")
        self.spec = spec = losses.get(config.loss)
        self.adversarial = spec.discriminator == "critic"
        self.penalty = penalties.PENALTIES.get(spec.penalty) if spec.penalty else None
        self.adversarial_params = {name: config.loss_params[name] for name in spec.params}
        self.g_terms = [name for name in config.terms if terms.get(name).acts_on == "g"]
        self.d_terms = [name for name in config.terms if terms.get(name).acts_on == "d"]
        self.needs = set().union(*(terms.get(name).needs for name in config.terms))
        self.cyclegan = "inverse" in self.needs
        # The perceptual metric reads the fixed network whatever the terms are, so every trial loads it.
        self.feature_net = feature_nets.load(config.perceptual_net, dataset, device)
        # On the device, read at the driver's checks and at evaluations: a step never waits for the device.
        self.g_value = torch.full((), math.nan, device=device)
        self.d_value = torch.full((), math.nan, device=device)

    @classmethod
    def networks(cls, config: TrialConfig, image_shape: tuple[int, int, int]) -> list[nn.Module]:
        return list(networks(config, image_shape[0], image_shape[1]).values())

    def build(self) -> None:
        config = self.config
        initialise = {"model": nets.init_weights, "compare_gan": init_compare_gan, "pytorch": init_pytorch}[config.init]
        models = networks(config, self.dataset.image_shape[0], self.dataset.image_shape[1])
        for net in models.values():
            initialise(net)
        self.models = models.to(self.device)
        self.G, self.F, self.D, self.D_A, self.head = (models[k] if k in models else None
                                                      for k in ("G", "F", "D", "D_A", "head"))
        generators = [m for k, m in models.items() if k in ("G", "F", "head")]
        self.critics = [m for k, m in models.items() if k in ("D", "D_A")]
        self.opt_g = make_optimizer((p for m in generators for p in m.parameters()), config)
        self.opt_d = make_optimizer((p for m in self.critics for p in m.parameters()), config) if self.critics else None

    def begin(self, rng: torch.Generator) -> None:
        self.rng = rng
        self.train = self.dataset.train_on(self.device)
        self.sampler = tasks.sampler(self.task, len(self.train), rng)
        self.test_targets = self.dataset.test[:self.n_eval].float().div(255.0)
        self.test_sources = tasks.test_pairs(self.task, self.test_targets, self.config.metrics.latent_seed)

    def state_dict(self) -> dict[str, Any]:
        return {"models": self.models.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict() if self.opt_d else None, "g_loss": self.g_value.item(),
                "d_loss": self.d_value.item()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.models.load_state_dict(state["models"])
        self.opt_g.load_state_dict(state["opt_g"])
        if self.opt_d is not None:
            self.opt_d.load_state_dict(state["opt_d"])
        self.g_value.fill_(state["g_loss"])
        self.d_value.fill_(state["d_loss"])

    def batch(self) -> tuple[Tensor, Tensor, Tensor | None]:
        """(sources, D's real targets, the sources' true targets or None): a paired task's real batch is its targets;
        an unpaired task's sources come from half A of the split and its real targets from half B."""
        source_idx, target_idx = self.sampler.draw(self.config.batch_size)
        source = self.task.make_sources(self.train[source_idx].float().div_(255.0), self.rng)
        real = self.train[target_idx].float().div_(255.0)
        return source, real, None if self.task.unpaired else real

    def critic_of(self, net: nets.PatchGAN, source: Tensor) -> nn.Module:
        return net if self.task.unpaired else Conditioned(net, source)

    def scored(self, net: nn.Module, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """D's scores, and its penultimate features from the same forward when a term reads them."""
        return net.scores_and_features(x) if "features" in self.needs else (net(x), None)

    def d_objective(self, critic: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """One critic's loss on a real and a (detached) fake batch, its terms and penalties included, and its scores of
        the real batch (detached), which G's step reuses."""
        config = self.config
        real_scores, real_features = self.scored(critic, real)
        fake_scores, fake_features = self.scored(critic, fake)
        loss, _ = self.spec.fn(real_scores, fake_scores, **self.adversarial_params)
        if self.d_terms:
            loss = loss + terms.weighted_sum(self.d_terms, config.loss_params, terms.Context(
                real, fake, real_scores, fake_scores, critic, self.rng, real_features, fake_features, self.feature_net))
        if self.penalty is not None:
            loss = loss + config.gp_lambda * self.penalty(critic, real, fake, self.rng)
        if config.r1_gamma:
            loss = loss + config.r1_gamma / 2 * penalties.r1_penalty(critic, real)
        return loss, real_scores.detach()

    def step(self, step: int) -> dict[str, Tensor]:
        """The D updates (D and, in CycleGAN, D_A), each on a fresh batch with G's outputs detached, then G's update on
        the last batch. Steps count as the unconditional trial's do (`count`); without a D every step is one G
        update."""
        G, F, D, D_A = self.G, self.F, self.D, self.D_A
        d_updates, update_g = step_updates(self.config.count, step, self.config.n_disc) if self.critics else (0, True)
        real_scores = source_scores = None
        if not self.critics:
            source, real, target = self.batch()
        for _ in range(d_updates):
            source, real, target = self.batch()
            with torch.no_grad():
                fake = G(source)
                inverse_fake = F(real) if self.cyclegan else None
            for critic in self.critics:
                critic.requires_grad_(True)
            d_loss, real_scores = self.d_objective(self.critic_of(D, source), real, fake)
            if D_A is not None:  # CycleGAN's second critic: real sources against F's outputs
                d_loss_a, source_scores = self.d_objective(D_A, source, inverse_fake)
                d_loss = d_loss + d_loss_a
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            if self.spec.weight_clip:
                for net in self.critics:
                    penalties.clip_weights(net, self.config.clip)
            self.d_value = d_loss.detach()
        if update_g:
            self.g_value = self.g_step(source, real, target, real_scores, source_scores)
        return {"g_loss": self.g_value, **({"d_loss": self.d_value} if self.critics else {})}

    def g_step(self, source: Tensor, real: Tensor, target: Tensor | None, real_scores: Tensor | None,
               source_scores: Tensor | None) -> Tensor:
        """One G update (and F's, in CycleGAN) on the last D step's batch, with the critics frozen. `real_scores` and
        `source_scores` are that step's critics' scores of its real batches, which G's loss gets as in the unconditional
        trial; a relativistic loss and feature matching read the updated critics' instead: one forward without a
        graph."""
        spec, G, F, D, D_A = self.spec, self.G, self.F, self.D, self.D_A
        for critic in self.critics:
            critic.requires_grad_(False)
        fake = G(source)
        inverse_fake = F(real) if self.cyclegan else None
        g_loss, fake_scores, real_features, fake_features, critic = 0.0, None, None, None, None
        if self.adversarial:
            critic = self.critic_of(D, source)
            if spec.g_reads_real or "features" in self.needs:
                with torch.no_grad():
                    real_scores, real_features = self.scored(critic, real)
            fake_scores, fake_features = self.scored(critic, fake)
            g_loss = spec.fn(real_scores, fake_scores, **self.adversarial_params)[1]
            if D_A is not None:
                if spec.g_reads_real:
                    with torch.no_grad():
                        source_scores = D_A(source)
                g_loss = g_loss + spec.fn(source_scores, D_A(inverse_fake), **self.adversarial_params)[1]
        if self.g_terms:
            g_loss = g_loss + terms.weighted_sum(self.g_terms, self.config.loss_params, terms.Context(
                real, fake, real_scores, fake_scores, critic, self.rng, real_features, fake_features, self.feature_net,
                target=target, source=source, generator=G, inverse=F, inverse_fake=inverse_fake, nce_head=self.head))
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        return g_loss.detach()

    def evaluate(self, scorer: Scorer, samples: Path) -> dict[str, Any]:
        """The test pairs' metrics."""
        self.models.eval()
        with torch.no_grad():
            outputs = torch.cat([self.G(s.to(self.device)).float().cpu() for s in self.test_sources.split(250)])
            perceptual = torch.cat([
                image_metrics.perceptual_distance(self.feature_net, o.to(self.device), t.to(self.device)).cpu()
                for o, t in zip(outputs.split(250), self.test_targets.split(250))])
        row = {"psnr": image_metrics.psnr(outputs, self.test_targets).mean().item(),
               "ssim": image_metrics.ssim(outputs, self.test_targets).mean().item(),
               "perceptual": perceptual.mean().item(), **scorer.score_images(to_uint8(outputs)),
               # Collapse: outputs that no longer depend on their source (the unconditional trial's spread).
               "spread": outputs.std(dim=0).mean().item(), "d_loss": self.d_value.item(),
               "g_loss": self.g_value.item()}
        save_grid(self.test_sources, outputs, self.test_targets, samples)
        self.models.train()
        return row
