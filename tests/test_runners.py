# -*- test-case-name: tests.test_runners -*-
"""
The suite runs under both of the test runners a user may type: C{trial} and
C{python -m pytest}.  Each is started here, as a user starts it (from the
checkout, in a new process), on one small module of the suite.

A module written as plain pytest functions gives C{trial} nothing to run, and
trial then prints C{PASSED} having run no test at all; so these tests check
the number of tests each runner ran, not only its verdict.
"""

from __future__ import annotations

import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path
from unittest import skipIf

from twisted.trial.unittest import SynchronousTestCase

from tests import test_raft_log_search
from tests.support import slow, temporary_directory

CHECKOUT = Path(__file__).resolve().parent.parent
SAMPLE = test_raft_log_search
"""A small, quick module of the suite that both runners are started on."""


def methods_to_run(module: object) -> list[str]:
    """The names of the test methods of every L{SynchronousTestCase} class
    defined in C{module}: what a runner should run there."""
    names = []
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if issubclass(cls, SynchronousTestCase) and cls.__module__ == module.__name__:  # type: ignore[attr-defined]
            names += [f"{cls.__name__}.{name}" for name in dir(cls) if name.startswith("test")]
    return names


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run C{argv} from the checkout, as a user would, and return its
    outcome (its output is in C{stdout})."""
    return subprocess.run(
        argv,
        cwd=CHECKOUT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


@slow
class RunnerTests(SynchronousTestCase):
    """C{trial} and C{pytest}, each in a new process, run the same tests of
    a sample module and pass."""

    def test_sample_module_has_tests(self) -> None:
        """The sample module defines test methods on trial test cases, so the
        counts checked below cannot be satisfied by running nothing."""
        self.assertGreater(len(methods_to_run(SAMPLE)), 0)

    def test_trial_runs_every_test_of_a_module_and_passes(self) -> None:
        """C{trial tests.<module>} runs as many tests as the module defines,
        more than none, and reports PASSED."""
        temp = temporary_directory(self) / "_trial_temp"
        result = run([sys.executable, "-m", "twisted.trial", "--temp-directory", str(temp), SAMPLE.__name__])
        ran = re.search(r"^Ran (\d+) tests? in ", result.stdout, re.M)
        assert ran is not None, result.stdout[-3000:]
        self.assertEqual(int(ran.group(1)), len(methods_to_run(SAMPLE)), result.stdout[-3000:])
        self.assertGreater(int(ran.group(1)), 0)
        self.assertRegex(result.stdout.rstrip().splitlines()[-1], r"^PASSED \(successes=\d+\)$")
        self.assertEqual(result.returncode, 0, result.stdout[-3000:])

    def test_trial_finds_the_suite_by_its_directory(self) -> None:
        """C{trial tests}, the whole suite named by its directory, finds the
        sample module's tests among the others (it needs C{tests} to be a
        package); listed with C{--dry-run}, so that nothing runs twice."""
        temp = temporary_directory(self) / "_trial_temp"
        result = run([sys.executable, "-m", "twisted.trial", "--dry-run", "--temp-directory", str(temp), "tests"])
        self.assertEqual(result.returncode, 0, result.stdout[-3000:])
        ran = re.search(r"^Ran (\d+) tests? in ", result.stdout, re.M)
        assert ran is not None, result.stdout[-3000:]
        self.assertGreater(int(ran.group(1)), len(methods_to_run(SAMPLE)))
        for name in methods_to_run(SAMPLE):
            self.assertIn(name.split(".")[-1], result.stdout)

    @skipIf(importlib.util.find_spec("pytest") is None, "pytest is not installed")
    def test_pytest_runs_the_same_tests_and_passes(self) -> None:
        """C{python -m pytest tests/<module>.py} runs as many tests as the
        module defines, the number trial runs, and they pass."""
        module_file = str(Path(inspect.getfile(SAMPLE)).relative_to(CHECKOUT))
        result = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", module_file])
        summary = result.stdout.rstrip().splitlines()[-1]
        self.assertRegex(summary, r"^\d+ passed in ", result.stdout[-3000:])
        self.assertEqual(int(summary.split()[0]), len(methods_to_run(SAMPLE)), result.stdout[-3000:])
        self.assertEqual(result.returncode, 0, result.stdout[-3000:])

    @skipIf(importlib.util.find_spec("pytest") is None, "pytest is not installed")
    def test_both_runners_find_the_same_number_of_tests_in_the_whole_suite(self) -> None:
        """C{trial tests} and C{python -m pytest} find the same number of
        tests in the whole suite (listed, not run), so a test written as a
        plain pytest function, which trial would silently skip, fails here."""
        temp = temporary_directory(self) / "_trial_temp"
        listed = run([sys.executable, "-m", "twisted.trial", "--dry-run", "--temp-directory", str(temp), "tests"])
        ran = re.search(r"^Ran (\d+) tests? in ", listed.stdout, re.M)
        assert ran is not None, listed.stdout[-3000:]
        collected = run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"])
        found = re.search(r"^(\d+) tests? collected", collected.stdout, re.M)
        assert found is not None, collected.stdout[-3000:]
        self.assertEqual(int(ran.group(1)), int(found.group(1)))
        self.assertGreater(int(found.group(1)), 0)
