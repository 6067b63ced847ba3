"""Keeps the benchmark suite out of ordinary test runs.

Its tests are skipped unless pytest runs with ``--benchmark-only``:

    python -m pytest benchmarks --benchmark-only
"""

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    if config.getoption("benchmark_only", default=False):
        return
    skip = pytest.mark.skip(
        reason="benchmark suite: run it with `python -m pytest benchmarks --benchmark-only`")
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(skip)
