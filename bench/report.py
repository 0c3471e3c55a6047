"""Reports from `results.csv` alone: a summary table per (dataset, loss) and the paper's headline figure,
the minimum FID reached with a budget of k hyperparameter samples, estimated by bootstrap, both from the
search stage; and, when the study has a confirm stage, the paper's table — mean ± std of the best FID of
each (model, dataset)'s best configuration over many seeds — beside the paper's own numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd

from bench import BenchError
from bench.io import atomic_write_text


PAPER_CSV = "lucic2018_best_fid.csv"
PAPER_EXTRACTOR = "inception-v3-compat"


def read_results(results_dir: Path) -> pd.DataFrame:
    path = Path(results_dir) / "results.csv"
    if not path.is_file():
        raise BenchError(f"{path}: not found; run the study first (gan-bench run STUDY.yaml)")
    results = pd.read_csv(path)
    if "stage" not in results:
        results["stage"] = "search"
    return results


def runs(results: pd.DataFrame, keys: list[str], params: Sequence[str] = (), sort: bool = True) -> pd.DataFrame:
    """One row per run (one seed of one trial): its best FID over the evaluations (the paper's rule), whether it
    diverged, and the first value of each column in `params`."""
    return results.groupby(keys, sort=sort).agg(
        best_fid=("fid", "min"), diverged=("status", lambda s: bool((s == "diverged").any())),
        **{p: (p, "first") for p in params})


def trial_scores(results: pd.DataFrame) -> pd.DataFrame:
    """One row per search trial: its status, its best FID over evaluation steps (mean over seeds) and its
    parameters."""
    if "stage" in results:
        results = results[results["stage"] == "search"]
    params = [c for c in results.columns if c.startswith("param_")]
    per_seed = runs(results, ["dataset", "loss", "trial", "seed"], params)
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
    datasets = list(dict.fromkeys(trials["dataset"]))
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
        ax.set_yscale("log")  # one bad first sample (FID ~1000) must not flatten the curves that matter
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


def reference_path(results_dir: Path) -> Path | None:
    """The paper's table: `results/reference/` beside the results folder, else the one in this repository."""
    for candidate in (Path(results_dir).resolve().parent / "reference" / PAPER_CSV,
                      Path(__file__).resolve().parents[1] / "results" / "reference" / PAPER_CSV):
        if candidate.is_file():
            return candidate
    return None


def read_reference(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise BenchError(f"{path}: cannot read the reference table ({' '.join(str(error).split())})") from None
    needed = {"model", "dataset", "fid_mean", "fid_std"}
    if not needed <= set(table.columns):
        raise BenchError(f"{path}: expected the columns {', '.join(sorted(needed))}, got {', '.join(table.columns)}")
    return table


def confirm_table(results: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    """Per (loss, dataset) of the confirm stage: mean ± std (ddof 1) over seeds of each run's best FID, the runs
    and how many diverged (left out of the mean), the paper's mean ± std, and `differs`: whether the two
    differ by more than their error bars together (|ours − paper| > std_ours + std_paper)."""
    confirm = results[results["stage"] == "confirm"]
    per_run = runs(confirm, ["loss", "dataset", "seed"], sort=False)
    rows = []
    for (loss, dataset), group in per_run.groupby(["loss", "dataset"], sort=False):
        scored = group["best_fid"][~group["diverged"]].dropna()
        rows.append({"loss": loss, "dataset": dataset, "fid_mean": scored.mean(), "fid_std": scored.std(ddof=1),
                     "runs": len(group), "diverged": int(group["diverged"].sum())})
    table = pd.DataFrame(rows, columns=["loss", "dataset", "fid_mean", "fid_std", "runs", "diverged"])
    if reference is None:
        reference = pd.DataFrame(columns=["model", "dataset", "fid_mean", "fid_std"])
    paper = reference.rename(columns={"model": "loss", "fid_mean": "paper_mean", "fid_std": "paper_std"})
    table = table.merge(paper[["loss", "dataset", "paper_mean", "paper_std"]], on=["loss", "dataset"], how="left")
    gap = (table["fid_mean"] - table["paper_mean"]).abs()
    table["differs"] = (gap > table["fid_std"] + table["paper_std"]).where(table["paper_mean"].notna())
    return table


def _cell(mean: float, std: float) -> str:
    return "–" if pd.isna(mean) else f"{mean:.1f} ± {std:.1f}" if pd.notna(std) else f"{mean:.1f}"


def confirm_markdown(table: pd.DataFrame, extractor: str) -> str:
    """The paper's layout: models as rows, per dataset our mean ± std beside the paper's; ⚑ marks a difference
    larger than the error bars together."""
    datasets = list(dict.fromkeys(table["dataset"]))
    header = ["model"] + [f"{d} {who}" for d in datasets for who in ("(ours)", "(paper)")]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for loss, group in table.groupby("loss", sort=False):
        cells = [loss]
        for dataset in datasets:
            row = group[group["dataset"] == dataset]
            if row.empty:
                cells += ["", ""]
                continue
            row = row.iloc[0]
            ours = _cell(row["fid_mean"], row["fid_std"]) + f" (n={row['runs'] - row['diverged']})"
            flag = " ⚑" if pd.notna(row["differs"]) and bool(row["differs"]) else ""
            cells += [ours + flag, _cell(row["paper_mean"], row["paper_std"])]
        lines.append("| " + " | ".join(cells) + " |")
    note = ("FID with the paper's features (Inception)." if extractor == PAPER_EXTRACTOR else
            f"Our FIDs use the features of `{extractor}`, not the paper's Inception: the numbers are on different scales "
            "and only the ranking of models can be compared.")
    return (f"Best FID of each model's best configuration, mean ± std over seeds (n: runs that did not diverge). "
            f"⚑: |ours − paper| exceeds the two error bars together. {note}\n\n" + "\n".join(lines) + "\n")


def write_report(results_dir: Path, reference: Path | None = None) -> list[Path]:
    """From results.csv alone, in the results folder: summary.csv, summary.md and fid_vs_budget.png of the search
    stage, and with a confirm stage paper_table.csv and paper_table.md."""
    results_dir = Path(results_dir)
    results = read_results(results_dir)
    if results.empty:
        raise BenchError(f"{results_dir / 'results.csv'}: no finished trials yet")
    paths = []
    if (results["stage"] == "search").any():
        table = summary(results)
        atomic_write_text(results_dir / "summary.csv", table.to_csv(index=False))
        atomic_write_text(results_dir / "summary.md", table.to_markdown(index=False, floatfmt=".4g") + "\n")
        plot_fid_vs_budget(results, results_dir / "fid_vs_budget.png")
        paths += [results_dir / name for name in ("summary.csv", "summary.md", "fid_vs_budget.png")]
    if (results["stage"] == "confirm").any():
        reference = reference or reference_path(results_dir)
        table = confirm_table(results, read_reference(reference) if reference else None)
        extractor = ", ".join(sorted(results.loc[results["stage"] == "confirm", "extractor"].dropna().unique()))
        atomic_write_text(results_dir / "paper_table.csv", table.to_csv(index=False))
        atomic_write_text(results_dir / "paper_table.md", confirm_markdown(table, extractor))
        paths += [results_dir / "paper_table.csv", results_dir / "paper_table.md"]
    return paths
