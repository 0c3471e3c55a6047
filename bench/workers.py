"""Who runs a trial, and whether it still lives.

Every worker writes its name on the trials it claims. A local worker is `local:HOST:PID`; a SLURM array task is
`JOBID_TASK` or, for a one-task array, `JOBID` (the same after a requeue, so the task's next life takes its trial back). From the name alone, a
`status` or a driver can tell a trial that is running from one whose worker is gone (stale): a local worker by its
pid on its own host, a SLURM task by squeue. A worker whose liveness cannot be told from here (a local worker of
another host) counts as alive: a trial is called stale only on evidence.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path

# An array task is JOBID_TASK; a one-task array is submitted as a plain job, named by its id alone.
SLURM_TASK = re.compile(r"\d+(_\d+)?")


def local_name(pid: int | None = None) -> str:
    return f"local:{socket.gethostname()}:{pid if pid is not None else os.getpid()}"


def pid_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie (a dead child its parent has not reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # no /proc (not Linux): os.kill said it exists
        return True


def _slurm_tasks_alive(names: set[str]) -> set[str]:
    """The SLURM array tasks among `names` that squeue lists (pending, running or requeued); all of them if squeue
    cannot answer, so that nothing is called stale without evidence."""
    jobs = sorted({name.split("_")[0] for name in names})
    try:
        done = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(jobs), "-o", "%i"], capture_output=True,
                              text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return set(names)
    if done.returncode:
        # squeue refuses a list in which every job has left its memory; one job it still knows answers normally.
        return set() if "Invalid job id" in done.stderr else set(names)
    return names & set(done.stdout.split())


def dead(names: set[str]) -> set[str]:
    """The worker names among `names` whose worker is known to be gone."""
    host = socket.gethostname()
    gone = {name for name in names if name.startswith(f"local:{host}:") and not pid_alive(int(name.rsplit(":", 1)[1]))}
    slurm = {name for name in names if SLURM_TASK.fullmatch(name)}
    if slurm:
        gone |= slurm - _slurm_tasks_alive(slurm)
    return gone
