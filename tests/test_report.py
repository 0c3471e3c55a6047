"""Reports from results.csv: the bootstrap min-FID-vs-budget curve against its exact expectation, and summaries."""

import numpy as np
import pandas as pd
import pytest

from bench import BenchError
from bench.report import confirm_table, min_fid_bootstrap, summary, write_report


def exact_expected_min(values, k):
    """E[min of k draws with replacement]: P(min >= v_(i)) = ((n - i + 1) / n)^k for sorted v."""
    v = np.sort(values)
    n = len(v)
    i = np.arange(1, n + 1)
    return float((v * (((n - i + 1) / n) ** k - ((n - i) / n) ** k)).sum())


def test_bootstrap_matches_the_exact_expectation_and_never_rises():
    fids = np.array([40.0, 12.0, 25.0, 90.0, 18.0, 33.0, 60.0, 15.0])
    mean, low, high = min_fid_bootstrap(fids, 8, resamples=20000)
    assert np.all(np.diff(mean) <= 0)
    for k in range(1, 9):
        assert mean[k - 1] == pytest.approx(exact_expected_min(fids, k), rel=0.02)
        assert low[k - 1] <= mean[k - 1] <= high[k - 1]
    assert mean[0] == pytest.approx(fids.mean(), rel=0.02)
    assert low[-1] == fids.min()


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


def test_report_files(tmp_path):
    synthetic_results().to_csv(tmp_path / "results.csv", index=False)
    paths = write_report(tmp_path)
    assert [p.name for p in paths] == ["summary.csv", "summary.md", "fid_vs_budget.png"]
    assert (tmp_path / "fid_vs_budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| ns_gan" in (tmp_path / "summary.md").read_text()


def test_report_without_results(tmp_path):
    with pytest.raises(BenchError, match="results.csv: not found"):
        write_report(tmp_path)


def confirm_results():
    """A search stage and a confirm stage: ns_gan on mnist near the paper, wgan on mnist far from it."""
    rows = synthetic_results().assign(stage="search", dataset="mnist").to_dict("records")
    runs = {"ns_gan": [6.0, 7.0, 8.0], "wgan": [30.0, 32.0, np.nan, 34.0]}
    for loss, fids in runs.items():
        for seed, fid in enumerate(fids, start=1000):
            status = "diverged" if np.isnan(fid) else "completed"
            for step, extra in ((100, 5.0), (200, 0.0)):  # the best checkpoint is the run's FID
                rows.append({"stage": "confirm", "dataset": "mnist", "loss": loss, "trial": seed - 1000, "seed": seed,
                             "step": step, "status": status, "fid": fid + extra, "extractor": "inception-v3-compat"})
    return pd.DataFrame(rows)


def test_confirm_table_against_the_paper():
    reference = pd.DataFrame({"model": ["ns_gan", "wgan"], "dataset": ["mnist", "mnist"], "fid_mean": [6.8, 6.7],
                              "fid_std": [0.5, 0.4]})
    table = confirm_table(confirm_results(), reference).set_index("loss")
    assert table.loc["ns_gan", "fid_mean"] == pytest.approx(7.0)
    assert table.loc["ns_gan", "fid_std"] == pytest.approx(np.std([6.0, 7.0, 8.0], ddof=1))
    assert table.loc["wgan", "fid_mean"] == pytest.approx(32.0) and table.loc["wgan", "runs"] == 4
    assert table.loc["wgan", "diverged"] == 1
    # |7.0 - 6.8| = 0.2 < 1.0 + 0.5; |32 - 6.7| = 25.3 > 2.0 + 0.4
    assert not table.loc["ns_gan", "differs"] and table.loc["wgan", "differs"]


def test_report_writes_the_paper_table_beside_the_papers_numbers(tmp_path):
    results_dir = tmp_path / "results" / "study"
    results_dir.mkdir(parents=True)
    confirm_results().to_csv(results_dir / "results.csv", index=False)
    paths = write_report(results_dir)  # finds the repository's results/reference/lucic2018_best_fid.csv
    assert [p.name for p in paths][-2:] == ["paper_table.csv", "paper_table.md"]
    markdown = (results_dir / "paper_table.md").read_text()
    assert "| model | mnist (ours) | mnist (paper) |" in markdown
    assert "| ns_gan | 7.0 ± 1.0 (n=3) | 6.8 ± 0.5 |" in markdown
    assert "| wgan | 32.0 ± 2.0 (n=3) ⚑ | 6.7 ± 0.4 |" in markdown
    assert "paper's features (Inception)" in markdown
    # The search stage still gets its summary and figure, from the search rows only.
    assert (results_dir / "summary.md").is_file() and "| ns_gan" in (results_dir / "summary.md").read_text()
    reference = tmp_path / "ref.csv"
    reference.write_text("model,dataset,fid\n")
    with pytest.raises(BenchError, match="ref.csv: expected the columns"):
        write_report(results_dir, reference)
