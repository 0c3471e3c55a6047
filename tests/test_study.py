"""Study files: validation before any work, and deterministic sampling."""


import optuna
import pytest
import yaml
from optuna.trial import TrialState

from bench import BenchError

from bench.cli import main
from bench.plan import Plan
from bench.queue import prepare
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
    (changed(budget__steps="many"), "budget.steps: must be an integer in 1..10^9, got 'many'"),
    (changed(budget=DELETE), "budget: Field required"),
    (changed(loss_search_space={"hinge": {"lr": 0.1}}), "loss_search_space.hinge: not one of the study's losses"),
    (changed(model="resnet"), "model: unknown model 'resnet'"),
    (changed(executor={"name": "local", "workers": 0}), "executor.workers: Input should be greater than or equal"),
    (changed(executor={"name": "local", "gpus": "all"}), "executor.gpus: Input should be 'auto' or 'none'"),
    (changed(executor={"name": "cloud"}),
     "executor.name: 'cloud' is neither local, slurm nor an executor of one's own, package.module:Class"),
    (changed(executor={"name": "slurm", "partion": "gpu"}), "executor.partion: Extra inputs are not permitted"),
    (changed(executor={"name": "slurm", "time_min": "1h"}), "executor.time_min: Input should be a valid integer"),
    (changed(executor={"name": "slurm", "gpus_per_task": -1}), "executor.gpus_per_task: Input should be greater"),
    (changed(executor={"name": "slurm", "setup": "module load cuda"}), "executor.setup: Input should be a valid list"),
    (changed(executor={"name": "slurm", "sbatch": {"constraint": ["a100"]}}), "executor.sbatch.constraint"),
    (changed(metrics={"extractor": "clip"}), "metrics.extractor: Input should be 'domain' or 'inception'"),
    (changed(seeds=[1, 1]), "seeds.1: 1 is listed twice"),
    (changed(stages=["confirm"]), "stages: expected [search] or [search, confirm]"),
    (changed(stages=["search", "search"]), "stages: expected [search] or [search, confirm]"),
    (changed(stages=["search", "polish"]), "stages.1: Input should be 'search' or 'confirm'"),
    (changed(confirm={"runs": 1}), "confirm.runs: Input should be greater than or equal to 2"),
    (changed(confirm={"seeds": 5}), "confirm.seeds: Extra inputs are not permitted"),
    (changed(budget__count="epochs"), "budget.count: Input should be 'g_steps' or 'd_steps'"),
    (changed(budget__steps=10**12), "budget.steps: must be an integer in 1..10^9"),
    (changed(init="xavier"), "init: Input should be 'model', 'compare_gan' or 'pytorch'"),
    (changed(search_space__optimizer="sgd"), "search_space.optimizer: Input should be 'adam' or 'rmsprop'"),
    (changed(search_space__beta1=1.5), "search_space.beta1: Input should be less than 1"),
    (changed(loss_search_space={"wgan_gp": {"gp_lambda": -1}}), "loss_search_space.wgan_gp.gp_lambda: Input should"),
    (changed(loss_defaults={"hinge": {"lr": 0.1}}), "loss_defaults.hinge: not one of the study's losses"),
    (changed(loss_defaults={"ns_gan": {"learning_rate": 0.1}}), "loss_defaults.ns_gan.learning_rate: unknown hyper"),
    (changed(loss_defaults={"ns_gan": {"lr": -0.1}}), "loss_defaults.ns_gan.lr: Input should be greater than 0"),
    (changed(confirm={"source": 3}), "confirm.source: Input is not a valid path"),
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
    assert "2 (dataset, loss) pairs, 6 search trials of 20 steps" in out
    assert "wgan_gp" in out


def test_shipped_studies_validate():
    study = load_study("studies/quickstart.yaml")
    assert {"mm_gan", "ns_gan", "wgan_gp", "lsgan"} <= set(study.losses)
    assert study.budget.samples >= 4


def planned_samples(study, dataset, loss):
    return Plan(study).part("search", dataset, loss).planned_samples()


