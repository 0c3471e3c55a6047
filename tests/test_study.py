"""Study files: validation before any work, and deterministic sampling."""

import subprocess
import sys
import textwrap

import optuna
import pytest
import yaml

from bench.cli import main
from bench.runner import distributions, planned_samples, prepare
from bench.study import load_study

GOOD = {
    "name": "tiny",
    "datasets": ["digits"],
    "losses": ["ns_gan", "wgan_gp"],
    "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-2},
                     "beta1": {"dist": "uniform", "low": 0.0, "high": 0.9},
                     "n_disc": {"dist": "choice", "values": [1, 5]}},
    "loss_search_space": {"wgan_gp": {"gp_lambda": {"dist": "loguniform", "low": 0.1, "high": 100}}},
    "budget": {"samples": 3, "steps": 20},
}


def write(tmp_path, study, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(study) if isinstance(study, dict) else study)
    return path


def changed(**changes):
    study = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = study
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    return study


DELETE = object()

BAD = [
    (changed(colour="red"), "colour: Extra inputs are not permitted"),
    (changed(name=3), "name: Input should be a valid string"),
    (changed(name="a b"), "name: String should match pattern"),
    (changed(datasets="digits"), "datasets: Input should be a valid list"),
    (changed(datasets=[]), "datasets: List should have at least 1 item"),
    (changed(datasets=["digits", "cifar"]), "datasets.1: unknown dataset 'cifar'"),
    (changed(losses=["ns_gan", "nope"]), "losses.1: unknown loss 'nope'"),
    (changed(losses=["ns_gan", "ns_gan"]), "losses.1: 'ns_gan' is listed twice"),
    (changed(search_space__lr={"dist": "loguniform", "low": 0, "high": 1}),
     "search_space.lr.low: must be > 0 for loguniform"),
    (changed(search_space__lr={"dist": "uniform", "low": 0.1, "high": 0.1}), "search_space.lr: empty range"),
    (changed(search_space__lr={"dist": "normal", "low": 0.1, "high": 0.2}), "search_space.lr.dist: Input should be"),
    (changed(search_space__n_disc={"dist": "choice", "values": []}), "search_space.n_disc: choice needs"),
    (changed(search_space__learning_rate=0.1), "search_space.learning_rate: unknown hyperparameter"),
    (changed(search_space__lr="fast"), "search_space.lr"),
    (changed(sampler={"name": "bayes"}), "sampler.name: Input should be 'random', 'grid' or 'tpe'"),
    (changed(sampler={"name": "grid"}), "sampler: grid needs every searched parameter to be a choice"),
    (changed(budget__samples=0), "budget.samples: Input should be greater than or equal to 1"),
    (changed(budget__steps="many"), "budget.steps: Input should be a valid integer"),
    (changed(budget=DELETE), "budget: Field required"),
    (changed(loss_search_space={"hinge": {"lr": 0.1}}), "loss_search_space.hinge: not one of the study's losses"),
    (changed(model="resnet"), "model: unknown model 'resnet'"),
    (changed(executor={"name": "local", "workers": 0}), "executor.workers: Input should be greater than or equal"),
    (changed(metrics={"extractor": "clip"}), "metrics.extractor: Input should be 'domain' or 'inception'"),
    (changed(seeds=[1, 1]), "seeds.1: 1 is listed twice"),
    ("name: x\ndatasets: [digits\n", "YAML syntax error at line"),
    ("- just\n- a list\n", "expected a mapping"),
]


@pytest.mark.parametrize("study, message", BAD, ids=[m.split(":")[0] for _, m in BAD])
def test_bad_study_is_rejected_with_one_line_naming_the_field(tmp_path, capsys, monkeypatch, study, message):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, study)
    for command in (["validate", str(path)], ["run", str(path)]):
        assert main(command) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err, err
        assert err.startswith(f"gan-bench: error: {path}: "), err
        assert message in err, err
    assert not (tmp_path / "results").exists()


def test_missing_study_file(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: no such study file" in capsys.readouterr().err


def test_validate_prints_the_plan(tmp_path, capsys):
    assert main(["validate", str(write(tmp_path, GOOD))]) == 0
    out = capsys.readouterr().out
    assert "2 (dataset, loss) pairs, 6 trials of 20 steps" in out
    assert "wgan_gp" in out


def test_shipped_studies_validate():
    study = load_study("studies/quickstart.yaml")
    assert {"mm_gan", "ns_gan", "wgan_gp", "lsgan"} <= set(study.losses)
    assert study.budget.samples >= 4


def test_random_sampling_is_reproducible_and_defaults_come_first(tmp_path):
    study = load_study(write(tmp_path, GOOD))
    first = planned_samples(study, "digits", "wgan_gp")
    assert first == planned_samples(study, "digits", "wgan_gp")
    assert first[0] == {"lr": 1e-4, "beta1": 0.5, "n_disc": 5, "gp_lambda": 10}  # the authors' defaults
    assert len(first) == 3 and len({tuple(sorted(p.items())) for p in first}) == 3
    space = distributions(study, "wgan_gp")
    for params in first:
        assert set(params) == set(space)
        assert 1e-4 <= params["lr"] <= 1e-2 and params["n_disc"] in (1, 5)
    other_seed = load_study(write(tmp_path, changed(sampler={"name": "random", "seed": 7}), "other.yaml"))
    assert planned_samples(other_seed, "digits", "wgan_gp")[1:] != first[1:]


def test_grid_covers_the_grid_exactly_once(tmp_path):
    grid = changed(search_space={"lr": {"dist": "choice", "values": [1e-4, 1e-3, 1e-2]},
                                 "n_disc": {"dist": "choice", "values": [1, 5]}},
                   loss_search_space={}, sampler={"name": "grid"}, defaults=False, budget={"samples": 6, "steps": 5})
    study = load_study(write(tmp_path, grid))
    samples = planned_samples(study, "digits", "ns_gan")
    assert sorted((p["lr"], p["n_disc"]) for p in samples) == sorted(
        (lr, n) for lr in (1e-4, 1e-3, 1e-2) for n in (1, 5))
    too_many = {**grid, "budget": {"samples": 7, "steps": 5}}
    with pytest.raises(Exception, match="exceeds the grid"):
        load_study(write(tmp_path, too_many, "big.yaml"))


def test_prepare_enqueues_each_study_once(tmp_path):
    study = load_study(write(tmp_path, GOOD))
    storage = prepare(study, tmp_path)
    prepare(study, tmp_path)  # a second driver start must not enqueue again
    for loss in GOOD["losses"]:
        trials = optuna.load_study(study_name=f"tiny/digits/{loss}", storage=storage).get_trials()
        assert [t.user_attrs["sample"] for t in trials] == [0, 1, 2]
        assert all(t.state == optuna.trial.TrialState.WAITING for t in trials)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_claims_serve_every_sample_once_and_stop_at_the_budget(tmp_path, sampler):
    from bench.runner import claim

    study = load_study(write(tmp_path, changed(sampler={"name": sampler, "seed": 1})))
    storage = prepare(study, tmp_path)
    claimed = []
    while (next_trial := claim(study, storage, tmp_path)) is not None:
        _, loss, trial = next_trial
        claimed.append((loss, trial.user_attrs["sample"]))
        trial.set_user_attr("status", "completed")
        trial.study.tell(trial, float(len(claimed)))
    assert sorted(claimed) == sorted((loss, i) for loss in GOOD["losses"] for i in range(3))
    assert [c[0] for c in claimed[:2]] == ["ns_gan", "wgan_gp"]  # round-robin over (dataset, loss)
