"""The environment failing is not a trial failing: a disk that fills mid-study, a results folder made read-only or
removed mid-run, and a trial that runs out of memory — on real file systems (a small tmpfs this test mounts; skipped
with the reason where mounting is not allowed), not mocks. Also failed trials: their reason in `status`, and
`run --retry-failed`.

Every case: one line, no traceback, nothing lost, and after the cause is gone the same command ends with the rows
of an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from bench import EnvironmentFault, report
from bench.io import atomic_torch_save, environment_fault
from bench.journal import JournalBackend, JournalFlock, journal_damage

STUDY = {
    "name": "env",
    "datasets": ["digits"],
    "losses": ["ns_gan", "lsgan"],
    "budget": {"samples": 3, "steps": 40, "eval_every": 20},
    "metrics": {"num_samples": 100},
    "executor": {"name": "local", "workers": 2},
}
TIMINGS = ("wall_seconds", "train_seconds")  # the only columns a resumed run may change


def gan_bench(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=600,
                          **kwargs)


def start(*args):
    return subprocess.Popen([sys.executable, "-m", "bench.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class Disk:
    """A tmpfs of a given size at `path`, which the test can grow, make read-only and writable again."""

    def __init__(self, path: Path):
        self.path = path

    def mount(self, options: str) -> subprocess.CompletedProcess:
        return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.path)], capture_output=True,
                              text=True)

    def remount(self, options: str) -> None:
        """Remounts with `options`; a remount read-only is refused while a write is in flight, so it is tried again."""
        deadline = time.monotonic() + 30
        while True:
            done = subprocess.run(["mount", "-o", f"remount,{options}", str(self.path)], capture_output=True, text=True)
            if done.returncode == 0:
                return
            assert time.monotonic() < deadline, done.stderr
            time.sleep(0.05)


@pytest.fixture
def disk(tmp_path):
    """A 8 MB tmpfs: about a third of what the study needs (6 trials of ~3.5 MB each)."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    small = Disk(mountpoint)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = small.mount("size=8m")
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield small
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """results.csv of the study run without interruption."""
    folder = tmp_path_factory.mktemp("reference")
    (folder / "study.yaml").write_text(yaml.safe_dump(STUDY))
    run = gan_bench("run", str(folder / "study.yaml"), "--results", str(folder / "out"), "--no-progress")
    assert run.returncode == 0, run.stderr
    return pd.read_csv(folder / "out" / "results.csv")


def same_rows(results: Path, reference: pd.DataFrame) -> None:
    table = pd.read_csv(results / "results.csv")
    columns = [c for c in reference.columns if c not in TIMINGS]
    pd.testing.assert_frame_equal(table[columns], reference[columns])


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("gan-bench: error:")]


def counts(results: Path) -> pd.DataFrame:
    status = gan_bench("status", str(results))
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    header = lines.index(next(line for line in lines if line.split()[:2] == ["stage", "dataset"]))
    rows = [line.split() for line in lines[header + 1: header + 1 + len(STUDY["losses"])]]
    columns = lines[header].split()
    return pd.DataFrame([dict(zip(columns, row)) for row in rows]).set_index("loss")


def test_a_disk_that_fills_stops_the_run_and_the_same_command_finishes_it(tmp_path, disk, reference):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    results = disk.path / "out"
    full = gan_bench("run", str(tmp_path / "study.yaml"), "--results", str(results), "--no-progress")
    assert full.returncode == 75, full.stderr
    # Warned before it started, in one line, with what it needs and has.
    warnings = [line for line in full.stderr.splitlines() if line.startswith("gan-bench: warning:")]
    assert len(warnings) == 1 and "free" in warnings[0] and "needs about" in warnings[0], full.stderr
    (line,) = error_lines(full.stderr)
    assert str(results) in line and "No space left on device" in line and "free there" in line, line
    # Nothing was marked failed: every sample is finished or back in the queue.
    table = counts(results)
    assert (table["failed"] == "0").all() and (table["running"] == "0").all(), table
    assert table["completed"].astype(int).sum() < 6

    disk.remount("size=200m")
    again = gan_bench("run", str(tmp_path / "study.yaml"), "--results", str(results), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    same_rows(results, reference)


def test_a_results_folder_made_read_only_mid_run(tmp_path, disk, reference):
    disk.remount("size=200m")
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    results = disk.path / "out"
    run = start("run", str(tmp_path / "study.yaml"), "--results", str(results), "--no-progress")
    deadline = time.monotonic() + 300
    while not (results / "results.csv").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)  # results.csv appears when the first trial has finished
    disk.remount("ro")
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 75, stderr
    (line,) = error_lines(stderr)
    assert "Read-only file system" in line, line

    disk.remount("rw")
    again = gan_bench("run", str(tmp_path / "study.yaml"), "--results", str(results), "--no-progress")
    assert again.returncode == 0, again.stderr
    same_rows(results, reference)


