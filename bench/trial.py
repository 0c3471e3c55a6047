"""One trial: train a generator and a discriminator with one loss for a step budget, score it at the
evaluation steps, and write everything needed to trust (and resume) the result into one folder.

A trial is a pure function of its resolved config (which includes the seed) on a given device.
"""

from __future__ import annotations

import contextlib
import math
import platform
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Literal

import torch
import torchvision
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from tqdm import tqdm

import bench
from bench import BenchError, data, feature_nets, losses, models, penalties, terms
from bench.io import atomic_torch_save, atomic_write_json
from bench.metrics import MetricsConfig, Scorer
from bench.tasks import TaskSpec

# Hyperparameters that a study may search over; None means "the loss's default" (see losses.py). A custom loss adds
# its own (TrialConfig.loss_params).
HYPERPARAMETERS = losses.HYPERPARAMETERS
FALLBACK_DEFAULTS: dict[str, Any] = {"lr": 2e-4, "beta1": 0.5, "beta2": 0.999, "n_disc": 1, "r1_gamma": 0.0,
                                     "d_batchnorm": False, "optimizer": "adam"}
# What one step of the budget is: a generator update (after n_disc discriminator updates), or — the paper's
# convention, compare_gan v1 abstract_gan.py lines 198-219 and 258-263 — a discriminator update, with G updated
# on the first step and then on every n_disc-th.
StepCount = Literal["g_steps", "d_steps"]
# The most evaluations one trial may have. Each generates and scores thousands of images, so more is a mistake
# (`eval_every: 1`); and the schedule is a list of steps, which at 10^9 steps, each scored, would not fit in memory.
MAX_EVALUATIONS = 10_000
# The model of image-to-image trials (bench.translation): a U-Net generator and a PatchGAN discriminator.
TRANSLATION_MODEL = "unet"


class TrialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str = "digits"
    dataset_options: dict[str, Any] = Field(default_factory=dict, description="the dataset loader's options")
    task: TaskSpec | None = Field(None, description="an image-to-image task made from the dataset (bench.tasks); "
                                  "None: unconditional generation")
    image_size: int | None = Field(None, ge=8, description="square image side; None: the dataset's default")
    model: str = "mlp"
    loss: str = "ns_gan"
    steps: int = Field(500, ge=1, le=10**9, description="training steps, counted as `count` says")
    count: StepCount = Field("g_steps", description="what a step is: a G update (after n_disc D updates) or a D "
                             "update (the paper's)")
    eval_steps: list[int] | None = Field(None, description="steps at which to score; None: the last step")
    batch_size: int = Field(64, ge=2)
    z_dim: int = Field(64, ge=1)
    z_dist: Literal["uniform", "normal"] = "uniform"  # resolved to the loss's own latent if it has one (vae: normal)
    # allow_inf_nan=False: NaN fails every bound only by accident of its comparisons, and an infinite lr, penalty or
    # clip passes `gt`/`ge` and would train a run that diverges at once rather than be refused.
    lr: float | None = Field(None, gt=0, allow_inf_nan=False)
    beta1: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False)
    beta2: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False)
    n_disc: int | None = Field(None, ge=1)
    gp_lambda: float | None = Field(None, ge=0, allow_inf_nan=False)
    clip: float | None = Field(None, gt=0, allow_inf_nan=False)
    began_gamma: float | None = Field(None, ge=0, le=1, allow_inf_nan=False)
    began_lambda_k: float | None = Field(None, ge=0, allow_inf_nan=False)
    r1_gamma: float | None = Field(None, ge=0, allow_inf_nan=False)
    d_batchnorm: bool | None = None
    optimizer: Literal["adam", "rmsprop"] | None = None
    loss_params: dict[str, bool | int | float | str] = Field(
        default_factory=dict, description="a custom loss's own hyperparameters (its keyword arguments) and the "
        "weights of its terms (w_<term>)")
    terms: list[str] = Field(default_factory=list, description="loss terms (bench.terms) added to G's or D's loss, "
                             "each weighted by loss_params w_<term> (default 1)")
    perceptual_net: str = Field(feature_nets.DEFAULT, description="the fixed network of terms that need one "
                                "(perceptual): domain, the dataset's domain classifier; or vgg16 / vgg19[:LAYER], "
                                "ImageNet VGG cut after LAYER (default relu3_3), weights from `gan-bench prefetch "
                                "--vgg NET`")
    init: Literal["model", "compare_gan", "pytorch"] = Field("model", description="weight initialisation: the model's own, compare_gan v1's, "
                              "or PyTorch's layer defaults")
    seed: int = 0
    device: str = "auto"
    threads: int | None = Field(None, ge=1, description="torch's CPU threads for this trial; None: leave torch's "
                                "setting (all cores). Results are bit-identical only at the same thread count")
    amp: bool = Field(False, description="bfloat16 autocast on CUDA; ignored on CPU, where it is ~15× slower")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    @model_validator(mode="before")
    @classmethod
    def _task_model(cls, raw: Any) -> Any:
        """An image-to-image task trains the U-Net unless a model is given."""
        if isinstance(raw, dict) and raw.get("task") is not None and raw.get("model") is None:
            return {**raw, "model": TRANSLATION_MODEL}
        return raw

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        losses.get(name)
        return name

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if name not in data.names():
            raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(data.names())}")
        return name

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: str) -> str:
        if name not in [*models.names(), TRANSLATION_MODEL]:
            raise ValueError(f"unknown model {name!r}; valid: {', '.join(models.names())}, or {TRANSLATION_MODEL} "
                             "(image-to-image tasks)")
        return name

    @field_validator("perceptual_net")
    @classmethod
    def _known_feature_net(cls, spec: str) -> str:
        return feature_nets.canonical(spec)

    @field_validator("device")
    @classmethod
    def _device_syntax(cls, device: str) -> str:
        if device != "auto":
            try:
                torch.device(device)
            except RuntimeError:
                raise ValueError(f"expected auto, cpu, cuda or cuda:N, got {device!r}") from None
        return device

    @model_validator(mode="after")
    def _consistent(self) -> TrialConfig:
        spec = losses.get(self.loss)
        for name in HYPERPARAMETERS:  # a value the loss never reads would silently do nothing
            if getattr(self, name) is not None and name not in spec.hyperparameters:
                raise ValueError(f"{name}: {losses.unused_message(name, self.loss)}")
        for i, name in enumerate(self.terms):
            try:
                term = terms.get(name)
            except BenchError as error:
                raise ValueError(f"terms[{i}]: {name}: {error}") from None
            if spec.discriminator in ("autoencoder", "encoder"):
                kind = "an autoencoder" if spec.discriminator == "autoencoder" else "an encoder"
                raise ValueError(f"terms[{i}]: {name} needs a critic's scores and features; loss {self.loss}'s "
                                 f"discriminator is {kind}")
            if self.task is None and term.needs & terms.TRANSLATION_NEEDS:
                raise ValueError(f"terms[{i}]: {name} is a term of image-to-image tasks (it reads "
                                 f"{', '.join(sorted(term.needs & terms.TRANSLATION_NEEDS))}); {self.dataset} has none")
        if self.task is None and (spec.discriminator == "none" or self.model == TRANSLATION_MODEL):
            raise ValueError(f"{'loss none' if spec.discriminator == 'none' else f'model {TRANSLATION_MODEL}'} is for "
                             "image-to-image tasks only (a dataset entry with a task); unconditional generation needs a "
                             "discriminator and a generator of latents")
        if self.task is not None:
            from bench import translation  # the image-to-image trial checks its own specs

            translation.check_config(self)
        if self.perceptual_net != feature_nets.DEFAULT and not feature_nets.needs_feature_net(self.terms):
            raise ValueError("perceptual_net: no term of this trial uses a fixed feature network; add one "
                             "(perceptual) or leave it unset")
        weights = [terms.weight_name(name) for name in self.terms]
        for name, value in self.loss_params.items():
            if name in weights:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                    raise ValueError(f"loss_params.{name}: a term's weight must be a finite number ≥ 0, got {value!r}")
            elif name not in spec.params:
                own = f"its own: {', '.join([*spec.params, *weights])}" if spec.params or weights else \
                    "it has none of its own"
                raise ValueError(f"loss_params.{name}: loss {self.loss} has no such hyperparameter ({own})")
        data.check_options(self.dataset, self.dataset_options)
        if self.eval_steps is not None and (not self.eval_steps or any(not 1 <= s <= self.steps for s in self.eval_steps)):
            raise ValueError(f"eval_steps must be a non-empty list of steps in 1..{self.steps}")
        size = self.image_size or data.default_size(self.dataset)
        if self.task is None:
            models.MODELS[self.model].check_shape((1, size, size))
        return self

    def resolved(self) -> TrialConfig:
        """Every default filled in: the loss's own defaults first, then gan-bench's."""
        spec = losses.get(self.loss)
        filled: dict[str, Any] = {
            "image_size": self.image_size or data.default_size(self.dataset),
            "eval_steps": sorted(set(self.eval_steps or [self.steps])),
            "z_dist": spec.latent or self.z_dist,
        }
        for name in HYPERPARAMETERS:
            if getattr(self, name) is None and name in spec.hyperparameters:
                value = spec.defaults.get(name, FALLBACK_DEFAULTS.get(name))
                if value is not None:
                    filled[name] = value
        filled["loss_params"] = {**{p: spec.defaults[p] for p in spec.params},
                                 **{terms.weight_name(t): 1.0 for t in self.terms}, **self.loss_params}
        return self.model_copy(update=filled)

    def hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters that are set, a custom loss's own included, by name."""
        return {**{name: getattr(self, name) for name in HYPERPARAMETERS if getattr(self, name) is not None},
                **self.loss_params}

    @classmethod
    def from_params(cls, fields: dict[str, Any], params: dict[str, Any], seed: int) -> TrialConfig:
        """A config from a study's trial fields and one sample's hyperparameters, a custom loss's own among them."""
        return cls(**fields, **{k: v for k, v in params.items() if k in HYPERPARAMETERS},
                   loss_params={k: v for k, v in params.items() if k not in HYPERPARAMETERS}, seed=seed)


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


