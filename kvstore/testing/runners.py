"""
Thread runners for tests: stand-ins for the production runner that runs
blocking file work in the reactor's thread pool, so a test decides exactly
when each write or fsync happens.
"""

from __future__ import annotations

from typing import Any, Callable, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

T = TypeVar("T")


def run_now(f: Callable[[], T]) -> "Deferred[T]":
    """Run the job at once on the calling thread."""
    return succeed(f())


class ManualRunner:
    """
    Holds each job until the test calls L{release} (the oldest job) or
    L{release_all}.  With C{immediate} set, new jobs run at once instead.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[[], Any], Deferred[Any]]] = []
        self.immediate = False

    def __call__(self, f: Callable[[], T]) -> "Deferred[T]":
        if self.immediate:
            return succeed(f())
        d: Deferred[T] = Deferred()
        self.jobs.append((f, d))
        return d

    def release(self) -> None:
        """Run the oldest held job and fire its Deferred with the outcome."""
        f, d = self.jobs.pop(0)
        try:
            result = f()
        except BaseException:
            d.errback(Failure())
        else:
            d.callback(result)

    def release_all(self) -> None:
        """Run held jobs, including any they add, until none is left."""
        while self.jobs:
            self.release()
