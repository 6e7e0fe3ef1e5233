"""
Run pytest sessions the way trial runs its own: in a scratch working
directory.

The tests are trial test cases (so that C{trial tests} and C{python -m
pytest} run the same suite), and trial's C{TestCase.mktemp()} returns a path
relative to the working directory.  trial runs in C{_trial_temp}; pytest
would run in the checkout and leave a folder there per test class.  This
moves pytest's working directory to a temporary directory for the session
and deletes it afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Iterator

import pytest


@pytest.fixture(autouse=True, scope="session")
def _scratch_working_directory() -> Iterator[None]:
    previous = os.getcwd()
    scratch = tempfile.mkdtemp(prefix="kvstore-tests-")
    os.chdir(scratch)
    try:
        yield
    finally:
        os.chdir(previous)
        shutil.rmtree(scratch, ignore_errors=True)
