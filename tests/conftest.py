"""Shared pytest fixtures.

The real data subsets live outside the project, in ``../shared/data`` next to the
checkout (CI always has them; a user's machine usually does not). Tests that need
them use the ``shared_data`` fixture, which skips with a clear reason when absent.
Set ``CELLBENCH_SHARED_DATA`` to point elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    env = os.environ.get("CELLBENCH_SHARED_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of the real data subsets; skips the test when they are not on this machine."""
    path = shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.skip(
            f"real data subsets not found at {path}: these tests read the shared development "
            "data that CI provides next to the checkout (set CELLBENCH_SHARED_DATA to use a copy)"
        )
    return path


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="module")
def one_torch_thread():
    """Flow tracking runs thousands of small torch ops: on a busy shared CPU, OpenMP
    threads waiting for each other make them several times slower than one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
