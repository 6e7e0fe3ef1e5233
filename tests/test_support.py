# -*- test-case-name: tests.test_support -*-
"""
Tests of L{tests.support}, the stand-ins for pytest's parametrize, tmp_path
and capsys that let trial and pytest run the same test classes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from twisted.trial.reporter import TestResult
from twisted.trial.unittest import SynchronousTestCase

from tests.support import captured_output, parametrize, slow, temporary_directory


class ParametrizeTests(SynchronousTestCase):
    """L{parametrize} turns one method into one real test method per case."""

    def test_one_method_per_case_replaces_the_original(self) -> None:
        """Each case becomes a method named after its values, called with
        them, and the undecorated name is gone."""
        calls: list[tuple[int, str]] = []

        class Cases(SynchronousTestCase):
            @parametrize("number, word", [(1, "one"), (2, "two")])
            def test_pair(self, number: int, word: str) -> None:
                """Records its arguments."""
                calls.append((number, word))

        names = sorted(name for name in vars(Cases) if name.startswith("test"))
        self.assertEqual(names, ["test_pair_1_one", "test_pair_2_two"])
        result = TestResult()
        for name in names:
            Cases(name).run(result)
        self.assertTrue(result.wasSuccessful())
        self.assertEqual(calls, [(1, "one"), (2, "two")])

    def test_labels_are_built_as_pytest_builds_ids(self) -> None:
        """Explicit ids, an ids function, and otherwise plain values or name
        and position, made safe for a method name; a repeated label gets
        the case's position."""

        class Cases(SynchronousTestCase):
            @parametrize("value", [1, 2], ids=["first case", "second.case"])
            def test_listed(self, value: int) -> None:
                """Explicit ids."""

            @parametrize("value", [b"x", 3.5, None], ids=lambda v: type(v).__name__)
            def test_called(self, value: Any) -> None:
                """Ids from a function."""

            @parametrize("value", [[1], "a=b", "a b"])
            def test_default(self, value: Any) -> None:
                """Default ids, one of them repeated once made safe."""

        names = sorted(name for name in vars(Cases) if name.startswith("test"))
        self.assertEqual(
            names,
            [
                "test_called_NoneType",
                "test_called_bytes",
                "test_called_float",
                "test_default_a_b",
                "test_default_a_b_2",
                "test_default_value0",
                "test_listed_first_case",
                "test_listed_second_case",
            ],
        )

    def test_generated_methods_keep_docstring_and_marks(self) -> None:
        """Each generated method carries the method's docstring, naming its
        case, and its attributes (pytest marks such as L{slow})."""

        class Cases(SynchronousTestCase):
            @parametrize("value", [7])
            @slow
            def test_marked(self, value: int) -> None:
                """Does nothing."""

        generated = Cases.test_marked_7  # type: ignore[attr-defined]
        self.assertEqual(generated.__doc__, "Does nothing. (case 7)")
        self.assertEqual(generated.__name__, "test_marked_7")
        if "pytest" in sys.modules:
            self.assertEqual([mark.name for mark in generated.pytestmark], ["slow"])


class TemporaryDirectoryTests(SynchronousTestCase):
    """L{temporary_directory} replaces pytest's C{tmp_path}."""

    def test_new_empty_absolute_and_removed_after_the_test(self) -> None:
        """The directory exists, is empty and absolute during the test, and
        is gone, with what the test wrote in it, once the test is over."""
        seen: list[Path] = []

        class Uses(SynchronousTestCase):
            def test_write(self) -> None:
                path = temporary_directory(self)
                seen.append(path)
                assert path.is_absolute() and path.is_dir() and list(path.iterdir()) == []
                (path / "sub").mkdir()
                (path / "sub" / "file").write_text("x")

        result = TestResult()
        Uses("test_write").run(result)
        self.assertTrue(result.wasSuccessful(), result.errors + result.failures)
        self.assertEqual(len(seen), 1)
        self.assertFalse(os.path.exists(seen[0]))


class CapturedOutputTests(SynchronousTestCase):
    """L{captured_output} replaces pytest's C{capsys}."""

    def test_read_returns_what_was_written_since_the_last_read(self) -> None:
        """Standard output and error are captured separately, and each read
        starts afresh."""
        output = captured_output(self)
        print("one")
        print("warning", file=sys.stderr)
        self.assertEqual(output.read(), ("one\n", "warning\n"))
        print("two")
        self.assertEqual(output.read().out, "two\n")
        self.assertEqual(output.read(), ("", ""))
