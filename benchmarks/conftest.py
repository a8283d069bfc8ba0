"""Options and fixtures shared by the benchmark suites.

- ``--bench-threads N``: ``torch.set_num_threads(N)`` for the whole session (default: torch's choice).
- ``quick`` fixture: True under ``--benchmark-disable`` (CI smoke) or ``TNAS_BENCH_QUICK=1``; suites
  then shrink their largest shapes so that a smoke run takes seconds.
- ``sync`` fixture: a callable that waits for queued GPU work (a no-op on CPU), to wrap timed calls.
"""
from __future__ import annotations

import os

import pytest
import torch


def pytest_addoption(parser):
    parser.addoption("--bench-threads", type=int, default=None,
                     help="torch.set_num_threads for the benchmark session")


@pytest.fixture(scope="session", autouse=True)
def _bench_threads(request):
    n = request.config.getoption("--bench-threads")
    if n is not None:
        torch.set_num_threads(n)
    yield


@pytest.fixture
def quick(benchmark) -> bool:
    return benchmark.disabled or os.environ.get("TNAS_BENCH_QUICK") == "1"


@pytest.fixture(scope="session")
def sync():
    if torch.cuda.is_available():
        return torch.cuda.synchronize
    return lambda: None
