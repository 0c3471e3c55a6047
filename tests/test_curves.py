"""FID curves in Optuna (an intermediate value per evaluation step), pruning, and collapse as a status: through the
runner's own prepare / claim / run_claimed, in-process, on digits with tiny budgets."""

import dataclasses
import json
import math
import re
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
import torch
import yaml
from optuna.trial import TrialState

from bench import losses, metrics, models, queue, report, runner, tallies
from bench.plan import Plan
from bench.results_folder import trial_dir
from bench.study import Study, StudyError, load_study
from bench.config import TrialConfig
from bench.trial import COLLAPSE_D_LOSS, run_trial

STUDY = {
    "name": "curves",
    "datasets": ["digits"],
    "losses": ["ns_gan"],
    "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-3}},
    "budget": {"samples": 2, "steps": 20, "eval_every": 10},
    "metrics": {"num_samples": 100, "kid": False, "isc": False},
}
NAME = "curves/digits/ns_gan"


def make_study(**changes) -> Study:
    return Study(**{**STUDY, **changes})


def run_study(study, results_dir, pruner=None):
    """What a worker does (runner.work), one trial after another; `pruner`, if given, replaces the study's own, which
    queue.claim passes to optuna.load_study. Returns the storage."""
    plan = Plan(study)
    storage = queue.prepare(plan, results_dir)
    while (claimed := queue.claim(plan, storage, results_dir)) is not None:
        part, [trial] = claimed
        if pruner:
            trial.study.pruner = pruner
        runner.run_claimed(plan, results_dir, part, [trial])
    return storage


def trials(storage):
    return optuna.load_study(study_name=NAME, storage=storage).get_trials()


def scripted_fids(monkeypatch, fids):
    """The scorer returns these FIDs, one per evaluation, in order (no feature extraction: fast)."""
    fids = iter(fids)
    monkeypatch.setattr(metrics.Scorer, "score", lambda self, sample: {"fid": next(fids)})


def dashboard_curves(results_dir):
    """Per trial number, its curve as optuna-dashboard serves it: the journal opened as `optuna-dashboard PATH` opens
    it, read through the dashboard's JSON API."""
    import optuna_dashboard
    from optuna_dashboard._storage_url import guess_storage_from_url

    storage = guess_storage_from_url(str(results_dir / "optuna.journal"))
    environ = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = f"/api/studies/{storage.get_study_id_from_name(NAME)}"
    status = []
    body = b"".join(optuna_dashboard.wsgi(storage)(environ, lambda code, headers, *_: status.append(code)))
    assert status == ["200 OK"]
    return {t["number"]: {v["step"]: v["value"] for v in t["intermediate_values"]}
            for t in json.loads(body)["trials"]}


def test_every_evaluation_is_an_intermediate_value_of_the_first_seed(tmp_path):
    storage = run_study(make_study(seeds=[0, 1]), tmp_path)
    done = trials(storage)
    assert [t.state for t in done] == [TrialState.COMPLETE] * 2
    for trial in done:
        first, second = trial.user_attrs["runs"]
        # Optuna keeps one value per step: the first seed's curve, at the training step of each evaluation.
        assert trial.intermediate_values == {row["step"]: row["fid"] for row in first["rows"]}
        assert sorted(trial.intermediate_values) == [10, 20]
        assert [row["fid"] for row in second["rows"]] != [row["fid"] for row in first["rows"]]
        assert all(row["spread"] > 1e-3 for row in first["rows"] + second["rows"])  # healthy: not collapsed
    assert dashboard_curves(tmp_path) == {t.number: t.intermediate_values for t in done}


def test_a_median_pruner_stops_a_trial_worse_than_the_earlier_one(tmp_path, monkeypatch):
    # Trial 0: 10 then 9; trial 1: 50 at step 10, worse than trial 0's 10 there, so pruned; trial 2: 8 then 7.
    scripted_fids(monkeypatch, [10.0, 9.0, 50.0, 8.0, 7.0])
    study = make_study(budget={"samples": 3, "steps": 20, "eval_every": 10},
                       pruner={"name": "median", "n_startup_trials": 1})
    storage = run_study(study, tmp_path)
    first, pruned, last = trials(storage)
    assert (first.state, pruned.state, last.state) == (TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE)
    assert pruned.user_attrs["status"] == "pruned" and pruned.intermediate_values == {10: 50.0}
    [run] = pruned.user_attrs["runs"]
    assert (run["status"], run["steps_done"], [r["step"] for r in run["rows"]]) == ("pruned", 10, [10])
    record = json.loads((trial_dir(tmp_path, Plan(study).part("search", "digits", "ns_gan"), 1, 0)
                         / "result.json").read_text())
    assert (record["status"], record["steps_done"]) == ("pruned", 10)

    table = tallies.counts(Plan(study), storage).iloc[0]
    assert (table["completed"], table["pruned"], table["diverged"], table["collapsed"], table["failed"],
            table["running"], table["stale"], table["queued"]) == (2, 1, 0, 0, 0, 0, 0, 0)
    assert table["best_fid"] == 7.0
    assert tallies.unfinished(Plan(study), storage, "search").empty  # a pruned trial is finished

    results = tallies.write_results(Plan(study), storage, tmp_path)
    assert results.loc[results["trial"] == 1, "status"].tolist() == ["pruned"]
    summary = report.summary(report.read_results(tmp_path)).iloc[0]
    # Trial 1's FID is of 10 steps where the others trained 20: counted apart, in no statistic.
    assert (summary["trials"], summary["pruned"], summary["no_fid"]) == (2, 1, 0)
    assert (summary["best_fid"], summary["median_fid"]) == (7.0, 8.0)


