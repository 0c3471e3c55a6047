"""Where a stage's workers run: one Executor class per kind of place, picked by the name a study's `executor` gives it.
Every worker claims trials of one stage from the study's storage until none is left.

`local` (bench.executors.local): worker processes on this machine, one GPU each where there are GPUs.
`slurm` (bench.executors.slurm): a job array through submitit, one task per worker.

An executor is one module here that registers its class in EXECUTORS, and its name in the import below.
"""

from bench.executors.base import EXECUTORS, Executor, follow, in_progress, status_lines
from bench.executors import local, slurm  # each registers its executor in EXECUTORS

__all__ = ["EXECUTORS", "Executor", "follow", "in_progress", "status_lines", "local", "slurm"]