def test_random_sampling_is_reproducible_and_defaults_come_first(tmp_path):
    study = load_study(write(tmp_path, GOOD))
    first = planned_samples(study, "digits", "wgan_gp")
    assert first == planned_samples(study, "digits", "wgan_gp")
    assert first[0] == ({"lr": 1e-4, "beta1": 0.5, "n_disc": 5, "gp_lambda": 10}, {})  # the authors' defaults
    assert len(first) == 3 and len({tuple(sorted(p.items())) for p, _ in first}) == 3
    space = Plan(study).part("search", "digits", "wgan_gp").space
    for params, overrides in first:
        assert set(params) == set(space) and not overrides
        assert 1e-4 <= params["lr"] <= 1e-2 and params["n_disc"] in (1, 5)
    other_seed = load_study(write(tmp_path, changed(sampler={"name": "random", "seed": 7}), "other.yaml"))
    assert planned_samples(other_seed, "digits", "wgan_gp")[1:] != first[1:]


def test_grid_covers_the_grid_exactly_once(tmp_path):
    grid = changed(search_space={"lr": {"dist": "choice", "values": [1e-4, 1e-3, 1e-2]},
                                 "n_disc": {"dist": "choice", "values": [1, 5]}},
                   loss_search_space={}, sampler={"name": "grid"}, defaults=False, budget={"samples": 6, "steps": 5})
    study = load_study(write(tmp_path, grid))
    samples = planned_samples(study, "digits", "ns_gan")
    assert sorted((p["lr"], p["n_disc"]) for p, _ in samples) == sorted(
        (lr, n) for lr in (1e-4, 1e-3, 1e-2) for n in (1, 5))
    too_many = {**grid, "budget": {"samples": 7, "steps": 5}}
    with pytest.raises(Exception, match="exceeds the grid"):
        load_study(write(tmp_path, too_many, "big.yaml"))


def test_prepare_enqueues_each_study_once(tmp_path):
    plan = Plan(load_study(write(tmp_path, GOOD)))
    storage = prepare(plan, tmp_path)
    prepare(plan, tmp_path)  # a second driver start must not enqueue again
    for loss in GOOD["losses"]:
        trials = optuna.load_study(study_name=f"tiny/digits/{loss}", storage=storage).get_trials()
        assert [t.user_attrs["sample"] for t in trials] == [0, 1, 2]
        assert all(t.state == optuna.trial.TrialState.WAITING for t in trials)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_claims_serve_every_sample_once_and_stop_at_the_budget(tmp_path, sampler):
    from bench.queue import claim

    plan = Plan(load_study(write(tmp_path, changed(sampler={"name": sampler, "seed": 1}))))
    storage = prepare(plan, tmp_path)
    claimed = []
    while (next_trial := claim(plan, storage, tmp_path)) is not None:
        part, [trial] = next_trial
        claimed.append((part.loss, trial.user_attrs["sample"]))
        trial.set_user_attr("status", "completed")
        trial.study.tell(trial, float(len(claimed)))
    assert sorted(claimed) == sorted((loss, i) for loss in GOOD["losses"] for i in range(3))
    assert [c[0] for c in claimed[:2]] == ["ns_gan", "wgan_gp"]  # round-robin over (dataset, loss)


def finish_search(plan, storage, tmp_path, values):
    """Claims every search trial and records an outcome as the runner does: `values[(loss, sample)]` is a best FID
    (completed), ("diverged", fid) for a run that diverged after an evaluation with that FID, or None for one that
    diverged before any."""
    from bench.queue import claim

    while (claimed := claim(plan, storage, tmp_path)) is not None:
        part, [trial] = claimed
        value = values[(part.loss, trial.user_attrs["sample"])]
        status, fid = ("completed", value) if not isinstance(value, tuple) and value is not None else (
            ("diverged", value[1]) if value is not None else ("diverged", None))
        rows = [{"step": 10, "fid": fid + 1.0}, {"step": 20, "fid": fid}] if fid is not None else []
        trial.set_user_attr("runs", [{"seed": 0, "status": status, "rows": rows, "extractor": "x",
                                      "steps_done": 20, "params": {**trial.params, "seed_marker": part.loss}}])
        trial.set_user_attr("status", status)
        trial.study.tell(trial, fid) if fid is not None else trial.study.tell(trial, state=TrialState.FAIL)


