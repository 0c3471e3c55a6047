"""Reports from results.csv: the bootstrap min-FID-vs-budget curve against the exact distribution of the minimum,
summaries, the paper's table, and protocols kept apart."""

import numpy as np
import pandas as pd
import pytest
import yaml

from bench import BenchError
from bench.report import confirm_markdown, confirm_table, best_of_k_bootstrap, plot_vs_budget, summary, write_report

RESAMPLES = 20000
# A bootstrap quantile at level p is an exact quantile at a level within this of p: 5 standard errors of an
# empirical CDF from RESAMPLES draws (at most 0.5 / sqrt(RESAMPLES)), so a seeded run is not on the edge.
LEVEL_TOLERANCE = 5 * 0.5 / np.sqrt(RESAMPLES)


def exact_min_quantile(values, k, p):
    """The p-quantile of the minimum of k draws with replacement from `values` (inf = no FID), exactly: the smallest
    order statistic v_(j) with P(min <= v_(j)) = 1 - (1 - j/n)^k >= p."""
    v = np.sort(np.asarray(values, dtype=float))
    j = np.arange(1, len(v) + 1)
    cdf = 1 - (1 - j / len(v)) ** k
    return v[np.argmax(cdf >= min(p, 1.0))]


def assert_matches_the_exact_distribution(values, median, low, high):
    for k in range(1, len(median) + 1):
        for p, got in ((0.5, median), (0.025, low), (0.975, high)):
            lo = exact_min_quantile(values, k, p - LEVEL_TOLERANCE)
            hi = exact_min_quantile(values, k, p + LEVEL_TOLERANCE)
            assert lo <= got[k - 1] <= hi, (k, p, got[k - 1], lo, hi)


def test_bootstrap_matches_the_exact_distribution_and_never_rises():
    fids = np.array([40.0, 12.0, 25.0, 90.0, 18.0, 33.0, 60.0, 15.0])
    median, low, high = best_of_k_bootstrap(fids, 8, resamples=RESAMPLES)
    assert np.all(np.diff(median) <= 0) and np.all(np.diff(low) <= 0) and np.all(np.diff(high) <= 0)
    assert np.all(low <= median) and np.all(median <= high)
    assert_matches_the_exact_distribution(fids, median, low, high)
    assert set(median) | set(low) | set(high) <= set(fids)  # quantiles that do not interpolate
    assert low[-1] == fids.min()


def test_bootstrap_counts_trials_without_fid_as_worse_than_any():
    median, low, high = best_of_k_bootstrap(np.array([1.0, 2.0, np.inf, np.inf]), 4, resamples=RESAMPLES)
    # k = 1: P(min <= 2) = 1/2 exactly, so the median is the 2nd order statistic or inf, as the sample falls.
    assert median[0] in (2.0, np.inf) and low[0] == 1.0 and high[0] == np.inf
    assert_matches_the_exact_distribution([1.0, 2.0, np.inf, np.inf], median, low, high)
    # NaN (how results.csv spells "no FID") is the same as inf.
    assert np.array_equal(best_of_k_bootstrap(np.array([1.0, 2.0, np.nan, np.nan]), 4, resamples=RESAMPLES)[0], median)
    # The same loss without its FID-less trials would look better: at k = 1 its median is 20, with them 30.
    without = best_of_k_bootstrap(np.array([10.0, 20.0, 30.0]), 3, resamples=RESAMPLES)
    counted = best_of_k_bootstrap(np.array([10.0, 20.0, 30.0, np.nan, np.nan]), 3, resamples=RESAMPLES)
    assert np.all(counted[0] >= without[0]) and np.all(counted[2] >= without[2])
    assert without[0][0] == 20.0 and counted[0][0] == 30.0


def synthetic_results():
    rows = []
    for loss, fids in {"ns_gan": [30.0, 10.0, 20.0], "wgan": [50.0, np.nan, 40.0]}.items():
        for trial, fid in enumerate(fids):
            status = "diverged" if np.isnan(fid) else "completed"
            for step, scale in ((100, 2.0), (200, 1.0)):
                rows.append({"dataset": "digits", "loss": loss, "trial": trial, "seed": 0, "step": step,
                             "status": status, "fid": fid * scale, "kid": 0.0, "param_lr": 1e-4 * (trial + 1),
                             "extractor": "domain-digits"})
    return pd.DataFrame(rows)


