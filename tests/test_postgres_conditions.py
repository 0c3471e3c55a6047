"""Two conditions of a study on a real PostgreSQL server (the one .ci/start-postgres.sh starts), run through the CLI:

1. Two studies of one name in one database. The first one owns the name; a second study of that name (another
   definition), or the first one run from a second results folder, is refused by `gan-bench run` in one line (exit 2)
   before anything is written: no results folder, not one trial added to the database. The owner still runs and
   reads its results as before.
2. The server restarts while a study runs. The run reconnects (exit 0) or stops in one line (exit 75) and the same
   command then finishes it; either way every trial ran exactly once, and results.csv is the same, value for value,
   as an uninterrupted run's of the same study in another database.

The server, the skip (or the failure under GAN_BENCH_REQUIRE_POSTGRES=1) and the fresh database per test are those of
tests/test_postgres.py. The restart test stops and starts the server with .ci/stop-postgres.sh and
.ci/start-postgres.sh (GAN_BENCH_POSTGRES_DIR and GAN_BENCH_POSTGRES_PORT as the environment has them), so it must
not run beside other tests of the same server (pytest -n).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from test_postgres import (PROBLEM, REQUIRED, URL, database_url, fresh_database,  # noqa: F401 (a fixture)
                           gan_bench)

pytestmark = pytest.mark.skipif(PROBLEM is not None and not REQUIRED, reason=PROBLEM or "")

CI = Path(__file__).resolve().parent.parent / ".ci"
KEY = ["dataset", "loss", "trial", "seed", "step"]


@pytest.fixture
def baseline_database_url():
    """A second fresh database on the server, dropped afterwards."""
    with fresh_database() as url:
        yield url


def write_study(path: Path, storage: str, **fields) -> Path:
    study = {"datasets": ["digits"], "metrics": {"num_samples": 100}, "executor": {"name": "local", "workers": 2},
             "storage": storage, **fields}
    path.write_text(yaml.safe_dump(study))
    return path


def storage_trials(url: str) -> dict[str, list[tuple]]:
    """Every Optuna study in the database with its trials (number, state, values, completion time)."""
    storage = optuna.storages.RDBStorage(url)
    try:
        return {s.study_name: [(t.number, t.state, t.values, t.datetime_complete)
                               for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials()]
                for s in optuna.get_all_study_summaries(storage)}
    finally:
        storage.engine.dispose()


def refusal(result: subprocess.CompletedProcess) -> str:
    """The one line a refused command says, checked to be exactly one `gan-bench: error:` line, exit code 2."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gan-bench: error: "), result.stderr
    return lines[0]


