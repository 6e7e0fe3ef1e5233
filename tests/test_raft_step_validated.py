# -*- test-case-name: tests.test_raft_step_validated -*-
"""
A message that passed the peer protocol's validation never makes
L{RaftCore.step} raise, since the node now fail-stops on any exception from
it: a peer must not be able to stop a node by sending a well-formed message
(issue 9 part 5, review).  The one case found: an acknowledgement naming an
index beyond the leader's log raised IndexError.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Role
from kvstore.raft.messages import AppendEntriesResponse, from_dict, to_dict
from tests.test_raft_core import drain, elect, make_core, msg


class AcknowledgementBeyondLogTests(SynchronousTestCase):
    """An acknowledgement of entries the leader does not have is ignored."""

    def _leader(self):
        clock = Clock()
        core = make_core(1, (2, 3), clock, entries=[(1, 1), (2, 1)])
        elect(core, clock, [2])
        drain(core)
        return core

    def test_success_beyond_last_index_is_ignored(self) -> None:
        """A validated success response with an index past the leader's last index neither raises nor moves the match index."""
        core = self._leader()
        for success in (True, False):
            with self.subTest(success=success):
                message = from_dict(to_dict(msg(2, 1, AppendEntriesResponse(core.term, success, core.last_index + 5, 10**6, 0, 0))))
                core.step(message)
                drain(core)
                self.assertIs(core.role, Role.LEADER)
                self.assertEqual(core.commit_index, 0)
                self.assertEqual(core._progress[2].match_index, 0)