def test_summary_per_loss():
    table = summary(synthetic_results()).set_index("loss")
    assert table.loc["ns_gan", "best_fid"] == 10.0 and table.loc["ns_gan", "median_fid"] == 20.0
    assert table.loc["ns_gan", "best_trial"] == 1 and "lr=0.0002" in table.loc["ns_gan", "best_params"]
    assert table.loc["wgan", "trials"] == 3 and table.loc["wgan", "diverged_share"] == pytest.approx(1 / 3)
    assert table.loc["wgan", "best_fid"] == 40.0
    assert table.loc["ns_gan", "no_fid"] == 0 and table.loc["wgan", "no_fid"] == 1
    assert set(table["protocol"]) == {"domain-digits"}  # an old results.csv: its extractor stands for the protocol


def with_pruned_and_collapsed(results):
    """`results` and two more ns_gan trials: one pruned after its first evaluation with the lowest FID of all (of a
    shorter training), one collapsed at its second evaluation (its best FID stands)."""
    rows = [{"dataset": "digits", "loss": "ns_gan", "trial": trial, "seed": 0, "step": step, "status": status,
             "fid": fid, "kid": 0.0, "param_lr": 1e-3, "extractor": "domain-digits"}
            for trial, step, status, fid in [(3, 100, "pruned", 1.0), (4, 100, "collapsed", 16.0),
                                             (4, 200, "collapsed", 12.0)]]
    return pd.concat([results, pd.DataFrame(rows)], ignore_index=True)


def test_summary_counts_pruned_and_collapsed_trials_apart():
    table = summary(with_pruned_and_collapsed(synthetic_results())).set_index("loss")
    ns_gan = table.loc["ns_gan"]
    assert (ns_gan["trials"], ns_gan["pruned"], ns_gan["no_fid"]) == (4, 1, 0)
    # The pruned trial's 1.0 is in neither best nor median; the collapsed one's best FID (12) is in the median.
    assert (ns_gan["best_fid"], ns_gan["median_fid"], ns_gan["best_trial"]) == (10.0, 16.0, 1)
    assert ns_gan["collapsed_share"] == 0.25 and ns_gan["diverged_share"] == 0.0
    assert (table.loc["wgan", "pruned"], table.loc["wgan", "collapsed_share"]) == (0, 0.0)


def median_line(ax, loss):
    """The line of a loss's bootstrap median: the one its legend entry labels."""
    [line] = [line for line in ax.get_lines() if line.get_label().split(" (")[0] == loss]
    return line


def test_the_plot_leaves_pruned_trials_out(tmp_path):
    figure = plot_vs_budget(with_pruned_and_collapsed(synthetic_results()), tmp_path / "plot.png")
    [ax] = [ax for ax in figure.axes if ax.get_visible()]
    # The legend counts each loss's trials, those diverged, without FID and pruned.
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ns_gan (n=4; 0 diverged; 1 pruned, left out)",
                                                                   "wgan (n=3; 1 diverged; 1 without FID)"]
    ns_gan = median_line(ax, "ns_gan").get_ydata()  # trials 0, 1, 2 and the collapsed 4: best FIDs 30, 10, 20, 12
    assert np.array_equal(ns_gan, best_of_k_bootstrap(np.array([30.0, 10.0, 20.0, 12.0]), 4)[0])