def status_table(result: subprocess.CompletedProcess, stages=("search",)) -> list[dict[str, str]]:
    """The rows of `gan-bench status`'s table, as {column: value} (the empty last column `skipped` left out)."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = lines[0].split()
    assert header[:2] == ["stage", "dataset"], result.stdout
    return [dict(zip(header, line.split())) for line in lines[1:] if line.split() and line.split()[0] in stages]


def test_a_second_study_of_the_same_name_is_refused_and_changes_nothing(tmp_path, database_url):
    name = "are_gans_equal"
    study_a = write_study(tmp_path / "a.yaml", database_url, name=name, losses=["ns_gan", "lsgan"],
                          budget={"samples": 2, "steps": 20})
    study_b = write_study(tmp_path / "b.yaml", database_url, name=name, losses=["ns_gan"],
                          search_space={"beta1": 0.5}, budget={"samples": 3, "steps": 30})
    folder_a, folder_b, folder_a2 = tmp_path / "A", tmp_path / "B", tmp_path / "A2"

    first = gan_bench("run", str(study_a), "--results", str(folder_a), "--no-progress")
    assert first.returncode == 0, first.stderr
    before = storage_trials(database_url)
    assert {n: len(t) for n, t in before.items()} == {name: 0, f"{name}/digits/ns_gan": 2, f"{name}/digits/lsgan": 2}

    # Another study of the same name: one line naming the name, the owner's folder and the fix; nothing written.
    line = refusal(gan_bench("run", str(study_b), "--results", str(folder_b), "--no-progress"))
    assert repr(name) in line and str(folder_a.resolve()) in line and "`name`" in line, line
    assert not folder_b.exists()
    assert storage_trials(database_url) == before

    # The same study from a second results folder: refused too, naming the folder it runs from.
    line = refusal(gan_bench("run", str(study_a), "--results", str(folder_a2), "--no-progress"))
    assert repr(name) in line and str(folder_a.resolve()) in line, line
    assert not folder_a2.exists()
    assert storage_trials(database_url) == before

    # The owner, from its own folder, still runs (training nothing) and its results are its own, no more.
    again = gan_bench("run", str(study_a), "--results", str(folder_a), "--no-progress")
    assert again.returncode == 0, again.stderr
    table = pd.read_csv(folder_a / "results.csv")
    assert sorted(map(tuple, table[KEY].values.tolist())) == \
        sorted(("digits", loss, sample, 0, 20) for loss in ["ns_gan", "lsgan"] for sample in range(2))
    assert storage_trials(database_url) == before

    status = gan_bench("status", str(folder_a))
    assert status.returncode == 0, status.stderr
    assert [(r["loss"], r["completed"], r["failed"]) for r in status_table(status)] == \
        [("ns_gan", "2", "0"), ("lsgan", "2", "0")], status.stdout


def managed_server_problem() -> str | None:
    """Why the scripts in .ci/ cannot restart the server of GAN_BENCH_POSTGRES_URL, or None."""
    from sqlalchemy.engine import make_url

    port = int(os.environ.get("GAN_BENCH_POSTGRES_PORT", "6821"))
    state = Path(os.environ.get("GAN_BENCH_POSTGRES_DIR", "/var/tmp/gan-bench-postgres"))
    if make_url(URL).port != port or not (state / "data" / "postmaster.pid").is_file():
        return (f"GAN_BENCH_POSTGRES_URL is not the server .ci/start-postgres.sh runs from {state} on port {port} "
                "(set GAN_BENCH_POSTGRES_DIR / GAN_BENCH_POSTGRES_PORT as it was started with)")
    return None


def reachable(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, connect_timeout=5).close()
        return True
    except psycopg.OperationalError:
        return False


def restart_server(url: str) -> None:
    """Stops the server (fast: its sessions are ended), leaves it down 10 s, starts it again (1-2 s). 10 s: long enough
    that the running trials' own storage calls (each reports an evaluation every few seconds) fail and are retried,
    not only the driver's."""
    subprocess.run([str(CI / "stop-postgres.sh")], check=True, capture_output=True, timeout=120)
    try:
        assert not reachable(url), "the server still answers after .ci/stop-postgres.sh: it is not the one it manages"
        time.sleep(10)
    finally:  # whatever happens, the server is up again for the tests after this one
        subprocess.run([str(CI / "start-postgres.sh")], check=True, capture_output=True, timeout=120)
    assert reachable(url)


def trial_states(storage: optuna.storages.BaseStorage) -> Counter:
    """How many trials of the database are in each state."""
    return Counter(t.state for s in optuna.get_all_study_summaries(storage)
                   for t in optuna.load_study(study_name=s.study_name, storage=storage).get_trials(deepcopy=False))


