"""README "Extending gan-bench": each extension is one file beside a study and one name in it. The examples in
studies/ (a loss, a term, a dataset, a metric, an executor) are checked against their formulas, and run together in
studies/extending.yaml through the CLI as a user would."""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
import yaml

from bench import data, losses, metrics, terms
from bench.cli import main
from bench.executors import EXECUTORS, local
from bench.registry import SEARCH_PATH_VARIABLE, UnknownName

STUDIES = Path(__file__).resolve().parents[1] / "studies"
EXAMPLES = ("my_losses", "my_terms", "my_datasets", "my_metrics", "my_executors")


def forget_examples() -> None:
    """Imported examples forgotten, so that the next test imports them from its own folder."""
    for name in EXAMPLES:
        sys.modules.pop(name, None)


@pytest.fixture
def examples(monkeypatch):
    """The examples importable by their module names, as a study beside them makes them."""
    monkeypatch.syspath_prepend(str(STUDIES))
    yield
    forget_examples()


def test_the_loss_example_is_its_formula(examples):
    spec = losses.get("my_losses:softplus_hinge")
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    d_loss, g_loss = spec.fn(real, fake, margin=0.5)
    softplus = lambda v: math.log1p(math.exp(v))  # noqa: E731
    assert d_loss.item() == pytest.approx((softplus(0.5 - 2) + softplus(0.5 + 1)) / 2
                                          + (softplus(0.5 + 0.5) + softplus(0.5 - 3)) / 2)
    assert g_loss.item() == pytest.approx(1.25)
    assert spec.params == ("margin",) and spec.defaults["margin"] == 1.0  # its own hyperparameter, searchable


def test_the_dataset_example_is_a_dataset_by_its_name(examples):
    names = data.DATASETS.names()
    rings = data.load("my_datasets:rings", count=60)
    assert data.DATASETS.names() == names  # named by its module, not added to the built-ins' list
    assert rings.image_shape == (1, 16, 16) and (len(rings.train), len(rings.test)) == (50, 10)
    assert set(rings.train.unique().tolist()) == {0, 255} and rings.num_classes == 4
    assert data.load("my_datasets:rings", count=60).train.equal(rings.train)  # from its seed: the same every time
    # Each class is a radius: a ring's lit pixels lie at that distance from their centroid, bigger for bigger classes.
    sizes = [rings.train[rings.train_labels == c].float().mean().item() for c in range(4)]
    assert sizes == sorted(sizes)


def test_the_metric_example_is_its_formula_and_its_direction(examples):
    metric = metrics.METRICS.get("my_metrics:intensity_gap")
    generated = torch.full((4, 1, 8, 8), 51, dtype=torch.uint8)
    real = torch.zeros(6, 1, 8, 8, dtype=torch.uint8)
    real[:3] = 255
    assert metric.compute(generated, real) == pytest.approx(abs(51 - 127.5) / 255)
    assert (metric.display, metric.higher_is_better, metric.objective) == ("intensity gap", False, True)
    with pytest.raises(UnknownName, match="custom metric 'my_metrics:nothing'"):
        metrics.METRICS.get("my_metrics:nothing")
    with pytest.raises(Exception, match="decorate it with @bench.metrics.metric"):
        metrics.METRICS.get("my_metrics:metric")  # the decorator itself, not a metric


def test_the_term_and_executor_examples_resolve_by_name(examples):
    term = terms.get("my_terms:moment_matching")
    assert (term.acts_on, term.needs) == ("g", frozenset({"features"}))
    kind = EXECUTORS.get("my_executors:Inline")
    assert kind.__name__ == "Inline" and EXECUTORS.names() == ["local", "slurm"]
    with pytest.raises(Exception, match="not a subclass of bench.executors.Executor"):
        EXECUTORS.get("my_executors:Path")


def test_the_extending_study_runs_every_example_through_the_cli(tmp_path, monkeypatch):
    """The study names all five; the CLI imports them from the study file's folder (no sys.path given), and the
    executor of one's own runs the trials in the driver's process, not the local executor's workers."""
    folder = tmp_path / "mine"
    shutil.copytree(STUDIES, folder, ignore=shutil.ignore_patterns("*.yaml", "__pycache__"))
    shutil.copy(STUDIES / "extending.yaml", folder)

    def not_this_one(*args, **kwargs):
        raise AssertionError("the study's own executor runs it")

    monkeypatch.setattr(local.LocalExecutor, "run", not_this_one)
    monkeypatch.setenv(SEARCH_PATH_VARIABLE, "")
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    try:
        assert main(["run", str(folder / "extending.yaml"), "--results", str(results), "--no-progress"]) == 0
    finally:
        forget_examples()
    table = pd.read_csv(results / "results.csv")
    study = yaml.safe_load((folder / "extending.yaml").read_text())
    assert len(table) == 3 * 2 * 2  # 3 losses × 2 samples × 2 evaluations
    assert set(table["dataset"]) == {"my_datasets:rings"}
    assert set(table["loss"]) == {"ns_gan", "my_losses:softplus_hinge", "ns_moments"}
    assert table["status"].eq("completed").all() and table["fid"].notna().all()
    gap = table["my_metrics:intensity_gap"]
    assert gap.between(0, 1).all() and gap.nunique() > 1
    assert table["param_margin"].dropna().between(0.5, 2.0).all()
    assert table["param_w_moment_matching"].dropna().eq(1.0).all()
    # The custom metric is the objective, minimised: each trial's value is its best (lowest) evaluation.
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(results / "optuna.journal")))
    part = optuna.load_study(study_name=f"{study['name']}/my_datasets:rings/ns_gan", storage=storage)
    assert part.direction == optuna.study.StudyDirection.MINIMIZE
    rows = table[table["loss"] == "ns_gan"]
    for trial in part.trials:
        assert trial.value == pytest.approx(rows[rows["trial"] == trial.number]["my_metrics:intensity_gap"].min())
    assert all(":" not in p.name for p in (results / "trials").iterdir())  # folder names stay portable
    assert (results / "my_metrics_intensity_gap_vs_budget.png").stat().st_size > 0
    # `status` and `report` read the study from its results folder, from anywhere: its extensions are imported from
    # where the run found them.
    monkeypatch.setenv(SEARCH_PATH_VARIABLE, "")
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(folder)])
    monkeypatch.chdir(tmp_path / "results" / "trials")
    try:
        assert main(["status", str(results)]) == 0
    finally:
        forget_examples()


@pytest.mark.parametrize("executor, message", [
    ("my_executors:Nope", "custom executor 'my_executors:Nope': module 'my_executors' has no attribute 'Nope'"),
    ("my_executors:Path", "custom executor 'my_executors:Path': not a subclass of bench.executors.Executor"),
])
def test_validate_checks_an_executor_of_ones_own(tmp_path, monkeypatch, capsys, executor, message):
    """`validate` imports the study's executor as `run` would: a wrong name is one line and exit code 2, before any
    work."""
    folder = tmp_path / "mine"
    shutil.copytree(STUDIES, folder, ignore=shutil.ignore_patterns("*.yaml", "__pycache__"))
    study = yaml.safe_load((STUDIES / "extending.yaml").read_text())
    (folder / "extending.yaml").write_text(yaml.safe_dump({**study, "executor": {"name": executor}}))
    monkeypatch.setenv(SEARCH_PATH_VARIABLE, "")
    try:
        assert main(["validate", str(folder / "extending.yaml")]) == 2
    finally:
        forget_examples()
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