def test_report_files(tmp_path):
    synthetic_results().to_csv(tmp_path / "results.csv", index=False)
    paths = write_report(tmp_path)
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "win_probability.csv", "fid_vs_budget.png",
                                       "report.html"]
    assert (tmp_path / "fid_vs_budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| ns_gan" in (tmp_path / "summary.md").read_text()


def test_the_plot_counts_trials_without_fid_in_the_legend_and_the_curve(tmp_path):
    figure = plot_vs_budget(synthetic_results(), tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [ax] = [ax for ax in figure.axes if ax.get_visible()]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ns_gan (n=3; 0 diverged)",
                                                                   "wgan (n=3; 1 diverged; 1 without FID)"]
    wgan = median_line(ax, "wgan").get_ydata()  # the trials' best FIDs are 50, none and 40
    assert np.array_equal(wgan, best_of_k_bootstrap(np.array([50.0, np.inf, 40.0]), 3)[0])


def test_report_without_results(tmp_path):
    with pytest.raises(BenchError, match="results.csv: not found"):
        write_report(tmp_path)


@pytest.mark.parametrize("damage", [lambda text: text[: len(text) // 2], lambda text: "", lambda text: "\x00\x01\n",
                                    lambda text: 'a,"b\n'], ids=["cut short", "empty", "not a CSV", "open quote"])
def test_a_damaged_results_file_is_one_line(tmp_path, damage):
    synthetic_results().to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "results.csv").write_text(damage((tmp_path / "results.csv").read_text()))
    with pytest.raises(BenchError, match=r"results.csv: damaged \(") as error:
        write_report(tmp_path)
    assert "\n" not in str(error.value)


def test_report_rebuilds_a_damaged_results_file_from_the_storage(tmp_path, capsys):
    """results.csv is a view of the storage: `gan-bench report` writes it again and goes on."""
    from bench import cli
    from bench.plan import Plan
    from bench.queue import claim, prepare
    from bench.study import load_study
    from bench.tallies import write_results

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(
        {"name": "r", "datasets": ["digits"], "losses": ["ns_gan"], "budget": {"samples": 2, "steps": 5}}))
    study = load_study(tmp_path / "s.yaml")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study.model_dump(mode="json")))
    plan = Plan(study)
    storage = prepare(plan, tmp_path)
    while (claimed := claim(plan, storage, tmp_path)) is not None:
        _, [trial] = claimed
        fid = 10.0 + trial.user_attrs["sample"]
        trial.set_user_attr("runs", [{"seed": 0, "status": "completed", "rows": [{"step": 5, "fid": fid}],
                                      "extractor": "x", "steps_done": 5, "params": trial.params}])
        trial.set_user_attr("status", "completed")
        trial.study.tell(trial, fid)
    write_results(plan, storage, tmp_path)
    whole = (tmp_path / "results.csv").read_bytes()
    (tmp_path / "results.csv").write_bytes(whole[:-7])
    assert cli.main(["report", str(tmp_path)]) == 0
    assert "results.csv: damaged (cut short); rebuilt it from the study's storage" in capsys.readouterr().err
    assert (tmp_path / "results.csv").read_bytes() == whole


def confirm_results():
    """A search stage and a confirm stage: ns_gan on mnist near the paper, wgan on mnist far from it, with one run
    that never had a FID."""
    rows = synthetic_results().assign(stage="search", dataset="mnist").to_dict("records")
    runs = {"ns_gan": [6.0, 7.0, 8.0], "wgan": [30.0, 32.0, np.nan, 34.0]}
    for loss, fids in runs.items():
        for seed, fid in enumerate(fids, start=1000):
            status = "diverged" if np.isnan(fid) else "completed"
            for step, extra in ((100, 5.0), (200, 0.0)):  # the best checkpoint is the run's FID
                rows.append({"stage": "confirm", "dataset": "mnist", "loss": loss, "trial": seed - 1000, "seed": seed,
                             "step": step, "status": status, "fid": fid + extra, "extractor": "inception-v3-compat"})
    return pd.DataFrame(rows)


def late_divergence_results():
    """Confirm runs of lsgan on mnist: two clean, one diverged after two evaluations (its FID at them stands, then
    a row of its divergence without FID), one diverged before any evaluation (one row, no FID)."""
    rows = []
    for seed, fids, status in ((1, [20.0, 12.0], "completed"), (2, [18.0, 14.0], "completed"),
                               (3, [15.0, 9.0, np.nan], "diverged"), (4, [np.nan], "diverged")):
        for step, fid in enumerate(fids, start=1):
            rows.append({"stage": "confirm", "dataset": "mnist", "loss": "lsgan", "trial": seed, "seed": seed,
                         "step": 100 * step, "status": status, "fid": fid, "extractor": "inception-v3-compat"})
    return pd.DataFrame(rows)


