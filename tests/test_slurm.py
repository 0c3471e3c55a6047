"""The SLURM executor against a real slurmctld (the one-node cluster of slurm/start-cluster.sh, which .ci/run starts).

Skipped, with the reason, when no cluster answers — unless GAN_BENCH_REQUIRE_SLURM=1 (CI), where that fails.
"""

import os
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import yaml


def cluster_problem() -> str | None:
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20)
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        return f"no SLURM client here ({error}); start one with slurm/start-cluster.sh"
    if done.returncode:
        return f"sinfo failed: {' '.join(done.stderr.split())}; start a cluster with slurm/start-cluster.sh"
    return None


PROBLEM = cluster_problem()
if PROBLEM and os.environ.get("GAN_BENCH_REQUIRE_SLURM") == "1":
    raise RuntimeError(f"GAN_BENCH_REQUIRE_SLURM=1 but {PROBLEM}")
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")

TINY = {
    "name": "tiny",
    "datasets": ["digits"],
    "losses": ["ns_gan", "lsgan"],
    "search_space": {"lr": {"dist": "loguniform", "low": 2e-4, "high": 2e-3}},
    "budget": {"samples": 2, "steps": 30, "eval_every": 15},
    "metrics": {"num_samples": 100, "kid": False},
    "executor": {"name": "slurm", "partition": "debug", "workers": 2, "time_min": 10},
}
METRICS = ["stage", "dataset", "loss", "trial", "seed", "step", "status", "fid", "isc", "param_lr"]


def gan_bench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True, text=True, timeout=timeout)


def write(tmp_path, study, name="study.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(study))
    return path


def wait_for(condition, timeout=180, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def squeue(job_id):
    return subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], capture_output=True, text=True).stdout.split()


def submitted(results):
    import json

    return json.loads((results / "slurm" / "jobs.json").read_text())


def local_reference(tmp_path, study):
    """The same study through the local executor: the metrics a SLURM run must reproduce. Two local workers get
    one thread each, like the 1-CPU tasks: float sums in other thread counts differ in the last bits."""
    local = {**study, "executor": {"name": "local", "workers": 2}}
    run = gan_bench("run", str(write(tmp_path, local, "local.yaml")), "--results", str(tmp_path / "local"),
                    "--no-progress")
    assert run.returncode == 0, run.stderr
    return pd.read_csv(tmp_path / "local" / "results.csv")[METRICS]


def test_a_study_on_slurm_gives_the_local_results(tmp_path):
    results = tmp_path / "slurm"
    run = gan_bench("run", str(write(tmp_path, TINY)), "--results", str(results), "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "submitted array job" in run.stdout
    # The results folder is under /tmp: the warning that a real cluster's nodes would not see it.
    assert "node-local path" in run.stderr
    job = submitted(results)[0]
    assert job["tasks"] == 2 and job["stage"] == "search"
    on_slurm = pd.read_csv(results / "results.csv")[METRICS]
    assert len(on_slurm) == 2 * 2 * 2  # losses × samples × evaluations
    pd.testing.assert_frame_equal(on_slurm.reset_index(drop=True),
                                  local_reference(tmp_path, TINY).reset_index(drop=True))
    # sacct lists an array's tasks a few seconds after they leave the queue.
    wait_for(lambda: "2 COMPLETED" in gan_bench("status", str(results)).stdout, timeout=30, what="sacct")
    status = gan_bench("status", str(results))
    assert f"SLURM array job {job['job_id']} (search, 2 tasks): 0 queued or running; 2 COMPLETED" in status.stdout


# scontrol requeue: SLURM kills the task and starts it again. USR2: what SLURM sends before a time limit or a
# preemption; submitit then checkpoints the worker and requeues the task itself.
INTERRUPTIONS = {"scontrol-requeue": ["scontrol", "requeue"], "usr2-signal": ["scancel", "--signal=USR2"]}


@pytest.mark.parametrize("interruption", INTERRUPTIONS)
def test_a_requeued_task_resumes_its_trial_from_the_checkpoint(tmp_path, interruption):
    # After the first checkpoint the trial has ~30 s to go on an idle machine: more than the KillWait (10 s) for
    # which SLURM lets the interrupted task run on, so the requeue lands mid-trial.
    study = {**TINY, "losses": ["ns_gan"], "budget": {"samples": 1, "steps": 6000, "eval_every": 1500},
             "executor": {**TINY["executor"], "workers": 1}}
    results = tmp_path / "slurm"
    run = gan_bench("run", str(write(tmp_path, study)), "--results", str(results), "--detach")
    assert run.returncode == 0, run.stderr
    assert "detached: follow with `gan-bench status" in run.stdout
    job_id = submitted(results)[0]["job_id"]
    checkpoint = results / "trials" / "digits-ns_gan-0000-seed0" / "checkpoint.pt"
    wait_for(checkpoint.exists, what="the trial's first checkpoint")
    (task,) = squeue(job_id)[::2]  # a one-task array is submitted as a plain job: its id has no _0
    requeue = subprocess.run([*INTERRUPTIONS[interruption], task], capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    follow = gan_bench("status", str(results), "--wait")
    assert follow.returncode == 0, follow.stderr
    table = pd.read_csv(results / "results.csv")
    assert list(table["step"]) == [1500, 3000, 4500, 6000]  # the trial finished once
    pd.testing.assert_frame_equal(table[METRICS].reset_index(drop=True),
                                  local_reference(tmp_path, study).reset_index(drop=True))
    trials = optuna.load_study(study_name="tiny/digits/ns_gan", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(results / "optuna.journal")))).get_trials()
    assert [t.user_attrs["status"] for t in trials] == ["interrupted", "completed"]
    assert {t.user_attrs["worker"] for t in trials} == {task}  # the task's second life took it back


