"""Where workers run: every worker claims trials of one stage from the study's storage until none is left.

`local`: worker processes on this machine. With GPUs each worker sees one GPU (CUDA_VISIBLE_DEVICES),
`workers_per_gpu` per GPU; on a CPU-only machine the cores are split between the workers, because
several PyTorch processes each using every core slow each other down far more than they gain.

`slurm`: a job array through submitit, one task per *worker*, not per trial. Trials differ ten-fold in
length (5 D steps per G step, datasets of different sizes) and a worker that pulls trials balances
them without the scheduler's help; a TPE study proposes trials only as results arrive; and thousands
of trials become a few dozen array tasks, which schedulers and their users prefer. A task stopped by
its time limit or by preemption is requeued by submitit (SIGUSR2 → checkpoint → requeue); a task
requeued by SLURM itself (`scontrol requeue`, a node failure) starts again from the top. Either way the
new life of a task has the same array job and task id, takes back the trial it was running, and that
trial resumes from its last checkpoint — so its metrics are the same as without the interruption.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import socket
import multiprocessing
import multiprocessing.connection
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
from tqdm import tqdm

from bench import BenchError, EnvironmentFault, runner, workers
from bench.io import atomic_write_json, environment_fault, open_lock_file
from bench.study import LocalExecutor, SlurmExecutor, Study

POLL_SECONDS = 3.0  # reading every Optuna study of a large study from the journal costs CPU the workers need


def _die_with_parent() -> None:
    # Linux: if the driver is killed (even by SIGKILL), its workers go too, so a re-run never races them.
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stop_worker(signum: int, frame: object) -> None:
    runner.stopping.set()  # first: whatever the SystemExit turns into on its way up, the trial is not failed
    sys.exit(128 + signum)


def _worker(study_json: str, results_dir: str, stage: str, env: dict[str, str],
            faults: multiprocessing.connection.Connection) -> None:
    _die_with_parent()
    # Ctrl-C reaches the whole process group: the driver alone decides how workers stop, so a Ctrl-C gives one line
    # from the driver rather than a traceback from every worker. Its SIGTERM ends a worker between two Python
    # operations (never inside a journal write), quietly: SystemExit is not reported by multiprocessing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    os.environ.update(env)
    # Each trial sets torch's thread count itself (the study's `threads`), so that the worker count cannot change
    # the order of float sums, hence the results. The worker's name (host and pid) on the trials it claims lets the
    # driver and `status` tell its trials from those of a worker that died.
    try:
        runner.work(Study.model_validate_json(study_json), Path(results_dir), stage, worker=workers.local_name())
    except EnvironmentFault as fault:  # the driver stops the run and says why in one line: sent through the pipe
        faults.send(str(fault))
        sys.exit(EnvironmentFault.exit_code)
    except Exception:
        if runner.stopping.is_set():  # stopped: the driver says so in one line; no traceback from every worker
            sys.exit(128 + signal.SIGTERM)
        raise


def worker_environments(workers: int, gpus: list[str]) -> list[dict[str, str]]:
    """One environment per worker: worker i gets GPU i mod len(gpus); none when there are no GPUs."""
    if not gpus:
        return [{} for _ in range(workers)]
    return [{"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} for i in range(workers)]


def visible_gpus() -> list[str]:
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g.strip() for g in listed.split(",") if g.strip()] if listed else [str(i) for i in
                                                                              range(torch.cuda.device_count())]


def selected_gpus(executor: LocalExecutor, visible: list[str]) -> list[str]:
    """The GPUs the local executor places workers on: `auto` every visible one, `none` none, or a list of indices
    into the visible GPUs."""
    if executor.gpus == "none":
        return []
    if executor.gpus == "auto":
        return visible
    if not visible:
        warnings.warn(f"executor.gpus lists GPUs {executor.gpus} but none is visible: running CPU workers")
        return []
    for index in executor.gpus:
        if not 0 <= index < len(visible):
            raise BenchError(f"executor.gpus: GPU {index} is not visible; visible: 0..{len(visible) - 1}")
    return [visible[i] for i in executor.gpus]


def local_worker_environments(executor: LocalExecutor, visible: list[str],
                              workers: int | None = None) -> list[dict[str, str]]:
    """One environment per local worker: `workers_per_gpu` per selected GPU, else `workers` CPU workers
    (`workers`, from --workers, overrides either count)."""
    gpus = selected_gpus(executor, visible)
    count = workers or (len(gpus) * executor.workers_per_gpu if gpus else executor.workers)
    return worker_environments(count, gpus)


def follow(study: Study, results_dir: Path, stage: str | None, running: Callable[[], bool], progress: bool) -> None:
    """Shows the progress of a stage (every stage: None) until `running()` turns false, one line per trial as it
    ends (data set, loss, sample, status, best objective, steps/s); results.csv is rewritten as trials finish."""
    storage = runner.open_storage(study, results_dir)
    folder = results_dir.stat().st_ino
    total = sum(part.trials for part in study.plan(stage))
    label = f"{study.name} ({stage or 'all stages'})"
    ended = runner.finished_trials(study, storage, stage)  # before this run: not reported again
    table = runner.counts(study, storage, stage)
    finished = _finished(table)
    # disable=None: no bar when the output is not a terminal (a log file would fill with redraws). Starting at what
    # earlier runs finished and advancing by update(), the bar's rate, hence its ETA, is this run's own throughput.
    bar = tqdm(total=total, initial=finished, disable=None if progress else True, desc=label, unit="trial",
               dynamic_ncols=True)
    try:
        while True:
            alive = running()
            _check_folder(results_dir, folder)
            table = runner.counts(study, storage, stage)
            done = _finished(table)
            if done != finished:
                runner.write_results(study, storage, results_dir)
                for key, line in runner.finished_trials(study, storage, stage).items():
                    if key not in ended and progress:
                        bar.write(f"{label}: {line}")
                    ended[key] = line
                if bar.disable and progress:  # not a terminal (a log file, a batch job): the counts too
                    print(f"{label}: {done}/{total} trials finished (completed {int(table['completed'].sum())}, "
                          f"diverged {int(table['diverged'].sum())}, failed {int(table['failed'].sum())})", flush=True)
                bar.update(done - finished)
                finished = done
            bar.set_postfix(done=int(table["completed"].sum()), running=int(table["running"].sum()),
                            diverged=int(table["diverged"].sum()), failed=int(table["failed"].sum()),
                            **({"stale": int(table["stale"].sum())} if table["stale"].sum() else {}))
            bar.refresh()
            if not alive:
                break
            time.sleep(POLL_SECONDS)
    finally:
        bar.close()
    runner.write_results(study, storage, results_dir)


def _check_folder(results_dir: Path, inode: int) -> None:
    """Raises an EnvironmentFault if the results folder was removed or replaced since the run started: its trials and
    journal are gone, and workers writing on would make a new one of pieces."""
    try:
        if results_dir.stat().st_ino == inode:
            return
    except FileNotFoundError:
        pass
    raise EnvironmentFault(f"{results_dir}: the results folder was removed or replaced while the study ran")


def _finished(table: pd.DataFrame) -> int:
    """Samples that need no more work: finished, or in a skipped part."""
    return int((table["budget"] - table[list(runner.UNFINISHED)].sum(axis=1)).sum())


def run_local(study: Study, results_dir: Path, stage: str = "search", workers_count: int | None = None,
              progress: bool = True, retry_failed: bool = False) -> None:
    """Runs one stage with local worker processes and shows progress until they are done. A worker that dies (killed
    for memory, a crash in native code) is replaced, and the trial it was running goes back to the queue, where it
    resumes from its last checkpoint. A worker that stops on an environment fault (a full disk, say) stops the run as
    Ctrl-C does: the other workers are stopped, their trials go back to the queue, and the fault is raised."""
    executor = study.executor if isinstance(study.executor, LocalExecutor) else LocalExecutor()
    runner.prepare(study, results_dir, stage, retry_failed)
    environments = local_worker_environments(executor, visible_gpus(), workers_count)
    cores = os.cpu_count() or 1
    if not any(environments) and len(environments) * study.threads > cores:
        warnings.warn(f"{len(environments)} workers × threads {study.threads} > {cores} CPU cores: the workers will "
                      "slow each other down (results stay the same); use fewer workers or threads")
    context = multiprocessing.get_context("spawn")
    storage = runner.open_storage(study, results_dir)
    # Workers that stop on an environment fault send its line here (a pipe: no lock a killed worker could leave held).
    fault_lines, faults = context.Pipe(duplex=False)

    def start(env: dict[str, str]) -> multiprocessing.Process:
        process = context.Process(target=_worker, args=(study.model_dump_json(), str(results_dir), stage, env, faults))
        process.start()
        return process

    processes = [(start(env), env) for env in environments]
    handled: set[int] = set()  # dead workers already dealt with, by pid
    deaths: list[str] = []

    def supervise() -> bool:
        """Replaces each worker that died holding a trial; whether any worker is alive."""
        for i, (process, env) in enumerate(processes):
            if process.is_alive() or process.exitcode == 0 or process.pid in handled:
                continue
            if process.exitcode == EnvironmentFault.exit_code:
                raise EnvironmentFault(fault_lines.recv() if fault_lines.poll(1.0) else "a worker stopped on an I/O "
                                       "error")
            handled.add(process.pid)
            how = (f"signal {signal.Signals(-process.exitcode).name}" if process.exitcode < 0
                   else f"exit code {process.exitcode}")
            deaths.append(how)
            # One that died between trials (at start-up, say) would die again: it is not replaced.
            if runner.release(study, storage, stage, workers.local_name(process.pid), died=how):
                processes[i] = (start(env), env)
            print(f"gan-bench: a worker (pid {process.pid}) died ({how})" + (
                f"; its trial is queued again and worker pid {processes[i][0].pid} replaces it"
                if processes[i][0] is not process else ""), file=sys.stderr, flush=True)
        return any(p.is_alive() for p, _ in processes)

    try:
        follow(study, results_dir, stage, supervise, progress)
    except BaseException:  # Ctrl-C, SIGTERM to the driver, a full disk: stop the workers, give their trials back, save
        _stop([p for p, _ in processes])
        try:
            runner.requeue_running(study, storage, stage)
            runner.write_results(study, storage, results_dir)
        except Exception as error:
            # The full disk or lost database that stopped the run may refuse these writes too: the next run's prepare
            # queues the running trials again and writes results.csv.
            if environment_fault(error) is None:
                raise
        raise
    finally:
        for process, _ in processes:
            process.join()
    left = int(runner.counts(study, storage, stage)[list(runner.UNFINISHED)].sum().sum())
    if left:
        raise BenchError(f"{left} trials of the {stage} stage are unfinished: its workers died "
                         f"({', '.join(deaths)}); run the command again to continue")


# One driver per results folder: a second one would take the first one's running trials for dead ones, queue them
# again and run them twice. It holds an exclusive lock on this file while it runs (released by the kernel however it
# ends) and says who it is in DRIVER.
DRIVER_LOCK, DRIVER = ".driver.lock", ".driver.json"


@contextlib.contextmanager
def driving(results_dir: Path) -> Iterator[None]:
    """Holds the results folder for this command while it drives the study; one line (BenchError) if another
    `gan-bench run` holds it."""
    with open_lock_file(results_dir / DRIVER_LOCK) as handle:
        deadline = time.monotonic() + 2.0  # a `status` probing the lock holds it for microseconds
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BenchError(second_driver(results_dir)) from None
                time.sleep(0.1)
        atomic_write_json(results_dir / DRIVER, {"host": socket.gethostname(), "pid": os.getpid(),
                                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        yield


def second_driver(results_dir: Path) -> str:
    """The one line that refuses a second driver."""
    return (f"{results_dir}: another gan-bench run drives this study ({_driver(results_dir)}); follow it with "
            f"`gan-bench status {results_dir} --wait`, or stop it and run this command again")


def _driver(results_dir: Path) -> str:
    try:
        who = json.loads((results_dir / DRIVER).read_text())
        return f"pid {who['pid']} on {who['host']}, since {who['started']}"
    except (OSError, ValueError, KeyError):
        return "its details are unknown"


def driver_running(results_dir: Path) -> bool:
    """Whether a `gan-bench run` drives the study in `results_dir` now (on any host that shares the lock)."""
    try:
        handle = open(results_dir / DRIVER_LOCK)
    except FileNotFoundError:
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _stop(processes: list[multiprocessing.Process], grace: float = 5.0) -> None:
    """SIGTERM to every live worker, then SIGKILL to any still alive after `grace` seconds."""
    for process in processes:
        if process.is_alive():
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


# ---------------------------------------------------------------------------------------------------------------------
# SLURM

# Paths that are private to one machine: fine on a one-node cluster, invisible to the other nodes of a real one.
NODE_LOCAL = (Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path("/run"))


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


def check_slurm(executor: SlurmExecutor) -> None:
    """Fails, before anything is submitted, if SLURM cannot be reached or the partition does not exist."""
    partitions = [p.strip().rstrip("*") for p in _slurm("sinfo", "-h", "-o", "%P").split()]
    if executor.partition is not None and executor.partition not in partitions:
        raise BenchError(f"executor.partition: unknown partition {executor.partition!r}; this cluster has: "
                         f"{', '.join(partitions)}")


def warn_node_local(study: Study, results_dir: Path, log_dir: Path) -> None:
    """One line on stderr if the results, the SLURM logs or the journal are where other nodes cannot see them."""
    places = {"results": results_dir, "SLURM logs": log_dir}
    if (journal := runner.journal_path(study, results_dir)) is not None:
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
        return runner.work(Study.model_validate_json(study_json), Path(results_dir), stage, worker=worker)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _jobs_file(results_dir: Path) -> Path:
    return results_dir / "slurm" / "jobs.json"


def submitted_jobs(results_dir: Path) -> list[dict]:
    """The array jobs submitted for this results folder, oldest first."""
    path = _jobs_file(results_dir)
    return json.loads(path.read_text()) if path.is_file() else []


def active_tasks(job_id: str) -> int:
    """Tasks of an array job still pending or running (a requeued task counts), by squeue."""
    done = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True, timeout=60)
    return len(done.stdout.split()) if done.returncode == 0 else 0  # squeue rejects ids it has forgotten


def array_active(job_id: str) -> bool:
    """Whether the array job has tasks pending or running. A task that SLURM requeues can be missing from squeue for
    a moment between its old life and its new one: an empty answer is asked again before it is believed."""
    if active_tasks(job_id):
        return True
    time.sleep(REQUEUE_GAP_SECONDS)
    return active_tasks(job_id) > 0


REQUEUE_GAP_SECONDS = 5.0


def task_states(job_id: str) -> dict[str, int]:
    """How many of an array job's tasks ended in each state, by sacct (COMPLETED, CANCELLED, TIMEOUT, …)."""
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True,
                         timeout=60).stdout
    states: dict[str, int] = {}
    for state in out.split():
        states[state.split()[0]] = states.get(state.split()[0], 0) + 1
    return states


