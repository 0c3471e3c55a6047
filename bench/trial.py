"""One trial: train with one loss for a step budget, score at the evaluation steps, and write everything needed to
trust (and resume) the result into one folder. This is the driver loop every kind of trial shares (bench.kind): the
checkpoint and its exact restore, the evaluation schedule, the statuses, the listener and pruning, timing and
result.json. A kind gives it the networks, one step and one evaluation.

A trial is a pure function of its resolved config (which includes the seed) on a given device.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from bench import BenchError, data, gan, translation
from bench.config import TrialConfig
from bench.device import resolve_device, versions
from bench.io import atomic_torch_save, atomic_write_json, cache_dir
from bench.kind import KINDS, TrialKind
from bench.metrics import MetricsConfig, Scorer

# Each kind registers itself in bench.kind.KINDS when its module is imported: here, where the driver needs them all.
TRIAL_KINDS = (gan, translation)


class TrialResult(BaseModel):
    # completed: trained to the end. Stopped early: diverged (a non-finite loss), collapsed (see COLLAPSE_SPREAD and
    # COLLAPSE_D_LOSS), pruned (the caller's on_evaluation asked to stop). Every evaluation before the stop stands.
    # With stop_on_collapse off, a run that collapsed at an evaluation trains and scores to the end, then is collapsed.
    status: Literal["completed", "diverged", "collapsed", "pruned"]
    extractor: str
    rows: list[dict[str, Any]]  # one per evaluation: step, fid, kid, ... , spread, d_loss, g_loss, seconds
    protocol: dict[str, Any]  # how the scores were made (bench.metrics.Scorer.protocol): only equal ones compare
    steps_done: int
    train_seconds: float
    eval_seconds: float
    # Where it ran: the thread count changes the order of float sums, so two runs compare bit for bit only where these
    # agree (and the device is the same).
    device: str
    threads: int

    @property
    def best_fid(self) -> float | None:
        fids = [row["fid"] for row in self.rows]
        return min(fids) if fids else None

    @property
    def steps_per_second(self) -> float:
        return self.steps_done / self.train_seconds if self.train_seconds else 0.0


# A run has collapsed when, at an evaluation, its samples no longer vary or its discriminator has run away while its
# losses are still finite (so the divergence check does not stop it), and training it further only spends budget.
# Spread: the mean over pixels of the per-pixel std across bench.gan.SPREAD_SAMPLES samples (G in eval mode, as scored) from the
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


def disk_bytes(config: TrialConfig) -> int:
    """About how many bytes a trial's folder holds when it ends: checkpoint.pt (its networks' weights and buffers, and
    the optimisers' state: Adam two tensors per weight, RMSProp one), samples.png (an 8×8 grid, at worst uncompressed)
    and its JSON files and evaluation rows. While a checkpoint is rewritten, its new copy takes as much again."""
    config = config.resolved()
    channels, side = data.channels(config.dataset), config.image_size
    with torch.random.fork_rng():  # building draws initial weights: the caller's random stream is left as it was
        networks = KINDS.get(config.kind).networks(config, (channels, side, side))
    weights = sum(p.numel() * p.element_size() for net in networks for p in net.parameters())
    buffers = sum(b.numel() * b.element_size() for net in networks for b in net.buffers())
    optimiser_state = 2 if config.optimizer == "adam" else 1
    grid = 64 * max(channels, 3) * (side + 2) ** 2
    return weights * (1 + optimiser_state) + buffers + grid + 2_000 * len(config.eval_steps) + 50_000


# Steps between two reads of a trial's running values (its losses' finiteness): each read makes the host wait for the
# device, which every step would stall a GPU. A non-finite value is found at the next read (or evaluation, or the last
# step), and the run is recorded as diverged at the step it happened.
CHECK_EVERY = 100


@dataclass
class PackMember:
    """One trial of a pack (run_trials): its config, its folder and its listener (see run_trial)."""

    config: TrialConfig
    out_dir: Path
    on_evaluation: Callable[[int, dict[str, Any]], None] | None = None


# What the members of a pack share, hence must agree on: the data, what scores them, where and how they run.
SHARED_FIELDS = ("dataset", "dataset_options", "image_size", "task", "metrics", "device", "threads")


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
    (result,) = run_trials([PackMember(config, Path(out_dir), on_evaluation)], progress)
    if isinstance(result, Exception):
        raise result
    return result


def run_trials(members: list[PackMember], progress: bool = False) -> list[TrialResult | Exception]:
    """Trains a pack of trials in one process, each exactly as run_trial would alone: its own networks, random
    stream, folder, checkpoint, rows, status, listener and resume. They share the dataset, the scorer (its feature
    extractor and real statistics, built once) and the device, so they must agree on SHARED_FIELDS; anything else
    (the loss, the model, the hyperparameters, the seed, the budget) may differ.

    The members step in turn, one step each per round: measured on a CPU, one batched model over K parameter sets is
    no faster than K models (see benchmarks/throughput.py), and each member's arithmetic stays that of its trial
    alone, bit for bit. A member that stops (diverged, collapsed, pruned, finished) leaves the pack; one that raises
    gets its exception as its result, and the others go on.
    """
    configs = [member.config.resolved() for member in members]
    for name in SHARED_FIELDS:
        if len({repr(getattr(config, name)) for config in configs}) > 1:
            raise BenchError(f"pack: its trials differ in {name}; a pack shares its data, its scoring, its device and "
                             f"its threads ({', '.join(SHARED_FIELDS)})")
    shared = configs[0]
    if shared.threads is not None:
        torch.set_num_threads(shared.threads)
    device = resolve_device(shared.device)
    dataset = data.load(shared.dataset, shared.image_size, **shared.dataset_options)
    # Every kind refuses what it cannot train before any draws weights or writes anything.
    kinds = [KINDS.get(config.kind)(config, dataset, device) for config in configs]
    for config, kind in zip(configs, kinds):
        torch.manual_seed(config.seed)  # model initialisation
        kind.build()
    scorer = _scorer(shared.metrics, dataset, device)
    runs = [_Run(config, kind, member, scorer, device, progress, position=i if len(members) > 1 else None)
            for i, (config, kind, member) in enumerate(zip(configs, kinds, members))]
    for run in runs:
        run.guarded(run.start)
    while active := [run for run in runs if run.active]:
        for run in active:
            run.guarded(run.advance)
    return [run.result for run in runs]


# The last pack's scorer, kept for the next pack scored the same way against the same real images: a worker makes its
# feature extractor and reads the real statistics once, not once per trial. Only the last one, so memory stays bounded.
_kept_scorer: dict[str, Scorer] = {}


def _scorer(metrics: MetricsConfig, dataset: data.Dataset, device: torch.device) -> Scorer:
    scorer = Scorer(metrics, dataset, device)  # names the real images (a digest) and the extractor's weights
    key = json.dumps([scorer.real_name, scorer.extractor_id, scorer.extractor_weights,
                      metrics.model_dump(mode="json"), str(device), str(cache_dir())], default=str)
    if key not in _kept_scorer:
        _kept_scorer.clear()
        _kept_scorer[key] = scorer
    return _kept_scorer[key]


class _Run:
    """One trial in the driver: its kind, folder, schedule, rows, status and clock, advanced one step at a time."""

    def __init__(self, config: TrialConfig, kind: TrialKind, member: PackMember, scorer: Scorer,
                 device: torch.device, progress: bool, position: int | None):
        self.config, self.kind, self.scorer, self.device = config, kind, scorer, device
        self.out_dir, self.on_evaluation = Path(member.out_dir), member.on_evaluation
        self.progress, self.position = progress, position
        self.result: TrialResult | Exception | None = None
        self.active = False

    def guarded(self, action: Callable[[], None]) -> None:
        """Runs one of this trial's actions; what it raises ends this trial only (its exception is its result)."""
        try:
            action()
        except Exception as error:
            self.active = False
            if hasattr(self, "bar"):
                self.bar.close()
            self.result = error

    def start(self) -> None:
        """Writes the config record, takes the trial's random stream and restores its checkpoint, if any."""
        config, kind, device = self.config, self.kind, self.device
        # Only now, with everything that can reject the config behind us, does the trial write anything.
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # Thread counts change the order of float sums: identical results need the same device and thread count.
        self.record = {"config": config.model_dump(mode="json"), "device": str(device),
                       "threads": torch.get_num_threads(), "versions": versions(), "protocol": self.scorer.protocol}
        atomic_write_json(self.out_dir / "config.json", self.record)
        self.rng = torch.Generator(device).manual_seed(config.seed)  # every batch index, latent, mask, penalty draw
        kind.begin(self.rng)
        self.start_step, self.rows, self.status = 0, [], "completed"
        self.train_seconds, self.eval_seconds = 0.0, 0.0
        self.checkpoint_path = self.out_dir / "checkpoint.pt"
        state = read_checkpoint(self.checkpoint_path, self.record["config"])
        if state is not None:
            kind.load_state_dict(state)
            self.rng.set_state(state["rng"])
            self.start_step, self.rows = state["step"], state["rows"]
            self.train_seconds, self.eval_seconds = state["train_seconds"], state["eval_seconds"]
            self.status = state.get("stopped") or self.status  # checkpoints from before runs could stop have none
        self.pruned = listener(self.on_evaluation)
        for row in self.rows:  # restored from the checkpoint: the listener has not seen them
            if self.pruned(row["step"], row):
                if self.status == "completed":  # a run that collapsed stopped on its own; pruning it changes nothing
                    self.status = "pruned"
                    self.save_checkpoint(self.start_step)
                break
        # A stopped run trains no further; one that resumes counts from its checkpoint.
        self.end = config.steps if self.status == "completed" else self.start_step
        self.step, self.steps_done = self.start_step, self.start_step
        self.eval_steps = [s for s in config.eval_steps if s > self.start_step]
        # The first step whose running values were not all finite (0: none yet), kept on the device.
        self.first_nonfinite = torch.zeros((), dtype=torch.int64, device=device)
        self.bar = tqdm(total=config.steps, initial=self.start_step, disable=not self.progress, desc=kind.label,
                        unit="step", dynamic_ncols=True, position=self.position, leave=True)
        self.active = True
        if self.step >= self.end:
            self.finish()

    def save_checkpoint(self, step: int) -> None:
        atomic_torch_save({"config": self.record["config"], **self.kind.state_dict(), "rng": self.rng.get_state(),
                           "step": step, "rows": self.rows, "train_seconds": self.train_seconds,
                           "eval_seconds": self.eval_seconds,
                           "stopped": None if self.status == "completed" else self.status}, self.checkpoint_path)

    def advance(self) -> None:
        """One step; then, when the schedule says, the divergence check and the evaluation."""
        tick = time.perf_counter()
        self.step += 1
        step = self.step
        watched = self.kind.step(step)
        values = torch.stack([torch.as_tensor(v, device=self.device).double() for v in watched.values()])
        self.first_nonfinite = torch.where((self.first_nonfinite == 0) & ~values.isfinite().all(), step,
                                           self.first_nonfinite)
        evaluate = bool(self.eval_steps) and step == self.eval_steps[0]
        if evaluate or step % CHECK_EVERY == 0 or step == self.end:
            diverged_at = int(self.first_nonfinite)
            if diverged_at:
                self.train_seconds += time.perf_counter() - tick
                self.steps_done = diverged_at  # the step that diverged counts as done, the ones after it do not
                self.status = "diverged"  # no metric is made up for a diverged run: its earlier evaluations stand
                self.bar.set_postfix_str(f"diverged at step {diverged_at}")
                return self.finish()
            self.bar.update(step - self.bar.n)
        self.steps_done = step
        self.train_seconds += time.perf_counter() - tick
        if evaluate:
            self.evaluate(step)
        if self.status != "completed" or step >= self.end:
            self.finish()

    def evaluate(self, step: int) -> None:
        """Scores the trial, records the row, checks for collapse, writes the checkpoint and tells the listener."""
        self.eval_steps.pop(0)
        tick = time.perf_counter()
        row = {"step": step, **self.kind.evaluate(self.scorer, self.out_dir / "samples.png")}
        self.eval_seconds += time.perf_counter() - tick
        self.rows.append({**row, "train_seconds": round(self.train_seconds, 3)})
        self.bar.set_postfix({name: f"{row[name]:.3g}" for name in self.kind.shown if name in row})
        if collapsed(row["spread"], row["d_loss"]):
            if self.config.stop_on_collapse:
                self.status = "collapsed"  # this evaluation and the earlier ones stand, as for a diverged run
            self.bar.set_postfix_str(f"collapsed at step {step}")
        self.save_checkpoint(step)
        if self.pruned(step, self.rows[-1]) and self.status == "completed":
            self.status = "pruned"
            self.save_checkpoint(step)

    def finish(self) -> None:
        self.active = False
        self.bar.close()
        # Without stop_on_collapse a collapse leaves the run going (and its checkpoint unstopped, so that a resume goes
        # on too); a run that then trains to the end is recorded as collapsed, from its rows, here.
        if self.status == "completed" and any(collapsed(row["spread"], row["d_loss"]) for row in self.rows):
            self.status = "collapsed"
        self.result = write_result(self.out_dir, self.record, self.scorer, status=self.status, rows=self.rows,
                                   steps_done=self.steps_done, train_seconds=self.train_seconds,
                                   eval_seconds=self.eval_seconds)


def write_result(out_dir: Path, record: dict[str, Any], scorer: Scorer, **fields: Any) -> TrialResult:
    """The trial's result (`fields`: status, rows, steps_done, train_seconds, eval_seconds), written to result.json
    beside its config record (which says where it ran) and the scorer's protocol."""
    result = TrialResult(extractor=scorer.extractor_id, protocol=scorer.protocol, device=record["device"],
                         threads=record["threads"], **fields)
    atomic_write_json(out_dir / "result.json", {**result.model_dump(mode="json"), **record,
                                                "extractor_test_accuracy": scorer.extractor_accuracy})
    return result


def read_checkpoint(path: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The checkpoint at `path` if it is readable and this trial's (its config is `config`), else None: the trial
    starts over."""
    if not path.exists():
        return None
    try:
        # Read onto the CPU whatever the device: the networks and optimisers copy their state to their parameters'
        # device as they load it, except the optimisers' step counters, which belong on the CPU (on the device, every
        # step would read them back: a host sync), and the random stream's state is a CPU byte tensor.
        state = torch.load(path, map_location="cpu", weights_only=False)
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
