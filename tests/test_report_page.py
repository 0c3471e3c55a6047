"""The study's page (report.html), who beats whom (win_probability.csv) and a summary.md that stands on its own: each
number checked against an independent computation, each figure against the data it draws (change the data, the
figure changes), the page parsed strictly; a study still running and a loss whose every trial diverged."""

import base64
import itertools
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
import yaml
from matplotlib import image as mpimg
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from bench import report

PROTOCOL = "domain-digits-1x16x16-abc@0123456789ab resize=antialias real=test:360 gen=1000"


def study_rows(scores: dict[str, list[float]], steps=(100, 200), dataset="digits", statuses=None) -> pd.DataFrame:
    """results.csv rows: per loss, a trial per score (its best FID, reached at the last step; NaN: diverged, no FID),
    lr searched and beta2 fixed."""
    rows = []
    for loss, fids in scores.items():
        for trial, fid in enumerate(fids):
            status = (statuses or {}).get((loss, trial), "diverged" if np.isnan(fid) else "completed")
            for i, step in enumerate(steps):
                rows.append({"stage": "search", "dataset": dataset, "loss": loss, "trial": trial, "seed": 0,
                             "step": step, "status": status, "fid": fid * (len(steps) - i), "kid": 0.01 * (trial + 1),
                             "protocol": PROTOCOL, "extractor": "domain-digits-1x16x16-abc",
                             "extractor_weights": "0123456789ab", "resize": "antialias", "real_split": "test",
                             "real_count": 360, "gen_count": 1000, "param_lr": 1e-4 * (trial + 1),
                             "param_beta2": 0.999, "searched": "lr",
                             "folder": f"trials/{dataset}-{loss}-{trial:04d}-seed0"})
    return pd.DataFrame(rows)


def write_study(folder, rows: pd.DataFrame, samples: int, name: str = "page_study") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_csv(folder / "results.csv", index=False)
    (folder / "study.yaml").write_text(yaml.safe_dump({"name": name, "objective": "fid",
                                                       "budget": {"samples": samples, "steps": 200}}))


def brute_force(a: list[float], b: list[float], k: int) -> float:
    """P(min of k draws from a < min of k from b), ties ½, NaN worst: every k-tuple of each, enumerated."""
    cost = lambda v: np.inf if np.isnan(v) else v  # noqa: E731
    wins = 0.0
    for ta, tb in itertools.product(itertools.product(a, repeat=k), itertools.product(b, repeat=k)):
        x, y = min(map(cost, ta)), min(map(cost, tb))
        wins += 1.0 if x < y else 0.5 if x == y else 0.0
    return wins / len(a) ** k / len(b) ** k


SCORES = {"ns_gan": [30.0, 10.0, 20.0, 12.0], "wgan": [50.0, np.nan, 40.0, 12.0], "lsgan": [25.0, 8.0, 60.0, 9.0]}


def test_who_beats_whom_is_the_exact_best_of_k_probability_both_ways():
    trials = report.trial_scores(study_rows(SCORES))
    wins = report.win_table(trials, "fid", budget=3)
    assert list(wins.columns) == ["dataset", "protocol", "loss_a", "loss_b", "k", "p", "low", "high"]
    assert len(wins) == 3 * 2 * 3  # ordered pairs × k = 1..3
    for a, b in itertools.permutations(SCORES, 2):
        pair = wins[(wins["loss_a"] == a) & (wins["loss_b"] == b)].set_index("k")
        for k in (1, 2, 3):
            assert pair.loc[k, "p"] == pytest.approx(brute_force(SCORES[a], SCORES[b], k), abs=1e-12)
        # 4 trials a loss: an interval up to k = √4 = 2 (reliable_budget), containing p; none beyond.
        assert (pair.loc[[1, 2], "low"] <= pair.loc[[1, 2], "p"]).all()
        assert (pair.loc[[1, 2], "p"] <= pair.loc[[1, 2], "high"]).all()
        assert pair.loc[[3], ["low", "high"]].isna().all().all()
    forth = wins.set_index(["loss_a", "loss_b", "k"])
    for (a, b, k), row in forth.iterrows():
        back = forth.loc[(b, a, k)]
        assert row["p"] + back["p"] == pytest.approx(1.0) and row["low"] + back["high"] == pytest.approx(1.0) \
            or np.isnan(row["low"])