def test_a_results_folder_removed_mid_run_stops_it_in_one_line(tmp_path):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    results = tmp_path / "out"
    run = start("run", str(tmp_path / "study.yaml"), "--results", str(results), "--no-progress")
    deadline = time.monotonic() + 300
    while not (results / "results.csv").exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    # Gone at once, as `rm -rf` from another shell leaves it; removed in one rename, since workers writing meanwhile
    # would race a tree walk.
    results.rename(tmp_path / "removed")
    shutil.rmtree(tmp_path / "removed", ignore_errors=True)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 75, stderr
    (line,) = error_lines(stderr)
    assert str(results) in line, line


LOSSES = '''
import os

import torch.nn.functional as F


def flaky(real_scores, fake_scores):
    """NS GAN's loss, or a failure while the file FAIL lies beside this module."""
    if os.path.exists(os.path.join(os.path.dirname(__file__), "FAIL")):
        raise ValueError("flaky asked to fail")
    return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean(), F.softplus(-fake_scores).mean()


def hungry(real_scores, fake_scores, size: float = 0.0):
    """NS GAN's loss, after allocating `size` floats: 1e13 (40 TB) is more memory than any machine has."""
    if size:
        import torch

        torch.empty(int(size))
    return F.softplus(-real_scores).mean() + F.softplus(fake_scores).mean(), F.softplus(-fake_scores).mean()
'''