def test_a_cancelled_array_leaves_trials_unfinished_and_a_rerun_finishes_them(tmp_path):
    # Trials of ~10 s: submitit lets a cancelled task run on for SLURM's KillWait (10 s here) before it is killed.
    study = {**TINY, "budget": {"samples": 3, "steps": 1500, "eval_every": 500},
             "executor": {**TINY["executor"], "workers": 1}}
    path = write(tmp_path, study)
    results = tmp_path / "slurm"
    assert gan_bench("run", str(path), "--results", str(results), "--detach").returncode == 0
    job_id = submitted(results)[0]["job_id"]
    wait_for(lambda: any((results / "trials").glob("*/checkpoint.pt")), what="a trial under way")
    subprocess.run(["scancel", job_id], check=True)
    wait_for(lambda: not squeue(job_id), what="the cancelled array to leave the queue")
    wait_for(lambda: "CANCELLED" in gan_bench("status", str(results)).stdout, timeout=30, what="sacct")
    status = gan_bench("status", str(results))
    table = [line for line in status.stdout.splitlines() if line.split()[:1] in (["stage"], ["search"])]
    counts = pd.read_csv(__import__("io").StringIO("\n".join(table)), sep=r"\s+")
    # The trial the cancelled task was running is stale (squeue no longer lists its task), and every sample is in
    # exactly one column.
    assert counts["stale"].sum() >= 1 and counts["running"].sum() == 0
    columns = ["completed", "diverged", "collapsed", "pruned", "failed", "running", "stale", "queued"]
    assert (counts[columns].sum(axis=1) == counts["budget"]).all()
    rerun = gan_bench("run", str(path), "--results", str(results), "--no-progress")
    assert rerun.returncode == 0, rerun.stderr
    table = pd.read_csv(results / "results.csv")
    assert table.groupby("loss")["trial"].nunique().to_dict() == {"lsgan": 3, "ns_gan": 3}
    assert not table.duplicated(["loss", "trial", "step"]).any()
    assert len(submitted(results)) == 2


def test_an_unknown_partition_fails_before_anything_is_submitted(tmp_path):
    before = subprocess.run(["sacct", "-n", "-X", "-a", "-o", "JobID"], capture_output=True, text=True).stdout
    study = {**TINY, "executor": {**TINY["executor"], "partition": "nope"}}
    run = gan_bench("run", str(write(tmp_path, study)), "--results", str(tmp_path / "r"))
    assert run.returncode == 2
    assert run.stderr.startswith("gan-bench: error: executor.partition: unknown partition 'nope'; this cluster has: ")
    assert "debug" in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert subprocess.run(["sacct", "-n", "-X", "-a", "-o", "JobID"], capture_output=True, text=True).stdout == before