def test_who_beats_whom_leaves_pruned_trials_out_and_a_loss_always_better_wins_surely():
    rows = study_rows({"good": [1.0, 2.0, 3.0, 4.0, 1.5, 2.5, 3.5, 4.5], "bad": [10.0, 20, 30, 40, 15, 25, 35, 0.5]},
                      statuses={("bad", 7): "pruned"})  # bad's only better trial was pruned: left out
    wins = report.win_table(report.trial_scores(rows), "fid", budget=8).set_index(["loss_a", "loss_b", "k"])
    assert (wins.loc[("good", "bad"), "p"] == 1.0).all()
    assert (wins.loc[("good", "bad"), ["low", "high"]].dropna() == 1.0).all().all()
    assert (wins.loc[("bad", "good"), "p"] == 0.0).all()


def test_summary_md_stands_on_its_own(tmp_path):
    rows = study_rows(SCORES).assign(param_beta1=lambda r: 0.5 + 0.1 * r["trial"])  # varies, but not searched
    write_study(tmp_path, rows, samples=4)
    report.write_report(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert text.startswith("# page_study: FID (lower is better)")
    # The extractor and the sample counts behind the scores.
    assert "features of domain-digits-1x16x16-abc (weights 0123456789ab): 1000 generated samples against 360 real " \
           "test images" in text
    # The winner, its margin over the runner-up and the probability it beats it (exact: 4 trials, k = √4 = 2).
    p = brute_force(SCORES["lsgan"], SCORES["ns_gan"], 2)
    assert (f"**digits**: lsgan wins with FID 8, 2 (20.0%) better than the runner-up ns_gan (10); P(lsgan's best of "
            f"2 trials beats ns_gan's) = {p:.2f} (95 % interval") in text
    # And at the study's budget, where 4 trials a loss support no interval.
    assert (f"; at the study's budget, k = 4: {brute_force(SCORES['lsgan'], SCORES['ns_gan'], 4):.2f} (no interval: "
            "these trials support one up to k = 2).") in text
    # Only the searched hyperparameters: lr, not the fixed beta2 nor beta1 that the study did not search.
    table = pd.read_csv(tmp_path / "summary.csv").set_index("loss")
    assert table.loc["lsgan", "best_params"] == "lr=0.0002"
    assert "beta2" not in text and "beta1=" not in text


def test_without_a_searched_column_the_parameters_that_vary_are_the_searched_ones():
    rows = study_rows(SCORES).drop(columns="searched")
    assert report.summary(rows).set_index("loss").loc["lsgan", "best_params"] == "lr=0.0002"


def test_the_page_is_well_formed_self_contained_and_says_what_the_number_means(tmp_path):
    rows = study_rows(SCORES)
    write_study(tmp_path, rows, samples=4)
    grid = Figure(figsize=(1, 1))
    grid.subplots().imshow(np.eye(4))
    for folder in rows["folder"].unique():
        (tmp_path / folder).mkdir(parents=True)
        grid.savefig(tmp_path / folder / "samples.png")
    report.write_report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>\n")
    root = ET.fromstring(page.split("\n", 1)[1])  # strict XML: every element closed, every text escaped
    images = list(root.iter("img"))
    assert len(images) >= 8
    for img in images:
        src = img.get("src")
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in page and "https://" not in page and "<script" not in page
    text = " ".join(root.itertext())
    assert "P(A beats B) at budget k is the probability that the best score among k of loss A's trials" in text
    # The best and the median trial of each loss, their samples embedded: lsgan's best is trial 1, its median 3.
    assert "best: trial 1, FID 8" in text and "median: trial 3, FID 9" in text
    assert "Study unfinished" not in text
    assert PROTOCOL in text


def figure_of(call, *args):
    fig = call(*args)
    return fig, [ax for ax in fig.axes if ax.get_visible()]


def test_the_matrix_and_the_curves_draw_the_win_table():
    wins = report.win_table(report.trial_scores(study_rows(SCORES)), "fid", budget=3)
    fig, [ax, _colorbar] = figure_of(report.plot_win_matrix, wins, 2)
    losses = sorted(SCORES)  # as trial_scores orders them
    assert [t.get_text() for t in ax.get_yticklabels()] == losses
    drawn = np.asarray(ax.get_images()[0].get_array())
    at = wins[wins["k"] == 2].set_index(["loss_a", "loss_b"])["p"]
    for (i, a), (j, b) in itertools.product(enumerate(losses), enumerate(losses)):
        assert np.isnan(drawn[i, j]) if a == b else drawn[i, j] == at[(a, b)]
    changed = report.win_table(report.trial_scores(study_rows({**SCORES, "wgan": [1.0, 1.0, 1.0, 1.0]})), "fid", 3)
    assert not np.array_equal(np.asarray(report.plot_win_matrix(changed, 2).axes[0].get_images()[0].get_array()),
                              drawn, equal_nan=True)
    fig, axes = figure_of(report.plot_win_curves, wins)
    assert [ax.get_title() for ax in axes] == [f"P({loss} beats B)" for loss in losses]
    pair = wins[(wins["loss_a"] == "lsgan") & (wins["loss_b"] == "ns_gan")]
    # Solid with its band where an interval holds (k ≤ 2 with 4 trials a loss), dotted from there on.
    [solid, dotted] = [line for line in axes[0].get_lines() if line.get_label() in ("ns_gan", "_ns_gan beyond")]
    assert np.array_equal(solid.get_ydata(), pair["p"].to_numpy()[:2])
    assert np.array_equal(dotted.get_ydata(), pair["p"].to_numpy()[1:]) and dotted.get_linestyle() == ":"


def test_the_metrics_vs_step_are_the_median_and_quartiles_over_trials():
    rows = study_rows(SCORES, steps=(100, 200, 300))
    fig, axes = figure_of(report.plot_vs_step, rows, "digits", PROTOCOL, ["fid", "kid"])
    assert [ax.get_title() for ax in axes] == ["FID (lower is better)", "KID (lower is better)"]
    [line] = [line for line in axes[0].get_lines() if line.get_label().startswith("wgan")]
    fids = rows[rows["loss"] == "wgan"].pivot(index="step", columns="trial", values="fid").to_numpy()
    assert np.array_equal(line.get_ydata(), np.nanmedian(fids, axis=1))  # the diverged trial has no FID: left out
    assert line.get_label() == "wgan (n=4)"
    rows.loc[(rows["loss"] == "wgan") & (rows["trial"] == 0), "fid"] = 1.0
    _, changed = figure_of(report.plot_vs_step, rows, "digits", PROTOCOL, ["fid"])
    [moved] = [line for line in changed[0].get_lines() if line.get_label().startswith("wgan")]
    assert not np.array_equal(moved.get_ydata(), line.get_ydata())


def test_sensitivity_draws_every_trial_and_marks_the_diverged_ones():
    rows = study_rows(SCORES)
    trials = report.trial_scores(rows)
    fig, axes = figure_of(report.plot_sensitivity, rows, trials, "digits", PROTOCOL, "fid")
    assert [ax.get_title() for ax in axes] == ["lr"]  # beta2 was not searched
    points = np.concatenate([c.get_offsets() for c in axes[0].collections if isinstance(c, PathCollection)])
    expected = [(1e-4 * (t + 1), s) for scores in SCORES.values() for t, s in enumerate(scores) if not np.isnan(s)]
    # wgan's diverged trial 1 (lr 2e-4) is drawn at the worst edge (the largest FID of all, 60), not dropped.
    assert np.allclose(sorted(map(tuple, points.tolist())), sorted(expected + [(2e-4, 60.0)]))
    rows.loc[(rows["loss"] == "ns_gan") & (rows["trial"] == 0), "fid"] = 3.0
    _, changed = figure_of(report.plot_sensitivity, rows, report.trial_scores(rows), "digits", PROTOCOL, "fid")
    moved = np.concatenate([c.get_offsets() for c in changed[0].collections if isinstance(c, PathCollection)])
    assert (1e-4, 3.0) in map(tuple, moved.tolist())


def test_the_budget_plot_has_its_legend_outside_and_the_study_as_title(tmp_path):
    fig = report.plot_vs_budget(study_rows(SCORES), tmp_path / "plot.png", title="page_study")
    [ax] = [ax for ax in fig.axes if ax.get_visible()]
    renderer = FigureCanvasAgg(fig).get_renderer()
    legend, axes_box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes_box.x1  # beside the data, not over it
    assert fig.get_suptitle().startswith("page_study: ")
    assert "wgan (n=4; 1 diverged; 1 without FID)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert mpimg.imread(tmp_path / "plot.png").shape[1] > 0


def test_a_report_of_a_study_still_running(tmp_path):
    # 2 of 5 samples finished per loss: the page says so, the numbers are of the finished trials.
    write_study(tmp_path, study_rows({"ns_gan": [10.0, 20.0], "wgan": [15.0, 5.0]}), samples=5)
    report.write_report(tmp_path)
    page = (tmp_path / "report.html").read_text()
    assert "Study unfinished or still running: 4 of 10 search trials finished" in page
    wins = pd.read_csv(tmp_path / "win_probability.csv")
    assert sorted(wins["k"].unique()) == [1, 2, 3, 4, 5]
    at = wins[(wins["loss_a"] == "ns_gan") & (wins["loss_b"] == "wgan")].set_index("k")["p"]
    assert at[1] == pytest.approx(brute_force([10.0, 20.0], [15.0, 5.0], 1))


def test_a_report_with_a_loss_whose_every_trial_diverged(tmp_path):
    write_study(tmp_path, study_rows({"ns_gan": [10.0, 20.0, 30.0, 40.0], "broken": [np.nan] * 4}), samples=4)
    report.write_report(tmp_path)
    wins = pd.read_csv(tmp_path / "win_probability.csv")
    assert (wins.loc[wins["loss_a"] == "broken", "p"] == 0.0).all()
    assert (wins.loc[wins["loss_a"] == "ns_gan", "p"] == 1.0).all()
    table = pd.read_csv(tmp_path / "summary.csv").set_index("loss")
    assert table.loc["broken", "no_fid"] == 4 and np.isnan(table.loc["broken", "best_fid"])
    assert table.loc["broken", "diverged_share"] == 1.0
    outcomes = report.outcome_table(pd.read_csv(tmp_path / "results.csv")).set_index("loss")
    assert outcomes.loc["broken", "diverged share"] == 1.0 and outcomes.loc["ns_gan", "completed share"] == 1.0
    assert "- **digits**: ns_gan wins with FID 10." in (tmp_path / "summary.md").read_text()
    page = ET.fromstring((tmp_path / "report.html").read_text().split("\n", 1)[1])
    assert "broken" in " ".join(page.itertext())


def test_a_report_of_a_confirm_stage_alone_still_has_its_page(tmp_path):
    write_study(tmp_path, study_rows(SCORES).assign(stage="confirm"), samples=4)
    assert [p.name for p in report.write_report(tmp_path)] == ["paper_table.csv", "paper_table.md", "report.html"]
    page = ET.fromstring((tmp_path / "report.html").read_text().split("\n", 1)[1])
    assert "Confirm stage: the best configurations over seeds" in " ".join(page.itertext())
