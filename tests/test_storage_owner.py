"""A study owns its name in its storage: on a journal file that several results folders share (`storage:
journal:///PATH`), a second study of the same name — another definition, or the same study from another results
folder — is refused in one line before anything is written, and every table reads the owner's trials only. The same
on the CI's real PostgreSQL server is in test_postgres_conditions.py."""

from __future__ import annotations

import subprocess
import sys

import optuna
import pandas as pd
import pytest
import yaml

from bench.storage import OWNER, open_storage
from bench.study import load_study

STUDY = {
    "name": "are_gans_equal",
    "datasets": ["digits"],
    "losses": ["ns_gan", "lsgan"],
    "budget": {"samples": 2, "steps": 20},
    "metrics": {"num_samples": 100},
    "executor": {"name": "local", "workers": 2},
}


def gan_bench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=600)


def write(folder, name, study):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(study))
    return str(path)


def one_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gan-bench: error:"), stderr
    return lines[0]


def trial_counts(journal) -> dict[str, int]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return {s.study_name: len(storage.get_all_trials(s._study_id)) for s in storage.get_all_studies()}


@pytest.fixture
def shared(tmp_path):
    """Study A run from folder A on a journal file of its own folder, which other studies may name too."""
    journal = tmp_path / "lab" / "lab.journal"
    journal.parent.mkdir()
    a = {**STUDY, "storage": f"journal://{journal}"}
    run = gan_bench("run", write(tmp_path, "a", a), "--results", str(tmp_path / "A"), "--no-progress")
    assert run.returncode == 0, run.stderr
    return tmp_path, journal, a


def test_another_study_of_the_name_is_refused_before_anything_is_written(shared):
    tmp_path, journal, a = shared
    before, size = trial_counts(journal), journal.stat().st_size
    b = {**a, "losses": ["ns_gan"], "budget": {"samples": 4, "steps": 30},
         "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-3}, "beta1": 0.5}}
    run = gan_bench("run", write(tmp_path, "b", b), "--results", str(tmp_path / "B"), "--no-progress")
    assert run.returncode == 2
    line = one_error(run.stderr)
    for said in (str(journal), "'are_gans_equal'", str(tmp_path / "A"), "budget.steps", "another `name`",
                 "another storage"):
        assert said in line, line
    assert not (tmp_path / "B").exists()
    assert journal.stat().st_size == size and trial_counts(journal) == before

    # A itself goes on as before: its table holds its own 2 × 2 trials.
    again = gan_bench("run", write(tmp_path, "a", a), "--results", str(tmp_path / "A"), "--no-progress")
    assert again.returncode == 0, again.stderr
    table = pd.read_csv(tmp_path / "A" / "results.csv")
    assert len(table) == 4 and sorted(set(table["loss"])) == ["lsgan", "ns_gan"]


def test_the_same_study_from_another_results_folder_is_refused(shared):
    tmp_path, journal, a = shared
    run = gan_bench("run", write(tmp_path, "a", a), "--results", str(tmp_path / "A2"), "--no-progress")
    assert run.returncode == 2
    line = one_error(run.stderr)
    assert "already runs from" in line and str(tmp_path / "A") in line, line
    assert not (tmp_path / "A2").exists()


def test_reading_tables_refuse_a_folder_that_does_not_own_the_name(shared):
    tmp_path, journal, a = shared
    # A results folder that claims to hold the study (its study.yaml) but did not run it.
    copy = tmp_path / "C"
    copy.mkdir()
    (copy / "study.yaml").write_text((tmp_path / "A" / "study.yaml").read_text())
    status = gan_bench("status", str(copy))
    assert status.returncode == 2
    assert str(tmp_path / "A") in one_error(status.stderr)
    # So does a confirm stage that takes its configurations from it.
    confirm = {**a, "name": "confirming", "stages": ["search", "confirm"], "confirm": {"runs": 2, "source": str(copy)}}
    run = gan_bench("run", write(tmp_path, "confirm", confirm), "--results", str(tmp_path / "D"), "--stage",
                    "confirm", "--no-progress")
    assert run.returncode == 2
    assert str(tmp_path / "A") in one_error(run.stderr)
    assert gan_bench("status", str(tmp_path / "A")).returncode == 0


def test_a_grown_study_stays_the_owner_and_its_record_follows(shared):
    tmp_path, journal, a = shared
    grown = {**a, "budget": {**a["budget"], "samples": 3}}
    run = gan_bench("run", write(tmp_path, "a", grown), "--results", str(tmp_path / "A"), "--no-progress")
    assert run.returncode == 0, run.stderr
    assert len(pd.read_csv(tmp_path / "A" / "results.csv")) == 6
    storage = open_storage(load_study(tmp_path / "a.yaml"), tmp_path / "A")
    (owner,) = [s for s in storage.get_all_studies() if s.study_name == "are_gans_equal"]
    record = owner.user_attrs[OWNER]
    assert record["definition"]["budget"]["samples"] == 3 and record["results"] == str((tmp_path / "A").resolve())
    # Shrunk back, it would change what the record says the study is: refused.
    shrunk = gan_bench("run", write(tmp_path, "a", a), "--results", str(tmp_path / "A"), "--no-progress")
    assert shrunk.returncode == 2 and "budget.samples" in one_error(shrunk.stderr)


def test_trials_written_before_owners_were_recorded(shared):
    tmp_path, journal, a = shared
    storage = open_storage(load_study(tmp_path / "a.yaml"), tmp_path / "A")
    optuna.delete_study(study_name="are_gans_equal", storage=storage)  # as an older gan-bench left the storage
    other = gan_bench("run", write(tmp_path, "a", a), "--results", str(tmp_path / "E"), "--no-progress")
    assert other.returncode == 2
    assert "before gan-bench recorded who owns a name" in one_error(other.stderr)
    # The folder that ran them takes the name back.
    own = gan_bench("run", write(tmp_path, "a", a), "--results", str(tmp_path / "A"), "--no-progress")
    assert own.returncode == 0, own.stderr
    assert "are_gans_equal" in {s.study_name for s in storage.get_all_studies()}


def test_two_drivers_racing_for_a_free_name_one_wins(tmp_path):
    journal = tmp_path / "race.journal"
    a = {**STUDY, "storage": f"journal://{journal}"}
    b = {**a, "budget": {"samples": 2, "steps": 30}}
    runs = [subprocess.Popen([sys.executable, "-m", "bench.cli", "run", write(tmp_path, name, study), "--results",
                              str(tmp_path / name), "--no-progress"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True) for name, study in (("a", a), ("b", b))]
    outcomes = [(run.wait(timeout=600), run.communicate()[1]) for run in runs]
    assert sorted(code for code, _ in outcomes) == [0, 2], outcomes
    loser = next(stderr for code, stderr in outcomes if code == 2)
    assert "is taken by another study" in one_error(loser)
    names = trial_counts(journal)
    assert sum(names.values()) == 4  # the winner's 2 × 2 trials, none of the loser's


def test_a_journal_storage_must_name_an_absolute_file(tmp_path):
    bad = {**STUDY, "storage": "journal://relative.journal"}
    run = gan_bench("validate", write(tmp_path, "bad", bad))
    assert run.returncode == 2
    assert "storage" in one_error(run.stderr) and "absolute" in run.stderr
