"""An executor of one's own, as README "Extending gan-bench" shows: `executor: {name: "my_executors:Inline"}` in a
study beside it."""

from pathlib import Path

from bench.executors import Executor
from bench.plan import Plan
from bench.queue import prepare
from bench.runner import work
from bench.tallies import write_results


class Inline(Executor):
    """Runs a stage's trials one after another in the driver's own process: no worker processes, so a debugger, a
    profiler or a breakpoint sees every trial. Its settings are the study's `executor` entry (name, workers, and any
    fields of its own)."""

    def run(self, plan: Plan, results_dir: Path, stage: str, progress: bool = True, retry_failed: bool = False,
            detach: bool = False) -> str | None:
        storage = prepare(plan, results_dir, stage, retry_failed)
        work(plan, results_dir, stage)
        write_results(plan, storage, results_dir)
        return None
