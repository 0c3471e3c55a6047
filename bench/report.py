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
import zlib
from pathlib import Path
from typing import Sequence

from matplotlib import image as mpimg
from matplotlib.figure import Figure  # a bare Figure: no pyplot state or backend, nothing to close
from matplotlib.lines import Line2D
from matplotlib.axes import Axes
from matplotlib.ticker import LogFormatter, LogLocator, MaxNLocator, NullFormatter
import numpy as np
import pandas as pd
import yaml

from bench import BenchError, report_html
from bench.io import atomic_write_text, folder_name
from bench.results_folder import RESULTS_FILE, STUDY_FILE
from bench.win_probability import reliable_budget, win_probability, win_probability_interval
from bench.metric_registry import METRICS


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
# How a search trial can end, as the report counts them.
OUTCOMES = ("completed", "diverged", "collapsed", "pruned", "failed")


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
                               if m in results else np.nan for m in metrics},
                            **{f"is_{s}": results["status"] == s for s in ("diverged", "collapsed", "pruned")})
    return finite.groupby(keys, sort=sort).agg(
        **{f"best_{m}": (m, _best(m)) for m in metrics}, diverged=("is_diverged", "any"),
        collapsed=("is_collapsed", "any"), pruned=("is_pruned", "any"), **{p: (p, "first") for p in params})


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
    # The mean over seeds, NaN where a seed has none.
    best = [f"best_{m}" for m in metrics]
    per_seed = per_seed.assign(**{f"no_{b}": per_seed[b].isna() for b in best})
    trials = per_seed.groupby(["dataset", "loss", "protocol", "trial"]).agg(
        **{b: (b, "mean") for b in best}, **{f"no_{b}": (f"no_{b}", "any") for b in best},
        diverged=("diverged", "any"), collapsed=("collapsed", "any"), pruned=("pruned", "any"),
        **{p: (p, "first") for p in params})
    for b in best:
        trials[b] = trials[b].where(~trials.pop(f"no_{b}"))
    return trials.reset_index()


def searched(results: pd.DataFrame) -> dict[tuple[str, str], list[str]]:
    """Per (dataset, loss), the hyperparameters its search stage searched, from results.csv's `searched` column; for
    a results.csv written before it existed, those whose values differ between the loss's trials (a searched one that
    drew the same value every time is then taken for fixed)."""
    rows = results[results["stage"] == "search"] if "stage" in results else results
    params = [c for c in rows.columns if c.startswith("param_")]
    if "searched" in rows:
        named = rows.dropna(subset=["searched"]).groupby(["dataset", "loss"], sort=False)["searched"].first()
        return {key: [n for n in str(names).split() if f"param_{n}" in params] for key, names in named.items()}
    varying = rows.groupby(["dataset", "loss", "trial"], sort=False)[params].first().groupby(
        level=["dataset", "loss"], sort=False).nunique(dropna=False)
    return {key: [c.removeprefix("param_") for c in params if counts[c] > 1] for key, counts in varying.iterrows()}


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
    names = searched(results)
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
            "best_params": ", ".join(f"{name}={best[f'param_{name}']:.4g}" if isinstance(best[f"param_{name}"], float)
                                     else f"{name}={best[f'param_{name}']}"
                                     for name in names.get((dataset, loss), []) if pd.notna(best[f"param_{name}"]))
            if best is not None else "",
            # Last: a long string that would push the numbers out of view in summary.md.
            "protocol": protocol,
        })
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["dataset", "loss", "protocol"])


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


def figure_grid(rows: int, columns: int, panel: tuple[float, float] = (3.4, 2.5), left: float = 0.8, right: float = 0.3,
           top: float = 0.6, bottom: float = 0.6, gap: tuple[float, float] = (0.7, 0.8),
           share: bool = False) -> tuple[Figure, np.ndarray]:
    """A figure of rows × columns axes, `panel` inches each, margins and gaps in inches: laid out by arithmetic rather
    than tight_layout, which measures every label and takes seconds on a large study's figures. With `share`, the
    panels share both axes and only the outer ones are labelled."""
    width = left + right + columns * panel[0] + (columns - 1) * gap[0]
    height = top + bottom + rows * panel[1] + (rows - 1) * gap[1]
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(rows, columns, squeeze=False, sharex=share, sharey=share, gridspec_kw={
        "left": left / width, "right": 1 - right / width, "bottom": bottom / height, "top": 1 - top / height,
        "wspace": gap[0] / panel[0], "hspace": gap[1] / panel[1]})
    return fig, axes


def log_scale(ax: Axes, which: str = "y") -> None:
    """A log scale on the axes' `which` axis, labelled in plain numbers: the default labels (10^x) go through
    mathtext, which costs seconds over the many panels of a large study's page."""
    getattr(ax, f"set_{which}scale")("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(LogFormatter())
    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))  # the default's 8 minor ticks a decade cost more to draw
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False))


def save_figure(fig: Figure, path: Path, dpi: int) -> None:
    """Writes a figure's PNG atomically: a reader never sees half an image."""
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=dpi)
    tmp.replace(path)


