"""Reports from `results.csv` alone: a summary table per (dataset, loss, protocol) and the paper's headline figure,
the minimum FID reached with a budget of k hyperparameter samples, estimated by bootstrap, both from the search
stage; and, when the study has a confirm stage, the paper's table — mean ± std of the best FID of each (model,
dataset)'s best configuration over many seeds — beside the paper's own numbers.

Every score is keyed by its protocol (feature extractor and its weights, resize, real split and sample counts): FIDs
of different protocols are not comparable, so they never share a row, a curve or a column unlabelled. Runs without
any finite FID are counted, never dropped. Trials a pruner stopped are counted apart and left out of every FID
statistic: their FID is of a shorter training."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path
from typing import Callable, Sequence

from matplotlib import image as mpimg
from matplotlib.figure import Figure  # a bare Figure: no pyplot state or backend, nothing to close
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd
import yaml

from bench import BenchError
from bench.io import atomic_write_text, folder_name
from bench.results_folder import RESULTS_FILE, STUDY_FILE
from bench.metrics import METRICS


PAPER_CSV = "lucic2018_best_fid.csv"
PAPER_EXTRACTOR = "inception-v3-compat"
PANELS_PER_ROW = 4


class DamagedResults(BenchError):
    """results.csv cannot be read as gan-bench writes it (cut short, overwritten, not a CSV)."""


RESULT_COLUMNS = ("dataset", "loss", "trial", "seed", "step", "status")
# The metrics of image-to-image trials, described beside the objective in the summary.
TASK_METRICS = ("psnr", "ssim", "perceptual", "fid")
# The paper's second experiment (metrics.prf): a polygons study's rows have them.
POLYGON_METRICS = ("f1", "precision", "recall")


def read_results(results_dir: Path) -> pd.DataFrame:
    path = Path(results_dir) / RESULTS_FILE
    if not path.is_file():
        raise BenchError(f"{path}: not found; run the study first (gan-bench run STUDY.yaml)")
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # written whole it ends with a line end: this one was cut short
        raise DamagedResults(f"{path}: damaged (cut short)")
    try:
        results = pd.read_csv(io.BytesIO(data))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DamagedResults(f"{path}: damaged ({' '.join(str(error).split())})") from None
    missing = [column for column in RESULT_COLUMNS if column not in results]
    if missing:
        raise DamagedResults(f"{path}: damaged (no column {', '.join(missing)})")
    if "stage" not in results:
        results["stage"] = "search"
    return results


def with_protocol(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with a `protocol` on every row. A results.csv written before protocols were recorded names only
    its extractor, the best key it has (and "unknown" where even that is missing)."""
    protocol = results["protocol"] if "protocol" in results else pd.Series(np.nan, index=results.index, dtype=object)
    if "extractor" in results:
        protocol = protocol.fillna(results["extractor"])
    return results.assign(protocol=protocol.fillna("unknown"))


def protocol_extractor(protocol: str) -> str:
    """The feature extractor a protocol names: its first word, before any `@weights` hash."""
    return protocol.split()[0].split("@")[0]


def _has(status: str) -> Callable[[pd.Series], bool]:
    return lambda statuses: bool((statuses == status).any())


def _best(metric: str) -> str:
    """The pandas reduction that picks `metric`'s best value (NaN where there is no finite one)."""
    return "max" if METRICS.get(metric).higher_is_better else "min"


def _best_index(values: pd.Series, metric: str) -> object:
    """The index of `metric`'s best value among finite `values`."""
    return values.agg(f"idx{_best(metric)}")


def runs(results: pd.DataFrame, keys: list[str], params: Sequence[str] = (), sort: bool = True,
         metrics: Sequence[str] = ("fid",)) -> pd.DataFrame:
    """One row per run (one seed of one trial): its best value of each metric over the evaluations, `best_<metric>`
    (the paper's rule for FID; NaN when it never had a finite one), whether it diverged, collapsed or was pruned, and
    the first value of each column in `params`."""
    # A metric no run has reached yet (every run diverged before its first evaluation) is all NaN.
    finite = results.assign(**{m: pd.to_numeric(results[m]).where(np.isfinite(pd.to_numeric(results[m])))
                               if m in results else np.nan for m in metrics})
    return finite.groupby(keys, sort=sort).agg(
        **{f"best_{m}": (m, _best(m)) for m in metrics}, diverged=("status", _has("diverged")),
        collapsed=("status", _has("collapsed")), pruned=("status", _has("pruned")), **{p: (p, "first") for p in params})


