"""How long `gan-bench report` takes on a paper-sized results.csv, and whether it imports torch.

Run from the repository root:

    PYTHONPATH=. python benchmarks/report_speed.py [--trials 100] [--repeats 2] [--keep DIR]

It writes, in a temporary results folder (or DIR with --keep, to look at the report afterwards), the search stage of
"Are GANs Created Equal?" as results.csv would hold it: 4 datasets (mnist, fashion_mnist, cifar10, celeba) × 7 losses
(ns_gan, mm_gan, wgan, wgan_gp, lsgan, dragan, began) × `--trials` hyperparameter samples, one seed, an evaluation
every 500 of 18,000 steps (36 rows a run): 100,800 rows less those pruned runs never reached, about 100,000 at the
default. The columns are those a real study writes (results.csv of results/reference/, tallies.results_table's order):
the Inception protocol of each dataset, the searched hyperparameters lr, beta1, beta2 and n_disc and the fixed ones
of each loss, a `searched` column naming the searched ones, FID, IS, spread, the losses and the times. Each run's best
FID is lognormal around its dataset's median; its curve falls towards it with noise. 5 % of the runs diverge (their
rows after the divergence have no metrics: the report must count them, not drop them), 2 % are pruned half-way
(fewer rows). A study.yaml beside it names the objective, fid.

Then it times `gan-bench report DIR` as the console script runs it (`bench.cli.main`, in a fresh interpreter: the
imports are part of the time), wall clock, the best of `--repeats`; and in one more fresh interpreter it runs the
same command and lists which of torch, torch_fidelity and optuna it imported. Target (issue): ≤ 10 s on this 2-core
machine, and no torch.

The last line is machine-readable: `report_speed: rows=N seconds=S imports_torch=False`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 10.0
# The median of a run's best FID on each dataset (roughly the paper's figure 4 spread), and its Inception protocol:
# the resize and reference split of studies/are_gans_equal.yaml, 10,000 real images against 10,000 samples.
DATASETS = {"mnist": (10.0, "antialias", "test"), "fashion_mnist": (28.0, "antialias", "test"),
            "cifar10": (70.0, "antialias", "test"), "celeba": (40.0, "tf1_bilinear", "validation")}
LOSSES = ["ns_gan", "mm_gan", "wgan", "wgan_gp", "lsgan", "dragan", "began"]
# The fixed hyperparameters of the losses that have some (bench.losses' defaults); the others' columns are empty.
LOSS_PARAMS = {"wgan": {"param_clip": 0.01}, "wgan_gp": {"param_gp_lambda": 10.0},
               "dragan": {"param_gp_lambda": 10.0}, "began": {"param_began_gamma": 0.5, "param_began_lambda_k": 0.001}}
STEPS = np.arange(500, 18_001, 500)
WEIGHTS = "6726825d3f1b"  # the Inception weights' hash in the protocol (any 12 hex digits)
HEAVY = ("torch", "torch_fidelity", "optuna")

# What the gan-bench console script runs (`sys.exit(bench.cli.main())`), here with this checkout's bench.
CLI = "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"
CHECK = ("import json, sys; from bench.cli import main; code = main(sys.argv[1:]); "
         f"print(json.dumps({{'code': code, 'imported': [m for m in {HEAVY!r} if m in sys.modules]}}))")


def runs_of(rng: np.random.Generator, dataset: str, loss: str, trials: int) -> pd.DataFrame:
    """The rows of `trials` runs of one (dataset, loss), step by step."""
    median, resize, split = DATASETS[dataset]
    n, s = trials, len(STEPS)
    lr = 10 ** rng.uniform(-5, -2, n)
    beta1, beta2 = rng.uniform(0.0, 1.0, n), rng.uniform(0.9, 0.999, n)
    n_disc = rng.choice([1, 5], n)
    best = np.exp(rng.normal(np.log(median), 0.6, n))  # each run's best FID, lognormal
    fate = rng.random(n)
    status = np.where(fate < 0.05, "diverged", np.where(fate < 0.07, "pruned", "completed"))
    diverged_at = rng.integers(1, s, n)  # the first evaluation after the divergence
    pruned_after = rng.integers(s // 4, s // 2, n)  # evaluations a pruned run reached

    trial = np.repeat(np.arange(n), s)
    index = np.tile(np.arange(s), n)
    step = np.tile(STEPS, n)
    fid = np.repeat(best, s) * (1 + 3 * np.exp(-step / 4000)) * np.exp(rng.normal(0.0, 0.05, n * s))
    isc = np.clip(rng.normal(6.0, 1.5, n * s) - fid / 40, 1.0, None)
    spread = rng.uniform(0.05, 0.3, n * s)
    d_loss, g_loss = rng.normal(0.6, 0.3, n * s), rng.normal(1.5, 0.6, n * s)
    seconds_per_step = np.repeat(rng.uniform(0.008, 0.02, n), s)
    run_status = np.repeat(status, s)
    no_metrics = (run_status == "diverged") & (index >= np.repeat(diverged_at, s))
    for values in (fid, isc, spread, d_loss, g_loss):
        values[no_metrics] = np.nan
    protocol = f"inception-v3-compat@{WEIGHTS} resize={resize} real={split}:10000 gen=10000"
    table = pd.DataFrame({
        "stage": "search", "dataset": dataset, "loss": loss, "trial": trial, "seed": 0, "step": step,
        "status": run_status, "fid": fid, "kid": np.nan, "protocol": protocol, "extractor": "inception-v3-compat",
        "extractor_weights": WEIGHTS, "resize": resize, "real_split": split, "real_count": 10000, "gen_count": 10000,
        "wall_seconds": np.repeat(STEPS[-1] * seconds_per_step[::s] * 1.3, s).round(3), "source_trial": np.nan,
        "folder": [f"trials/{dataset}-{loss}-{t:04d}-seed0" for t in trial], "threads": 1, "device": "cuda",
        "param_lr": np.repeat(lr, s), "param_beta1": np.repeat(beta1, s), "param_beta2": np.repeat(beta2, s),
        "param_n_disc": np.repeat(n_disc, s), "param_d_batchnorm": loss not in ("wgan_gp", "dragan"),
        "param_optimizer": "adam", **LOSS_PARAMS.get(loss, {}), "searched": "lr beta1 beta2 n_disc",
        "isc": isc, "spread": spread, "d_loss": d_loss, "g_loss": g_loss,
        "train_seconds": (step * seconds_per_step).round(3)})
    reached = (run_status != "pruned") | (index < np.repeat(pruned_after, s))
    return table[reached]


def write_results(folder: Path, trials: int) -> int:
    """Writes results.csv and study.yaml into `folder`; returns the rows written."""
    rng = np.random.default_rng(0)
    table = pd.concat([runs_of(rng, dataset, loss, trials) for dataset in sorted(DATASETS) for loss in sorted(LOSSES)],
                      ignore_index=True)
    columns = ["stage", "dataset", "loss", "trial", "seed", "step", "status", "fid", "kid"]  # results_table's first
    rest = [c for c in table.columns if c not in columns]
    table[columns + rest].to_csv(folder / "results.csv", index=False)
    (folder / "study.yaml").write_text("name: report_speed\nobjective: fid\n")
    return len(table)


def report(folder: Path, code: str) -> subprocess.CompletedProcess:
    """`gan-bench report folder` in a fresh interpreter, with this checkout's bench."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, "report", str(folder)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"gan-bench report failed (exit code {done.returncode}):\n{done.stderr}")
    return done


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--trials", type=int, default=100, help="hyperparameter samples per (dataset, loss)")
    parser.add_argument("--repeats", type=int, default=2, help="timed reports; the best is kept")
    parser.add_argument("--keep", type=Path, help="write the results folder here and keep it (default: a temporary one)")
    args = parser.parse_args()

    print(f"machine: {platform.node()}, {os.cpu_count()} CPU cores, python {platform.python_version()}, "
          f"pandas {pd.__version__}, numpy {np.__version__}, {time.strftime('%Y-%m-%d %H:%M')}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        rows = write_results(folder, args.trials)
        size = (folder / "results.csv").stat().st_size
        print(f"results.csv: {rows:,} rows, {size / 1e6:.1f} MB, written in {time.perf_counter() - start:.1f} s "
              f"({len(DATASETS)} datasets × {len(LOSSES)} losses × {args.trials} trials × up to {len(STEPS)} "
              "evaluations)")
        times = []
        for repeat in range(args.repeats):
            start = time.perf_counter()
            done = report(folder, CLI)
            times.append(time.perf_counter() - start)
            print(f"  repeat {repeat}: gan-bench report {times[-1]:.2f} s")
        written = [Path(line).name for line in done.stdout.splitlines() if line.strip()]
        print(f"the report wrote: {', '.join(written)}")
        outcome = json.loads(report(folder, CHECK).stdout.strip().splitlines()[-1])
    imported = outcome["imported"]
    imports_torch = "torch" in imported
    best = min(times)
    print(f"modules the report imported, of {', '.join(HEAVY)}: {', '.join(imported) or 'none'}")
    print(f"report_imports_torch={imports_torch}")
    met = best <= TARGET_SECONDS and not imports_torch
    print(f"best of {args.repeats}: {best:.2f} s (target ≤ {TARGET_SECONDS:g} s without torch): "
          f"{'met' if met else 'MISSED'}")
    print(f"report_speed: rows={rows} seconds={best:.1f} imports_torch={imports_torch}")


if __name__ == "__main__":
    main()
