"""The `slurm` executor: a job array through submitit, one task per *worker*, not per trial.

Trials differ ten-fold in length (5 D steps per G step, datasets of different sizes) and a worker that pulls trials
balances them without the scheduler's help; a TPE study proposes trials only as results arrive; and thousands of
trials become a few dozen array tasks, which schedulers and their users prefer. A task stopped by its time limit or by
preemption is requeued by submitit (SIGUSR2 → checkpoint → requeue); a task requeued by SLURM itself (`scontrol
requeue`, a node failure) starts again from the top. Either way the new life of a task has the same array job and task
id, takes back the trial it was running, and that trial resumes from its last checkpoint — so its metrics are the same
as without the interruption.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench import BenchError, runner
from bench.executors.base import EXECUTORS, Executor, Following, follow, unfinished_count
from bench.io import atomic_write_json
from bench.plan import Plan
from bench.queue import prepare
from bench.results_folder import jobs_file, slurm_dir
from bench.storage import journal_path, open_storage
from bench.study import Study
from bench.study_fields import SlurmExecutor as SlurmSettings
from bench.tallies import unfinished

# Paths that are private to one machine: fine on a one-node cluster, invisible to the other nodes of a real one.
NODE_LOCAL = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/run"))
# A task that SLURM requeues can be missing from squeue for this long between its old life and its new one.
REQUEUE_GAP_SECONDS = 5.0


def _slurm(*command: str) -> str:
    """stdout of a SLURM client command; one line naming the command and SLURM's complaint if it fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise BenchError(f"executor slurm: {command[0]} not found; run on a SLURM login node (or start a one-node "
                         "cluster with slurm/start-cluster.sh)") from None
    if done.returncode:
        raise BenchError(f"executor slurm: {' '.join(command)} failed: {' '.join(done.stderr.split())}")
    return done.stdout


def warn_node_local(study: Study, results_dir: Path, log_dir: Path) -> None:
    """One line on stderr if the results, the SLURM logs or the journal are where other nodes cannot see them."""
    places = {"results": results_dir, "SLURM logs": log_dir}
    if (journal := journal_path(study, results_dir)) is not None:
        places["journal storage"] = journal
    local = [f"{what} {path.resolve()}" for what, path in places.items()
             if any(path.resolve().is_relative_to(root) for root in NODE_LOCAL)]
    if local:
        print(f"gan-bench: warning: on a node-local path: {', '.join(local)} — harmless on a one-node cluster, but "
              "the compute nodes of a real cluster will not see it; use the shared filesystem", file=sys.stderr)


class SlurmWorker:
    """One array task: a worker named after its array job and task id, so a requeued task knows its own trial.

    submitit calls `checkpoint` on SIGUSR2 (time limit, preemption) and requeues what it returns: the same worker,
    which resumes the interrupted trial from its last checkpoint.
    """

    def __call__(self, study_json: str, results_dir: str, stage: str) -> int:
        import submitit

        worker = submitit.JobEnvironment().job_id  # "<array job id>_<task id>", the same after a requeue
        return runner.work(Plan(Study.model_validate_json(study_json)), Path(results_dir), stage, worker=worker)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def submitted_jobs(results_dir: Path) -> list[dict]:
    """The array jobs submitted for this results folder, oldest first."""
    path = jobs_file(results_dir)
    return json.loads(path.read_text()) if path.is_file() else []


def active_tasks(job_id: str) -> int:
    """Tasks of an array job still pending or running (a requeued task counts), by squeue."""
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True, timeout=60)
    return len(done.stdout.split()) if done.returncode == 0 else 0  # squeue rejects ids it has forgotten


def array_active(job_id: str) -> bool:
    """Whether the array job has tasks pending or running; an empty answer is asked again before it is believed (see
    REQUEUE_GAP_SECONDS)."""
    if active_tasks(job_id):
        return True
    time.sleep(REQUEUE_GAP_SECONDS)
    return active_tasks(job_id) > 0


