"""Where workers run. `local`: W worker processes on this machine sharing the study's storage.

On a machine with GPUs each worker is pinned to one GPU (CUDA_VISIBLE_DEVICES); on a CPU-only machine
the cores are split between the workers, because several PyTorch processes each using every core
slow each other down far more than they gain.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

from tqdm import tqdm

from bench import runner
from bench.study import Study


def _die_with_parent() -> None:
    # Linux: if the driver is killed (even by SIGKILL), its workers go too, so a re-run never races them.
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _worker(study_json: str, results_dir: str, stage: str, env: dict[str, str], threads: int) -> None:
    _die_with_parent()
    os.environ.update(env)
    import torch

    torch.set_num_threads(threads)
    runner.work(Study.model_validate_json(study_json), Path(results_dir), stage)


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


def run_local(study: Study, results_dir: Path, workers: int, stage: str = "search", progress: bool = True) -> None:
    """Runs one stage: starts the workers and shows progress until they are done; results.csv is rewritten as
    trials finish."""
    storage = runner.prepare(study, results_dir, stage)
    gpus = visible_gpus()
    threads = 1 if gpus else max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker, args=(study.model_dump_json(), str(results_dir), stage, env, threads),
                                 daemon=False) for env in worker_environments(workers, gpus)]
    for process in processes:
        process.start()
    total = sum(part.trials for part in study.plan(stage))
    label = f"{study.name} ({stage})"
    # disable=None: no bar when the output is not a terminal (a log file would fill with redraws).
    bar = tqdm(total=total, disable=None if progress else True, desc=label, unit="trial", dynamic_ncols=True)
    finished = -1
    try:
        while True:
            alive = any(p.is_alive() for p in processes)
            table = runner.counts(study, storage, stage)
            done = int((table["budget"] - table["to_do"]).sum())
            if done != finished:
                finished = done
                runner.write_results(study, storage, results_dir)
                if bar.disable and progress:  # not a terminal (a log file, a batch job): one line per change
                    print(f"{label}: {done}/{total} trials finished (completed {int(table['completed'].sum())}, "
                          f"diverged {int(table['diverged'].sum())}, failed {int(table['failed'].sum())})", flush=True)
            bar.n = done
            bar.set_postfix(done=int(table["completed"].sum()), running=int(table["running"].sum()),
                            diverged=int(table["diverged"].sum()), failed=int(table["failed"].sum()))
            bar.refresh()
            if not alive:
                break
            time.sleep(1.0)
    finally:
        bar.close()
        for process in processes:
            process.join()
    runner.write_results(study, storage, results_dir)
    broken = [p.exitcode for p in processes if p.exitcode]
    if broken:
        raise RuntimeError(f"{len(broken)} worker(s) exited with codes {broken}; re-run the command to continue")