def test_confirm_table_against_the_paper():
    reference = pd.DataFrame({"model": ["ns_gan", "wgan"], "dataset": ["mnist", "mnist"], "fid_mean": [6.8, 6.7],
                              "fid_std": [0.5, 0.4]})
    table = confirm_table(confirm_results(), reference).set_index("loss")
    assert table.loc["ns_gan", "fid_mean"] == pytest.approx(7.0)
    assert table.loc["ns_gan", "fid_std"] == pytest.approx(np.std([6.0, 7.0, 8.0], ddof=1))
    assert table.loc["wgan", "fid_mean"] == pytest.approx(32.0) and table.loc["wgan", "runs"] == 4
    assert table.loc["wgan", "diverged"] == 1 and table.loc["wgan", "no_fid"] == 1
    # |7.0 - 6.8| = 0.2 < 1.0 + 0.5; |32 - 6.7| = 25.3 > 2.0 + 0.4
    assert not table.loc["ns_gan", "differs"] and table.loc["wgan", "differs"]


def test_report_writes_the_paper_table_beside_the_papers_numbers(tmp_path):
    results_dir = tmp_path / "results" / "study"
    results_dir.mkdir(parents=True)
    confirm_results().to_csv(results_dir / "results.csv", index=False)
    paths = write_report(results_dir)  # finds the repository's results/reference/lucic2018_best_fid.csv
    assert {"paper_table.csv", "paper_table.md", "report.html"} <= {p.name for p in paths}
    markdown = (results_dir / "paper_table.md").read_text()
    assert "| model | mnist (ours) | mnist (paper) |" in markdown
    assert "| ns_gan | 7.0 ± 1.0 (n=3) | 6.8 ± 0.5 |" in markdown
    assert "| wgan | 32.0 ± 2.0 (n=3; 1 diverged, 1 without FID) ⚑ | 6.7 ± 0.4 |" in markdown
    assert "paper's features (Inception)" in markdown
    assert "P1: `inception-v3-compat` (mnist)" in markdown  # an old results.csv: the extractor is the protocol
    # The search stage still gets its summary and figure, from the search rows only.
    assert (results_dir / "summary.md").is_file() and "| ns_gan" in (results_dir / "summary.md").read_text()
    reference = tmp_path / "ref.csv"
    reference.write_text("model,dataset,fid\n")
    with pytest.raises(BenchError, match="ref.csv: expected the columns"):
        write_report(results_dir, reference)


def test_a_run_that_diverged_late_keeps_its_best_fid_in_the_paper_table():
    table = confirm_table(late_divergence_results(), None).set_index("loss")
    chosen = [12.0, 14.0, 9.0]  # each run's best FID; the run diverged before any evaluation has none
    assert table.loc["lsgan", "fid_mean"] == pytest.approx(np.mean(chosen))
    assert table.loc["lsgan", "fid_std"] == pytest.approx(np.std(chosen, ddof=1))
    assert table.loc["lsgan", ["runs", "diverged", "no_fid"]].tolist() == [4, 2, 1]
    markdown = confirm_markdown(confirm_table(late_divergence_results(), None))
    cell = f"{np.mean(chosen):.1f} ± {np.std(chosen, ddof=1):.1f} (n=3; 2 diverged, 1 without FID)"
    assert f"| lsgan | {cell} |" in markdown


def test_a_collapsed_run_keeps_its_best_fid_in_the_paper_table_and_is_counted():
    collapsed = {"stage": "confirm", "dataset": "mnist", "loss": "lsgan", "trial": 5, "seed": 5, "step": 100,
                 "status": "collapsed", "fid": 11.0, "extractor": "inception-v3-compat"}
    table = confirm_table(pd.concat([late_divergence_results(), pd.DataFrame([collapsed])]), None)
    lsgan = table.set_index("loss").loc["lsgan"]
    assert lsgan[["runs", "diverged", "collapsed", "no_fid"]].tolist() == [5, 2, 1, 1]
    assert lsgan["fid_mean"] == pytest.approx(np.mean([12.0, 14.0, 9.0, 11.0]))
    assert "(n=4; 2 diverged, 1 collapsed, 1 without FID)" in confirm_markdown(table)