def submit(study: Study, results_dir: Path, stage: str, executor: SlurmExecutor) -> str:
    """Submits the stage's workers as one array job; returns its id."""
    import submitit

    log_dir = executor.log_dir or results_dir / "slurm"
    trials = sum(part.trials for part in study.plan(stage))
    tasks = min(executor.workers, trials)
    slurm = submitit.AutoExecutor(folder=str(log_dir / "%j"), cluster="slurm")
    parameters = {"name": f"gan-bench-{study.name}-{stage}", "timeout_min": executor.time_min,
                  "cpus_per_task": executor.cpus_per_task, "slurm_array_parallelism": executor.array_parallelism or tasks,
                  "slurm_setup": executor.setup, "slurm_additional_parameters": dict(executor.sbatch)}
    optional = {"slurm_partition": executor.partition, "slurm_account": executor.account, "slurm_qos": executor.qos,
                "slurm_gpus_per_task": executor.gpus_per_task or None, "mem_gb": executor.mem_gb}
    slurm.update_parameters(**parameters, **{k: v for k, v in optional.items() if v is not None})
    study_json = study.model_dump_json()
    jobs = slurm.map_array(SlurmWorker(), [study_json] * tasks, [str(results_dir)] * tasks, [stage] * tasks)
    job_id = jobs[0].job_id.split("_")[0]
    atomic_write_json(_jobs_file(results_dir), [*submitted_jobs(results_dir),
                                                {"stage": stage, "job_id": job_id, "tasks": tasks,
                                                 "log_dir": str(log_dir), "submitted": time.time()}])
    return job_id


