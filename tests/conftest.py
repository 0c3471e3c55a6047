import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def bench_cache(tmp_path_factory):
    """One cache for the whole session: the digits domain classifier is trained once, never in ~/.cache."""
    path = tmp_path_factory.mktemp("gan-bench-cache")
    old = os.environ.get("GAN_BENCH_CACHE")
    os.environ["GAN_BENCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("GAN_BENCH_CACHE", None)
    else:
        os.environ["GAN_BENCH_CACHE"] = old