def plot_vs_budget(results: pd.DataFrame, path: Path | None, objective: str = "fid", title: str = "") -> Figure:
    """The paper's figure from the search stage, one panel per (dataset, protocol): per loss, the bootstrap median
    and 95 % band of the best objective (minimum FID, maximum PSNR or SSIM) over k samples, trials without a finite
    one counted as worse than any (where the median or a band edge is infinite nothing is drawn). Each band is
    outlined in its loss's colour, so overlapping bands stay apart; the legend, outside the panel, counts each loss's
    trials, how many diverged and how many have no finite score. Pruned trials are left out (the legend says how
    many): their score is of a shorter training, and the figure compares losses at equal compute per sample. Titled
    `title` (the study's name). Writes `path` (unless None) and returns the figure."""
    trials = trial_scores(results, objective)
    metric = METRICS.get(objective)
    name = metric.display
    panels = list(dict.fromkeys(zip(trials["dataset"], trials["protocol"])))
    columns = min(len(panels), PANELS_PER_ROW // 2)
    fig, axes = figure_grid(math.ceil(len(panels) / columns), columns, panel=(4.6, 3.4), left=0.9, right=3.6, top=1.0,
                       bottom=0.6, gap=(4.4, 1.3))
    axes = axes.ravel()
    for ax, (dataset, protocol) in zip(axes, panels):
        panel = trials[(trials["dataset"] == dataset) & (trials["protocol"] == protocol)]
        for loss, group in panel.groupby("loss", sort=False):
            done = group[~group["pruned"]]
            values = done[f"best_{objective}"].to_numpy(dtype=float)
            n, without, pruned = len(values), int((~np.isfinite(values)).sum()), int(group["pruned"].sum())
            notes = [f"n={n}", f"{int(done['diverged'].sum())} diverged"] + (
                [f"{without} without {name}"] if without else []) + ([f"{pruned} pruned, left out"] if pruned else [])
            if not n:
                ax.plot([], [], label=f"{loss} ({'; '.join(notes)})")
                continue
            median, low, high = best_of_k_bootstrap(values, n, higher_is_better=metric.higher_is_better)
            k = np.arange(1, n + 1)
            line, = ax.plot(k, median, marker="o", markersize=3, label=f"{loss} ({'; '.join(notes)})")
            ax.fill_between(k, low, high, color=line.get_color(), alpha=0.12, linewidth=0)
            for edge in (low, high):
                ax.plot(k, edge, color=line.get_color(), linewidth=0.8, linestyle=":")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if objective == "fid" and (_finite(panel[f"best_{objective}"].astype(float)) > 0).any():
            log_scale(ax)  # one bad first sample (FID ~1000) must not flatten the curves that matter
        ax.set_title(f"{dataset}\n" + textwrap.fill(protocol, 70, break_on_hyphens=False), fontsize=8)
        ax.set_xlabel("budget k: hyperparameter samples")
        ax.set_ylabel(f"{'max' if metric.higher_is_better else 'min'} {name} of k samples")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0,
                  title="median, 95 % band (dotted)", title_fontsize=7)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    better = "higher" if metric.higher_is_better else "lower"
    fig.suptitle(f"{title + ': ' if title else ''}{'max' if metric.higher_is_better else 'min'} {name} vs budget "
                 f"({better} is better), bootstrap over trials", fontsize=10)
    if path is not None:
        save_figure(fig, path, dpi=120)
    return fig


def plot_precision_recall(results: pd.DataFrame, path: Path | None) -> Figure:
    """The paper's precision–recall figure (section 5) from the search stage of a polygons study (metrics.prf): one
    point per trial (its first seed), at the evaluation with its best F1, one colour per loss and one panel per
    (dataset, protocol); trials without a finite F1 are counted in the legend. Writes `path` (unless None) and returns the figure."""
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
    if path is not None:
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


def samples_of(results: pd.DataFrame, results_dir: Path, dataset: str, loss: str, trial: int) -> Path | None:
    """The samples.png of a search trial's first run, None when results.csv names no folder or the file is gone."""
    if "folder" not in results:
        return None
    folders = results.loc[(results["dataset"] == dataset) & (results["loss"] == loss)
                          & (results["stage"] == "search") & (results["trial"] == trial), "folder"].dropna()
    grid = Path(results_dir) / str(folders.iloc[0]) / "samples.png" if len(folders) else None
    return grid if grid is not None and grid.is_file() else None


def plot_sample_grids(results: pd.DataFrame, results_dir: Path, path: Path, objective: str = "fid") -> Figure | None:
    """The samples.png of each (dataset, loss)'s best search trial (first seed), one panel each, a row per dataset:
    for image-to-image tasks, rows of sources, outputs and targets. None (nothing written) when no run folder has
    one: results.csv without a `folder` column, or run folders moved away."""
    trials = trial_scores(results, objective)
    panels = []
    for (dataset, loss), group in trials[~trials["pruned"]].groupby(["dataset", "loss"], sort=False):
        values = _finite(group[f"best_{objective}"])
        if not len(values):
            continue
        best = group.loc[_best_index(values, objective)]
        grid = samples_of(results, results_dir, dataset, loss, best["trial"])
        if grid is not None:
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