def test_hyperband_prunes_but_never_at_the_last_step(tmp_path, monkeypatch):
    scripted_fids(monkeypatch, [10.0, 9.0, 50.0, 49.0, 8.0, 7.0, 60.0, 59.0, 61.0])
    study = make_study(budget={"samples": 5, "steps": 20, "eval_every": 10},
                       pruner={"name": "hyperband", "min_resource": 10, "reduction_factor": 2})
    done = trials(run_study(study, tmp_path))
    assert [t.user_attrs["status"] for t in done] == ["completed"] * 3 + ["pruned", "completed"]
    # Trial 4 is worse than its rung at step 20 too (Optuna would prune it there), but it has trained its whole budget.
    assert done[4].intermediate_values == {10: 59.0, 20: 61.0} and done[4].state == TrialState.COMPLETE


def test_without_a_pruner_nothing_is_pruned(tmp_path, monkeypatch):
    # The same FIDs under the default pruner none: whatever pruner the Optuna study holds (optuna.load_study gives
    # each one a MedianPruner unless told otherwise) must not act.
    scripted_fids(monkeypatch, [10.0, 9.0, 50.0, 49.0, 8.0, 7.0])
    storage = run_study(make_study(budget={"samples": 3, "steps": 20, "eval_every": 10}), tmp_path,
                        pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    assert [t.state for t in trials(storage)] == [TrialState.COMPLETE] * 3


def test_a_resumed_trial_reports_each_step_once(tmp_path, monkeypatch):
    calls = []

    def score(self, sample):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the worker dies during the step-20 evaluation, after the step-10 checkpoint
        return {"fid": 100.0 - len(calls)}

    reports = []
    real_report = optuna.trial.Trial.report

    def spy(self, value, step):
        reports.append((self.number, step))
        real_report(self, value, step)

    monkeypatch.setattr(metrics.Scorer, "score", score)
    monkeypatch.setattr(optuna.trial.Trial, "report", spy)
    study = make_study(budget={"samples": 1, "steps": 20, "eval_every": 10})
    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path)
    storage = run_study(study, tmp_path)  # prepare requeues the interrupted trial; it resumes from its checkpoint
    interrupted, resumed = trials(storage)
    assert interrupted.user_attrs["status"] == "interrupted" and interrupted.intermediate_values == {10: 99.0}
    # The step-10 value comes from the checkpoint's row, replayed: the requeued trial is a fresh Optuna trial.
    assert resumed.state == TrialState.COMPLETE and resumed.intermediate_values == {10: 99.0, 20: 97.0}
    assert reports == [(0, 10), (1, 10), (1, 20)]


class Constant(torch.nn.Module):
    """A generator that ignores z: its samples are one grey image."""

    def __init__(self, G: torch.nn.Module):
        super().__init__()
        self.G = G

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.G(z) * 0 + 0.5  # keeps G's graph, so its optimizer step still runs


def test_a_generator_without_spread_is_collapsed(tmp_path, monkeypatch):
    build = models.build
    monkeypatch.setattr(models, "build", lambda *a, **k: (lambda G, D: (Constant(G), D))(*build(*a, **k)))
    study = make_study(budget={"samples": 1, "steps": 20, "eval_every": 10})
    storage = run_study(study, tmp_path)
    [trial] = trials(storage)
    [run] = trial.user_attrs["runs"]
    # Stopped at its first evaluation, which stands: the objective is its FID (best over evaluations), as for a run
    # that diverged after one.
    assert trial.user_attrs["status"] == "collapsed" and trial.state == TrialState.COMPLETE
    assert (run["status"], run["steps_done"], [r["step"] for r in run["rows"]]) == ("collapsed", 10, [10])
    assert run["rows"][0]["spread"] == 0.0 and trial.value == run["rows"][0]["fid"]
    out = trial_dir(tmp_path, Plan(study).part("search", "digits", "ns_gan"), 0, 0)
    assert json.loads((out / "result.json").read_text())["status"] == "collapsed"
    table = tallies.counts(Plan(study), storage).iloc[0]
    assert (table["collapsed"], table["completed"], table["queued"]) == (1, 0, 0)
    results = tallies.write_results(Plan(study), storage, tmp_path)
    assert results["status"].tolist() == ["collapsed"]
    assert report.summary(results).iloc[0]["collapsed_share"] == 1.0


