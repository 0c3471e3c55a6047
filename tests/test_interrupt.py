"""Interruption as a person or a batch system does it: Ctrl-C to the process group, SIGINT or SIGTERM to the driver
alone. Every worker is gone within seconds, running trials go back to the queue, results.csv is written, one line
says what happened, the exit code is 130 / 143, and the same command resumes the study to its full budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

STUDY = {"name": "stop", "datasets": ["digits"], "losses": ["ns_gan"],
         "search_space": {"lr": {"dist": "loguniform", "low": 2e-4, "high": 2e-3}},
         "budget": {"samples": 3, "steps": 300, "eval_every": 100},
         "metrics": {"num_samples": 100, "kid": False, "isc": False}, "executor": {"name": "local", "workers": 2}}


def _children(pid: int) -> list[int]:
    """PIDs whose parent is `pid`, from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how, code", [("sigint-group", 130), ("sigint-driver", 130), ("sigterm-driver", 143)])
def test_an_interrupted_run_stops_its_workers_requeues_and_resumes(tmp_path, how, code):
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(STUDY))
    results = tmp_path / "out"
    command = [sys.executable, "-m", "bench.cli", "run", str(tmp_path / "study.yaml"), "--results", str(results),
               "--no-progress"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    # Mid-trial, for real: a trial has written a checkpoint and the study is not done.
    assert _wait_for(lambda: list((results / "trials").glob("*/checkpoint.pt")), 300)
    workers = _children(driver.pid)
    assert driver.poll() is None and workers
    if how == "sigint-group":
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    else:
        os.kill(driver.pid, signal.SIGINT if how == "sigint-driver" else signal.SIGTERM)
    started = time.time()
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == code, stderr
    assert _wait_for(lambda: not any(_alive(pid) for pid in workers), 10 - (time.time() - started))
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("gan-bench: interrupted") and "run the same command again" in last

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(results / "optuna.journal")))
    trials = optuna.load_study(study_name="stop/digits/ns_gan", storage=storage).get_trials()
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]  # back in the queue
    assert [t for t in trials if t.user_attrs.get("status") == "interrupted"]
    assert (results / "results.csv").is_file()

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    per_trial = pd.read_csv(results / "results.csv").groupby(["trial", "seed"])["step"].apply(list)
    states = [(t.number, t.state.name, t.user_attrs.get("sample"), t.user_attrs.get("status"),
               t.user_attrs.get("error")) for t in optuna.load_study(study_name="stop/digits/ns_gan",
                                                                    storage=storage).get_trials()]
    assert len(per_trial) == 3 and all(steps == [100, 200, 300] for steps in per_trial), (states, rerun.stderr)


def test_an_interrupted_trial_keeps_its_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "t"
    command = [sys.executable, "-m", "bench.cli", "trial", "--steps", "400", "--eval-every", "100", "--num-samples",
               "100", "--out", str(out), "--no-progress"]
    trial = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert _wait_for(lambda: (out / "checkpoint.pt").exists(), 300)
    trial.send_signal(signal.SIGINT)
    _, stderr = trial.communicate(timeout=60)
    assert trial.returncode == 130 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("gan-bench: interrupted (SIGINT); its last checkpoint is kept")
    assert (out / "checkpoint.pt").exists()
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