def study_fields(results_dir: Path) -> dict:
    """The study file saved in `results_dir` (study.yaml) as plain YAML, unvalidated ({} when absent): the report
    reads its name, objective and budget without importing what validates a study (models, torch)."""
    saved = Path(results_dir) / STUDY_FILE
    if not saved.is_file():
        return {}
    fields = yaml.safe_load(saved.read_text(encoding="utf-8"))
    return fields if isinstance(fields, dict) else {}


def study_objective(results_dir: Path) -> str:
    """The objective of the study in `results_dir` (its study.yaml), fid when it names none or is absent."""
    return study_fields(results_dir).get("objective", "fid")


def study_budget(fields: dict, trials: pd.DataFrame) -> int:
    """The study's budget of search samples per (dataset, loss): budget.samples of its study file, else the most
    trials any (dataset, loss) has."""
    samples = (fields.get("budget") or {}).get("samples") if isinstance(fields.get("budget"), dict) else None
    if isinstance(samples, int) and samples >= 1:
        return samples
    return int(trials.groupby(["dataset", "loss"]).size().max()) if len(trials) else 1


def describe_protocol(results: pd.DataFrame, protocol: str, objective: str) -> str:
    """In words, how the numbers of `protocol` were made: the features and their weights, the real images and the
    generated samples behind FID; the samples, hold-out polygons and distance behind polygon precision and recall;
    the test pairs behind an image-to-image metric."""
    rows = with_protocol(results)
    rows = rows[rows["protocol"] == protocol]
    if not len(rows):
        return protocol
    row = rows.iloc[0]

    def value(column: str) -> object:
        return row[column] if column in row and pd.notna(row[column]) else None

    parts = []
    extractor, samples = value("extractor") or protocol_extractor(protocol), value("gen_count")
    if extractor != "none":
        weights = f" (weights {value('extractor_weights')})" if value("extractor_weights") else ""
        real = f"{int(value('real_count'))} real {value('real_split') or 'test'} images" if value("real_count") else (
            "the real test images")
        parts.append(f"FID/KID on the features of {extractor}{weights}: {int(samples) if samples else '?'} "
                     f"generated samples against {real}" + (f", resized {value('resize')}" if value("resize") else ""))
    if value("prf_delta") is not None:
        parts.append(f"polygon precision over {int(value('prf_samples') or samples or 0)} samples and recall over "
                     f"{int(value('prf_inversions'))} hold-out polygons ({int(value('prf_restarts'))} restarts × "
                     f"{int(value('prf_steps'))} steps each), a sample counted near the manifold when its "
                     f"{value('prf_distance')} distance is below {value('prf_delta')}")
    task = [m for m in TASK_METRICS[:3] if m in rows and rows[m].notna().any()]
    if task:
        parts.append(f"{', '.join(METRICS.get(m).display for m in task)} of the outputs on the first "
                     f"{int(samples) if samples else '?'} test pairs against their targets")
    if objective not in (*TASK_METRICS, *POLYGON_METRICS, "fid"):
        parts.append(f"{METRICS.get(objective).display}: a custom metric of metrics.extra")
    return "; ".join(parts) if parts else protocol


def win_table(trials: pd.DataFrame, objective: str, budget: int) -> pd.DataFrame:
    """Who beats whom: for each (dataset, protocol), each ordered pair of losses and each budget k = 1..budget, the
    probability `p` that loss_a's best score among k of its search trials drawn at random beats loss_b's best of k
    (`bench.win_probability`: exact, ties ½, a trial without a finite score worse than any), with the 95 % bootstrap
    interval `low`–`high` for the k that the trials support (`reliable_budget`; NaN beyond). Pruned trials are left
    out, as from every score. Each pair is computed once, its reverse is 1 − p; the bootstrap's seed depends on the
    pair alone, so adding a loss leaves the others' intervals as they were."""
    higher = METRICS.get(objective).higher_is_better
    rows = []
    done = trials[~trials["pruned"]]
    for (dataset, protocol), panel in done.groupby(["dataset", "protocol"], sort=False):
        scores = {loss: group[f"best_{objective}"].to_numpy(dtype=float)
                  for loss, group in panel.groupby("loss", sort=False)}
        for i, (loss_a, a) in enumerate(scores.items()):
            for loss_b, b in list(scores.items())[i + 1:]:
                ks = np.arange(1, budget + 1)
                p = win_probability(a, b, ks, higher)
                reliable = min(budget, reliable_budget(len(a), len(b)))
                seed = zlib.crc32(f"{dataset}/{protocol}/{loss_a}/{loss_b}".encode())
                _, low, high = win_probability_interval(a, b, ks[:reliable], higher, seed=seed)
                low = np.concatenate([low, np.full(budget - reliable, np.nan)])
                high = np.concatenate([high, np.full(budget - reliable, np.nan)])
                for first, second, values in ((loss_a, loss_b, (p, low, high)), (loss_b, loss_a, (1 - p, 1 - high, 1 - low))):
                    rows += [{"dataset": dataset, "protocol": protocol, "loss_a": first, "loss_b": second, "k": int(k),
                              "p": values[0][j], "low": values[1][j], "high": values[2][j]} for j, k in enumerate(ks)]
    return pd.DataFrame(rows, columns=["dataset", "protocol", "loss_a", "loss_b", "k", "p", "low", "high"])