def test_confirm_stage_reruns_the_best_search_configuration_with_fresh_seeds(tmp_path):
    from bench.confirm import best_configuration
    from bench.queue import claim
    from bench.tallies import counts

    plan = Plan(load_study(write(tmp_path, changed(stages=["search", "confirm"],
                                                   confirm={"runs": 4, "first_seed": 100}))))
    storage = prepare(plan, tmp_path)
    # ns_gan: sample 1 diverged after reaching 3.5, and keeps it (as v1's 31337 sentinel for NaN checkpoints let it);
    # it ties with sample 2 and the tie goes to the earlier sample. wgan_gp: no run has a finite FID.
    finish_search(plan, storage, tmp_path, {("ns_gan", 0): 9.0, ("ns_gan", 1): ("diverged", 3.5),
                                             ("ns_gan", 2): 3.5, ("wgan_gp", 0): None, ("wgan_gp", 1): None,
                                             ("wgan_gp", 2): None})
    search = optuna.load_study(study_name="tiny/digits/ns_gan", storage=storage).get_trials()
    sample, config = best_configuration(plan, storage, "digits", "ns_gan")
    assert sample == 1 and config == {**search[1].params, "seed_marker": "ns_gan"}
    assert best_configuration(plan, storage, "digits", "wgan_gp") is None

    prepare(plan, tmp_path, "confirm")
    prepare(plan, tmp_path, "confirm")  # idempotent, like the search stage
    confirm = optuna.load_study(study_name="tiny/digits/ns_gan/confirm", storage=storage).get_trials()
    assert [t.user_attrs["seed"] for t in confirm] == [100, 101, 102, 103]
    assert all(t.user_attrs["source_trial"] == 1 and t.user_attrs["config"] == config for t in confirm)
    table = counts(plan, storage, "confirm").set_index("loss")
    assert table.loc["ns_gan", "queued"] == 4
    assert table.loc["wgan_gp", "queued"] == 0 and table.loc["wgan_gp", "skipped"] == "no search trial with a finite FID"

    claimed = []
    while (next_trial := claim(plan, storage, tmp_path, "confirm")) is not None:
        part, [trial] = next_trial
        claimed.append((part.stage, part.loss, trial.user_attrs["seed"]))
        assert trial.params == {} and trial.user_attrs["config"] == config  # the source run's configuration, whole
        trial.set_user_attr("status", "completed")
        trial.study.tell(trial, 1.0)
    assert claimed == [("confirm", "ns_gan", seed) for seed in (100, 101, 102, 103)]


def test_confirm_stage_refuses_an_unfinished_search(tmp_path):
    plan = Plan(load_study(write(tmp_path, changed(stages=["search", "confirm"]))))
    prepare(plan, tmp_path)
    with pytest.raises(BenchError, match="run the search stage first"):
        prepare(plan, tmp_path, "confirm")


