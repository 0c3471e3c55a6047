"""gan-bench: compare GAN losses with equal hyperparameter search and compute budgets."""

__version__ = "0.1.0"


class BenchError(Exception):
    """A user-facing error: the CLI prints its one-line message and exits with code 2."""


class EnvironmentFault(Exception):
    """The machine failed the run, not the trial: a full disk or quota, an I/O error, a results folder or cache made
    read-only or removed, a database connection lost. A run stops on it as on Ctrl-C (running trials go back to the
    queue, none is marked failed); the CLI prints its one-line message and exits with code 75 (EX_TEMPFAIL: run the
    same command again once the cause is gone)."""

    exit_code = 75
