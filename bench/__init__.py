"""gan-bench: compare GAN losses with equal hyperparameter search and compute budgets."""

__version__ = "0.1.0"


class BenchError(Exception):
    """A user-facing error: the CLI prints its one-line message and exits with code 2."""