def metrics_of(results: pd.DataFrame, objective: str) -> list[str]:
    """The metrics a report ranks and describes: the objective first, then the others the rows have values of
    (image-to-image: PSNR, SSIM, perceptual distance, FID; polygons: F1, precision, recall; otherwise FID alone)."""
    return [objective, *(m for m in (*TASK_METRICS, *POLYGON_METRICS)
                         if m in results and m != objective and results[m].notna().any())]


def trial_scores(results: pd.DataFrame, objective: str = "fid") -> pd.DataFrame:
    """One row per search trial: its protocol, whether it diverged, collapsed or was pruned, the best value over
    evaluation steps of the objective and of every other metric (`metrics_of`; the mean over its seeds; NaN when a
    seed has none, as the runner's objective makes such a trial ineligible) and its parameters."""
    if "stage" in results:
        results = results[results["stage"] == "search"]
    results = with_protocol(results)
    params = [c for c in results.columns if c.startswith("param_")]
    metrics = metrics_of(results, objective)
    per_seed = runs(results, ["dataset", "loss", "protocol", "trial", "seed"], params, metrics=metrics)
    return per_seed.groupby(["dataset", "loss", "protocol", "trial"]).agg(
        **{f"best_{m}": (f"best_{m}", lambda b: b.mean(skipna=False)) for m in metrics},
        diverged=("diverged", "any"), collapsed=("collapsed", "any"), pruned=("pruned", "any"),
        **{p: (p, "first") for p in params}).reset_index()


def _finite(values: pd.Series) -> pd.Series:
    return values[np.isfinite(values)]


def summary(results: pd.DataFrame, objective: str = "fid") -> pd.DataFrame:
    """Per (dataset, loss, protocol): trials done (`trials`: trained until their budget or their own failure ended
    them), how many a pruner stopped (`pruned`), how many have no finite objective (`no_fid`, `no_ssim`, ...), best and
    median objective of those that have one, the best trial's hyperparameters, the shares that diverged and that
    collapsed; for image-to-image studies also the best and median of every other metric (each trial at its own best
    evaluation for that metric).

    Pruned trials are counted in their own column and left out of everything else: their FID is of a shorter
    training, so it would compare unequal compute (and a pruner stops the trials that look worse, so the statistics
    describe the trials it kept)."""
    trials = trial_scores(results, objective)
    rows = []
    for (dataset, loss, protocol), group in trials.groupby(["dataset", "loss", "protocol"], sort=False):
        done = group[~group["pruned"]]
        scored = done.loc[_finite(done[f"best_{objective}"]).index]
        best = None
        if len(scored):
            values = scored[f"best_{objective}"]
            best = scored.loc[_best_index(values, objective)]
        others = {}
        for metric in metrics_of(results, objective)[1:]:
            values = _finite(done[f"best_{metric}"])
            others[f"best_{metric}"] = values.agg(_best(metric)) if len(values) else np.nan
            others[f"median_{metric}"] = values.median() if len(values) else np.nan
        rows.append({
            "dataset": dataset, "loss": loss, "trials": len(done), "pruned": len(group) - len(done),
            f"no_{objective}": len(done) - len(scored),
            f"best_{objective}": best[f"best_{objective}"] if best is not None else np.nan,
            f"median_{objective}": scored[f"best_{objective}"].median() if len(scored) else np.nan,
            **others,
            "diverged_share": done["diverged"].mean(), "collapsed_share": done["collapsed"].mean(),
            "best_trial": int(best["trial"]) if best is not None else None,
            "best_params": ", ".join(f"{c.removeprefix('param_')}={best[c]:.4g}" if isinstance(best[c], float)
                                     else f"{c.removeprefix('param_')}={best[c]}"
                                     for c in group.columns if c.startswith("param_") and pd.notna(best[c]))
            if best is not None else "",
            # Last: a long string that would push the numbers out of view in summary.md.
            "protocol": protocol,
        })
    return pd.DataFrame(rows)


