"""
pytest only: run the suite in a scratch directory, as trial runs it in
C{_trial_temp}.

The tests make their temporary directories with trial's C{self.mktemp()},
which returns a path relative to the working directory.  Under trial that
is C{_trial_temp}; under pytest it would be the checkout, littered with a
directory per test.  So pytest, too, runs every test from a directory of its
own (under pytest's base temporary directory, kept for the last few runs
like C{tmp_path}).  And real-process tests count as slow (below).  trial
ignores this file.
"""

from __future__ import annotations

import os
from typing import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _run_in_scratch_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Change to a scratch directory for the whole session, and back after it."""
    previous = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("trial_temp"))
    try:
        yield
    finally:
        os.chdir(previous)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """
    Real-process tests (marked C{integration}) are C{slow} too, so that
    C{pytest -m "not slow"} runs only the fast, in-process part of the suite
    (the README says how long it takes); the full command runs everything.
    """
    for item in items:
        if item.get_closest_marker("integration") is not None:
            item.add_marker(pytest.mark.slow)