def test_failed_trials_show_their_reason_and_retry_failed_runs_them_again(tmp_path):
    (tmp_path / "mylosses.py").write_text(LOSSES)
    (tmp_path / "FAIL").touch()
    study = {**STUDY, "losses": ["ns_gan", "mylosses:flaky"], "budget": {"samples": 2, "steps": 20}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    results = tmp_path / "out"
    first = gan_bench("run", str(tmp_path / "study.yaml"), "--results", str(results), "--no-progress", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    status = gan_bench("status", str(results), cwd=tmp_path)  # where the custom loss's module is
    failed = [line for line in status.stdout.splitlines() if line.startswith("failed:")]
    assert len(failed) == 2 and all("ValueError: flaky asked to fail" in line for line in failed), status.stdout
    assert "--retry-failed" in status.stdout

    (tmp_path / "FAIL").unlink()
    plain = gan_bench("run", str(tmp_path / "study.yaml"), "--results", str(results), "--no-progress", cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr
    # A trial that failed for itself is not run again unasked; results.csv counts it: a row with no seed nor step.
    table = pd.read_csv(results / "results.csv")
    assert table["status"].value_counts().to_dict() == {"completed": 2, "failed": 2}
    assert table.loc[table["status"] == "failed", ["seed", "step"]].isna().all().all()
    outcomes = report.outcome_table(table).set_index("loss")
    assert outcomes.loc["mylosses:flaky", "failed share"] == 1.0 and outcomes.loc["ns_gan", "completed share"] == 1.0
    retried = gan_bench("run", str(tmp_path / "study.yaml"), "--results", str(results), "--retry-failed",
                        "--no-progress", cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    table = pd.read_csv(results / "results.csv")
    assert len(table) == 4 and (table["status"] == "completed").all()
    assert "failed:" not in gan_bench("status", str(results), cwd=tmp_path).stdout


def test_a_trial_out_of_memory_fails_with_its_reason_and_the_rest_go_on(tmp_path):
    (tmp_path / "mylosses.py").write_text(LOSSES)
    # Sample 0 is the default (size 0: fits); sample 1 draws size 1e13 from a one-value space.
    study = {**STUDY, "losses": ["ns_gan", "mylosses:hungry"],
             "search_space": {"lr": {"dist": "loguniform", "low": 1e-4, "high": 1e-3}},
             "loss_search_space": {"mylosses:hungry": {"size": {"dist": "choice", "values": [1e13]}}},
             "budget": {"samples": 2, "steps": 20}}
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(study))
    results = tmp_path / "out"
    run = gan_bench("run", str(tmp_path / "study.yaml"), "--results", str(results), "--no-progress", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    table = pd.read_csv(results / "results.csv")
    ns_gan = table[table["loss"] == "ns_gan"]
    assert len(ns_gan) == 2 and (ns_gan["status"] == "completed").all()
    # The one that fit in memory trained; the other is counted as failed, with the size it drew, no seed nor step.
    hungry = table[table["loss"] == "mylosses:hungry"]
    assert hungry[["param_size", "status"]].values.tolist() == [[0.0, "completed"], [1e13, "failed"]]
    assert hungry.loc[hungry["status"] == "failed", ["seed", "step"]].isna().all().all()
    status = gan_bench("status", str(results), cwd=tmp_path).stdout
    failed = [line for line in status.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "allocate" in failed[0], failed


def test_a_journal_append_that_does_not_fit_leaves_no_partial_record(disk):
    path = disk.path / "optuna.journal"
    backend = JournalBackend(str(path), lock_obj=JournalFlock(disk.path / "optuna.journal.flock"))
    record = {"op_code": 0, "worker_id": "w", "payload": "x" * 300_000}
    with pytest.raises(OSError) as raised:
        for _ in range(100):
            size = path.stat().st_size
            backend.append_logs([record])
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)
    assert path.stat().st_size == size > 0  # cut back to the records before it
    assert journal_damage(path) is None
    assert all(json.loads(line) == record for line in path.read_text().splitlines())


def test_environment_faults_are_told_from_a_trial_failing(disk):
    full = OSError(errno.ENOSPC, "No space left on device", str(disk.path / "x"))
    fault = environment_fault(full)
    assert isinstance(fault, EnvironmentFault) and str(disk.path / "x") in str(fault) and "free there" in str(fault)
    assert "ENOSPC" in str(fault)
    assert environment_fault(ValueError("a bug")) is None
    assert environment_fault(RuntimeError("CUDA out of memory")) is None  # a trial's own failure
    # torch.save reports a full disk as RuntimeError("... unexpected pos ..."): the write names its file.
    with pytest.raises(OSError) as raised:
        atomic_torch_save({"w": torch.zeros(4_000_000)}, disk.path / "big.pt")
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(disk.path / "big.pt")
    assert not list(disk.path.glob(".big.pt.*"))  # no temporary file left behind
    from sqlalchemy.exc import OperationalError

    lost = OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    assert "database connection failed" in str(environment_fault(lost))


def test_trials_an_older_version_failed_for_a_full_disk_are_run_again(tmp_path):
    """Before environment faults stopped the run, a full disk failed the trial (the issue's `27 of 45 rows lost for
    good`): the next run queues such trials again, and only those."""
    import optuna

    from bench.plan import Plan
    from bench.storage import open_storage
    from bench.study import load_study
    from bench.tallies import counts

    study = {**STUDY, "losses": ["ns_gan"], "budget": {"samples": 2, "steps": 20}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    results = tmp_path / "out"
    assert gan_bench("run", str(path), "--results", str(results), "--no-progress").returncode == 0
    before = pd.read_csv(results / "results.csv")
    loaded = load_study(path)
    storage = open_storage(loaded, results)
    ostudy = optuna.load_study(study_name="env/digits/ns_gan", storage=storage)
    for sample, error in ((0, "RuntimeError: [enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"),
                          (1, "ValueError: the trial's own bug")):
        ostudy.enqueue_trial(ostudy.trials[sample].params, user_attrs={"sample": sample})
        trial = ostudy.ask()
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("error", error)
        ostudy.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert gan_bench("run", str(path), "--results", str(results), "--no-progress").returncode == 0
    table = counts(Plan(loaded), storage)
    assert (int(table["completed"].sum()), int(table["failed"].sum())) == (1, 1)
    after = pd.read_csv(results / "results.csv")
    assert after.loc[after["status"] == "failed", "trial"].tolist() == [1]  # its own failure: counted, not run again
    columns = [c for c in before.columns if c not in TIMINGS]
    # The failed row's empty seed and step make those columns floats when read back: the values must match.
    pd.testing.assert_frame_equal(after.loc[after["status"] != "failed", columns].reset_index(drop=True),
                                  before[before["trial"] == 0][columns].reset_index(drop=True), check_dtype=False)