def test_a_postgresql_restart_mid_study_loses_no_trial(tmp_path, database_url, baseline_database_url):
    if (problem := managed_server_problem()) is not None:
        if REQUIRED:
            pytest.fail(f"GAN_BENCH_REQUIRE_POSTGRES=1 but {problem}")
        pytest.skip(problem)
    losses, samples, steps = ["ns_gan", "lsgan"], 3, [50, 100, 150]
    fields = {"name": "restart", "losses": losses,
              "search_space": {"lr": {"dist": "loguniform", "low": 2e-4, "high": 2e-3}},  # samples that differ
              "budget": {"samples": samples, "steps": steps[-1], "eval_every": steps[0]}}

    # The same study uninterrupted, in a database of its own: what the restarted run must give, value for value.
    baseline_dir = tmp_path / "baseline"
    command = ("run", str(write_study(tmp_path / "baseline.yaml", baseline_database_url, **fields)),
               "--results", str(baseline_dir), "--no-progress")
    baseline = gan_bench(*command)
    assert baseline.returncode == 0, baseline.stderr

    # The run to restart the server under: once one trial has finished while another runs, the server restarts.
    results = tmp_path / "out"
    command = ("run", str(write_study(tmp_path / "restart.yaml", database_url, **fields)),
               "--results", str(results), "--no-progress")
    # Its output into files, not pipes: nobody reads a pipe while the test polls, and a full one would stall the run.
    out, err = tmp_path / "run.out", tmp_path / "run.err"
    with open(out, "w") as stdout_file, open(err, "w") as stderr_file:
        run = subprocess.Popen([sys.executable, "-m", "bench.cli", *command], stdout=stdout_file, stderr=stderr_file,
                               text=True)
    try:
        deadline = time.monotonic() + 300
        # study.yaml is written after the run made the storage's tables: polling the database from here before it
        # would race the run's schema creation.
        while not (results / "study.yaml").is_file():
            assert run.poll() is None and time.monotonic() < deadline, "the run ended or hung before it started"
            time.sleep(0.5)
        storage = optuna.storages.RDBStorage(database_url)
        while not ((states := trial_states(storage))[TrialState.COMPLETE] and states[TrialState.RUNNING]):
            assert run.poll() is None and time.monotonic() < deadline, \
                f"the run ended or hung before one trial finished while another ran: {states}"
            time.sleep(0.5)
        storage.engine.dispose()
        assert run.poll() is None, "the run ended before the restart: make the trials longer"
        restart_server(database_url)
        print(f"PostgreSQL restarted with {states[TrialState.COMPLETE]} trials complete, "
              f"{states[TrialState.RUNNING]} running")
        run.wait(timeout=600)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()

    stdout, stderr = out.read_text(), err.read_text()
    assert "Traceback" not in stderr, stderr
    if run.returncode == 0:
        branch = "reconnected (exit 0)"
    else:
        assert run.returncode == 75, (run.returncode, stdout, stderr)
        errors = [line for line in stderr.splitlines() if line.startswith("gan-bench: error:")]
        assert len(errors) == 1 and "stopped" in errors[0], stderr
        branch = f"stopped (exit 75: {errors[0]}), then resumed"
        resumed = gan_bench(*command)
        assert resumed.returncode == 0, (branch, resumed.stderr)
    print(f"after the PostgreSQL restart the run {branch}")

    # results.csv: every (loss, sample) once, each with its three evaluations once.
    table = pd.read_csv(results / "results.csv")
    assert not table.duplicated(KEY).any(), (branch, table[table.duplicated(KEY, keep=False)][KEY])
    evaluations = table.groupby(["dataset", "loss", "trial", "seed"])["step"].apply(list).to_dict()
    assert evaluations == {("digits", loss, sample, 0): steps for loss in losses for sample in range(samples)}, branch

    # gan-bench status: every trial completed, none failed, queued, running or stale.
    status = gan_bench("status", str(results))
    rows = status_table(status)
    assert [r["loss"] for r in rows] == losses, status.stdout
    for row in rows:
        assert (row["completed"], row["failed"], row["queued"], row["running"], row["stale"]) == \
            (str(samples), "0", "0", "0", "0"), (branch, status.stdout)
    assert "failed:" not in status.stdout, status.stdout

    # The storage: per loss, each sample completed by exactly one trial; any other trial is one the restart
    # interrupted (failed as `interrupted`, queued again), and nothing is left running or waiting.
    storage = optuna.storages.RDBStorage(database_url)
    for loss in losses:
        trials = optuna.load_study(study_name=f"restart/digits/{loss}", storage=storage).get_trials()
        complete = [t.user_attrs["sample"] for t in trials if t.state == TrialState.COMPLETE]
        assert sorted(complete) == list(range(samples)), (branch, loss, complete)
        others = [(t.number, t.state, t.user_attrs.get("status")) for t in trials if t.state != TrialState.COMPLETE]
        assert all(state == TrialState.FAIL and said == "interrupted" for _, state, said in others), (branch, others)
    storage.engine.dispose()

    # A trial is a function of its configuration (resumed ones continue from their checkpoints): the same values.
    reference = pd.read_csv(baseline_dir / "results.csv")
    columns = KEY + ["status", "fid", "kid", "d_loss", "g_loss"] + [c for c in reference if c.startswith("param_")]
    pd.testing.assert_frame_equal(table[columns].sort_values(KEY).reset_index(drop=True),
                                  reference[columns].sort_values(KEY).reset_index(drop=True), check_exact=True)
