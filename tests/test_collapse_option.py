"""stop_on_collapse: by default a run stops at the evaluation that finds it collapsed; off (the paper's studies, as
compare_gan v1), it trains and scores every evaluation and ends collapsed, and resumes exactly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from bench import metrics, trial
from bench.config import TrialConfig
from bench.plan import Plan
from bench.study import load_study
from bench.trial import run_trial

SMALL = {"dataset": "digits", "steps": 30, "eval_steps": [10, 20, 30], "threads": 1, "metrics": {"num_samples": 100}}


def untimed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "train_seconds"} for row in rows]


@pytest.fixture
def always_collapsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every evaluation finds the run collapsed: no spread is below 1e9."""
    monkeypatch.setattr(trial, "COLLAPSE_SPREAD", 1e9)


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The rows of the run when nothing collapses."""
    result = run_trial(TrialConfig(**SMALL), tmp_path_factory.mktemp("healthy"))
    assert result.status == "completed"
    return untimed(result.rows)


def test_off_it_scores_every_evaluation_and_ends_collapsed(tmp_path: Path, always_collapsed: None,
                                                           healthy: list[dict[str, Any]]) -> None:
    result = run_trial(TrialConfig(**SMALL, stop_on_collapse=False), tmp_path)
    assert (result.status, result.steps_done) == ("collapsed", 30)
    assert untimed(result.rows) == healthy  # trained and scored as if nothing had collapsed
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["stopped"] is None


def test_on_it_stops_at_the_first_collapse(tmp_path: Path, always_collapsed: None,
                                           healthy: list[dict[str, Any]]) -> None:
    result = run_trial(TrialConfig(**SMALL), tmp_path)
    assert (result.status, result.steps_done, untimed(result.rows)) == ("collapsed", 10, healthy[:1])
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["stopped"] == "collapsed"


def test_off_an_interrupted_run_resumes_to_the_same_rows(tmp_path: Path, always_collapsed: None,
                                                         healthy: list[dict[str, Any]],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    config = TrialConfig(**SMALL, stop_on_collapse=False)
    calls = []
    real_score = metrics.Scorer.score

    def crash_on_third_evaluation(self: metrics.Scorer, sample: Any) -> dict[str, float]:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the process dies after the step-20 checkpoint, collapsed twice
        return real_score(self, sample)

    monkeypatch.setattr(metrics.Scorer, "score", crash_on_third_evaluation)
    with pytest.raises(KeyboardInterrupt):
        run_trial(config, tmp_path)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["step"] == 20
    monkeypatch.setattr(metrics.Scorer, "score", real_score)
    resumed = run_trial(config, tmp_path)
    assert (resumed.status, resumed.steps_done, untimed(resumed.rows)) == ("collapsed", 30, healthy)
    again = run_trial(config, tmp_path)  # finished: nothing left to train, the same record
    assert (again.status, again.rows) == ("collapsed", resumed.rows)


def test_a_checkpoint_written_before_the_option_existed_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                healthy: list[dict[str, Any]]) -> None:
    class Stop(Exception):
        pass

    def stop(step: int, row: dict[str, Any]) -> None:
        raise Stop

    with pytest.raises(Stop):
        run_trial(TrialConfig(**SMALL), tmp_path, on_evaluation=stop)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    del state["config"]["stop_on_collapse"]
    torch.save(state, tmp_path / "checkpoint.pt")
    calls = []
    real_score = metrics.Scorer.score

    def counted(self: metrics.Scorer, sample: Any) -> dict[str, float]:
        calls.append(1)
        return real_score(self, sample)

    monkeypatch.setattr(metrics.Scorer, "score", counted)
    result = run_trial(TrialConfig(**SMALL), tmp_path)
    assert untimed(result.rows) == healthy and len(calls) == 2  # resumed after step 10, not started over


@pytest.mark.parametrize("name", ["are_gans_equal", "are_gans_equal_narrow", "are_gans_equal_mini"])
def test_the_paper_studies_train_through_a_collapse(name: str) -> None:
    plan = Plan(load_study(f"studies/{name}.yaml"))
    assert plan.study.stop_on_collapse is False
    assert all(part.config({}, 0).stop_on_collapse is False for part in plan.parts())


def test_other_studies_stop_at_a_collapse_by_default() -> None:
    plan = Plan(load_study("studies/quickstart.yaml"))
    assert all(part.config({}, 0).stop_on_collapse for part in plan.parts())
