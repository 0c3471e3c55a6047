"""Faults a long study meets: a worker killed mid-trial, a second driver on a running study, a driver killed outright
(its trials stale until the next run), a journal whose last record a crash cut short. The study finishes, nothing is
lost or run twice, and each fault is told in one line."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from bench import BenchError, runner
from bench.journal import JournalFlock
from bench.plan import Plan
from bench.queue import claim, prepare, requeue_running
from bench.storage import open_storage
from bench.tallies import counts
from bench.study import load_study

STUDY = {"name": "faults", "datasets": ["digits"], "losses": ["ns_gan"],
         "search_space": {"lr": {"dist": "loguniform", "low": 2e-4, "high": 2e-3}},
         "budget": {"samples": 3, "steps": 300, "eval_every": 100},
         "metrics": {"num_samples": 100, "kid": False, "isc": False}, "executor": {"name": "local", "workers": 2}}
COLUMNS = ["completed", "diverged", "collapsed", "pruned", "failed", "running", "stale", "queued"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, kills by pid")


def gan_bench(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, **kwargs)


def wait_for(condition, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def trials(results: Path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(results / "optuna.journal")))
    return optuna.load_study(study_name="faults/digits/ns_gan", storage=storage).get_trials()


def running(results: Path) -> list[optuna.trial.FrozenTrial]:
    try:
        return [t for t in trials(results) if t.state == TrialState.RUNNING]
    except (KeyError, FileNotFoundError):  # the driver has not created the study yet
        return []


def status(results: Path) -> tuple[pd.DataFrame, str]:
    """`gan-bench status`: its table, and what it says below."""
    done = gan_bench("status", str(results), timeout=120)
    assert done.returncode == 0, done.stderr
    table = [line for line in done.stdout.splitlines() if line.split()[:1] in (["stage"], ["search"], ["confirm"])]
    return pd.read_csv(io.StringIO("\n".join(table)), sep=r"\s+"), done.stdout


def test_a_worker_killed_mid_trial_is_replaced_and_a_second_driver_is_refused(tmp_path):
    # Trials long enough that one is still under way when the second driver has been refused.
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**STUDY, "budget": {**STUDY["budget"], "steps": 600,
                                                                             "eval_every": 200}}))
    results = tmp_path / "out"
    command = ["run", str(tmp_path / "study.yaml"), "--results", str(results), "--no-progress"]
    driver = subprocess.Popen([sys.executable, "-m", "bench.cli", *command], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: list((results / "trials").glob("*/checkpoint.pt")))
    second = gan_bench(*command, timeout=120)
    assert second.returncode == 2 and "Traceback" not in second.stderr
    [line] = second.stderr.strip().splitlines()
    assert line.startswith(f"gan-bench: error: {results}: another gan-bench run drives this study (pid {driver.pid}")
    assert f"gan-bench status {results} --wait" in line
    follower = subprocess.Popen([sys.executable, "-m", "bench.cli", "status", str(results), "--wait"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # SIGKILL, as the kernel's OOM killer does, to the worker of a trial under way that has left a checkpoint.
    wait_for(lambda: any((results / "trials" / f"digits-ns_gan-{t.user_attrs['sample']:04d}-seed0" / "checkpoint.pt")
                         .exists() for t in running(results)))
    victim = next(t for t in running(results) if (
        results / "trials" / f"digits-ns_gan-{t.user_attrs['sample']:04d}-seed0" / "checkpoint.pt").exists())
    worker = int(victim.user_attrs["worker"].rsplit(":", 1)[1])
    subprocess.run(["kill", "-KILL", str(worker)], check=True)

    _, stderr = driver.communicate(timeout=900)
    assert driver.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert f"a worker (pid {worker}) died (signal SIGKILL); its trial is queued again" in stderr
    per_trial = pd.read_csv(results / "results.csv").groupby(["trial", "seed"])["step"].apply(list)
    assert len(per_trial) == 3 and all(steps == [200, 400, 600] for steps in per_trial)
    killed = [t for t in trials(results) if t.user_attrs["sample"] == victim.user_attrs["sample"]]
    assert killed[-1].user_attrs["status"] == "completed" and killed[-1].user_attrs["worker_deaths"] == 1

    out, err = follower.communicate(timeout=60)  # `status --wait` followed the local run to its end
    assert follower.returncode == 0, err
    assert "faults (all stages)" in out and "sample" in out
    table, _ = status(results)
    assert table["completed"].sum() == 3 and (table[COLUMNS].sum(axis=1) == table["budget"]).all()


def test_a_killed_drivers_trials_are_stale_until_the_next_run(tmp_path):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump({**STUDY, "budget": {**STUDY["budget"], "steps": 3000}}))
    results = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-m", "bench.cli", "run", str(tmp_path / "study.yaml"), "--results",
                               str(results), "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    wait_for(lambda: len(running(results)) == 2)
    table, _ = status(results)
    assert (table["running"].sum(), table["stale"].sum(), table["queued"].sum()) == (2, 0, 1)

    driver.kill()  # SIGKILL: no clean-up at all; its workers die with it (PR_SET_PDEATHSIG)
    driver.wait()
    pids = [int(t.user_attrs["worker"].rsplit(":", 1)[1]) for t in running(results)]
    wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in pids), 30)
    table, said = status(results)
    assert (table["running"].sum(), table["stale"].sum(), table["queued"].sum()) == (0, 2, 1)
    assert (table[COLUMNS].sum(axis=1) == table["budget"]).all()
    assert "2 trials are stale (their worker is gone); `gan-bench run` on this study queues them again" in said

    study = load_study(results / "study.yaml")
    prepare(Plan(study), results)  # what the next `gan-bench run` does first
    table = counts(Plan(study), open_storage(study, results))
    assert (table["running"].sum(), table["stale"].sum(), table["queued"].sum()) == (0, 0, 3)


def finished_study(tmp_path: Path):
    """A prepared study with one trial finished, as a worker records it."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    plan = Plan(load_study(path))
    storage = prepare(plan, tmp_path)
    _, [trial] = claim(plan, storage, tmp_path)
    trial.set_user_attr("runs", [{"seed": 0, "status": "completed", "rows": [{"step": 100, "fid": 5.0}],
                                  "extractor": "x", "steps_done": 100, "params": trial.params}])
    trial.set_user_attr("status", "completed")
    trial.study.tell(trial, 5.0)
    return plan