def test_run_stage_must_be_one_of_the_studys(tmp_path, capsys):
    assert main(["run", str(write(tmp_path, GOOD)), "--stage", "confirm", "--results", str(tmp_path / "r")]) == 2
    assert "--stage: the study has no confirm stage" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_are_gans_equal_plans_the_papers_study():
    study = load_study("studies/are_gans_equal.yaml")
    search, confirm = Plan(study).parts("search"), Plan(study).parts("confirm")
    assert set(study.losses) == {"mm_gan", "ns_gan", "lsgan", "wgan", "wgan_gp", "dragan", "began", "vae"}
    assert set(study.datasets) == {"mnist", "fashion_mnist", "cifar10", "celeba"}
    assert len(search) == 8 * 4 and sum(p.trials for p in search) == 8 * 4 * 100
    assert len(confirm) == 8 * 4 and sum(p.trials for p in confirm) == 8 * 4 * 50
    assert study.stages == ["search", "confirm"] and study.batch_size == 64 and study.z_dim == 64
    assert study.z_dist == "uniform" and study.defaults and study.metrics.extractor == "inception"
    assert study.metrics.num_samples == 10000
    # The paper's budgets: 20 epochs of 50k images (MNIST, Fashion), 100 of 50k (CIFAR-10), 40 of 162k (CelebA).
    steps = {d: study.trial_fields(d, "ns_gan") for d in study.datasets}
    assert {d: f["steps"] for d, f in steps.items()} == {"mnist": 15625, "fashion_mnist": 15625,
                                                        "cifar10": 78125, "celeba": 101250}
    # Every 5 epochs as v1's save_checkpoint_steps (5 * epoch // 64), and at the end.
    assert steps["mnist"]["eval_steps"] == [3906, 7812, 11718, 15624, 15625]
    assert steps["cifar10"]["eval_steps"] == [3906 * k for k in range(1, 21)] + [78125]
    assert steps["celeba"]["eval_steps"] == [12656 * k for k in range(1, 9)] + [101250]
    assert study.budget.count == "d_steps"  # steps are D updates, as in v1


@pytest.mark.parametrize("name", ["are_gans_equal", "are_gans_equal_narrow", "are_gans_equal_mini"])
def test_paper_studies_validate(name):
    study = load_study(f"studies/{name}.yaml")
    # The narrow study has no confirm stage: the paper's table confirms the wide search (are_gans_equal).
    assert study.stages == (["search"] if name == "are_gans_equal_narrow" else ["search", "confirm"])
    assert len(study.losses) == 8 and study.budget.count == "d_steps"


def test_the_storage_opens_in_optuna_dashboard(tmp_path):
    """README: `optuna-dashboard results/<study>/optuna.journal` — the dashboard's own way of opening a path."""
    from optuna_dashboard._storage_url import guess_storage_from_url

    prepare(Plan(load_study(write(tmp_path, GOOD))), tmp_path)
    storage = guess_storage_from_url(str(tmp_path / "optuna.journal"))
    # One Optuna study per (dataset, loss), and the record of who owns the name (storage.take_ownership).
    assert {s.study_name for s in storage.get_all_studies()} == {"tiny", "tiny/digits/ns_gan", "tiny/digits/wgan_gp"}
    trials = storage.get_all_trials(storage.get_study_id_from_name("tiny/digits/wgan_gp"))
    assert [t.user_attrs["sample"] for t in trials] == [0, 1, 2]


def test_a_stage_is_finished_when_no_trial_is_left_to_do_or_running(tmp_path):
    from bench.storage import open_storage
    from bench.tallies import unfinished

    plan = Plan(load_study(write(tmp_path, changed(stages=["search", "confirm"], confirm={"runs": 2}))))

    def finished(stage):
        return unfinished(plan, open_storage(plan.study, tmp_path), stage).empty

    assert not finished("search")  # not prepared yet: every trial to do
    storage = prepare(plan, tmp_path)
    assert not finished("search")
    finish_search(plan, storage, tmp_path, {(loss, i): 1.0 + i for loss in GOOD["losses"] for i in range(3)})
    assert finished("search") and not finished("confirm")


def test_a_study_validates_without_importing_the_training_loop(tmp_path):
    """study.py reads TrialConfig from bench.config: validating a study (as `gan-bench validate` and every worker
    does) never imports the trial kinds or the driver loop."""
    import subprocess
    import sys

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "datasets": ["digits"], "losses": ["ns_gan", "began"],
                                    "budget": {"samples": 1, "steps": 10}}))
    code = ("import sys; from pathlib import Path; from bench.study import load_study; "
            f"load_study(Path({str(path)!r})); "
            "print(sorted(m for m in ('bench.trial', 'bench.gan', 'bench.translation', 'bench.kind') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
