"""One trial: train with one loss for a step budget, score at the evaluation steps, and write everything needed to
trust (and resume) the result into one folder. This is the driver loop every kind of trial shares (bench.kind): the
checkpoint and its exact restore, the evaluation schedule, the statuses, the listener and pruning, timing and
result.json. A kind gives it the networks, one step and one evaluation.

A trial is a pure function of its resolved config (which includes the seed) on a given device.
"""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from bench import data, gan, translation
from bench.config import TrialConfig
from bench.device import resolve_device, versions
from bench.io import atomic_torch_save, atomic_write_json
from bench.kind import KINDS
from bench.metrics import Scorer

# Each kind registers itself in bench.kind.KINDS when its module is imported: here, where the driver needs them all.
TRIAL_KINDS = (gan, translation)


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
    config = config.resolved()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dataset = data.load(config.dataset, config.image_size, **config.dataset_options)
    kind = KINDS.get(config.kind)(config, dataset, device)
    torch.manual_seed(config.seed)  # model initialisation
    kind.build()
    scorer = Scorer(config.metrics, dataset, device)
    # Only now, with everything that can reject the config behind us, does the trial write anything.
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Thread counts change the order of float sums: identical results need the same device and thread count.
    record = {"config": config.model_dump(mode="json"), "device": str(device), "threads": torch.get_num_threads(),
              "versions": versions(), "protocol": scorer.protocol}
    atomic_write_json(out_dir / "config.json", record)
    rng = torch.Generator(device).manual_seed(config.seed)  # every batch index, latent, mask and penalty draw
    kind.begin(rng)
    start, rows, train_seconds, eval_seconds, status = 0, [], 0.0, 0.0, "completed"

    checkpoint_path = out_dir / "checkpoint.pt"
    state = read_checkpoint(checkpoint_path, record["config"], device)
    if state is not None:
        kind.load_state_dict(state)
        rng.set_state(state["rng"].cpu() if device.type == "cpu" else state["rng"])
        start, rows = state["step"], state["rows"]
        train_seconds, eval_seconds = state["train_seconds"], state["eval_seconds"]
        status = state.get("stopped") or status  # checkpoints written before runs could stop have no such key

    def save_checkpoint(step: int) -> None:
        atomic_torch_save({"config": record["config"], **kind.state_dict(), "rng": rng.get_state(), "step": step,
                           "rows": rows, "train_seconds": train_seconds, "eval_seconds": eval_seconds,
                           "stopped": None if status == "completed" else status}, checkpoint_path)

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
    bar = tqdm(total=config.steps, initial=start, disable=not progress, desc=kind.label, unit="step",
               dynamic_ncols=True)
    tick = time.perf_counter()
    for step in range(start + 1, end + 1):
        watched = kind.step(step)
        steps_done = step  # a step that diverges counts as done
        if not all(math.isfinite(value) for value in watched.values()):
            status = "diverged"  # no metric is made up for a diverged run: its earlier evaluations stand
            bar.set_postfix_str(f"diverged at step {step}")
            break
        bar.update()
        if not eval_steps or step != eval_steps[0]:
            continue
        eval_steps.pop(0)
        train_seconds += time.perf_counter() - tick
        tick = time.perf_counter()
        row = {"step": step, **kind.evaluate(scorer, out_dir / "samples.png")}
        eval_seconds += time.perf_counter() - tick
        rows.append({**row, "train_seconds": round(train_seconds, 3)})
        bar.set_postfix({name: f"{row[name]:.3g}" for name in kind.shown})
        if collapsed(row["spread"], row["d_loss"]):
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
    beside its config record (which says where it ran) and the scorer's protocol."""
    result = TrialResult(extractor=scorer.extractor_id, protocol=scorer.protocol, device=record["device"],
                         threads=record["threads"], **fields)
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
