# -*- test-case-name: tests.test_node_unsendable_entry -*-
"""
When the core finds a follower stuck behind an entry too large for any peer
message, the node logs one error naming the entry's index, its size, the
limit and the follower, and whether this node stepped down, so the operator
learns why a follower lags or leadership moved (issue 9 part 5, review).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Ready, UnsendableEntry
from tests.support import parametrize
from tests.test_node_fatal_paths import _ThreeMemberNode


class UnsendableEntryLogTests(SynchronousTestCase):
    """The step-down is logged as an error with the entry's index and size."""

    @parametrize("stepped_down", [True, False])
    def test_error_names_index_size_limit_and_follower(self, stepped_down: bool) -> None:
        """A Ready reporting an unsendable entry produces one error log event with index, size, limit and follower."""
        n = _ThreeMemberNode(self)
        n.events.clear()
        n.node._handle_ready(Ready(unsendable=[UnsendableEntry(2, 5, 20_000_000, stepped_down)]))
        [event] = [e for e in n.events if e["log_level"].name == "error"]
        self.assertEqual((event["index"], event["size"], event["follower"]), (5, 20_000_000, 2))
        self.assertEqual(event["limit"], n.core.config.max_entries_bytes)
        self.assertEqual("steps down" in event["consequence"], stepped_down)
        self.assertEqual(n.fatal, [])
