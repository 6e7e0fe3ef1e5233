# -*- test-case-name: tests.test_runners -*-
"""
What the test modules share so that one suite runs unchanged under both
C{trial tests} and C{python -m pytest}: the suite is written as
L{twisted.trial.unittest.SynchronousTestCase} classes, and this module
stands in for the pytest fixtures and marks it used to rely on.

  - L{parametrize}: pytest's C{parametrize}, but it generates one real test
    method per case, so both runners count and name each case (a
    C{subTest} loop would be one test under trial).
  - L{temporary_directory}: C{tmp_path}, absolute and outside the checkout
    under either runner (trial's C{mktemp} is relative to the working
    directory, which under pytest is the checkout itself).
  - L{captured_output}: C{capsys}, by replacing C{sys.stdout}/C{sys.stderr}.
  - L{slow}: C{pytest.mark.slow} where pytest is installed (so
    C{pytest -m "not slow"} still deselects it), and nothing under trial.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence, TypeVar

from twisted.trial.unittest import SynchronousTestCase

F = TypeVar("F", bound=Callable[..., Any])

try:
    import pytest
except ImportError:  # trial alone: the marks only matter to pytest.
    pytest = None  # type: ignore[assignment]


def _pytest_mark(name: str) -> Callable[[F], F]:
    """The pytest mark C{name}, or a decorator that changes nothing when
    pytest is not installed."""
    if pytest is None:
        return lambda f: f
    return getattr(pytest.mark, name)  # type: ignore[no-any-return]


slow = _pytest_mark("slow")
"""Marks a test as slow for C{pytest -m "not slow"}; trial runs it as usual."""


def _case_id(argnames: Sequence[str], values: Sequence[Any], ids: Any, position: int) -> str:
    """The label of one case, built as pytest builds its ids: an explicit
    label, or each value if it is a plain scalar, else name and position."""
    if isinstance(ids, (list, tuple)):
        return str(ids[position])
    labels = []
    for name, value in zip(argnames, values):
        label = ids(value) if callable(ids) else None
        if label is None:
            if isinstance(value, (str, int, float, bool)) or value is None:
                label = str(value)
            else:
                label = f"{name}{position}"
        labels.append(str(label))
    return "-".join(labels)


def _identifier(label: str) -> str:
    """C{label} made usable in a method name (and so on trial's command
    line): every run of other characters becomes one underscore."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", label).strip("_") or "case"


class parametrize:
    """
    Decorate a test method to run it once per case, like
    C{pytest.mark.parametrize(argnames, cases, ids=...)}: when the class is
    created the method is replaced by one method per case, named
    C{<method>_<case label>} and given the method's docstring and marks.
    Both runners then see real, separately counted and named tests.

    Use it as the outermost decorator of the method.
    """

    def __init__(self, argnames: str, cases: Iterable[Any], ids: Any = None) -> None:
        self.argnames = [name.strip() for name in argnames.split(",")]
        self.cases = list(cases)
        self.ids = ids
        self.method: Callable[..., Any] | None = None

    def __call__(self, method: Callable[..., Any]) -> "parametrize":
        self.method = method
        return self

    def __set_name__(self, owner: type, name: str) -> None:
        method = self.method
        assert method is not None, "parametrize(...) must decorate a method"
        delattr(owner, name)
        for position, case in enumerate(self.cases):
            values = list(case) if len(self.argnames) > 1 else [case]
            label = _identifier(_case_id(self.argnames, values, self.ids, position))
            generated = f"{name}_{label}"
            if hasattr(owner, generated):
                generated = f"{generated}_{position}"
            setattr(owner, generated, self._one_case(method, generated, label, dict(zip(self.argnames, values))))

    @staticmethod
    def _one_case(method: Callable[..., Any], name: str, label: str, arguments: dict[str, Any]) -> Callable[..., Any]:
        def test(self: SynchronousTestCase) -> Any:
            return method(self, **arguments)

        test.__dict__.update(method.__dict__)  # pytest marks, skip attributes
        test.__name__ = test.__qualname__ = name
        test.__module__ = method.__module__
        test.__doc__ = f"{(method.__doc__ or '').strip()} (case {label})"
        return test


def temporary_directory(case: SynchronousTestCase) -> Path:
    """
    A new empty directory for C{case}, removed when the test ends: the
    stand-in for pytest's C{tmp_path}.  Its path is absolute and lies in the
    system's temporary directory under both runners.
    """
    path = Path(tempfile.mkdtemp(prefix=f"kvstore-{case._testMethodName[:40]}-"))
    case.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


class CapturedText(NamedTuple):
    """Text written to standard output and standard error."""

    out: str
    err: str


class CapturedOutput:
    """What a test wrote to C{sys.stdout} and C{sys.stderr}: the stand-in
    for pytest's C{capsys}."""

    def __init__(self) -> None:
        self.stdout = io.StringIO()
        self.stderr = io.StringIO()

    def read(self) -> CapturedText:
        """The text written since the last read; like
        C{capsys.readouterr()}, it starts afresh after each read."""
        text = CapturedText(self.stdout.getvalue(), self.stderr.getvalue())
        for stream in (self.stdout, self.stderr):
            stream.seek(0)
            stream.truncate()
        return text


def captured_output(case: SynchronousTestCase) -> CapturedOutput:
    """Replace C{sys.stdout} and C{sys.stderr} for the rest of C{case} and
    return what is written to them."""
    captured = CapturedOutput()
    case.patch(sys, "stdout", captured.stdout)
    case.patch(sys, "stderr", captured.stderr)
    return captured
