"""
Tests for L{kvstore.node.node.Node.set_timeouts}, which a configuration reload
calls: new requests get the new timeouts, and requests already waiting are
failed no later than the new timeout from the reload.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.errors import OutcomeUnknown, Unavailable
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, ReadIndexRequest

from tests.test_node_commit_rules import NodeUnderTest, outcome


def failed_with(box: list[object], error: type[Exception]) -> bool:
    """Whether the request failed with C{error} because of its timeout."""
    return (
        len(box) == 1
        and isinstance(box[0], Failure)
        and isinstance(box[0].value, error)
        and "in time" in str(box[0].value)
    )


class WriteTimeoutTests(SynchronousTestCase):
    """A leader's writes that cannot commit (no follower answers)."""

    def setUp(self) -> None:
        self.n = NodeUnderTest()  # commit and read timeouts of 5 s
        self.n.become_leader()

    def advance_to(self, when: float) -> None:
        """Let time pass in small steps, node 2 acknowledging index 1 only
        at each: the leader keeps its quorum contact (check-quorum) while
        its writes never commit."""
        while self.n.clock.seconds() < when:
            self.n.clock.advance(min(0.1, when - self.n.clock.seconds()))
            self.n.deliver(2, AppendEntriesResponse(1, True, 1))
            self.n.settle()

    def test_lowered_timeout_caps_waiting_and_new_writes(self) -> None:
        """Lowered to 1 s, a write waiting since before and one made after both fail about 1 s after the reload, not 5 s after the first."""
        start = self.n.clock.seconds()
        before = outcome(self.n.node.put("a", "1"))
        self.advance_to(start + 1)
        self.n.node.set_timeouts(commit_timeout=1.0, read_timeout=5.0)
        after = outcome(self.n.node.put("b", "2"))
        self.advance_to(start + 1.9)
        self.assertEqual((before, after), ([], []), "failed before the new timeout")
        self.advance_to(start + 2.3)  # the sweeper runs every timeout/4
        self.assertTrue(failed_with(before, OutcomeUnknown), before)
        self.assertTrue(failed_with(after, OutcomeUnknown), after)

    def test_raised_timeout_keeps_earlier_deadlines(self) -> None:
        """Raised to 20 s, a write made before keeps its 5 s deadline; a write made after gets 20 s."""
        start = self.n.clock.seconds()
        before = outcome(self.n.node.put("a", "1"))
        self.n.node.set_timeouts(commit_timeout=20.0, read_timeout=20.0)
        after = outcome(self.n.node.put("b", "2"))
        self.advance_to(start + 6.5)
        self.assertTrue(failed_with(before, OutcomeUnknown), before)
        self.assertEqual(after, [])
        self.advance_to(start + 26)
        self.assertTrue(failed_with(after, OutcomeUnknown), after)


class ReadTimeoutTests(SynchronousTestCase):
    """A follower's read whose ReadIndex request the leader never answers."""

    def test_lowered_read_timeout_caps_a_waiting_read(self) -> None:
        """Lowered to 1 s, a read waiting for its read index fails about 1 s after the reload."""
        n = NodeUnderTest()
        n.deliver(2, AppendEntries(1, 0, 0, ((1, 1, b""),), leader_commit=1))
        n.settle()
        read = outcome(n.node.get("k"))
        n.settle()
        self.assertTrue(any(isinstance(m.body, ReadIndexRequest) for m in n.peers.sent))
        start = n.clock.seconds()
        n.node.set_timeouts(commit_timeout=5.0, read_timeout=1.0)
        # Keep hearing from the leader so the follower neither times out its
        # election nor loses the leader.
        for step in range(1, 14):
            n.clock.advance(0.1)
            n.deliver(2, AppendEntries(1, 1, 1, (), leader_commit=1))
            n.settle()
            if step == 9:
                self.assertEqual(read, [], "failed before the new timeout")
        self.assertLess(n.clock.seconds() - start, 1.5)
        self.assertTrue(failed_with(read, Unavailable), read)