def matrix_budget(wins: pd.DataFrame, budget: int) -> int:
    """The budget the who-beats-whom matrix of one (dataset, protocol) shows: the study's, or less where the trials
    support an interval for no more (the smallest `reliable_budget` of its pairs)."""
    with_interval = wins.dropna(subset=["low"])
    return int(min(budget, with_interval.groupby(["loss_a", "loss_b"])["k"].max().min())) if len(with_interval) else 1


def winners(table: pd.DataFrame, wins: pd.DataFrame, objective: str, budget: int) -> list[str]:
    """Per (dataset, protocol) of the summary, one line: the loss with the best score, its margin over the
    runner-up, and the probability that its best of k trials beats the runner-up's, with its interval."""
    metric = METRICS.get(objective)
    lines = []
    for (dataset, protocol), group in table.groupby(["dataset", "protocol"], sort=False):
        ranked = group.dropna(subset=[f"best_{objective}"]).sort_values(f"best_{objective}",
                                                                          ascending=not metric.higher_is_better)
        if not len(ranked):
            lines.append(f"**{dataset}**: no loss has a finite {metric.display} yet.")
            continue
        first = ranked.iloc[0]
        line = f"**{dataset}**: {first['loss']} wins with {metric.display} {first[f'best_{objective}']:.4g}"
        if len(ranked) > 1:
            second = ranked.iloc[1]
            gap = abs(first[f"best_{objective}"] - second[f"best_{objective}"])
            relative = f" ({gap / abs(second[f'best_{objective}']):.1%})" if second[f"best_{objective}"] else ""
            line += f", {gap:.4g}{relative} better than the runner-up {second['loss']} ({second[f'best_{objective}']:.4g})"
            pair = wins[(wins["dataset"] == dataset) & (wins["protocol"] == protocol) & (wins["loss_a"] == first["loss"])
                        & (wins["loss_b"] == second["loss"])]
            k = matrix_budget(wins[(wins["dataset"] == dataset) & (wins["protocol"] == protocol)], budget)
            at = pair[pair["k"] == k]
            if len(at):
                row = at.iloc[0]
                line += (f"; P({first['loss']}'s best of {k} trial{'s' if k > 1 else ''} beats {second['loss']}'s) = "
                         f"{row['p']:.2f} (95 % interval {row['low']:.2f}–{row['high']:.2f})")
            full = pair[pair["k"] == budget]
            if k < budget and len(full):
                line += (f"; at the study's budget, k = {budget}: {full.iloc[0]['p']:.2f} (no interval: these trials "
                         f"support one up to k = {k})")
        lines.append(line + ".")
    return lines


def summary_markdown(table: pd.DataFrame, wins: pd.DataFrame, results: pd.DataFrame, objective: str, budget: int,
                     name: str) -> str:
    """summary.md: what the numbers are and which way is better, then per dataset how they were scored, who won by
    how much and how surely, and the table (best_params: only the searched hyperparameters)."""
    metric = METRICS.get(objective)
    direction = "higher is better" if metric.higher_is_better else "lower is better"
    text = [f"# {name or 'Study'}: {metric.display} ({direction})", "",
            f"Search stage, per dataset and loss: `best_{objective}` is the best {metric.display} of any trial (each "
            f"trial at its best evaluation, the mean over its seeds), `median_{objective}` the median over trials; "
            f"`trials` trained to the end, `pruned` stopped early (left out of every score), `no_{objective}` never "
            f"had a finite {metric.display} (counted as worse than any). `best_params` lists the searched "
            "hyperparameters of the best trial. P(A beats B) is the probability that A's best of k trials drawn at "
            "random beats B's best of k (ties ½; win_probability.csv has every pair and k).", ""]
    for line in winners(table, wins, objective, budget):
        text += [f"- {line}"]
    for (dataset, protocol), group in table.groupby(["dataset", "protocol"], sort=False):
        text += ["", f"## {dataset}", "", f"Scored by: {describe_protocol(results, protocol, objective)}. "
                 f"Protocol `{protocol}`.", "",
                 group.drop(columns=["dataset", "protocol"]).to_markdown(index=False, floatfmt=".4g")]
    return "\n".join(text) + "\n"


