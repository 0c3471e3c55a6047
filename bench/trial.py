"""One trial: train a generator and a discriminator with one loss for a step budget, score it at the
evaluation steps, and write everything needed to trust (and resume) the result into one folder.

A trial is a pure function of its resolved config (which includes the seed) on a given device.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import torch
import torchvision
from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from bench import data, feature_nets, losses, models, penalties, terms
from bench.io import atomic_torch_save, atomic_write_json
from bench.config import TrialConfig, step_updates
from bench.device import resolve_device, versions
from bench.metrics import Scorer

class TrialResult(BaseModel):
    # completed: trained to the end. Stopped early: diverged (a non-finite loss), collapsed (see COLLAPSE_SPREAD and
    # COLLAPSE_D_LOSS), pruned (the caller's on_evaluation asked to stop). Every evaluation before the stop stands.
    status: Literal["completed", "diverged", "collapsed", "pruned"]
    extractor: str
    rows: list[dict[str, Any]]  # one per evaluation: step, fid, kid, ... , spread, d_loss, g_loss, seconds
    protocol: dict[str, Any]  # how the scores were made (bench.metrics.Scorer.protocol): only equal ones compare
    steps_done: int
    train_seconds: float
    eval_seconds: float

    @property
    def best_fid(self) -> float | None:
        fids = [row["fid"] for row in self.rows]
        return min(fids) if fids else None

    @property
    def steps_per_second(self) -> float:
        return self.steps_done / self.train_seconds if self.train_seconds else 0.0


# A run has collapsed when, at an evaluation, its samples no longer vary or its discriminator has run away while its
# losses are still finite (so the divergence check does not stop it), and training it further only spends budget.
# Spread: the mean over pixels of the per-pixel std across SPREAD_SAMPLES samples (G in eval mode, as scored) from the
# evaluation latent seed, on [0, 1] pixels, before the scorer's rounding to uint8 (which would make both cases below
# exactly 0). A generator that ignores z or whose sigmoid saturates spreads by < 1e-8. A healthy one can spread far
# less than one grey level (1/255 ≈ 3.9e-3) early on: an untrained InfoGAN or DCGAN generator in eval mode, its batch
# norm running statistics still at their initial values (compare_gan's momentum 0.001 moves them over thousands of
# steps), spreads by 2–6e-4 (measured at 16–64 px), so a threshold of 1e-3 would stop healthy runs; 1e-5 is 20× below.
COLLAPSE_SPREAD = 1e-5
# |d_loss| above this: the built-in losses of a healthy run stay within ±1e3 (the sigmoid losses are O(1), WGAN
# critics with clipping or a gradient penalty O(10–100)), while a runaway critic keeps growing (a WGAN critic at
# −1.7e12 whose FID no longer moves) for as long as float32 stays finite.
COLLAPSE_D_LOSS = 1e6


def collapsed(spread: float, d_loss: float) -> bool:
    """Whether a run has collapsed at an evaluation (see COLLAPSE_SPREAD and COLLAPSE_D_LOSS); a trial without a D
    passes d_loss NaN, which never counts as run away."""
    return spread < COLLAPSE_SPREAD or abs(d_loss) > COLLAPSE_D_LOSS


# 256 samples estimate the spread well enough for a threshold this far from healthy values, for one G forward.
SPREAD_SAMPLES = 256






def sample_latent(n: int, z_dim: int, dist: str, generator: torch.Generator) -> torch.Tensor:
    """z ~ U[−1, 1]^z_dim (the paper's choice) or N(0, I), on the generator's device."""
    if dist == "uniform":
        return torch.rand(n, z_dim, generator=generator, device=generator.device).mul_(2).sub_(1)
    return torch.randn(n, z_dim, generator=generator, device=generator.device)








def disk_bytes(config: TrialConfig) -> int:
    """About how many bytes a trial's folder holds when it ends: checkpoint.pt (its networks' weights and buffers, and
    the optimisers' state: Adam two tensors per weight, RMSProp one), samples.png (an 8×8 grid, at worst uncompressed)
    and its JSON files and evaluation rows. While a checkpoint is rewritten, its new copy takes as much again."""
    config = config.resolved()
    channels, side = data.channels(config.dataset), config.image_size
    with torch.random.fork_rng():  # building draws initial weights: the caller's random stream is left as it was
        if config.task is not None:
            from bench import translation

            networks = list(translation.networks(config, channels, side).values())
        else:
            spec = losses.get(config.loss)
            networks = list(models.build(config.model, (channels, side, side), config.z_dim, spec.discriminator,
                                         bool(config.d_batchnorm), init="pytorch"))
    weights = sum(p.numel() * p.element_size() for net in networks for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for net in networks for b in net.buffers())
    optimiser_state = 2 if config.optimizer == "adam" else 1
    grid = 64 * max(channels, 3) * (side + 2) ** 2
    return weights * (1 + optimiser_state) + buffers + grid + 2_000 * len(config.eval_steps) + 50_000


def make_optimizer(params: Iterable[torch.nn.Parameter], config: TrialConfig) -> torch.optim.Optimizer:
    """Adam (every model of the paper), or RMSProp as TensorFlow 1 had it for the paper's WGAN experiment
    (gans/WGAN.py lines 45-53: tf.train.RMSPropOptimizer(lr), whose decay is 0.9, epsilon 1e-10 and mean square
    starts at 1, where PyTorch's starts at 0 and would make the first steps ~3× the learning rate)."""
    params = list(params)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=(config.beta1, config.beta2))
    optimizer = torch.optim.RMSprop(params, lr=config.lr, alpha=0.9, eps=1e-10)
    for p in params:
        optimizer.state[p] = {"step": torch.zeros(()), "square_avg": torch.ones_like(p)}
    return optimizer


def run_trial(config: TrialConfig, out_dir: Path, progress: bool = False,
              on_evaluation: Callable[[int, dict[str, Any]], None] | None = None) -> TrialResult:
    """Trains and scores one configuration; resumes from `out_dir/checkpoint.pt` if the same config left one.

    `on_evaluation(step, row)` is called after each evaluation's row is recorded and its checkpoint written; when
    resuming, first for every row restored from the checkpoint, in order, so that a listener that did not see the
    interrupted run (a requeued Optuna trial is a fresh one) gets the whole curve, each step once. If it raises
    optuna.TrialPruned, training stops there: the evaluations so far stand, the checkpoint records the stop and the
    result (returned, not raised, so the caller keeps the rows) and result.json say `pruned`. A run that stopped
    (collapsed or pruned) stays stopped when run again into the same folder.
    """
    if config.task is not None:  # an image-to-image trial: a loop of its own
        from bench import translation

        return translation.run_translation_trial(config, out_dir, progress, on_evaluation)
    config = config.resolved()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    use_amp = config.amp and device.type == "cuda"
    if config.amp and not use_amp:
        warnings.warn("amp is for CUDA only (bfloat16 autocast is ~15× slower on CPU): training in float32")
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if use_amp else contextlib.nullcontext

    dataset = data.load(config.dataset, config.image_size, **config.dataset_options)
    spec = losses.get(config.loss)
    penalty = penalties.get(spec.penalty) if spec.penalty else None
    adversarial_params = {name: config.loss_params[name] for name in spec.params}
    g_terms = [name for name in config.terms if terms.get(name).acts_on == "g"]
    d_terms = [name for name in config.terms if terms.get(name).acts_on == "d"]
    needs = set().union(*(terms.get(name).needs for name in config.terms))
    # D's penultimate features come from the forward pass that gives its scores, and only when a term reads them.
    scored = (lambda net, x: net.scores_and_features(x)) if "features" in needs else (lambda net, x: (net(x), None))
    feature_net = feature_nets.load(config.perceptual_net, dataset, device) if "feature_net" in needs else None
    torch.manual_seed(config.seed)  # model initialisation
    # For the VAE, D is its encoder and G its decoder.
    G, D = models.build(config.model, dataset.image_shape, config.z_dim, spec.discriminator, config.d_batchnorm,
                        init=config.init)
    G, D = G.to(device), D.to(device)
    opt_g, opt_d = make_optimizer(G.parameters(), config), make_optimizer(D.parameters(), config)
    scorer = Scorer(config.metrics, dataset, device)
    # Only now, with everything that can reject the config behind us, does the trial write anything.
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Thread counts change the order of float sums: identical results need the same device and thread count.
    record = {"config": config.model_dump(mode="json"), "device": str(device), "threads": torch.get_num_threads(),
              "versions": versions(), "protocol": scorer.protocol}
    atomic_write_json(out_dir / "config.json", record)
    rng = torch.Generator(device).manual_seed(config.seed)  # every batch index, latent and penalty draw
    real = dataset.train.to(device)
    k = 0.0  # BEGAN's balance term, 0 at the start as in v1 (BEGAN.py line 103)
    g_value = float("nan")  # the last G loss; with d_steps, steps without a G update keep the previous one
    start, rows, train_seconds, eval_seconds = 0, [], 0.0, 0.0
    status = "completed"

    checkpoint_path = out_dir / "checkpoint.pt"
    state = read_checkpoint(checkpoint_path, record["config"], device)
    if state is not None:
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        rng.set_state(state["rng"].cpu() if device.type == "cpu" else state["rng"])
        k, start, rows, g_value = state["k"], state["step"], state["rows"], state["g_loss"]
        train_seconds, eval_seconds = state["train_seconds"], state["eval_seconds"]
        status = state.get("stopped") or status  # checkpoints written before runs could stop have no such key

    def real_batch() -> torch.Tensor:
        idx = torch.randint(len(real), (config.batch_size,), generator=rng, device=device)
        return real[idx].float().div_(255.0)

    def latent() -> torch.Tensor:
        return sample_latent(config.batch_size, config.z_dim, config.z_dist, rng)

    def sample(n: int, generator: torch.Generator) -> torch.Tensor:
        return G(sample_latent(n, config.z_dim, config.z_dist, generator))

    def spread() -> float:
        """The mean over pixels of the per-pixel std across SPREAD_SAMPLES samples (G in eval mode) from the
        evaluation latent seed: a generator of its own, so training's random stream is untouched."""
        generator = torch.Generator(device).manual_seed(config.metrics.latent_seed)
        with torch.no_grad():
            return sample(SPREAD_SAMPLES, generator).float().std(dim=0).mean().item()

    def save_checkpoint(step: int) -> None:
        atomic_torch_save({"config": record["config"], "G": G.state_dict(), "D": D.state_dict(),
                           "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": rng.get_state(),
                           "k": k, "step": step, "rows": rows, "g_loss": g_value, "train_seconds": train_seconds,
                           "eval_seconds": eval_seconds, "stopped": None if status == "completed" else status},
                          checkpoint_path)

    pruned = listener(on_evaluation)
    for row in rows:  # restored from the checkpoint: the listener has not seen them
        if pruned(row["step"], row):
            if status == "completed":  # a run that collapsed stopped on its own; pruning it changes nothing
                status = "pruned"
                save_checkpoint(start)
            break
    # A stopped run trains no further; one that resumes counts from its checkpoint.
    end, steps_done = (config.steps if status == "completed" else start), start
    eval_steps = [s for s in config.eval_steps if s > start]
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc=f"{config.loss} on {config.dataset}",
               unit="step", dynamic_ncols=True)
    tick = time.perf_counter()
    for step in range(start + 1, end + 1):
        if spec.discriminator == "encoder":
            # VAE: one step is one update of encoder (D) and decoder (G) on one real batch. Adam is per parameter,
            # so D's and G's optimizers stepped together are one Adam over both; rows get d_loss = KL term and
            # g_loss = reconstruction term.
            x = real_batch()
            with amp():
                mu, sigma = D(x)
                # Reparameterisation: z ~ q(z|x) as a differentiable function of (mu, sigma).
                z = mu + sigma * torch.randn(mu.shape, generator=rng, device=device)
                reconstruction = G(z)
            # Outside autocast and in float32: under amp the outputs are bfloat16.
            g_loss, d_loss = losses.vae_loss(x, reconstruction.float(), mu.float(), sigma.float())
            opt_d.zero_grad(set_to_none=True)
            opt_g.zero_grad(set_to_none=True)
            (g_loss + d_loss).backward()
            opt_d.step()
            opt_g.step()
            g_value = g_loss.item()
        else:
            d_updates, update_g = step_updates(config.count, step, config.n_disc)
            # Discriminator: d_updates steps on fresh real and fake batches.
            D.requires_grad_(True)
            for i in range(d_updates):
                x, z = real_batch(), latent()
                # The last D step's fake batch is kept, with its graph, for the G step (one G forward per batch),
                # unless the loss draws a fresh z for G (WGAN-GP in v1).
                keep = update_g and i == d_updates - 1 and not spec.resample_before_g
                with torch.set_grad_enabled(keep), amp():
                    fake = G(z)
                with amp():
                    if spec.discriminator == "autoencoder":  # BEGAN: D's "score" is a reconstruction error
                        real_error = losses.reconstruction_error(x, D(x))
                        fake_error = losses.reconstruction_error(fake.detach(), D(fake.detach()))
                        d_loss, _ = losses.began_losses(real_error, fake_error, k)
                    else:
                        real_scores, real_features = scored(D, x)
                        fake_scores, fake_features = scored(D, fake.detach())
                        d_loss, _ = spec.fn(real_scores, fake_scores, **adversarial_params)
                        if d_terms:
                            d_loss = d_loss + terms.weighted_sum(d_terms, config.loss_params, terms.Context(
                                x, fake.detach(), real_scores, fake_scores, D, rng, real_features, fake_features,
                                feature_net))
                        if penalty is not None:
                            d_loss = d_loss + config.gp_lambda * penalty(D, x, fake.detach(), rng)
                        if config.r1_gamma:
                            d_loss = d_loss + config.r1_gamma / 2 * penalties.r1_penalty(D, x)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                if spec.weight_clip:
                    penalties.clip_weights(D, config.clip)

            if update_g:
                # Generator: D is frozen so its parameter gradients are not computed for nothing.
                D.requires_grad_(False)
                if spec.resample_before_g:
                    with amp():
                        fake = G(latent())
                with amp():
                    if spec.discriminator == "autoencoder":
                        _, g_loss = losses.began_losses(real_error.detach(),
                                                        losses.reconstruction_error(fake, D(fake)), k)
                    else:
                        # A relativistic G loss reads D's scores on real data: the current D's, after its update, on
                        # the last D step's batch. Other losses get that step's scores (a custom loss may read them).
                        if spec.g_reads_real:
                            with torch.no_grad():
                                real_scores = D(x)
                        fake_scores, fake_features = scored(D, fake)
                        _, g_loss = spec.fn(real_scores.detach(), fake_scores, **adversarial_params)
                        if g_terms:
                            # Feature matching's real features are the last D step's: no second forward of D.
                            g_loss = g_loss + terms.weighted_sum(g_terms, config.loss_params, terms.Context(
                                x, fake, real_scores.detach(), fake_scores, D, rng,
                                None if real_features is None else real_features.detach(), fake_features, feature_net))
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
                g_value = g_loss.item()
            if spec.discriminator == "autoencoder":
                # v1 updates k after every step, from errors the updated networks make on the step's own batch and
                # z, in training mode (BEGAN.py lines 162-169).
                with torch.no_grad(), amp():
                    real_error_now = losses.reconstruction_error(x, D(x)).item()
                    fake_now = G(z)
                    fake_error_now = losses.reconstruction_error(fake_now, D(fake_now)).item()
                k = losses.began_update_k(k, real_error_now, fake_error_now, config.began_gamma,
                                          config.began_lambda_k)

        steps_done = step  # a step that diverges counts as done
        d_value = d_loss.item()
        # G was updated on the first step in both conventions, so g_value is the last real G loss here.
        if not (math.isfinite(d_value) and math.isfinite(g_value) and math.isfinite(k)):
            status = "diverged"  # no metric is made up for a diverged run: its earlier evaluations stand
            bar.set_postfix_str(f"diverged at step {step}")
            break
        bar.update()

        if eval_steps and step == eval_steps[0]:
            eval_steps.pop(0)
            train_seconds += time.perf_counter() - tick
            tick = time.perf_counter()
            G.eval()
            metrics = scorer.score(sample)
            row = {"step": step, **metrics, "spread": spread(), "d_loss": d_value, "g_loss": g_value}
            save_samples(G, config, out_dir / "samples.png")
            G.train()
            eval_seconds += time.perf_counter() - tick
            rows.append({**row, "train_seconds": round(train_seconds, 3)})
            bar.set_postfix(fid=f"{metrics['fid']:.3g}")
            if collapsed(row["spread"], d_value):
                status = "collapsed"  # this evaluation and the earlier ones stand, as for a diverged run
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


