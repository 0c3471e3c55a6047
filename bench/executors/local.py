"""The `local` executor: worker processes on this machine. With GPUs each worker sees one GPU (CUDA_VISIBLE_DEVICES),
`workers_per_gpu` per GPU; on a CPU-only machine the cores are split between the workers, because several PyTorch
processes each using every core slow each other down far more than they gain."""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
import warnings
from pathlib import Path

from bench import BenchError, EnvironmentFault, runner, workers
from bench.executors.base import EXECUTORS, Executor, follow, unfinished_count
from bench.io import environment_fault
from bench.plan import Plan
from bench.queue import prepare, release, requeue_running
from bench.storage import open_storage
from bench.study import Study
from bench.study_fields import LocalExecutor as LocalSettings
from bench.tallies import write_results


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
        runner.work(Plan(Study.model_validate_json(study_json)), Path(results_dir), stage, worker=workers.local_name())
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


def selected_gpus(settings: LocalSettings, visible: list[str]) -> list[str]:
    """The GPUs the local executor places workers on: `auto` every visible one, `none` none, or a list of indices
    into the visible GPUs."""
    if settings.gpus == "none":
        return []
    if settings.gpus == "auto":
        return visible
    if not visible:
        warnings.warn(f"executor.gpus lists GPUs {settings.gpus} but none is visible: running CPU workers")
        return []
    for index in settings.gpus:
        if not 0 <= index < len(visible):
            raise BenchError(f"executor.gpus: GPU {index} is not visible; visible: 0..{len(visible) - 1}")
    return [visible[i] for i in settings.gpus]


def local_worker_environments(settings: LocalSettings, visible: list[str],
                              workers: int | None = None) -> list[dict[str, str]]:
    """One environment per local worker: `workers_per_gpu` per selected GPU, else `workers` CPU workers
    (`workers`, from --workers, overrides either count)."""
    gpus = selected_gpus(settings, visible)
    count = workers or (len(gpus) * settings.workers_per_gpu if gpus else settings.workers)
    return worker_environments(count, gpus)


class LocalExecutor(Executor):
    """Worker processes on this machine, supervised by the driver until the stage is done."""

    @classmethod
    def defaults(cls, study: Study, workers: int | None) -> LocalSettings:
        return LocalSettings(workers=workers or 1)

    def run(self, plan: Plan, results_dir: Path, stage: str, progress: bool = True, retry_failed: bool = False,
            detach: bool = False) -> str | None:
        """Runs one stage with local worker processes and shows progress until they are done. A worker that dies
        (killed for memory, a crash in native code) is replaced, and the trial it was running goes back to the queue,
        where it resumes from its last checkpoint. A worker that stops on an environment fault (a full disk, say)
        stops the run as Ctrl-C does: the other workers are stopped, their trials go back to the queue, and the fault
        is raised."""
        study = plan.study
        prepare(plan, results_dir, stage, retry_failed)
        environments = local_worker_environments(self.settings, visible_gpus(), self.workers)
        cores = os.cpu_count() or 1
        if not any(environments) and len(environments) * study.threads > cores:
            warnings.warn(f"{len(environments)} workers × threads {study.threads} > {cores} CPU cores: the workers "
                          "will slow each other down (results stay the same); use fewer workers or threads")
        context = multiprocessing.get_context("spawn")
        storage = open_storage(study, results_dir)
        # Workers that stop on an environment fault send its line here (a pipe: no lock a killed worker could leave
        # held).
        fault_lines, faults = context.Pipe(duplex=False)

        def start(env: dict[str, str]) -> multiprocessing.Process:
            process = context.Process(target=_worker, args=(study.model_dump_json(), str(results_dir), stage, env,
                                                            faults))
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
                    raise EnvironmentFault(fault_lines.recv() if fault_lines.poll(1.0) else "a worker stopped on an "
                                           "I/O error")
                handled.add(process.pid)
                how = (f"signal {signal.Signals(-process.exitcode).name}" if process.exitcode < 0
                       else f"exit code {process.exitcode}")
                deaths.append(how)
                # One that died between trials (at start-up, say) would die again: it is not replaced.
                if release(plan, storage, stage, workers.local_name(process.pid), died=how):
                    processes[i] = (start(env), env)
                print(f"gan-bench: a worker (pid {process.pid}) died ({how})" + (
                    f"; its trial is queued again and worker pid {processes[i][0].pid} replaces it"
                    if processes[i][0] is not process else ""), file=sys.stderr, flush=True)
            return any(p.is_alive() for p, _ in processes)

        try:
            follow(plan, results_dir, stage, supervise, progress)
        except BaseException:  # Ctrl-C, SIGTERM to the driver, a full disk: stop the workers, give their trials back
            _stop([p for p, _ in processes])
            try:
                requeue_running(plan, storage, stage)
                write_results(plan, storage, results_dir)
            except Exception as error:
                # The full disk or lost database that stopped the run may refuse these writes too: the next run's
                # prepare queues the running trials again and writes results.csv.
                if environment_fault(error) is None:
                    raise
            raise
        finally:
            for process, _ in processes:
                process.join()
        left = unfinished_count(plan, storage, stage)
        if left:
            raise BenchError(f"{left} trials of the {stage} stage are unfinished: its workers died "
                             f"({', '.join(deaths)}); run the command again to continue")
        return None


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


EXECUTORS.add("local", LocalExecutor, "worker processes on this machine")
