"""A study with results can grow: more samples, seeds, datasets or losses run only the new trials, and the results
of the finished ones stay as they are. Any other change is refused with every differing field named."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from bench import BenchError
from bench.results_folder import check_results_dir
from bench.study import load_study

STUDY = {"name": "grow", "datasets": ["digits"], "losses": ["ns_gan"],
         "search_space": {"lr": {"dist": "loguniform", "low": 2e-4, "high": 2e-3}},
         "budget": {"samples": 2, "steps": 20, "eval_every": 10},
         "metrics": {"num_samples": 50, "kid": False, "isc": False}, "executor": {"name": "local", "workers": 1}}


def run(tmp_path: Path, study: dict) -> pd.DataFrame:
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    done = subprocess.run([sys.executable, "-m", "bench.cli", "run", str(tmp_path / "study.yaml"), "--results",
                           str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return pd.read_csv(tmp_path / "out" / "results.csv")


def trial_folders(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "out" / "trials").iterdir()}


def test_a_study_grows_by_samples_and_by_seeds_running_only_the_new_trials(tmp_path):
    first = run(tmp_path, STUDY)
    assert sorted(set(first["trial"])) == [0, 1]

    more_samples = {**STUDY, "budget": {**STUDY["budget"], "samples": 3}}
    second = run(tmp_path, more_samples)
    assert sorted(set(second["trial"])) == [0, 1, 2]
    # The finished trials' rows, as they were: timings included, so they were not trained again.
    old = second[second["trial"] < 2].reset_index(drop=True)
    assert old[first.columns].equals(first)
    assert len(trial_folders(tmp_path)) == 3

    more_seeds = {**more_samples, "seeds": [0, 1]}
    third = run(tmp_path, more_seeds)
    assert sorted(third.groupby(["trial", "seed"]).groups) == [(t, s) for t in range(3) for s in (0, 1)]
    seed0 = third[third["seed"] == 0].reset_index(drop=True)
    # Seed 0's runs replayed from their checkpoints, not retrained (their timings are the same): only the trial's
    # wall time is new.
    assert [c for c in second.columns if not seed0[c].equals(second[c])] == ["wall_seconds"]
    assert len(trial_folders(tmp_path)) == 6

    status = subprocess.run([sys.executable, "-m", "bench.cli", "status", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    table = pd.read_fwf(__import__("io").StringIO(status.stdout))
    assert (table["completed"].sum(), table["queued"].sum()) == (3, 0)


def saved(tmp_path: Path, study: dict) -> None:
    """A results folder holding `study`, as `gan-bench run` leaves it."""
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "study.yaml").write_text(
        yaml.safe_dump(load_study(write(tmp_path, study)).model_dump(mode="json")))


def write(tmp_path: Path, study: dict) -> Path:
    path = tmp_path / f"s{len(list(tmp_path.glob('s*.yaml')))}.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


@pytest.mark.parametrize("grown", [
    {**STUDY, "losses": ["ns_gan", "lsgan"]},
    {**STUDY, "datasets": ["digits", "polygons"], "budget": {**STUDY["budget"], "steps": {"digits": 20, "polygons": 5}}},
    {**STUDY, "seeds": [0, 7], "budget": {**STUDY["budget"], "samples": 5}},
    {**STUDY, "losses": ["ns_gan", "strong"], "variants": {"strong": {"loss": "wgan_gp", "params": {"gp_lambda": 20}}}},
    {**STUDY, "executor": {"name": "local", "workers": 4}, "stages": ["search", "confirm"]},
])
def test_growth_is_accepted(tmp_path, grown):
    saved(tmp_path, STUDY)
    check_results_dir(load_study(write(tmp_path, grown)), tmp_path / "out")


def test_a_changed_study_is_refused_with_every_differing_field_named(tmp_path):
    saved(tmp_path, STUDY)
    changed = {**STUDY, "losses": ["lsgan"], "model": "dcgan", "image_size": 32,
               "budget": {**STUDY["budget"], "steps": 40, "samples": 1}}
    with pytest.raises(BenchError) as error:
        check_results_dir(load_study(write(tmp_path, changed)), tmp_path / "out")
    message = str(error.value)
    assert "\n" not in message and "another --results folder" in message
    for said in ('losses: ["ns_gan"] there, ["lsgan"] here', 'model: "mlp" there, "dcgan" here',
                 "image_size: null there, 32 here", "budget.samples: 2 there, 1 here", "budget.steps: 20 there, 40 here"):
        assert said in message
    # A new dataset's own steps are growth; a per-dataset entry for a dataset that was already there is a change.
    steps = {**STUDY, "datasets": ["digits", "polygons"], "budget": {**STUDY["budget"], "steps": {"digits": 30,
                                                                                                 "polygons": 5}}}
    with pytest.raises(BenchError, match=r"\(budget\.steps\.digits: 20 there, 30 here\)"):
        check_results_dir(load_study(write(tmp_path, steps)), tmp_path / "out")


def test_a_results_folder_written_before_a_field_existed_takes_its_default(tmp_path):
    """Folders written by an older gan-bench lack fields added since (here `composites`, `threads`): absent means
    the default, which is no change."""
    saved(tmp_path, STUDY)
    written = yaml.safe_load((tmp_path / "out" / "study.yaml").read_text())
    for field in ("composites", "threads", "pruner"):
        written.pop(field)
    (tmp_path / "out" / "study.yaml").write_text(yaml.safe_dump(written))
    check_results_dir(load_study(write(tmp_path, STUDY)), tmp_path / "out")
    with pytest.raises(BenchError, match=r"threads: 1 there, 2 here"):
        check_results_dir(load_study(write(tmp_path, {**STUDY, "threads": 2})), tmp_path / "out")
