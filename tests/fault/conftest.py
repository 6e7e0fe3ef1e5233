"""
Fixtures for the fault suite (``tests/fault``): real ``twistd kvstore``
processes attacked with hostile input, crashes, pauses and partitions.

Every process a test starts is stopped by the test (by pid), pass or fail.
The suite's length scales with ``KVSTORE_FAULT_SECONDS`` (see
``docs/testing.md``).
"""

from __future__ import annotations

import resource
from typing import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _raise_fd_limit() -> Iterator[None]:
    """
    Raise this process's soft RLIMIT_NOFILE to its hard limit: the idle
    connection test holds thousands of sockets, and node processes started
    from here inherit the limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass
    yield
