# -*- test-case-name: tests.test_review_fwd_order -*-
"""
Review of write forwarding (issue 14): writes pipelined on one follower
connection are applied in request order even when an earlier one had to
wait to be sent (no usable link yet) while a later one could go at once.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.forwarding import RETRY_INTERVAL
from tests.forwarding_support import ForwardingCluster
from tests.test_forwarding import _Channel


class ForwardOrderTests(SynchronousTestCase):
    """A later write never overtakes an earlier one still waiting to be forwarded."""

    def test_a_waiting_write_is_not_overtaken(self) -> None:
        """PUT k 1 waiting for the link, then PUT k 2 pipelined once the link is up: k ends as 2, applied in order."""
        c = ForwardingCluster(commit_timeout=5.0)
        leader, follower = c.leader_and_follower()
        channel = _Channel(allowed=None)
        c.attach(follower, channel)
        conn = c.connect(follower)
        conn.send("PUT k 1")
        c.cluster.run(RETRY_INTERVAL / 5)
        channel.allowed = True  # the link comes up before the first write's retry
        conn.send("PUT k 2", "GET k")
        replies = c.run_until_replies(conn, 3)
        self.assertEqual(replies, ["k added successfully.", "k added successfully.", "value of k: 2"])
        applied = [e.payload for e in c.cluster.log_of(leader) if e.payload.startswith(b"Pk ")]
        self.assertEqual(applied, [b"Pk 1", b"Pk 2"])

    def test_a_write_retried_after_not_leader_is_not_overtaken(self) -> None:
        """A write the leader refused with Not leader is retried before a later write of the connection is sent."""
        from kvstore.node.forwarding_messages import ForwardRequest, ForwardResponse
        from kvstore.raft.messages import Message

        c = ForwardingCluster(commit_timeout=5.0)
        leader, follower = c.leader_and_follower()
        requests: list[Message] = []
        c.cluster.network.on_send.append(lambda m: requests.append(m) if isinstance(m.body, ForwardRequest) else None)
        c.cluster.network.filters.append(lambda m: isinstance(m.body, ForwardRequest) and len(requests) == 1)
        conn = c.connect(follower)
        conn.send("PUT k 1")
        [first] = requests
        assert isinstance(first.body, ForwardRequest)
        refusal = ForwardResponse(first.body.term, first.body.request_id, b"Error: Not leader. No leader elected yet")
        c.cluster.node(follower).receive(Message(leader, follower, refusal))
        conn.send("PUT k 2", "GET k")
        replies = c.run_until_replies(conn, 3)
        self.assertEqual(replies, ["k added successfully.", "k added successfully.", "value of k: 2"])
        applied = [e.payload for e in c.cluster.log_of(leader) if e.payload.startswith(b"Pk ")]
        self.assertEqual(applied, [b"Pk 1", b"Pk 2"])
