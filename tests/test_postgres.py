"""A study on Optuna's RDB storage on a real PostgreSQL server (the one .ci/start-postgres.sh starts, which .ci/run
does), with 4 local workers claiming trials from it at once: every planned trial runs exactly once, a second run
trains nothing, and optuna-dashboard opens the storage.

The server is named by GAN_BENCH_POSTGRES_URL (a role that may create databases: each test makes its own, dropped
afterwards). Without it the test is skipped with the reason — unless GAN_BENCH_REQUIRE_POSTGRES=1 (CI, when the
server started), where that fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from wsgiref.util import setup_testing_defaults

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

URL = os.environ.get("GAN_BENCH_POSTGRES_URL", "")
REQUIRED = os.environ.get("GAN_BENCH_REQUIRE_POSTGRES") == "1"
LOSSES = ["ns_gan", "lsgan"]
SAMPLES = 3
STEPS = [20, 40]


def server_problem() -> str | None:
    """Why no test can run against GAN_BENCH_POSTGRES_URL, or None."""
    if not URL:
        return ("GAN_BENCH_POSTGRES_URL is unset; start a server with .ci/start-postgres.sh and eval its last line "
                "(.ci/run does)")
    try:
        import psycopg  # what SQLAlchemy (>= 2.1), hence Optuna, loads for a postgresql:// URL
    except ImportError as error:
        return f"no PostgreSQL driver ({error}); pip install 'gan-bench[postgres]'"
    try:
        psycopg.connect(URL, connect_timeout=10).close()
    except psycopg.Error as error:
        return f"cannot connect to GAN_BENCH_POSTGRES_URL: {' '.join(str(error).split())}"
    return None


PROBLEM = server_problem()
# Required (CI started the server): the test runs and fails with the reason instead of being skipped.
pytestmark = pytest.mark.skipif(PROBLEM is not None and not REQUIRED, reason=PROBLEM or "")


def _admin(statement) -> None:
    """Runs one statement on the server's own database, as the URL's role."""
    import psycopg

    # autocommit: CREATE / DROP DATABASE cannot run inside a transaction.
    with psycopg.connect(URL, connect_timeout=10, autocommit=True) as connection:
        connection.execute(statement)


@pytest.fixture
def database_url():
    """The URL of a fresh database of its own on the server, dropped afterwards."""
    with fresh_database() as url:
        yield url


@contextlib.contextmanager
def fresh_database():
    """A fresh database of its own on the server (its URL), dropped afterwards."""
    if PROBLEM:
        pytest.fail(f"GAN_BENCH_REQUIRE_POSTGRES=1 but {PROBLEM}")
    from psycopg import sql
    from sqlalchemy.engine import make_url

    name = f"gan_bench_test_{uuid.uuid4().hex[:12]}"
    _admin(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(URL).set(database=name).render_as_string(hide_password=False)
    finally:
        # FORCE (PostgreSQL 13+): ends sessions a killed run may have left, so the database really goes.
        _admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def gan_bench(*args):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=600)


def study_trials(storage) -> dict[str, list[optuna.trial.FrozenTrial]]:
    return {loss: optuna.load_study(study_name=f"pg/digits/{loss}", storage=storage).get_trials()
            for loss in LOSSES}


def dashboard_get(storage, path: str) -> dict:
    """GET `path` from optuna-dashboard's JSON API over `storage`, through its WSGI app (what `optuna-dashboard URL`
    serves)."""
    import optuna_dashboard

    environ = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = path
    status = []
    body = b"".join(optuna_dashboard.wsgi(storage)(environ, lambda code, headers, *_: status.append(code)))
    assert status == ["200 OK"], (path, status, body[:500])
    return json.loads(body)


def test_a_study_with_four_workers_on_postgresql_runs_every_trial_once(tmp_path, database_url):
    study = {
        "name": "pg",
        "datasets": ["digits"],
        "losses": LOSSES,
        "search_space": {"lr": {"dist": "loguniform", "low": 2e-4, "high": 2e-3},
                         "beta1": {"dist": "uniform", "low": 0.0, "high": 0.9}},
        "budget": {"samples": SAMPLES, "steps": STEPS[-1], "eval_every": STEPS[0]},
        "metrics": {"num_samples": 50, "kid": False, "isc": False},
        "executor": {"name": "local", "workers": 1},  # --workers 4 below
        "storage": database_url,
    }
    (tmp_path / "pg.yaml").write_text(yaml.safe_dump(study))
    results = tmp_path / "out"
    command = ("run", str(tmp_path / "pg.yaml"), "--results", str(results), "--workers", "4", "--no-progress")
    run = gan_bench(*command)
    assert run.returncode == 0, run.stderr

    # results.csv: every planned (loss, sample) once, each with its evaluation steps once.
    table = pd.read_csv(results / "results.csv")
    key = ["dataset", "loss", "trial", "seed", "step"]
    assert not table.duplicated(key).any(), table[table.duplicated(key, keep=False)][key]
    steps = table.groupby(["dataset", "loss", "trial", "seed"])["step"].apply(list).to_dict()
    assert steps == {("digits", loss, sample, 0): STEPS for loss in LOSSES for sample in range(SAMPLES)}
    assert table["fid"].notna().all()

    # The storage itself: nothing left running or waiting, and per study exactly the planned trials, each sample once.
    storage = optuna.storages.RDBStorage(database_url)
    trials = study_trials(storage)
    for loss, these in trials.items():
        assert [t.state for t in these if t.state in (TrialState.RUNNING, TrialState.WAITING)] == [], loss
        assert sorted(t.user_attrs["sample"] for t in these) == list(range(SAMPLES)), loss
        assert {t.user_attrs["status"] for t in these} <= {"completed", "diverged", "collapsed"}, loss
        for t in these:  # what results.csv says is what the storage holds
            rows = table[(table["loss"] == loss) & (table["trial"] == t.user_attrs["sample"])]
            assert t.intermediate_values == dict(zip(rows["step"], rows["fid"]))
    # The workers really claimed from the server at the same time (else this tests one worker): some trials ran
    # while another was running.
    spans = sorted((t.datetime_start, t.datetime_complete) for these in trials.values() for t in these)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:])), spans

    # The same command again trains nothing: the same results, the same trials in the storage.
    again = gan_bench(*command)
    assert again.returncode == 0, again.stderr
    assert pd.read_csv(results / "results.csv").equals(table)
    assert {loss: [(t.number, t.state, t.datetime_complete) for t in these]
            for loss, these in study_trials(storage).items()} == \
           {loss: [(t.number, t.state, t.datetime_complete) for t in these] for loss, these in trials.items()}

    # optuna-dashboard opens the URL (as `optuna-dashboard URL` does) and lists the studies and their trials.
    from optuna_dashboard._storage_url import guess_storage_from_url

    dashboard = guess_storage_from_url(database_url)
    assert isinstance(dashboard, optuna.storages.RDBStorage)
    listed = {s["study_name"]: s["study_id"] for s in dashboard_get(dashboard, "/api/studies")["study_summaries"]}
    # Each (dataset, loss), and the record of who owns the name `pg` (storage.take_ownership): a study without trials.
    assert sorted(listed) == sorted(["pg", *(f"pg/digits/{loss}" for loss in LOSSES)])
    for loss, these in trials.items():
        detail = dashboard_get(dashboard, f"/api/studies/{listed[f'pg/digits/{loss}']}")
        shown = {t["number"]: (t["state"], {v["step"]: v["value"] for v in t["intermediate_values"]})
                 for t in detail["trials"]}
        assert shown == {t.number: (t.state.name.capitalize(), t.intermediate_values) for t in these}