def write_result(out_dir: Path, record: dict[str, Any], scorer: Scorer, **fields: Any) -> TrialResult:
    """The trial's result (`fields`: status, rows, steps_done, train_seconds, eval_seconds), written to result.json
    beside its config record and the scorer's protocol."""
    result = TrialResult(extractor=scorer.extractor_id, protocol=scorer.protocol, **fields)
    atomic_write_json(out_dir / "result.json", {**result.model_dump(mode="json"), **record,
                                                "extractor_test_accuracy": scorer.extractor_accuracy})
    return result


def read_checkpoint(path: Path, config: dict[str, Any], device: torch.device) -> dict[str, Any] | None:
    """The checkpoint at `path` if it is readable and this trial's (its config is `config`), else None: the trial
    starts over."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False)
    except Exception as error:  # damaged (a bad disk, a partial copy): start over; the rows are made again
        warnings.warn(f"{path}: unreadable ({type(error).__name__}); the trial starts over")
        return None
    return state if _same_config(state["config"], config) else None


def listener(on_evaluation: Callable[[int, dict[str, Any]], None] | None) -> Callable[[int, dict[str, Any]], bool]:
    """`pruned(step, row)`: tells on_evaluation about an evaluation; whether it asked to stop (optuna.TrialPruned)."""
    from optuna import TrialPruned  # imported where it is used, as versions() imports optuna

    def pruned(step: int, row: dict[str, Any]) -> bool:
        if on_evaluation is None:
            return False
        try:
            on_evaluation(step, row)
        except TrialPruned:
            return True
        return False

    return pruned


def _same_config(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a checkpoint's config is this trial's. Read as this version reads it, so that a field added since
    (at its default) does not make an older checkpoint look like another trial's."""
    try:
        saved = TrialConfig.model_validate(saved).model_dump(mode="json")
    except ValidationError:
        return False
    return saved == current


def save_samples(G: torch.nn.Module, config: TrialConfig, path: Path, n: int = 64) -> None:
    """An 8×8 grid of samples from a fixed latent, so grids from different steps are comparable."""
    device = next(G.parameters()).device
    generator = torch.Generator(device).manual_seed(config.metrics.latent_seed)
    with torch.no_grad():
        images = G(sample_latent(n, config.z_dim, config.z_dist, generator)).float().cpu()
    tmp = path.with_name(f".{path.name}.tmp.png")
    torchvision.utils.save_image(images, tmp, nrow=8, padding=1)
    tmp.replace(path)
