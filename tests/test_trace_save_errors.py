# -*- test-case-name: tests.test_trace_save_errors -*-
"""
Tests that a trace file that cannot be written never stops a node from
stopping (the trace is a diagnostic; the node's stop closes the log).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore import trace
from kvstore.node.node import Node


class _IdleCore:
    node_id = 0
    leader_id = None
    term = 1

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def set_wake(self, wake: object) -> None:
        pass


class TraceSaveErrorTests(SynchronousTestCase):
    def _trace_into(self, directory: str) -> None:
        self.patch(trace, "ENABLED", True)
        self.patch(trace, "_events", [(1, "propose", 1)])
        self.patch(trace, "_directory", directory)

    def test_node_stop_survives_an_unwritable_trace_directory(self) -> None:
        """Node.stop returns normally, and the error is logged, when the
        trace directory does not exist."""
        self._trace_into(self.mktemp())  # never created
        node = Node(
            _IdleCore(),  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            Clock(),
            member_addresses={},
        )
        node.stop()
        self.assertEqual(len(self.flushLoggedErrors(FileNotFoundError)), 1)
