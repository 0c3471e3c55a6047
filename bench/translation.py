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

The loop mirrors bench.trial's (same checkpoints, statuses, listener and result files); the two share what is
truly shared and keep their own loops readable.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch import Tensor, nn
from tqdm import tqdm

from bench import BenchError, data, feature_nets, image_metrics, losses, penalties, tasks, terms
from bench.io import atomic_torch_save, atomic_write_json
from bench.metrics import Scorer, to_uint8
from bench.models import translation as nets
from bench.models.common import init_compare_gan, init_pytorch
from bench.config import TrialConfig, step_updates
from bench.device import resolve_device, versions
from bench.trial import TrialResult, collapsed, listener, make_optimizer, read_checkpoint, write_result

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


def run_translation_trial(config: TrialConfig, out_dir: Path, progress: bool = False,
                          on_evaluation: Callable[[int, dict[str, Any]], None] | None = None) -> TrialResult:
    """Trains and scores one image-to-image configuration; resumes from `out_dir/checkpoint.pt` as run_trial does,
    with the same contract for `on_evaluation` and the same result files. A step is counted as `count` says (n_disc D
    updates then one G update, or one D update with G following every n_disc-th), each D update on a fresh batch and
    G on the last one; without a D, one G update on a fresh batch."""
    config = config.resolved()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    task = config.task
    dataset = data.load(config.dataset, config.image_size, **config.dataset_options)
    n_eval = config.metrics.num_samples
    if n_eval > len(dataset.test):
        raise BenchError(f"metrics.num_samples: {n_eval} test outputs asked for, but the test split of "
                         f"{dataset.name} has {len(dataset.test)} pairs")
    spec = losses.get(config.loss)
    adversarial = spec.discriminator == "critic"
    penalty = penalties.get(spec.penalty) if spec.penalty else None
    adversarial_params = {name: config.loss_params[name] for name in spec.params}
    g_terms = [name for name in config.terms if terms.get(name).acts_on == "g"]
    d_terms = [name for name in config.terms if terms.get(name).acts_on == "d"]
    needs = set().union(*(terms.get(name).needs for name in config.terms))
    cyclegan = "inverse" in needs
    scored = (lambda net, x: net.scores_and_features(x)) if "features" in needs else (lambda net, x: (net(x), None))
    # The perceptual metric reads the fixed network whatever the terms are, so every trial loads it.
    feature_net = feature_nets.load(config.perceptual_net, dataset, device)

    torch.manual_seed(config.seed)  # model initialisation
    initialise = {"model": nets.init_weights, "compare_gan": init_compare_gan, "pytorch": init_pytorch}[config.init]
    models = networks(config, dataset.image_shape[0], dataset.image_shape[1])
    for net in models.values():
        initialise(net)
    models = models.to(device)
    G, F, D, D_A, head = (models[k] if k in models else None for k in ("G", "F", "D", "D_A", "head"))
    generators = [m for k, m in models.items() if k in ("G", "F", "head")]
    critics = [m for k, m in models.items() if k in ("D", "D_A")]
    opt_g = make_optimizer((p for m in generators for p in m.parameters()), config)
    opt_d = make_optimizer((p for m in critics for p in m.parameters()), config) if critics else None
    scorer = Scorer(config.metrics, dataset, device)
    # Only now, with everything that can reject the config behind us, does the trial write anything.
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"config": config.model_dump(mode="json"), "device": str(device), "threads": torch.get_num_threads(),
              "versions": versions(), "protocol": scorer.protocol}
    atomic_write_json(out_dir / "config.json", record)

    rng = torch.Generator(device).manual_seed(config.seed)  # every batch index, mask, noise and patch draw
    train = dataset.train.to(device)
    sampler = tasks.sampler(task, len(train), rng)
    test_targets = dataset.test[:n_eval].float().div(255.0)
    test_sources = tasks.test_pairs(task, test_targets, config.metrics.latent_seed)
    g_value, d_value = math.nan, math.nan
    start, rows, train_seconds, eval_seconds, status = 0, [], 0.0, 0.0, "completed"
    checkpoint_path = out_dir / "checkpoint.pt"
    state = read_checkpoint(checkpoint_path, record["config"], device)
    if state is not None:
        models.load_state_dict(state["models"])
        opt_g.load_state_dict(state["opt_g"])
        if opt_d is not None:
            opt_d.load_state_dict(state["opt_d"])
        rng.set_state(state["rng"].cpu() if device.type == "cpu" else state["rng"])
        start, rows, g_value, d_value = state["step"], state["rows"], state["g_loss"], state["d_loss"]
        train_seconds, eval_seconds, status = state["train_seconds"], state["eval_seconds"], state["stopped"] or status

    def batch() -> tuple[Tensor, Tensor, Tensor | None]:
        """(sources, D's real targets, the sources' true targets or None): a paired task's real batch is its targets;
        an unpaired task's sources come from half A of the split and its real targets from half B."""
        source_idx, target_idx = sampler.draw(config.batch_size)
        source = task.make_sources(train[source_idx].float().div_(255.0), rng)
        real = train[target_idx].float().div_(255.0)
        return source, real, None if task.unpaired else real

    def critic_of(net: nets.PatchGAN, source: Tensor) -> nn.Module:
        return net if task.unpaired else Conditioned(net, source)

    def d_objective(critic: nn.Module, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor]:
        """One critic's loss on a real and a (detached) fake batch, its terms and penalties included, and its scores of
        the real batch (detached), which G's step reuses."""
        real_scores, real_features = scored(critic, real)
        fake_scores, fake_features = scored(critic, fake)
        loss, _ = spec.fn(real_scores, fake_scores, **adversarial_params)
        if d_terms:
            loss = loss + terms.weighted_sum(d_terms, config.loss_params, terms.Context(
                real, fake, real_scores, fake_scores, critic, rng, real_features, fake_features, feature_net))
        if penalty is not None:
            loss = loss + config.gp_lambda * penalty(critic, real, fake, rng)
        if config.r1_gamma:
            loss = loss + config.r1_gamma / 2 * penalties.r1_penalty(critic, real)
        return loss, real_scores.detach()

    def save_checkpoint(step: int) -> None:
        atomic_torch_save({"config": record["config"], "models": models.state_dict(), "opt_g": opt_g.state_dict(),
                           "opt_d": opt_d.state_dict() if opt_d else None, "rng": rng.get_state(), "step": step,
                           "rows": rows, "g_loss": g_value, "d_loss": d_value, "train_seconds": train_seconds,
                           "eval_seconds": eval_seconds, "stopped": None if status == "completed" else status},
                          checkpoint_path)

    def evaluate(step: int) -> dict[str, Any]:
        """The test pairs' metrics; writes samples.png."""
        models.eval()
        with torch.no_grad():
            outputs = torch.cat([G(s.to(device)).float().cpu() for s in test_sources.split(250)])
            perceptual = torch.cat([image_metrics.perceptual_distance(feature_net, o.to(device), t.to(device)).cpu()
                                    for o, t in zip(outputs.split(250), test_targets.split(250))])
        row = {"step": step, "psnr": image_metrics.psnr(outputs, test_targets).mean().item(),
               "ssim": image_metrics.ssim(outputs, test_targets).mean().item(),
               "perceptual": perceptual.mean().item(), **scorer.score_images(to_uint8(outputs)),
               # Collapse: outputs that no longer depend on their source (the unconditional trial's spread).
               "spread": outputs.std(dim=0).mean().item(), "d_loss": d_value, "g_loss": g_value}
        save_grid(test_sources, outputs, test_targets, out_dir / "samples.png")
        models.train()
        return row

    def g_step(source: Tensor, real: Tensor, target: Tensor | None, real_scores: Tensor | None,
               source_scores: Tensor | None) -> float:
        """One G update (and F's, in CycleGAN) on the last D step's batch, with the critics frozen. `real_scores` and
        `source_scores` are that step's critics' scores of its real batches, which G's loss gets as in the unconditional
        trial; a relativistic loss and feature matching read the updated critics' instead: one forward without a
        graph."""
        for critic in critics:
            critic.requires_grad_(False)
        fake = G(source)
        inverse_fake = F(real) if cyclegan else None
        g_loss, fake_scores, real_features, fake_features, critic = 0.0, None, None, None, None
        if adversarial:
            critic = critic_of(D, source)
            if spec.g_reads_real or "features" in needs:
                with torch.no_grad():
                    real_scores, real_features = scored(critic, real)
            fake_scores, fake_features = scored(critic, fake)
            g_loss = spec.fn(real_scores, fake_scores, **adversarial_params)[1]
            if D_A is not None:
                if spec.g_reads_real:
                    with torch.no_grad():
                        source_scores = D_A(source)
                g_loss = g_loss + spec.fn(source_scores, D_A(inverse_fake), **adversarial_params)[1]
        if g_terms:
            g_loss = g_loss + terms.weighted_sum(g_terms, config.loss_params, terms.Context(
                real, fake, real_scores, fake_scores, critic, rng, real_features, fake_features, feature_net,
                target=target, source=source, generator=G, inverse=F, inverse_fake=inverse_fake, nce_head=head))
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        return g_loss.item()

    pruned = listener(on_evaluation)
    for row in rows:  # restored from the checkpoint: the listener has not seen them
        if pruned(row["step"], row):
            if status == "completed":
                status = "pruned"
                save_checkpoint(start)
            break
    end, steps_done = (config.steps if status == "completed" else start), start
    eval_steps = [s for s in config.eval_steps if s > start]
    bar = tqdm(total=config.steps, initial=start, disable=not progress, unit="step", dynamic_ncols=True,
               desc=f"{config.loss} on {task.label} {config.dataset}")
    tick = time.perf_counter()
    for step in range(start + 1, end + 1):
        # Steps count as the unconditional trial's do (`count`); without a D every step is one G update.
        d_updates, update_g = step_updates(config.count, step, config.n_disc) if critics else (0, True)
        real_scores = source_scores = None
        if not critics:
            source, real, target = batch()
        for _ in range(d_updates):
            source, real, target = batch()
            with torch.no_grad():
                fake = G(source)
                inverse_fake = F(real) if cyclegan else None
            for critic in critics:
                critic.requires_grad_(True)
            d_loss, real_scores = d_objective(critic_of(D, source), real, fake)
            if D_A is not None:  # CycleGAN's second critic: real sources against F's outputs
                d_loss_a, source_scores = d_objective(D_A, source, inverse_fake)
                d_loss = d_loss + d_loss_a
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            if spec.weight_clip:
                for net in critics:
                    penalties.clip_weights(net, config.clip)
            d_value = d_loss.item()

        if update_g:
            g_value = g_step(source, real, target, real_scores, source_scores)
        steps_done = step
        if not (math.isfinite(g_value) and (not critics or math.isfinite(d_value))):
            status = "diverged"
            bar.set_postfix_str(f"diverged at step {step}")
            break
        bar.update()
        if eval_steps and step == eval_steps[0]:
            eval_steps.pop(0)
            train_seconds += time.perf_counter() - tick
            tick = time.perf_counter()
            row = evaluate(step)
            eval_seconds += time.perf_counter() - tick
            rows.append({**row, "train_seconds": round(train_seconds, 3)})
            bar.set_postfix(psnr=f"{row['psnr']:.3g}", ssim=f"{row['ssim']:.3g}", fid=f"{row['fid']:.3g}")
            if collapsed(row["spread"], d_value):
                status = "collapsed"
                bar.set_postfix_str(f"collapsed at step {step}")
            save_checkpoint(step)
            if pruned(step, rows[-1]) and status == "completed":
                status = "pruned"
                save_checkpoint(step)
            tick = time.perf_counter()
            if status != "completed":
                break
    train_seconds += time.perf_counter() - tick
    bar.close()
    return write_result(out_dir, record, scorer, status=status, rows=rows, steps_done=steps_done,
                        train_seconds=train_seconds, eval_seconds=eval_seconds)
