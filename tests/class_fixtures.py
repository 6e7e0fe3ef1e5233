# -*- test-case-name: tests.test_sim_run -*-
"""
C{setUpClass}/C{tearDownClass} under both C{pytest} and C{trial}.

Some tests share one costly thing for a whole class: a running cluster that
a series of attacks must leave healthy, or a set of simulated runs.  pytest
calls C{setUpClass} and C{tearDownClass} on C{unittest} classes; trial's
runner does not call them at all.  So:

  - a test class derives from L{ClassFixtureTestCase} and starts its shared
    thing in C{setUpClass}, stops it in C{tearDownClass};
  - its module ends with C{testSuite = class_fixture_suite(__name__)}: trial's
    loader, given a module or a package, uses a module's C{testSuite} in place
    of its own, and that suite calls both class methods around the class's
    tests, exactly as pytest does (pytest ignores C{testSuite});
  - when trial is asked for one class or one method by name it skips the
    module's C{testSuite}; then each test sets the class fixture up for itself
    and tears it down after itself (slower, same checks).
"""

from __future__ import annotations

import sys
from typing import Any, Callable

from twisted.python.failure import Failure
from twisted.trial.runner import TestLoader
from twisted.trial.unittest import SynchronousTestCase, TestSuite


class ClassFixtureTestCase(SynchronousTestCase):
    """
    A test case whose C{setUpClass} and C{tearDownClass} run under both
    runners (see the module docstring).  Subclasses that override C{setUp}
    call this one first.
    """

    _class_fixture_up = False

    @classmethod
    def setUpClass(cls) -> None:
        cls._class_fixture_up = True

    @classmethod
    def tearDownClass(cls) -> None:
        cls._class_fixture_up = False

    def setUp(self) -> None:
        cls = type(self)
        if not cls._class_fixture_up:
            # Neither pytest nor class_fixture_suite set the class up: trial
            # was given this test alone.  Give it a class fixture of its own.
            cls.setUpClass()
            self.addCleanup(cls.tearDownClass)


class _ClassFixtureSuite(TestSuite):
    """The tests of one L{ClassFixtureTestCase} class, wrapped in its class fixture."""

    def __init__(self, cls: type[ClassFixtureTestCase], tests: Any) -> None:
        super().__init__(tests)
        self._cls = cls

    def run(self, result: Any) -> Any:
        try:
            self._cls.setUpClass()
        except BaseException:
            failure = Failure()
            for test in self._tests:
                result.startTest(test)
                result.addError(test, failure)
                result.stopTest(test)
            return result
        try:
            return super().run(result)
        finally:
            self._cls.tearDownClass()


def class_fixture_suite(module_name: str) -> Callable[[], TestSuite]:
    """
    The C{testSuite} function for module C{module_name}: trial's usual suite
    for the module, with each L{ClassFixtureTestCase} class wrapped in its
    class fixture.
    """

    def testSuite() -> TestSuite:
        loader = TestLoader()
        suite = TestSuite()
        for test_class in loader.findTestClasses(sys.modules[module_name]):
            tests = loader.loadClass(test_class)
            if issubclass(test_class, ClassFixtureTestCase):
                tests = _ClassFixtureSuite(test_class, list(tests))
            suite.addTest(tests)
        return suite

    # pytest would otherwise collect testSuite as a test function.
    testSuite.__test__ = False  # type: ignore[attr-defined]
    return testSuite