def plot_vs_step(results: pd.DataFrame, dataset: str, protocol: str, metrics: Sequence[str]) -> Figure:
    """Every metric against the training step, one panel each, per loss the median and interquartile band over the
    search trials (first seed; pruned trials left out) at each evaluation step. The legend counts the trials."""
    rows = with_protocol(results[results["stage"] == "search"])
    rows = rows[(rows["dataset"] == dataset) & (rows["protocol"] == protocol) & (rows["status"] != "pruned")]
    rows = rows[rows["seed"] == rows.groupby("trial")["seed"].transform("min")]
    metrics = [m for m in metrics if m in rows and pd.to_numeric(rows[m]).notna().any()]
    fig, axes = figure_grid(1, max(1, len(metrics)), right=2.4, top=0.4)
    axes = axes.ravel()
    for ax, metric in zip(axes, metrics):
        values = rows.assign(value=pd.to_numeric(rows[metric]).where(np.isfinite(pd.to_numeric(rows[metric]))))
        for loss, group in values.groupby("loss", sort=False):
            by_step = group.dropna(subset=["value"]).groupby("step")["value"]
            if not len(by_step):
                ax.plot([], [], label=f"{loss} (no values)")
                continue
            quartiles = by_step.quantile([0.25, 0.5, 0.75]).unstack()
            line, = ax.plot(quartiles.index, quartiles[0.5], marker=".", markersize=3,
                            label=f"{loss} (n={group['trial'].nunique()})")
            ax.fill_between(quartiles.index, quartiles[0.25], quartiles[0.75], color=line.get_color(), alpha=0.15,
                            linewidth=0)
        if metric in ("fid", "kid") and (values["value"] > 0).all():
            log_scale(ax)
        better = "higher" if METRICS.get(metric).higher_is_better else "lower"
        ax.set_title(f"{METRICS.get(metric).display} ({better} is better)", fontsize=8)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
                    title="median, IQR band", title_fontsize=7)
    return fig


def _category_positions(values: pd.Series) -> tuple[pd.Series, list[str] | None]:
    """A hyperparameter's values as x positions: numbers as they are, anything else (optimizer names, booleans) at
    0, 1, 2, … with its labels."""
    numbers = pd.to_numeric(values, errors="coerce")
    if values.dtype != bool and numbers.notna().sum() == values.notna().sum() and values.map(
            lambda v: not isinstance(v, (bool, np.bool_))).all():
        return numbers, None
    labels = sorted(values.dropna().astype(str).unique())
    return values.astype(str).map({label: i for i, label in enumerate(labels)}), labels


def plot_sensitivity(results: pd.DataFrame, trials: pd.DataFrame, dataset: str, protocol: str,
                     objective: str) -> Figure | None:
    """The objective against each searched hyperparameter, a panel each, a colour per loss (of the losses that
    searched it): a dot per trial (pruned ones left out), collapsed trials as hollow circles, trials without a finite
    score as × on the worst edge (diverged), marked rather than dropped. None when no loss searched anything."""
    metric = METRICS.get(objective)
    panel = trials[(trials["dataset"] == dataset) & (trials["protocol"] == protocol) & ~trials["pruned"]]
    losses = list(dict.fromkeys(panel["loss"]))
    names_of = searched(results)
    params = {loss: names_of.get((dataset, loss), []) for loss in losses}
    names = list(dict.fromkeys(p for loss in losses for p in params[loss]))
    if not names:
        return None
    finite = _finite(panel[f"best_{objective}"].astype(float))
    log = objective == "fid" and len(finite) and (finite > 0).all()
    worst = (finite.min() if metric.higher_is_better else finite.max()) if len(finite) else 0.0
    columns = min(len(names), 4)
    fig, axes = figure_grid(math.ceil(len(names) / columns), columns, panel=(3.0, 2.3), right=2.2, top=0.4)
    axes = axes.ravel()
    colours = {loss: f"C{i % 10}" for i, loss in enumerate(losses)}
    for ax, name in zip(axes, names):
        # One scatter per kind of mark, coloured per trial's loss: a few artists a panel, however many trials.
        group = panel[panel["loss"].map(lambda loss: name in params[loss])]
        x, labels = _category_positions(group[f"param_{name}"])
        y = group[f"best_{objective}"].astype(float)
        colour = group["loss"].map(colours)
        scored, collapsed = np.isfinite(y), group["collapsed"]
        ax.scatter(x[scored & ~collapsed], y[scored & ~collapsed], s=10, c=colour[scored & ~collapsed])
        ax.scatter(x[scored & collapsed], y[scored & collapsed], s=16, facecolors="none",
                   edgecolors=colour[scored & collapsed])
        ax.scatter(x[~scored], np.full(int((~scored).sum()), worst), marker="x", s=16, c=colour[~scored])
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels)
        values = pd.to_numeric(panel.get(f"param_{name}"), errors="coerce").dropna()
        if len(values) and values.min() > 0 and values.max() / values.min() > 20:
            log_scale(ax, "x")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks of a narrow log range overlap
        if log:
            log_scale(ax)
        ax.tick_params(labelsize=6)
        ax.set_title(name, fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[loss], marker="o", linestyle="", label=loss) for loss in losses] + [
        Line2D([], [], color="grey", marker="o", markerfacecolor="none", linestyle="", label="collapsed"),
        Line2D([], [], color="grey", marker="x", linestyle="", label=f"no {metric.display}: diverged")]
    fig.legend(handles=handles, fontsize=7, loc="upper right")
    fig.supylabel(f"best {metric.display} ({'higher' if metric.higher_is_better else 'lower'} is better)", fontsize=8)
    return fig