def test_a_runaway_discriminator_loss_is_collapsed(tmp_path, scratch_registry):
    ns_gan = losses.LOSSES.get("ns_gan")

    def runaway(real, fake, **params):
        d_loss, g_loss = ns_gan.fn(real, fake, **params)
        return d_loss - 10 * COLLAPSE_D_LOSS, g_loss  # finite, and the same gradients: only its size runs away

    scratch_registry(losses, "LOSSES", ns_gan=dataclasses.replace(ns_gan, fn=runaway))
    config = TrialConfig(dataset="digits", steps=20, eval_steps=[10, 20], metrics=STUDY["metrics"])
    result = run_trial(config, tmp_path)
    assert (result.status, result.steps_done, len(result.rows)) == ("collapsed", 10, 1)
    assert math.isfinite(result.rows[0]["d_loss"]) and result.rows[0]["d_loss"] < -COLLAPSE_D_LOSS
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "collapsed"


def test_a_pruned_run_stops_with_its_checkpoint_and_result_consistent(tmp_path):
    config = TrialConfig(dataset="digits", steps=30, eval_steps=[10, 20, 30], metrics=STUDY["metrics"])
    seen = []

    def prune_at_20(step, row):
        seen.append((step, row["fid"]))
        if step == 20:
            raise optuna.TrialPruned()

    result = run_trial(config, tmp_path, on_evaluation=prune_at_20)
    assert (result.status, result.steps_done) == ("pruned", 20)
    assert seen == [(row["step"], row["fid"]) for row in result.rows] and [s for s, _ in seen] == [10, 20]
    record = json.loads((tmp_path / "result.json").read_text())
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert (record["status"], record["steps_done"], record["rows"]) == ("pruned", 20, result.rows)
    assert (checkpoint["stopped"], checkpoint["step"], checkpoint["rows"]) == ("pruned", 20, result.rows)
    # Run again into the same folder (a worker that died before telling Optuna): it replays its evaluations to the
    # new listener and stays stopped, trained no further.
    replayed = []
    again = run_trial(config, tmp_path, on_evaluation=lambda step, row: replayed.append(step))
    assert (again.status, again.steps_done, again.rows, replayed) == ("pruned", 20, result.rows, [10, 20])


def test_pruner_field():
    assert make_study().pruner.name == "none"
    for name in ("are_gans_equal", "are_gans_equal_narrow", "are_gans_equal_mini", "adam_vs_rmsprop"):
        assert load_study(f"studies/{name}.yaml").pruner.name == "none"  # the paper trains every sample whole
    assert isinstance(make_study().pruner.make_pruner(20), optuna.pruners.NopPruner)
    median = make_study(pruner={"name": "median", "n_startup_trials": 2, "n_warmup_steps": 10}).pruner.make_pruner(20)
    assert (type(median), median._n_startup_trials, median._n_warmup_steps) == (optuna.pruners.MedianPruner, 2, 10)
    hyperband = make_study(pruner={"name": "hyperband", "min_resource": 5}).pruner.make_pruner(20)
    assert (hyperband._min_resource, hyperband._max_resource, hyperband._reduction_factor) == (5, 20, 3)
    for pruner in ({"name": "none"}, {"name": "median", "n_startup_trials": 1},
                   {"name": "hyperband", "min_resource": 5}):
        study = make_study(pruner=pruner)
        # Whole, every field set, as workers get the study and as study.yaml keeps it.
        assert Study.model_validate_json(study.model_dump_json()) == study
        assert Study(**yaml.safe_load(yaml.safe_dump(study.model_dump(mode="json")))) == study


@pytest.mark.parametrize("pruner, message", [
    ({"name": "median", "min_resource": 3}, "pruner.min_resource: not a parameter of the median pruner (its own: "
                                            "n_startup_trials, n_warmup_steps)"),
    ({"name": "none", "n_warmup_steps": 3}, "pruner.n_warmup_steps: pruner none takes no parameters"),
    ({"name": "asha"}, "pruner.name: Input should be 'none', 'median' or 'hyperband'"),
    ({"name": "hyperband", "reduction_factor": 1}, "pruner.reduction_factor: Input should be greater than or equal"),
])
def test_a_bad_pruner_is_refused_in_one_line(tmp_path, pruner, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "pruner": pruner}))
    with pytest.raises(StudyError, match="study.yaml: " + re.escape(message)):
        load_study(path)
