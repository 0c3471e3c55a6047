"""Reports from `results.csv` alone: a summary table per (dataset, loss) and the paper's headline figure,
the minimum FID reached with a budget of k hyperparameter samples, estimated by bootstrap."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from bench import BenchError
from bench.io import atomic_write_text


def read_results(results_dir: Path) -> pd.DataFrame:
    path = Path(results_dir) / "results.csv"
    if not path.is_file():
        raise BenchError(f"{path}: not found; run the study first (gan-bench run STUDY.yaml)")
    return pd.read_csv(path)


def trial_scores(results: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its status, its best FID over evaluation steps (mean over seeds) and its parameters."""
    params = [c for c in results.columns if c.startswith("param_")]
    per_seed = results.groupby(["dataset", "loss", "trial", "seed"], sort=True).agg(
        best_fid=("fid", "min"), diverged=("status", lambda s: bool((s == "diverged").any())),
        **{p: (p, "first") for p in params})
    return per_seed.groupby(["dataset", "loss", "trial"]).agg(
        best_fid=("best_fid", "mean"), diverged=("diverged", "any"), **{p: (p, "first") for p in params}
    ).reset_index()


def summary(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, loss): trials done, best and median FID, the best trial's hyperparameters, share diverged."""
    trials = trial_scores(results)
    rows = []
    for (dataset, loss), group in trials.groupby(["dataset", "loss"], sort=False):
        scored = group.dropna(subset=["best_fid"])
        best = scored.loc[scored["best_fid"].idxmin()] if len(scored) else None
        rows.append({
            "dataset": dataset, "loss": loss, "trials": len(group),
            "best_fid": best["best_fid"] if best is not None else np.nan,
            "median_fid": scored["best_fid"].median() if len(scored) else np.nan,
            "diverged_share": group["diverged"].mean(),
            "best_trial": int(best["trial"]) if best is not None else None,
            "best_params": ", ".join(f"{c.removeprefix('param_')}={best[c]:.4g}" if isinstance(best[c], float)
                                     else f"{c.removeprefix('param_')}={best[c]}"
                                     for c in group.columns if c.startswith("param_") and pd.notna(best[c]))
            if best is not None else "",
        })
    return pd.DataFrame(rows)


def min_fid_bootstrap(fids: np.ndarray, max_budget: int, resamples: int = 2000,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For k = 1..max_budget: mean and 95 % band of the minimum FID of k trials drawn with replacement."""
    rng = np.random.default_rng(seed)
    fids = np.asarray(fids, dtype=float)
    draws = rng.choice(fids, size=(resamples, max_budget), replace=True)
    # The minimum over the first k draws of each resample: one pass gives every budget, and the curve of each
    # resample (hence the mean) is non-increasing in k.
    minima = np.minimum.accumulate(draws, axis=1)
    return minima.mean(0), np.percentile(minima, 2.5, axis=0), np.percentile(minima, 97.5, axis=0)


def plot_fid_vs_budget(results: pd.DataFrame, path: Path) -> None:
    trials = trial_scores(results).dropna(subset=["best_fid"])
    datasets = list(dict.fromkeys(results["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    extractor = ", ".join(sorted(results["extractor"].dropna().unique())) if "extractor" in results else "?"
    for ax, dataset in zip(axes[0], datasets):
        for loss, group in trials[trials["dataset"] == dataset].groupby("loss", sort=False):
            n = len(group)
            mean, low, high = min_fid_bootstrap(group["best_fid"].to_numpy(), n)
            k = np.arange(1, n + 1)
            ax.plot(k, mean, marker="o", markersize=3, label=loss)
            ax.fill_between(k, low, high, alpha=0.2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(dataset)
        ax.set_xlabel("budget: hyperparameter samples")
        ax.set_ylabel("minimum FID (bootstrap mean, 95 % band)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Min FID vs budget — features: {extractor}", fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_report(results_dir: Path) -> list[Path]:
    """summary.csv, summary.md and fid_vs_budget.png in the results folder, from results.csv alone."""
    results_dir = Path(results_dir)
    results = read_results(results_dir)
    if results.empty:
        raise BenchError(f"{results_dir / 'results.csv'}: no finished trials yet")
    table = summary(results)
    atomic_write_text(results_dir / "summary.csv", table.to_csv(index=False))
    atomic_write_text(results_dir / "summary.md", table.to_markdown(index=False, floatfmt=".4g") + "\n")
    plot_fid_vs_budget(results, results_dir / "fid_vs_budget.png")
    return [results_dir / name for name in ("summary.csv", "summary.md", "fid_vs_budget.png")]
