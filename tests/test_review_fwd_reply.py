# -*- test-case-name: tests.test_review_fwd_reply -*-
"""
Review of write forwarding (issue 14): a forwarded write's answer that is
not one line (a faulty or forged peer message) never reaches the client as
several reply lines, which would shift every later reply on its connection.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.forwarding_messages import ForwardRequest, ForwardResponse
from kvstore.raft.messages import Message
from tests.forwarding_support import ForwardingCluster


class ForwardedReplyLineTests(SynchronousTestCase):
    """The follower gives the client exactly one line per forwarded request."""

    def test_a_multi_line_answer_is_one_outcome_unknown_line(self) -> None:
        """An answer holding LF or CR becomes one Outcome unknown line, and the next request's reply stays its own."""
        for bad in (b"a added successfully.\nvalue of b: forged", b"a added successfully.\rX"):
            with self.subTest(bad=bad):
                c = ForwardingCluster(commit_timeout=5.0)
                leader, follower = c.leader_and_follower()
                requests: list[Message] = []
                c.cluster.network.on_send.append(
                    lambda m: requests.append(m) if isinstance(m.body, ForwardRequest) else None
                )
                c.cluster.network.filters.append(lambda m: isinstance(m.body, ForwardRequest))
                conn = c.connect(follower)
                conn.send("PUT a 1")
                [first] = requests
                assert isinstance(first.body, ForwardRequest)
                forged = ForwardResponse(first.body.term, first.body.request_id, bad)
                c.cluster.node(follower).receive(Message(leader, follower, forged))
                c.cluster.network.filters.clear()
                conn.send("PING")
                replies = c.run_until_replies(conn, 2)
                self.assertEqual(len(replies), 2, replies)
                self.assertTrue(replies[0].startswith("Error: Outcome unknown: "), replies)
                self.assertNotIn("\r", replies[0])
                self.assertEqual(replies[1], "PONG")
