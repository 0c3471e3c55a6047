"""A study's plan: each part (a stage of one (dataset, loss)) resolved once from the study, and what the tallies read
from the storage by it; no training."""

from __future__ import annotations

import yaml

from bench.plan import Plan, default_sample, distributions, sampler_seed
from bench.queue import claim, prepare
from bench.study import load_study
from bench.tallies import results_table

STUDY = {
    "name": "planned",
    "datasets": ["digits", "mnist5k"],
    "losses": ["ns_gan", "wgan", "wgan_rmsprop"],
    "variants": {"wgan_rmsprop": {"loss": "wgan", "params": {"optimizer": "rmsprop"}}},
    "losses_per_dataset": {"mnist5k": ["ns_gan"]},
    "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-2}, "n_disc": 1},
    "budget": {"samples": 3, "steps": 20},
    "stages": ["search", "confirm"],
    "confirm": {"runs": 2},
}


def load(tmp_path, study=None):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study or STUDY))
    return load_study(tmp_path / "study.yaml")


def test_each_part_holds_what_its_trials_are_made_of(tmp_path):
    study = load(tmp_path)
    plan = Plan(study)
    assert [(p.stage, p.dataset, p.loss) for p in plan.parts()] == [
        (stage, dataset, loss) for stage in ("search", "confirm") for dataset, loss in study.pairs()]
    assert [p.trials for p in plan.parts("confirm")] == [2] * 4 and [p.trials for p in plan.parts("search")] == [3] * 4
    part = plan.part("search", "digits", "wgan_rmsprop")
    assert part.optuna_name == "planned/digits/wgan_rmsprop"
    assert plan.part("confirm", "mnist5k", "ns_gan").optuna_name == "planned/mnist5k/ns_gan/confirm"
    assert part.space == distributions(study, "wgan_rmsprop") and set(part.space) == {"lr"}
    assert part.fixed == {"n_disc": 1, "optimizer": "rmsprop"} and part.default == default_sample(study, "wgan_rmsprop")
    assert part.fields == study.trial_fields("digits", "wgan_rmsprop") and part.steps == 20
    # A variant draws its loss's samples: the same seed, so the same proposals.
    wgan = plan.part("search", "digits", "wgan")
    assert part.sampler_seed == wgan.sampler_seed == sampler_seed(study, "digits", "wgan")
    assert part.planned_samples()[1:] == wgan.planned_samples()[1:]
    config = part.config(part.hyperparameters({"lr": 1e-3}, {}), seed=5)
    assert (config.optimizer, config.n_disc, config.lr, config.seed, config.loss) == ("rmsprop", 1, 1e-3, 5, "wgan")


def test_results_table_says_each_runs_threads_and_device(tmp_path):
    """As each run recorded them (run_claimed reads them from its result.json); a run recorded by a version that did
    not has them empty."""
    study = load(tmp_path, {**STUDY, "datasets": ["digits"], "losses": ["ns_gan"], "variants": {},
                            "losses_per_dataset": {}, "stages": ["search"]})
    plan = Plan(study)
    storage = prepare(plan, tmp_path)
    while (claimed := claim(plan, storage, tmp_path)) is not None:
        _, [trial] = claimed
        sample = trial.user_attrs["sample"]
        machine = {"threads": 2, "device": "cpu"} if sample else {}  # sample 0: as an older version recorded it
        trial.set_user_attr("runs", [{"seed": 0, "status": "completed", "rows": [{"step": 20, "fid": 1.0 + sample}],
                                      "extractor": "x", "steps_done": 20, "params": trial.params, **machine}])
        trial.set_user_attr("status", "completed")
        trial.study.tell(trial, 1.0 + sample)
    table = results_table(plan, storage).set_index("trial")
    assert table.loc[[1, 2], "threads"].tolist() == [2, 2] and table.loc[[1, 2], "device"].tolist() == ["cpu", "cpu"]
    assert table.loc[[0], ["threads", "device"]].isna().all(axis=None)