def run_slurm(study: Study, results_dir: Path, stage: str, executor: SlurmExecutor, detach: bool = False,
              progress: bool = True, retry_failed: bool = False) -> str:
    """Runs one stage as a SLURM job array and follows it to the end (or returns at once with `detach`).

    If an array of this stage is still queued or running (a previous, detached or interrupted command), it is
    followed instead of submitting another. Returns the array job id."""
    check_slurm(executor)
    warn_node_local(study, results_dir, executor.log_dir or results_dir / "slurm")
    previous = [job for job in submitted_jobs(results_dir) if job["stage"] == stage]
    if previous and active_tasks(previous[-1]["job_id"]):
        job_id = previous[-1]["job_id"]
        print(f"{study.name} ({stage}): following array job {job_id}, already submitted", flush=True)
    else:
        runner.prepare(study, results_dir, stage, retry_failed)  # no task of this study is running: safe to re-enqueue
        job_id = submit(study, results_dir, stage, executor)
        print(f"{study.name} ({stage}): submitted array job {job_id}", flush=True)
    if detach:
        return job_id
    follow(study, results_dir, stage, lambda: array_active(job_id), progress)
    table = runner.counts(study, runner.open_storage(study, results_dir), stage)
    unfinished = int(table[list(runner.UNFINISHED)].sum().sum())
    if unfinished:
        states = ", ".join(f"{n} {state}" for state, n in task_states(job_id).items())
        raise BenchError(f"{unfinished} trials of the {stage} stage are unfinished and array job {job_id} has ended "
                         f"({states}); its logs are in {executor.log_dir or results_dir / 'slurm'}; run the command "
                         "again to continue")
    return job_id


def stage_finished(study: Study, results_dir: Path, stage: str) -> bool:
    return runner.unfinished(study, runner.open_storage(study, results_dir), stage).empty