def task_states(job_id: str) -> dict[str, int]:
    """How many of an array job's tasks ended in each state, by sacct (COMPLETED, CANCELLED, TIMEOUT, …)."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True,
                         timeout=60).stdout
    states: dict[str, int] = {}
    for state in out.split():
        states[state.split()[0]] = states.get(state.split()[0], 0) + 1
    return states


class SlurmExecutor(Executor):
    """A SLURM job array, submitted and followed (or left running with --detach)."""

    detaches = True

    def __init__(self, settings: SlurmSettings, workers: int | None = None) -> None:
        super().__init__(settings.model_copy(update={"workers": workers}) if workers else settings, workers)

    @classmethod
    def defaults(cls, study: Study, workers: int | None) -> SlurmSettings:
        return SlurmSettings(name="slurm", workers=workers or study.executor.workers, cpus_per_task=study.threads)

    def check(self) -> None:
        """Fails, before anything is submitted, if SLURM cannot be reached or the partition does not exist."""
        partitions = [p.strip().rstrip("*") for p in _slurm("sinfo", "-h", "-o", "%P").split()]
        if self.settings.partition is not None and self.settings.partition not in partitions:
            raise BenchError(f"executor.partition: unknown partition {self.settings.partition!r}; this cluster has: "
                             f"{', '.join(partitions)}")

    def log_dir(self, results_dir: Path) -> Path:
        return self.settings.log_dir or slurm_dir(results_dir)

    def run(self, plan: Plan, results_dir: Path, stage: str, progress: bool = True, retry_failed: bool = False,
            detach: bool = False) -> str | None:
        """Runs one stage as a SLURM job array and follows it to the end (or returns at once with `detach`); a
        finished stage is left as it is.

        If an array of this stage is still queued or running (a previous, detached or interrupted command), it is
        followed instead of submitting another."""
        study = plan.study
        if unfinished(plan, open_storage(study, results_dir), stage).empty:
            return None
        self.check()
        warn_node_local(study, results_dir, self.log_dir(results_dir))
        previous = [job for job in submitted_jobs(results_dir) if job["stage"] == stage]
        if previous and active_tasks(previous[-1]["job_id"]):
            job_id = previous[-1]["job_id"]
            print(f"{study.name} ({stage}): following array job {job_id}, already submitted", flush=True)
        else:
            prepare(plan, results_dir, stage, retry_failed)  # no task of this study is running: safe to re-enqueue
            job_id = self.submit(plan, results_dir, stage)
            print(f"{study.name} ({stage}): submitted array job {job_id}", flush=True)
        if detach:
            return f"cancel with `scancel {job_id}`"
        follow(plan, results_dir, stage, lambda: array_active(job_id), progress)
        left = unfinished_count(plan, open_storage(study, results_dir), stage)
        if left:
            states = ", ".join(f"{n} {state}" for state, n in task_states(job_id).items())
            raise BenchError(f"{left} trials of the {stage} stage are unfinished and array job {job_id} has ended "
                             f"({states}); its logs are in {self.log_dir(results_dir)}; run the command again to "
                             "continue")
        return None

    def submit(self, plan: Plan, results_dir: Path, stage: str) -> str:
        """Submits the stage's workers as one array job; returns its id."""
        import submitit

        study, settings, log_dir = plan.study, self.settings, self.log_dir(results_dir)
        tasks = min(settings.workers, sum(part.trials for part in plan.parts(stage)))
        slurm = submitit.AutoExecutor(folder=str(log_dir / "%j"), cluster="slurm")
        parameters = {"name": f"gan-bench-{study.name}-{stage}", "timeout_min": settings.time_min,
                      "cpus_per_task": settings.cpus_per_task,
                      "slurm_array_parallelism": settings.array_parallelism or tasks, "slurm_setup": settings.setup,
                      "slurm_additional_parameters": dict(settings.sbatch)}
        optional = {"slurm_partition": settings.partition, "slurm_account": settings.account, "slurm_qos": settings.qos,
                    "slurm_gpus_per_task": settings.gpus_per_task or None, "mem_gb": settings.mem_gb}
        slurm.update_parameters(**parameters, **{k: v for k, v in optional.items() if v is not None})
        study_json = study.model_dump_json()
        jobs = slurm.map_array(SlurmWorker(), [study_json] * tasks, [str(results_dir)] * tasks, [stage] * tasks)
        job_id = jobs[0].job_id.split("_")[0]
        atomic_write_json(jobs_file(results_dir), [*submitted_jobs(results_dir),
                                                   {"stage": stage, "job_id": job_id, "tasks": tasks,
                                                    "log_dir": str(log_dir), "submitted": time.time()}])
        return job_id

    @classmethod
    def running(cls, results_dir: Path) -> Following | None:
        jobs = submitted_jobs(results_dir)
        if jobs and array_active(jobs[-1]["job_id"]):  # a detached run, or one whose driver was stopped
            job = jobs[-1]
            return job["stage"], lambda: array_active(job["job_id"])
        return None

    @classmethod
    def status_lines(cls, results_dir: Path) -> list[str]:
        lines = []
        for job in submitted_jobs(results_dir):
            active = active_tasks(job["job_id"])
            ended = ", ".join(f"{n} {state}" for state, n in task_states(job["job_id"]).items())
            lines.append(f"SLURM array job {job['job_id']} ({job['stage']}, {job['tasks']} tasks): {active} queued or "
                         f"running{'; ' + ended if ended else ''}; logs in {job['log_dir']}")
        return lines


EXECUTORS.add("slurm", SlurmExecutor, "a SLURM job array through submitit, one task per worker")