def two_protocols(results, dataset):
    """`results` with the runs of `dataset` scored twice: under the paper's protocol and under a domain one."""
    paper = "inception-v3-compat@1a2b3c4d5e6f resize=tf1_bilinear real=test:10000 gen=10000"
    domain = "domain-mnist-1x28x28-abc@9f8e7d6c5b4a resize=none real=test:10000 gen=10000"
    first = results.assign(protocol=paper)
    second = results[results["dataset"] == dataset].assign(protocol=domain, fid=results["fid"] * 0.01)
    return pd.concat([first, second], ignore_index=True), paper, domain


def test_two_protocols_in_one_dataset_are_kept_apart_and_labelled(tmp_path):
    results, paper, domain = two_protocols(confirm_results(), "mnist")
    table = confirm_table(results, None)
    assert len(table) == 4 and set(table["protocol"]) == {paper, domain}
    ns_gan = table[table["loss"] == "ns_gan"].set_index("protocol")
    assert ns_gan.loc[paper, "fid_mean"] == pytest.approx(7.0) and ns_gan.loc[domain, "fid_mean"] == pytest.approx(0.07)
    summary_table = summary(results)
    assert len(summary_table) == 4 and set(summary_table["protocol"]) == {paper, domain}

    results.to_csv(tmp_path / "results.csv", index=False)
    reference = tmp_path / "ref.csv"
    reference.write_text("model,dataset,fid_mean,fid_std\nns_gan,mnist,6.8,0.5\n")
    write_report(tmp_path, reference)
    markdown = (tmp_path / "paper_table.md").read_text()
    assert "| model | mnist (ours, P1) | mnist (ours, P2) | mnist (paper) |" in markdown
    assert "| ns_gan | 7.0 ± 1.0 (n=3) | 0.1 ± 0.0 (n=3) ⚑ | 6.8 ± 0.5 |" in markdown
    assert f"P1: `{paper}` (mnist)" in markdown and f"P2: `{domain}` (mnist)" in markdown
    assert "Protocols differ within mnist (P1, P2)" in markdown
    assert "P2 uses the features of `domain-mnist-1x28x28-abc`, not the paper's Inception" in markdown
    assert "P1 uses" not in markdown


def test_the_plot_has_one_panel_per_dataset_and_protocol(tmp_path):
    results, paper, domain = two_protocols(synthetic_results(), "digits")
    cifar = synthetic_results().assign(dataset="cifar10", protocol=paper)
    figure = plot_vs_budget(pd.concat([results, cifar], ignore_index=True), tmp_path / "plot.png", title="my_study")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    titles = [ax.get_title().split("\n") for ax in figure.axes if ax.get_visible()]
    # The protocol is wrapped onto the lines below the dataset's name.
    panels = [(title[0], " ".join(title[1:])) for title in titles]
    assert sorted(panels) == sorted([("digits", paper), ("digits", domain), ("cifar10", paper)])
    assert figure.get_suptitle().startswith("my_study: min FID vs budget (lower is better)")


def test_a_trial_with_a_seed_without_fid_has_no_fid():
    # With several seeds a trial scores the mean of their best FIDs; one seed that never had a finite FID leaves the
    # trial without one (the runner's objective makes it ineligible too), so it counts in no_fid.
    rows = [{"stage": "search", "dataset": "digits", "loss": "ns_gan", "trial": t, "seed": s, "step": 10,
             "status": status, "fid": fid, "extractor": "x"}
            for t, s, status, fid in [(0, 0, "completed", 5.0), (0, 1, "completed", 7.0),
                                      (1, 0, "completed", 3.0), (1, 1, "diverged", np.nan)]]
    table = summary(pd.DataFrame(rows)).iloc[0]
    assert (table["trials"], table["no_fid"], table["best_fid"], table["best_trial"]) == (2, 1, 6.0, 0)
