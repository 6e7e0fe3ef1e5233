# -*- test-case-name: tests.test_node_unsendable_entry -*-
"""
When the core steps down because of an entry too large for any peer message,
the node logs one error naming the entry's index, its size and the limit, so
the operator learns why leadership moved (issue 9 part 5, review).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Ready
from tests.test_node_fatal_paths import _ThreeMemberNode


class UnsendableEntryLogTests(SynchronousTestCase):
    """The step-down is logged as an error with the entry's index and size."""

    def test_error_names_index_size_and_limit(self) -> None:
        """A Ready reporting an unsendable entry produces one error log event with index, size and limit."""
        n = _ThreeMemberNode(self)
        n.events.clear()
        n.node._handle_ready(Ready(unsendable_entry=(5, 20_000_000)))
        [event] = [e for e in n.events if e["log_level"].name == "error"]
        self.assertEqual((event["index"], event["size"]), (5, 20_000_000))
        self.assertEqual(event["limit"], n.core.config.max_entries_bytes)
        self.assertIn("steps down", event["log_format"])
        self.assertEqual(n.fatal, [])
