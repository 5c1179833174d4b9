"""Shared test setup: `--runslow` gates `slow` tests; `gpu` tests skip without CUDA; `slurm` tests run only under `-m slurm`; `one_thread`."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="gpu: CUDA is not available")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if item.get_closest_marker("slurm") and "slurm" not in (config.getoption("-m") or ""):
            item.add_marker(pytest.mark.skip(reason="slurm: starts a local cluster; run with -m slurm"))
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny forwards: two threads on a shared 2-core machine cost 10-100x more than one.
    A module takes it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
