# -*- test-case-name: tests.test_protocols_commands -*-
"""
Parametrized test methods that both C{trial} and C{pytest} run.

C{pytest.mark.parametrize} does nothing under trial, and trial's loader knows
only methods whose names start with C{test}.  So a test method marked with
L{cases} is replaced, by the class decorator L{expand_cases}, with one plain
method per case (C{test_x_0}, C{test_x_1}, ... or C{test_x_<id>}), which each
runner counts, names and reports on its own, as pytest did with
C{test_x[...]}::

    @expand_cases
    class ParserTests(SynchronousTestCase):
        @cases("line, expected", [(b"PING", Ping()), (b"EXIT", Exit())])
        def test_parses(self, line, expected):
            \"\"\"Each command line parses to its command.\"\"\"

Stacked L{cases} decorators give the product of their cases, like stacked
C{parametrize} marks.
"""

from __future__ import annotations

import functools
import itertools
import re
from typing import Any, Callable, Iterable, Sequence, TypeVar

_T = TypeVar("_T", bound=type)
_F = TypeVar("_F", bound=Callable[..., Any])

_CASES_ATTRIBUTE = "_parametrize_cases"


def cases(argnames: str, values: Iterable[Any], ids: Sequence[str] | None = None) -> Callable[[_F], _F]:
    """
    Mark a test method to be run once per value, with C{argnames} (a
    comma-separated string, as for C{pytest.mark.parametrize}) bound from
    each value: the value itself for one name, its items for several.
    C{ids} name the cases; by default a case is named by its value when
    every value is a distinct short word or number, else numbered from 0.
    """
    names = [name.strip() for name in argnames.split(",") if name.strip()]
    values = list(values)
    case_ids = _default_ids(values) if ids is None else list(ids)
    if len(case_ids) != len(values):
        raise ValueError(f"{len(values)} cases but {len(case_ids)} ids")

    def bind(value: Any) -> dict[str, Any]:
        if len(names) == 1:
            return {names[0]: value}
        return dict(zip(names, value, strict=True))

    layer = [(case_id, bind(value)) for case_id, value in zip(case_ids, values)]

    def mark(method: _F) -> _F:
        # Decorators apply bottom-up; keep the list in source order, top first.
        setattr(method, _CASES_ATTRIBUTE, [layer, *getattr(method, _CASES_ATTRIBUTE, [])])
        return method

    return mark


def _default_ids(values: list[Any]) -> list[str]:
    """Each value itself when all are distinct short words or numbers; else 0, 1, ..."""
    words = [str(v) for v in values if isinstance(v, (str, int)) and re.fullmatch(r"[\w-]{1,40}", str(v))]
    if len(words) == len(values) and len({_identifier(w) for w in words}) == len(words):
        return words
    return [str(i) for i in range(len(values))]


def _identifier(case_id: str) -> str:
    """A case id made safe for a method name (C{trial} selects tests by dotted name)."""
    return re.sub(r"\W", "_", case_id)


def expand_cases(cls: _T) -> _T:
    """
    Replace each method of C{cls} marked with L{cases} by one method per
    case (per combination, for stacked marks).
    """
    for name, method in list(vars(cls).items()):
        layers = getattr(method, _CASES_ATTRIBUTE, None)
        if layers is None:
            continue
        delattr(cls, name)
        for combination in itertools.product(*layers):
            suffix = "_".join(_identifier(case_id) for case_id, _ in combination)
            arguments: dict[str, Any] = {}
            for _, bound in combination:
                arguments.update(bound)
            case_name = f"{name}_{suffix}"
            if hasattr(cls, case_name):
                raise ValueError(f"{cls.__name__}.{case_name} already exists")
            setattr(cls, case_name, _bound_case(method, case_name, arguments))
    return cls


def _bound_case(method: Callable[..., Any], case_name: str, arguments: dict[str, Any]) -> Callable[..., Any]:
    """One case of C{method}: called with C{arguments}, documented with them."""

    @functools.wraps(method)
    def case(self: Any) -> Any:
        return method(self, **arguments)

    case.__name__ = case.__qualname__ = case_name
    shown = ", ".join(f"{key}={value!r}" for key, value in arguments.items())
    if len(shown) > 200:
        shown = shown[:200] + "..."
    case.__doc__ = f"{(method.__doc__ or '').strip()} (Case: {shown}.)"
    case.__dict__.pop(_CASES_ATTRIBUTE, None)
    # Hide the wrapped signature: its parameters are bound here, not fixtures.
    del case.__wrapped__
    return case