def best_of_k_bootstrap(values: np.ndarray, max_budget: int, resamples: int = 2000, seed: int = 0,
                        higher_is_better: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For k = 1..max_budget: median and 2.5–97.5 % band of the best value (the minimum FID; the maximum PSNR or
    SSIM with `higher_is_better`) of k trials drawn with replacement.

    A trial without a finite value (NaN or inf in `values`) counts as worse than any (+inf FID, −inf SSIM): the
    budget paid for it. The mean would then be infinite as soon as one resample drew only such trials, so the median
    and band are quantiles that do not interpolate (`inverted_cdf`): each is one of the drawn bests, ±inf included.
    A maximised metric is negated, bootstrapped as a minimum, and negated back (its band's edges swap)."""
    rng = np.random.default_rng(seed)
    sign = -1.0 if higher_is_better else 1.0
    values = sign * np.asarray(values, dtype=float)
    values = np.where(np.isfinite(values), values, np.inf)
    draws = rng.choice(values, size=(resamples, max_budget), replace=True)
    # The minimum over the first k draws of each resample: one pass gives every budget, and the curve of each
    # resample (hence every quantile) is monotone in k.
    minima = np.minimum.accumulate(draws, axis=1)
    median, low, high = np.quantile(minima, [0.5, 0.025, 0.975], axis=0, method="inverted_cdf")
    return (sign * median, sign * high, sign * low) if higher_is_better else (median, low, high)


def save_figure(fig: Figure, path: Path, dpi: int) -> None:
    """Writes a figure's PNG atomically: a reader never sees half an image."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)


def plot_vs_budget(results: pd.DataFrame, path: Path, objective: str = "fid") -> Figure:
    """The paper's figure from the search stage, one panel per (dataset, protocol): per loss, the bootstrap median
    and 95 % band of the best objective (minimum FID, maximum PSNR or SSIM) over k samples, trials without a finite
    one counted as worse than any (where the median or a band edge is infinite nothing is drawn). Pruned trials are
    left out (the legend says how many): their score is of a shorter training, and the figure compares losses at
    equal compute per sample. Writes `path` and returns the figure."""
    trials = trial_scores(results, objective)
    metric = METRICS.get(objective)
    name = metric.display
    panels = list(dict.fromkeys(zip(trials["dataset"], trials["protocol"])))
    columns = min(len(panels), PANELS_PER_ROW)
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(5 * columns, 4.4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    extractor = ", ".join(sorted(results["extractor"].dropna().unique())) if "extractor" in results else "?"
    for ax, (dataset, protocol) in zip(axes, panels):
        panel = trials[(trials["dataset"] == dataset) & (trials["protocol"] == protocol)]
        for loss, group in panel.groupby("loss", sort=False):
            values = group.loc[~group["pruned"], f"best_{objective}"].to_numpy(dtype=float)
            n, without, pruned = len(values), int((~np.isfinite(values)).sum()), int(group["pruned"].sum())
            median, low, high = best_of_k_bootstrap(values, n, higher_is_better=metric.higher_is_better)
            k = np.arange(1, n + 1)
            notes = ([f"{without} of {n} without {name}"] if without else []) + (
                [f"{pruned} pruned, left out"] if pruned else [])
            label = f"{loss} ({'; '.join(notes)})" if notes else loss
            ax.plot(k, median, marker="o", markersize=3, label=label)
            ax.fill_between(k, low, high, alpha=0.2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if objective == "fid":
            ax.set_yscale("log")  # one bad first sample (FID ~1000) must not flatten the curves that matter
        ax.set_title(f"{dataset}\n" + textwrap.fill(protocol, 60, break_on_hyphens=False), fontsize=8)
        ax.set_xlabel("budget: hyperparameter samples")
        ax.set_ylabel(f"{'maximum' if metric.higher_is_better else 'minimum'} {name} (bootstrap median, "
                      "95 % band)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{'Max' if metric.higher_is_better else 'Min'} {name} vs budget — FID features: {extractor}",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return fig


def plot_precision_recall(results: pd.DataFrame, path: Path) -> Figure:
    """The paper's precision–recall figure (section 5) from the search stage of a polygons study (metrics.prf): one
    point per trial (its first seed), at the evaluation with its best F1, one colour per loss and one panel per
    (dataset, protocol); trials without a finite F1 are counted in the legend. Writes `path` and returns the figure."""
    search = with_protocol(results[results["stage"] == "search"] if "stage" in results else results)
    search = search.assign(f1=pd.to_numeric(search["f1"]).where(np.isfinite(pd.to_numeric(search["f1"]))))
    panels = list(dict.fromkeys(zip(search["dataset"], search["protocol"])))
    fig = Figure(figsize=(6.5 * len(panels), 5))
    axes = fig.subplots(1, len(panels), squeeze=False).ravel()
    for ax, (dataset, protocol) in zip(axes, panels):
        panel = search[(search["dataset"] == dataset) & (search["protocol"] == protocol)]
        first_seed = panel[panel["seed"] == panel.groupby("trial")["seed"].transform("min")]
        for loss, group in first_seed.groupby("loss", sort=False):
            scored = group.dropna(subset=["f1"])
            best = scored.loc[scored.groupby("trial")["f1"].idxmax()] if len(scored) else scored
            without = group["trial"].nunique() - len(best)
            label = f"{loss} ({len(best)} trials{f', {without} without F1' if without else ''})"
            ax.scatter(best["recall"], best["precision"], s=22, alpha=0.8, label=label)
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("recall: share of hold-out polygons the generator reaches")
        ax.set_ylabel("precision: share of samples on the polygon manifold")
        ax.set_title(f"{dataset}\n" + textwrap.fill(protocol, 70, break_on_hyphens=False), fontsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="one point per trial")
    fig.suptitle("Precision and recall on convex polygons, each trial at its best F1", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return fig


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


def confirm_table(results: pd.DataFrame, reference: pd.DataFrame | None, objective: str = "fid") -> pd.DataFrame:
    """Per (loss, dataset, protocol) of the confirm stage: mean ± std (ddof 1) of the best FID of every run that has
    a finite one, diverged, collapsed or not; the runs, how many diverged and collapsed, how many have no finite FID
    (`no_fid`: counted,
    left out of mean ± std); the paper's mean ± std, and `differs`: whether the two differ by more than their
    error bars together (|ours − paper| > std_ours + std_paper).

    A run that diverged after an evaluation keeps its best earlier FID, as in the paper's code (compare_gan v1
    scored a NaN checkpoint 31337 and took each run's best checkpoint): leaving it out would flatter the losses
    that diverge.

    Another objective (PSNR, SSIM) gets the same columns under its own name (`ssim_mean`, ...) and no paper's."""
    confirm = with_protocol(results[results["stage"] == "confirm"])
    per_run = runs(confirm, ["loss", "dataset", "protocol", "seed"], sort=False, metrics=[objective])
    rows = []
    for (loss, dataset, protocol), group in per_run.groupby(["loss", "dataset", "protocol"], sort=False):
        scored = _finite(group[f"best_{objective}"])
        rows.append({"loss": loss, "dataset": dataset, "protocol": protocol, f"{objective}_mean": scored.mean(),
                     f"{objective}_std": scored.std(ddof=1), "runs": len(group),
                     "diverged": int(group["diverged"].sum()), "collapsed": int(group["collapsed"].sum()),
                     f"no_{objective}": len(group) - len(scored)})
    table = pd.DataFrame(rows, columns=["loss", "dataset", "protocol", f"{objective}_mean", f"{objective}_std", "runs",
                                        "diverged", "collapsed", f"no_{objective}"])
    if objective != "fid":
        return table
    if reference is None:
        reference = pd.DataFrame(columns=["model", "dataset", "fid_mean", "fid_std"])
    paper = reference.rename(columns={"model": "loss", "fid_mean": "paper_mean", "fid_std": "paper_std"})
    table = table.merge(paper[["loss", "dataset", "paper_mean", "paper_std"]], on=["loss", "dataset"], how="left")
    gap = (table["fid_mean"] - table["paper_mean"]).abs()
    table["differs"] = (gap > table["fid_std"] + table["paper_std"]).where(table["paper_mean"].notna())
    return table


def _cell(mean: float, std: float) -> str:
    return "–" if pd.isna(mean) else f"{mean:.1f} ± {std:.1f}" if pd.notna(std) else f"{mean:.1f}"


def _ours(row: pd.Series) -> str:
    """Our mean ± std with the runs behind it: n scored, and the diverged, collapsed and FID-less runs when there are
    any."""
    counts = [f"n={row['runs'] - row['no_fid']}"]
    others = ([f"{row['diverged']} diverged"] if row["diverged"] else []) + (
        [f"{row['collapsed']} collapsed"] if row["collapsed"] else []) + (
        [f"{row['no_fid']} without FID"] if row["no_fid"] else [])
    if others:
        counts.append(", ".join(others))
    flag = " ⚑" if pd.notna(row["differs"]) and bool(row["differs"]) else ""
    return f"{_cell(row['fid_mean'], row['fid_std'])} ({'; '.join(counts)}){flag}"


def confirm_markdown(table: pd.DataFrame) -> str:
    """The paper's layout: models as rows, per dataset our mean ± std beside the paper's; ⚑ marks a difference
    larger than the error bars together. A dataset scored under several protocols gets one column of ours per
    protocol, labelled P1, P2, …; the protocols are listed below the table."""
    protocols = list(dict.fromkeys(table["protocol"]))
    label = {protocol: f"P{i}" for i, protocol in enumerate(protocols, start=1)}
    datasets = list(dict.fromkeys(table["dataset"]))
    used = {d: list(dict.fromkeys(table.loc[table["dataset"] == d, "protocol"])) for d in datasets}
    header = ["model"]
    for dataset in datasets:
        header += ([f"{dataset} (ours)"] if len(used[dataset]) == 1 else
                   [f"{dataset} (ours, {label[p]})" for p in used[dataset]]) + [f"{dataset} (paper)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for loss, group in table.groupby("loss", sort=False):
        cells = [loss]
        for dataset in datasets:
            rows = group[group["dataset"] == dataset]
            for protocol in used[dataset]:
                row = rows[rows["protocol"] == protocol]
                cells.append(_ours(row.iloc[0]) if len(row) else "")
            cells.append(_cell(rows["paper_mean"].iloc[0], rows["paper_std"].iloc[0]) if len(rows) else "")
        lines.append("| " + " | ".join(cells) + " |")
    notes = [f"{label[p]}: `{p}` ({', '.join(d for d in datasets if p in used[d])})" for p in protocols]
    notes += [f"Protocols differ within {d} ({', '.join(label[p] for p in used[d])}): its FIDs under different "
              "protocols are not comparable with each other." for d in datasets if len(used[d]) > 1]
    foreign = [p for p in protocols if protocol_extractor(p) != PAPER_EXTRACTOR]
    notes.append("FID with the paper's features (Inception)." if not foreign else " ".join(
        f"{label[p]} uses the features of `{protocol_extractor(p)}`, not the paper's Inception: its numbers are on "
        "a different scale and only the ranking of models can be compared." for p in foreign))
    return ("Best FID of each model's best configuration, mean ± std over seeds. n: runs with a finite best FID, "
            "including runs that diverged after an evaluation (their best earlier FID counts, as in the paper's "
            "code); diverged: runs whose loss became non-finite; collapsed: runs stopped because their samples "
            "no longer varied or D's loss ran away (their best FID counts too); without FID: runs that never had a "
            "finite FID (counted, left out of mean ± std). ⚑: |ours − paper| exceeds the two error bars together.\n\n"
            + "\n".join(lines) + "\n\n" + "\n\n".join(notes) + "\n")


def plot_sample_grids(results: pd.DataFrame, results_dir: Path, path: Path, objective: str = "fid") -> Figure | None:
    """The samples.png of each (dataset, loss)'s best search trial (first seed), one panel each, a row per dataset:
    for image-to-image tasks, rows of sources, outputs and targets. None (nothing written) when no run folder has
    one: results.csv without a `folder` column, or run folders moved away."""
    trials = trial_scores(results, objective)
    panels = []
    for (dataset, loss), group in trials[~trials["pruned"]].groupby(["dataset", "loss"], sort=False):
        values = _finite(group[f"best_{objective}"])
        if not len(values) or "folder" not in results:
            continue
        best = group.loc[_best_index(values, objective)]
        runs_of_best = results[(results["dataset"] == dataset) & (results["loss"] == loss)
                               & (results["stage"] == "search") & (results["trial"] == best["trial"])]
        grid = Path(results_dir) / str(runs_of_best["folder"].iloc[0]) / "samples.png"
        if grid.is_file():
            panels.append((dataset, loss, best[f"best_{objective}"], grid))
    if not panels:
        return None
    datasets = list(dict.fromkeys(p[0] for p in panels))
    columns = max(sum(p[0] == d for p in panels) for d in datasets)
    fig = Figure(figsize=(3.2 * columns, 2.0 * len(datasets)))
    axes = fig.subplots(len(datasets), columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for dataset_row, dataset in zip(axes, datasets):
        for ax, (_, loss, value, grid) in zip(dataset_row, [p for p in panels if p[0] == dataset]):
            ax.imshow(mpimg.imread(grid), cmap="gray", interpolation="nearest")
            ax.set_title(f"{dataset} · {loss}\n{METRICS.get(objective).display} {value:.4g}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    return fig


def study_objective(results_dir: Path) -> str:
    """The objective of the study in `results_dir` (its study.yaml), fid when it names none or is absent."""
    saved = Path(results_dir) / STUDY_FILE
    if not saved.is_file():
        return "fid"
    fields = yaml.safe_load(saved.read_text(encoding="utf-8"))
    return fields.get("objective", "fid") if isinstance(fields, dict) else "fid"


def write_report(results_dir: Path, reference: Path | None = None) -> list[Path]:
    """From results.csv (and the objective in study.yaml beside it), in the results folder: summary.csv, summary.md,
    <objective>_vs_budget.png, samples.png (the best trials' sample grids) and, for a polygons study (metrics.prf),
    precision_recall.png of the search stage; with a confirm
    stage, paper_table.csv and paper_table.md (FID), or confirm.csv and confirm.md (another objective)."""
    results_dir = Path(results_dir)
    results = read_results(results_dir)
    if results.empty:
        raise BenchError(f"{results_dir / RESULTS_FILE}: no finished trials yet")
    objective = study_objective(results_dir)
    paths = []
    if (results["stage"] == "search").any():
        table = summary(results, objective)
        atomic_write_text(results_dir / "summary.csv", table.to_csv(index=False))
        atomic_write_text(results_dir / "summary.md", table.to_markdown(index=False, floatfmt=".4g") + "\n")
        figure = folder_name(f"{objective}_vs_budget.png")  # a custom metric's package.module:function has a ':'
        plot_vs_budget(results, results_dir / figure, objective)
        paths += [results_dir / name for name in ("summary.csv", "summary.md", figure)]
        if plot_sample_grids(results, results_dir, results_dir / "samples.png", objective) is not None:
            paths.append(results_dir / "samples.png")
        if {"precision", "recall", "f1"} <= set(results.columns) and results["f1"].notna().any():
            plot_precision_recall(results, results_dir / "precision_recall.png")
            paths.append(results_dir / "precision_recall.png")
    if (results["stage"] == "confirm").any():
        if objective == "fid":
            reference = reference or reference_path(results_dir)
            table = confirm_table(results, read_reference(reference) if reference else None)
            atomic_write_text(results_dir / "paper_table.csv", table.to_csv(index=False))
            atomic_write_text(results_dir / "paper_table.md", confirm_markdown(table))
            paths += [results_dir / "paper_table.csv", results_dir / "paper_table.md"]
        else:
            table = confirm_table(results, None, objective)
            atomic_write_text(results_dir / "confirm.csv", table.to_csv(index=False))
            atomic_write_text(results_dir / "confirm.md", table.to_markdown(index=False, floatfmt=".4g") + "\n")
            paths += [results_dir / "confirm.csv", results_dir / "confirm.md"]
    return paths