def folder_name(text: str) -> str:
    """`text` with every character outside [A-Za-z0-9._+-] replaced by "_": a custom loss `pkg.mod:fn` must not put a
    ':' (which breaks tools, PATH-like lists and SLURM's file patterns) into a trial folder's name."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def resolve_device(requested: str) -> torch.device:
    """CUDA when asked (or 'auto') and available; otherwise the CPU, with a warning if CUDA was asked for."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(f"device {requested!r} asked for but CUDA is not available: running on the CPU")
        return torch.device("cpu")
    return device


def sample_latent(n: int, z_dim: int, dist: str, generator: torch.Generator) -> torch.Tensor:
    """z ~ U[−1, 1]^z_dim (the paper's choice) or N(0, I), on the generator's device."""
    if dist == "uniform":
        return torch.rand(n, z_dim, generator=generator, device=generator.device).mul_(2).sub_(1)
    return torch.randn(n, z_dim, generator=generator, device=generator.device)


def versions() -> dict[str, str]:
    import optuna
    import torch_fidelity

    return {"gan_bench": bench.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "torch_fidelity": torch_fidelity.__version__, "optuna": optuna.__version__,
            "python": platform.python_version()}


def g_updates(count: StepCount, steps: int, n_disc: int) -> int:
    """How many generator updates `steps` steps make (the VAE, which has no separate G update, aside)."""
    if count == "g_steps":
        return steps
    return 1 + math.ceil((steps - 1) / n_disc)  # the first step, then steps t = 1, 1 + n_disc, ... below `steps`


def step_updates(count: StepCount, step: int, n_disc: int) -> tuple[int, bool]:
    """(D updates, whether G is updated) at step `step` (1-based) of the budget.

    With d_steps, as compare_gan v1 (abstract_gan.py line 207: `(counter - 1) % disc_iters == 0 or g_loss is None`,
    counter from 0): G follows the D update of the first step and of every step t with (t - 1) % n_disc == 0, so 100
    steps at n_disc 5 are 100 D and 21 G updates.
    """
    if count == "g_steps":
        return n_disc, True
    t = step - 1
    return 1, t == 0 or (t - 1) % n_disc == 0


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