def plot_win_matrix(wins: pd.DataFrame, k: int) -> Figure:
    """The who-beats-whom matrix of one (dataset, protocol) at budget k: cell (A, B) is P(A's best of k trials beats
    B's), with its 95 % interval."""
    at = wins[wins["k"] == k]
    losses = list(dict.fromkeys([*wins["loss_a"], *wins["loss_b"]]))
    n = len(losses)
    grid = np.full((n, n), np.nan)
    fig, axes = figure_grid(1, 1, panel=(0.9 * n + 0.6, 0.6 * n + 0.4), left=1.4, right=1.2, top=0.4, bottom=1.3)
    ax = axes[0, 0]
    index = {loss: i for i, loss in enumerate(losses)}
    for row in at.itertuples():
        i, j = index[row.loss_a], index[row.loss_b]
        grid[i, j] = row.p
        interval = "" if np.isnan(row.low) else f"\n{row.low:.2f}–{row.high:.2f}"
        ax.text(j, i, f"{row.p:.2f}{interval}", ha="center", va="center", fontsize=7,
                color="white" if abs(row.p - 0.5) > 0.35 else "black")
    image = ax.imshow(grid, cmap="RdBu", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(n), losses, rotation=40, ha="right", fontsize=8)
    ax.set_yticks(range(n), losses, fontsize=8)
    ax.set_xlabel("B")
    ax.set_ylabel("A")
    ax.set_title(f"P(A's best of k={k} trials beats B's), 95 % interval", fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return fig


def plot_win_curves(wins: pd.DataFrame) -> Figure:
    """P(A beats B) against the budget k, one panel per loss A, a line per other loss B; the 95 % band where the
    trials support one (`reliable_budget`), the line dotted beyond it."""
    losses = list(dict.fromkeys(wins["loss_a"]))
    columns = min(len(losses), 4)
    fig, axes = figure_grid(math.ceil(len(losses) / columns), columns, panel=(2.8, 2.0), right=1.8, top=0.4,
                            gap=(0.25, 0.5), share=True)
    axes = axes.ravel()
    colours = {loss: f"C{i % 10}" for i, loss in enumerate(losses)}
    for ax, loss_a in zip(axes, losses):
        for loss_b, pair in wins[wins["loss_a"] == loss_a].groupby("loss_b", sort=False):
            banded = pair.dropna(subset=["low"])
            ax.plot(banded["k"], banded["p"], color=colours[loss_b], linewidth=1.2, label=loss_b)
            ax.fill_between(banded["k"], banded["low"], banded["high"], color=colours[loss_b], alpha=0.12, linewidth=0)
            beyond = pair[pair["k"] >= (banded["k"].max() if len(banded) else 1)]
            ax.plot(beyond["k"], beyond["p"], color=colours[loss_b], linewidth=1.0, linestyle=":",
                    label=f"_{loss_b} beyond")  # "_": no legend entry of its own
        ax.axhline(0.5, color="grey", linewidth=0.6)
        ax.set_ylim(-0.02, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"P({loss_a} beats B)", fontsize=8)
        ax.set_xlabel("budget k" if ax.get_subplotspec().is_last_row() else "", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for ax in axes[len(losses):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[loss], label=loss) for loss in losses]
    fig.legend(handles=handles, fontsize=7, loc="upper right", title="B", title_fontsize=7)
    return fig


def outcome_table(results: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, loss) of the search stage: the trials finished, and the shares that completed, diverged,
    collapsed, were pruned and failed (a trial's status: the first of pruned, diverged, collapsed its runs have)."""
    rows = results[results["stage"] == "search"] if "stage" in results else results
    precedence = ["completed", "collapsed", "diverged", "pruned", "failed"]  # the last any run has wins
    rank = rows["status"].map({s: i for i, s in enumerate(precedence)}).fillna(0).astype(int)
    per_trial = rank.groupby([rows["dataset"], rows["loss"], rows["trial"]], sort=False).max().map(
        dict(enumerate(precedence))).rename("status")
    table = per_trial.groupby(["dataset", "loss"], sort=False).value_counts().unstack(fill_value=0)
    for status in OUTCOMES:
        if status not in table:
            table[status] = 0
    finished = table[list(OUTCOMES)].sum(axis=1)
    shares = table[list(OUTCOMES)].div(finished, axis=0).add_suffix(" share")
    return pd.concat([finished.rename("finished"), shares], axis=1).reset_index()


def _sample_cells(results: pd.DataFrame, trials: pd.DataFrame, results_dir: Path, dataset: str, protocol: str,
                  objective: str) -> str:
    """A table row per loss: the samples.png of its best and of its median search trial (first seed), embedded."""
    metric = METRICS.get(objective)
    rows = []
    panel = trials[(trials["dataset"] == dataset) & (trials["protocol"] == protocol) & ~trials["pruned"]]
    for loss, group in panel.groupby("loss", sort=False):
        scored = group.loc[_finite(group[f"best_{objective}"].astype(float)).index].sort_values(
            f"best_{objective}", ascending=not metric.higher_is_better)
        cells = [f"<td>{report_html.text(loss)}</td>"]
        for what, pick in (("best", 0), ("median", (len(scored) - 1) // 2)):
            if not len(scored) or "folder" not in results:
                cells.append("<td>–</td>")
                continue
            trial = scored.iloc[pick]
            grid = samples_of(results, results_dir, dataset, loss, trial["trial"])
            caption = f"{what}: trial {int(trial['trial'])}, {metric.display} {trial[f'best_{objective}']:.4g}"
            cells.append(f"<td>{report_html.image(grid.read_bytes(), f'{loss} {caption}')}<br />"
                         f"{report_html.text(caption)}</td>" if grid is not None else
                         f"<td>{report_html.text(caption)} (no samples.png)</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return ('<table class="samples"><thead><tr><th>loss</th><th>best trial</th><th>median trial</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def report_page(results: pd.DataFrame, results_dir: Path, objective: str, fields: dict, trials: pd.DataFrame,
                table: pd.DataFrame, wins: pd.DataFrame, budget: int) -> str:
    """report.html: one self-contained page of the study (see `write_report`), from its trials' scores
    (`trial_scores`), summary table and who-beats-whom table."""
    h = report_html
    metric = METRICS.get(objective)
    name = fields.get("name") or Path(results_dir).name
    direction = "higher is better" if metric.higher_is_better else "lower is better"
    sections, contents = [], [("outcome", "who beats whom"), ("budget", "vs budget"), ("steps", "vs step"),
                              ("sensitivity", "sensitivity"), ("samples", "samples"), ("statuses", "statuses")]
    outcomes = outcome_table(results)
    unfinished = outcomes[outcomes["finished"] < budget] if (results["stage"] == "search").any() else outcomes
    if len(unfinished):
        sections.append(h.paragraph(f"Study unfinished or still running: {int(outcomes['finished'].sum())} of "
                                    f"{budget * len(outcomes)} search trials finished ({budget} per dataset and loss); "
                                    "every number below is of the finished trials.", "banner"))
    sections.append(h.paragraph(f"Objective: {h.text(metric.display)} ({direction}). Budget: {budget} hyperparameter "
                                "samples per loss and dataset. Pruned trials are left out of every score; trials "
                                "without a finite score count as worse than any."))
    sections.append(h.heading(2, "Who beats whom", "outcome"))
    sections.append(h.paragraph(
        "P(A beats B) at budget k is the probability that the best score among k of loss A's trials, drawn at "
        "random, is better than the best among k of loss B's (ties count ½): 0.5 means no difference, 1 that A "
        "always wins. Computed exactly from the per-trial scores (Agarwal et al.'s probability of improvement at "
        "k = 1); the 95 % interval is a bootstrap over each loss's trials, given only where k ≤ √n for n trials a "
        "loss (beyond, the best of k is an extreme of the sample and, simulated, its bootstrap interval no longer "
        "holds the true value 95 % of the time)."))
    for line in winners(table, wins, objective, budget):
        sections.append(h.paragraph(h.text(line.replace("**", "")), "winner"))
    for (dataset, protocol), panel in wins.groupby(["dataset", "protocol"], sort=False):
        k = matrix_budget(panel, budget)
        sections.append(h.heading(3, f"{dataset}"))
        note = "" if k == budget else (f" (the study's budget is {budget}; with these trials an interval holds up to "
                                       f"k = {k})")
        sections.append(h.paragraph(h.text(f"Matrix at k = {k}{note}. Protocol: {protocol}.")))
        sections.append(h.image(h.figure_png(plot_win_matrix(panel, k)), f"who beats whom on {dataset}"))
        sections.append(h.image(h.figure_png(plot_win_curves(panel)), f"P(A beats B) over k on {dataset}"))
    sections.append(h.heading(2, "Summary", "summary"))
    for (dataset, protocol), group in table.groupby(["dataset", "protocol"], sort=False):
        sections.append(h.heading(3, dataset))
        sections.append(h.paragraph(h.text(f"Scored by: {describe_protocol(results, protocol, objective)}. "
                                           f"Protocol: {protocol}.")))
        sections.append(h.table(group.drop(columns=["dataset", "protocol"])))
    sections.append(h.heading(2, f"{metric.display} vs budget", "budget"))
    figure = Path(results_dir) / folder_name(f"{objective}_vs_budget.png")
    if figure.is_file():
        sections.append(h.image(figure.read_bytes(), f"{metric.display} vs budget"))
    sections.append(h.heading(2, "Metrics vs training step", "steps"))
    metrics = list(dict.fromkeys([*metrics_of(results, objective), "kid", "isc"]))  # those with values are drawn
    for dataset, protocol in dict.fromkeys(zip(trials["dataset"], trials["protocol"])):
        sections.append(h.heading(3, dataset))
        figure = plot_vs_step(results, dataset, protocol, metrics)
        sections.append(h.image(h.figure_png(figure), f"metrics vs step on {dataset}"))
    sections.append(h.heading(2, "Sensitivity to the searched hyperparameters", "sensitivity"))
    for dataset, protocol in dict.fromkeys(zip(trials["dataset"], trials["protocol"])):
        figure = plot_sensitivity(results, trials, dataset, protocol, objective)
        sections.append(h.heading(3, dataset))
        sections.append(h.image(h.figure_png(figure), f"sensitivity on {dataset}") if figure is not None else
                        h.paragraph("No hyperparameter was searched."))
    sections.append(h.heading(2, "Samples of the best and the median trial", "samples"))
    for dataset, protocol in dict.fromkeys(zip(trials["dataset"], trials["protocol"])):
        sections.append(h.heading(3, dataset))
        sections.append(_sample_cells(results, trials, results_dir, dataset, protocol, objective))
    if {"precision", "recall", "f1"} <= set(results.columns) and results["f1"].notna().any():
        figure = plot_precision_recall(results, None)
        sections.append(h.image(h.figure_png(figure), "precision and recall of every trial"))
    sections.append(h.heading(2, "How trials ended", "statuses"))
    sections.append(h.table(outcomes, ".0%"))
    if (results["stage"] == "confirm").any():
        sections.append(h.heading(2, "Confirm stage: the best configurations over seeds", "confirm"))
        reference = reference_path(results_dir) if objective == "fid" else None
        confirm = confirm_table(results, read_reference(reference) if reference else None, objective)
        sections.append(h.table(confirm))
        contents.append(("confirm", "confirm stage"))
    sections.append(h.heading(2, "Scoring protocols", "protocols"))
    protocols = list(dict.fromkeys(with_protocol(results)["protocol"]))
    sections.append("<ul>" + "".join(f"<li><code>{h.text(p)}</code>: {h.text(describe_protocol(results, p, objective))}"
                                     "</li>" for p in protocols) + "</ul>")
    return h.page(f"{name}: {metric.display} ({direction})", sections, contents)


def write_report(results_dir: Path, reference: Path | None = None) -> list[Path]:
    """From results.csv (and the study.yaml beside it: name, objective, budget), in the results folder:
    summary.csv, summary.md, win_probability.csv, <objective>_vs_budget.png, samples.png (the best trials' sample
    grids), report.html (everything on one self-contained page) and, for a polygons study (metrics.prf),
    precision_recall.png of the search stage; with a confirm stage, paper_table.csv and paper_table.md (FID), or
    confirm.csv and confirm.md (another objective)."""
    results_dir = Path(results_dir)
    results = read_results(results_dir)
    if results.empty:
        raise BenchError(f"{results_dir / RESULTS_FILE}: no finished trials yet")
    fields = study_fields(results_dir)
    objective = fields.get("objective", "fid")
    paths = []
    table = summary(results, objective)
    trials = trial_scores(results, objective)
    budget = study_budget(fields, trials)
    wins = win_table(trials, objective, budget)
    if (results["stage"] == "search").any():
        atomic_write_text(results_dir / "summary.csv", table.to_csv(index=False))
        atomic_write_text(results_dir / "summary.md",
                          summary_markdown(table, wins, results, objective, budget, fields.get("name", "")))
        atomic_write_text(results_dir / "win_probability.csv", wins.to_csv(index=False))
        figure = folder_name(f"{objective}_vs_budget.png")  # a custom metric's package.module:function has a ':'
        plot_vs_budget(results, results_dir / figure, objective, fields.get("name", ""))
        paths += [results_dir / name for name in ("summary.csv", "summary.md", "win_probability.csv", figure)]
        if plot_sample_grids(results, results_dir, results_dir / "samples.png", objective) is not None:
            paths.append(results_dir / "samples.png")
        if {"precision", "recall", "f1"} <= set(results.columns) and results["f1"].notna().any():
            plot_precision_recall(results, results_dir / "precision_recall.png")
            paths.append(results_dir / "precision_recall.png")
    if (results["stage"] == "confirm").any():
        if objective == "fid":
            reference = reference or reference_path(results_dir)
            confirm = confirm_table(results, read_reference(reference) if reference else None)
            atomic_write_text(results_dir / "paper_table.csv", confirm.to_csv(index=False))
            atomic_write_text(results_dir / "paper_table.md", confirm_markdown(confirm))
            paths += [results_dir / "paper_table.csv", results_dir / "paper_table.md"]
        else:
            confirm = confirm_table(results, None, objective)
            atomic_write_text(results_dir / "confirm.csv", confirm.to_csv(index=False))
            atomic_write_text(results_dir / "confirm.md", confirm.to_markdown(index=False, floatfmt=".4g") + "\n")
            paths += [results_dir / "confirm.csv", results_dir / "confirm.md"]
    atomic_write_text(results_dir / "report.html", report_page(results, results_dir, objective, fields, trials, table,
                                                                wins, budget))
    return paths + [results_dir / "report.html"]