def test_a_torn_last_journal_record_is_cut_off_and_the_finished_trials_kept(tmp_path, capsys):
    plan = finished_study(tmp_path)
    journal = tmp_path / "optuna.journal"
    whole = journal.read_bytes()
    with open(journal, "ab") as handle:
        handle.write(b'{"op_code":5,"worker_id":"x","trial_id":1,"sta')  # a crash mid-write
    prepare(plan, tmp_path)
    assert "its last record (line" in capsys.readouterr().err
    assert journal.read_bytes().startswith(whole)
    assert (tmp_path / "optuna.journal.torn").read_bytes().startswith(b'{"op_code":5')
    table = counts(plan, open_storage(plan.study, tmp_path))
    assert (table["completed"].sum(), table["queued"].sum()) == (1, 2)
    _, [trial] = claim(plan, open_storage(plan.study, tmp_path), tmp_path)  # the journal takes appends again
    assert trial.user_attrs["sample"] == 1


def test_a_damaged_journal_record_before_others_is_refused_in_one_line(tmp_path):
    finished_study(tmp_path)
    journal = tmp_path / "optuna.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[3] = lines[3][:10] + b"\n"
    journal.write_bytes(b"".join(lines))
    (tmp_path / "study.yaml").rename(tmp_path / "s.yaml")
    results = tmp_path
    saved = load_study(tmp_path / "s.yaml")
    (results / "study.yaml").write_text(yaml.safe_dump(saved.model_dump(mode="json")))
    with pytest.raises(BenchError, match=r"optuna.journal: record 4 is damaged and later records follow it"):
        prepare(Plan(saved), results)
    done = gan_bench("status", str(results), timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    [line] = done.stderr.strip().splitlines()
    assert "record 4 is damaged" in line and f"head -n 3 {journal}" in line


def test_a_worker_stopped_mid_trial_leaves_its_trial_running_for_the_queue(tmp_path, monkeypatch):
    """A SIGTERM's SystemExit that library clean-up turns into another exception (Optuna's symlink lock turned it
    into a FileNotFoundError in CI) must not record the trial as failed: it goes back to the queue."""
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    plan = Plan(load_study(path))
    storage = prepare(plan, tmp_path)
    part, [trial] = claim(plan, storage, tmp_path)

    def stopped(*args, **kwargs):
        runner.stopping.set()
        raise FileNotFoundError("optuna.journal.lock….rename")

    monkeypatch.setattr(runner, "run_trials", stopped)
    try:
        with pytest.raises(FileNotFoundError):
            runner.run_claimed(plan, tmp_path, part, [trial])
    finally:
        runner.stopping.clear()
    [record] = [t for t in trials_of(storage) if t.number == trial.number]
    assert record.state == TrialState.RUNNING and "status" not in record.user_attrs
    requeue_running(plan, storage, "search")
    assert counts(plan, storage)["queued"].sum() == 3


def trials_of(storage) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name="faults/digits/ns_gan", storage=storage).get_trials()


def test_the_journal_lock_dies_with_its_holder(tmp_path):
    """Optuna's default symlink lock outlives a killed holder by 30 s; the flock the journal uses here does not."""
    lock = tmp_path / "optuna.journal.flock"
    holder = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent.parent)!r})
from pathlib import Path
from bench.journal import JournalFlock
JournalFlock(Path({str(lock)!r})).acquire()
print("held", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    started = time.monotonic()
    mine = JournalFlock(lock)
    assert mine.acquire() and time.monotonic() - started < 1.0
    mine.release()
