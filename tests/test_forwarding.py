"""
Write forwarding (L{kvstore.node.forwarding}) in an in-memory cluster on
simulated time: a follower with forwarding on answers writes with the
leader's replies, in order per connection, honestly when the leader is
lost, and within its cap.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.forwarding import RESPONSE_GRACE, RETRY_INTERVAL
from kvstore.node.forwarding_messages import ForwardRequest, ForwardResponse
from kvstore.protocols.commands import Limits
from kvstore.raft.messages import Message
from tests.forwarding_support import ForwardingCluster


class _Channel:
    """A forwarding channel a test controls: the link's version verdict and
    its connection's identity."""

    def __init__(self, allowed: bool | None = True) -> None:
        self.allowed = allowed
        self.token: object = object()

    def may_forward(self, peer: int) -> bool | None:
        return self.allowed

    def connection(self, peer: int) -> object | None:
        return self.token


class ForwardingTests(SynchronousTestCase):
    """A follower forwards the writes it would refuse and replies with the leader's answer."""

    def test_follower_answers_writes_with_the_leaders_replies(self) -> None:
        """PUT and DELETE on a follower are applied by the leader and answered as the leader answers them."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        conn = c.connect(follower)
        conn.send("PUT a 1", "PUT b two words", "DELETE a", "DELETE missing")
        self.assertEqual(
            c.run_until_replies(conn, 4),
            ["a added successfully.", "b added successfully.", "a deleted successfully.",
             "Error: Key missing not found"],
        )
        self.assertEqual(c.cluster.data_of(leader), {"b": "two words"})
        self.assertEqual(c.forwarding[follower].forwarder.in_flight, 0)

    def test_default_replies_not_leader(self) -> None:
        """Without forwarding a follower still refuses a write with the seed's Not leader reply."""
        c = ForwardingCluster(forward=())
        leader, follower = c.leader_and_follower()
        conn = c.connect(follower)
        conn.send("PUT a 1")
        self.assertEqual(
            c.run_until_replies(conn, 1),
            [f"Error: Not leader. Current leader is Node {leader} at 127.0.0.1:{5000 + leader}"],
        )
        self.assertEqual(c.cluster.data_of(leader), {})

    def test_a_read_after_a_forwarded_write_sees_it(self) -> None:
        """Pipelined on one connection, a GET after a forwarded PUT sees it, and replies keep request order."""
        c = ForwardingCluster()
        _, follower = c.leader_and_follower()
        conn = c.connect(follower)
        conn.send("PUT k 1", "GET k", "PUT k 2", "PUT k 3", "GET k", "DELETE k", "GET k", "PING")
        self.assertEqual(
            c.run_until_replies(conn, 8),
            ["k added successfully.", "value of k: 1", "k added successfully.", "k added successfully.",
             "value of k: 3", "k deleted successfully.", "Error: Key k not found", "PONG"],
        )

    def test_pipelined_writes_apply_in_request_order(self) -> None:
        """Many writes pipelined on one follower connection are applied in the order they were sent."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        conn = c.connect(follower)
        conn.send(*[f"PUT k {i}" for i in range(50)], "GET k")
        replies = c.run_until_replies(conn, 51)
        self.assertEqual(replies[-1], "value of k: 49")
        applied = [e.payload for e in c.cluster.log_of(leader) if e.payload.startswith(b"Pk ")]
        self.assertEqual(applied, [f"Pk {i}".encode() for i in range(50)])

    def test_the_leader_validates_a_forwarded_line_as_a_clients(self) -> None:
        """The leader's limits and parser judge a forwarded line: its error reply comes back as it is."""
        c = ForwardingCluster(limits=Limits.for_sizes(8, 16))
        leader, follower = c.leader_and_follower()
        # The follower's own limits are looser, so the leader's decide.
        c.factories[follower].limits = Limits()
        conn = c.connect(follower)
        conn.send("PUT waytoolongkey 1", "PUT k " + "v" * 17, "PUT k ok")
        self.assertEqual(
            c.run_until_replies(conn, 3),
            ["Error: Key too long (maximum 8 bytes)", "Error: Value too long (maximum 16 bytes)",
             "k added successfully."],
        )
        self.assertEqual(c.cluster.data_of(leader), {"k": "ok"})

    def test_lost_answer_is_outcome_unknown_after_the_commit_timeout(self) -> None:
        """A forwarded write whose answer never comes is Outcome unknown after the commit timeout (and it may have been applied)."""
        c = ForwardingCluster(commit_timeout=1.0)
        leader, follower = c.leader_and_follower()
        c.cluster.network.filters.append(lambda m: isinstance(m.body, ForwardResponse))
        conn = c.connect(follower)
        start = c.cluster.clock.seconds()
        conn.send("PUT a 1")
        c.cluster.run(1.0 + RESPONSE_GRACE - 0.01)
        self.assertEqual(conn.replies(), [])
        [reply] = c.run_until_replies(conn, 1)
        self.assertTrue(reply.startswith("Error: Outcome unknown: the leader (node"), reply)
        elapsed = c.cluster.clock.seconds() - start
        self.assertTrue(abs(elapsed - (1.0 + RESPONSE_GRACE)) < 0.01, elapsed)
        self.assertEqual(c.cluster.data_of(leader), {"a": "1"})  # why "unknown" is the honest answer
        self.assertEqual(c.forwarding[follower].forwarder.in_flight, 0)

    def test_leader_change_mid_request_is_outcome_unknown(self) -> None:
        """A forwarded write whose leader crashes before answering is Outcome unknown, not Not leader."""
        c = ForwardingCluster(commit_timeout=5.0)
        leader, follower = c.leader_and_follower()
        c.cluster.network.filters.append(lambda m: isinstance(m.body, ForwardResponse))
        conn = c.connect(follower)
        conn.send("PUT a 1")
        self.assertTrue(c.cluster.run_until(lambda: c.cluster.node(leader).state_machine.get("a") == "1"))
        c.cluster.crash(leader)
        [reply] = c.run_until_replies(conn, 1, timeout=3.0)
        self.assertTrue(reply.startswith("Error: Outcome unknown: leadership changed while the write was forwarded"),
                        reply)

    def test_dropped_link_is_outcome_unknown(self) -> None:
        """A forwarded write whose connection to the leader drops before the answer is Outcome unknown."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        channel = _Channel()
        c.attach(follower, channel)
        c.cluster.network.filters.append(lambda m: isinstance(m.body, ForwardResponse))
        conn = c.connect(follower)
        conn.send("PUT a 1")
        c.cluster.run(0.2)
        self.assertEqual(conn.replies(), [])
        channel.token = object()  # reconnected: the request may or may not have arrived
        [reply] = c.run_until_replies(conn, 1, timeout=1.0)
        self.assertTrue(reply.startswith(f"Error: Outcome unknown: the connection to the leader (node {leader}) dropped"),
                        reply)

    def test_older_leader_link_replies_as_without_forwarding(self) -> None:
        """A follower whose link to the leader speaks a version without forwarding replies Not leader at once."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        c.attach(follower, _Channel(allowed=False))
        sent = []
        c.cluster.network.on_send.append(lambda m: sent.append(m) if isinstance(m.body, ForwardRequest) else None)
        conn = c.connect(follower)
        conn.send("PUT a 1")
        self.assertEqual(conn.replies(), [f"Error: Not leader. Current leader is Node {leader} at 127.0.0.1:{5000 + leader}"])
        self.assertEqual(sent, [])

    def test_unsent_write_waits_for_a_link_then_is_refused(self) -> None:
        """A write that cannot be sent (no usable link) is retried until the commit timeout, then refused with Not leader."""
        c = ForwardingCluster(commit_timeout=1.0)
        leader, follower = c.leader_and_follower()
        channel = _Channel(allowed=None)
        c.attach(follower, channel)
        conn = c.connect(follower)
        conn.send("PUT a 1", "PUT b 2")
        c.cluster.run(0.5)
        self.assertEqual(conn.replies(), [])
        channel.allowed = True  # the link comes up: both are sent now
        self.assertEqual(c.run_until_replies(conn, 2), ["a added successfully.", "b added successfully."])
        channel.allowed = None
        conn.send("PUT c 3")
        [_, _, reply] = c.run_until_replies(conn, 3, timeout=2.0)
        self.assertEqual(reply, f"Error: Not leader. Current leader is Node {leader} at 127.0.0.1:{5000 + leader}")
        self.assertEqual(c.cluster.data_of(leader), {"a": "1", "b": "2"})

    def test_cap_on_writes_in_flight(self) -> None:
        """Past the cap of forwarded writes in flight, a write gets the node's Not leader refusal at once."""
        c = ForwardingCluster(max_in_flight=2, commit_timeout=1.0)
        leader, follower = c.leader_and_follower()
        c.cluster.network.filters.append(lambda m: isinstance(m.body, ForwardResponse))
        first, second = c.connect(follower), c.connect(follower)
        first.send("PUT a 1", "PUT b 2")
        second.send("PUT c 3")
        self.assertEqual(
            second.replies(), [f"Error: Not leader. Current leader is Node {leader} at 127.0.0.1:{5000 + leader}"]
        )
        forwarder = c.forwarding[follower].forwarder
        self.assertEqual((forwarder.in_flight, forwarder.refused_busy), (2, 1))
        c.run_until_replies(first, 2)
        c.cluster.network.filters.clear()
        second.send("PUT d 4")  # room again
        self.assertEqual(c.run_until_replies(second, 2)[1], "d added successfully.")

    def test_leaders_not_leader_answer_is_retried(self) -> None:
        """A leader's Not leader answer (nothing appended) sends the write again rather than reply it."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        requests: list[Message] = []
        c.cluster.network.on_send.append(lambda m: requests.append(m) if isinstance(m.body, ForwardRequest) else None)
        c.cluster.network.filters.append(lambda m: isinstance(m.body, ForwardRequest) and len(requests) == 1)
        conn = c.connect(follower)
        conn.send("PUT a 1")
        [first] = requests
        assert isinstance(first.body, ForwardRequest)
        refusal = ForwardResponse(first.body.term, first.body.request_id, b"Error: Not leader. No leader elected yet")
        c.cluster.node(follower).receive(Message(leader, follower, refusal))
        self.assertEqual(conn.replies(), [])
        c.cluster.run(RETRY_INTERVAL * 2)
        self.assertEqual(len(requests), 2)
        self.assertEqual(c.run_until_replies(conn, 1), ["a added successfully."])

    def test_forwarder_that_becomes_leader_runs_the_write_itself(self) -> None:
        """A write waiting to be sent when its node becomes leader is run on that node."""
        c = ForwardingCluster(commit_timeout=5.0)
        leader, _ = c.leader_and_follower()
        followers = [i for i in c.cluster.ids if i != leader]
        connections = {}
        for i in followers:
            c.attach(i, _Channel(allowed=None))  # nothing can be sent
            connections[i] = c.connect(i)
            connections[i].send("PUT a 1")
        c.cluster.crash(leader)
        new = c.cluster.wait_for_leader(among=followers)
        [reply] = c.run_until_replies(connections[new], 1)
        self.assertEqual(reply, "a added successfully.")
        self.assertEqual(c.cluster.data_of(new), {"a": "1"})


class ExecutorTests(SynchronousTestCase):
    """The leader runs forwarded requests only from members, once per id."""

    def _request(self, c: ForwardingCluster, sender: int, receiver: int, request_id: int, line: bytes) -> list[Message]:
        answers: list[Message] = []
        c.cluster.network.on_send.append(
            lambda m: answers.append(m) if isinstance(m.body, ForwardResponse) and m.body.request_id == request_id else None
        )
        term = c.cluster.node(receiver).core.term
        c.cluster.node(receiver).receive(Message(sender, receiver, ForwardRequest(term, request_id, line)))
        c.cluster.run(0.2)
        return answers

    def test_a_non_member_is_rejected(self) -> None:
        """A forwarded request from a node that is not a member is dropped unanswered and unapplied."""
        c = ForwardingCluster()
        leader, _ = c.leader_and_follower()
        self.assertEqual(self._request(c, 7, leader, 1, b"PUT a 1"), [])
        self.assertEqual(c.cluster.data_of(leader), {})
        self.assertEqual(c.forwarding[leader].executor.rejected, 1)

    def test_a_reused_id_is_rejected(self) -> None:
        """A second request with the id of one still running is dropped; the first one is answered."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        node = c.cluster.node(leader)
        term = node.core.term
        answers: list[Message] = []
        c.cluster.network.on_send.append(lambda m: answers.append(m) if isinstance(m.body, ForwardResponse) else None)
        node.receive(Message(follower, leader, ForwardRequest(term, 5, b"PUT a 1")))
        node.receive(Message(follower, leader, ForwardRequest(term, 5, b"PUT a 2")))
        c.cluster.run(0.2)
        self.assertEqual([m.body.reply for m in answers], [b"a added successfully."])  # type: ignore[union-attr]
        self.assertEqual(c.cluster.data_of(leader), {"a": "1"})
        self.assertEqual(c.forwarding[leader].executor.rejected, 1)

    def test_a_forwarded_line_with_a_line_feed_is_refused(self) -> None:
        """A forwarded line holding LF is one request, refused by the parser, not two."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        [answer] = self._request(c, follower, leader, 9, b"PUT a 1\nPUT b 2")
        self.assertEqual(answer.body.reply, b"Error: Control character 0x0a not allowed")  # type: ignore[union-attr]
        self.assertEqual(c.cluster.data_of(leader), {})

    def test_a_follower_answers_a_forwarded_write_with_not_leader(self) -> None:
        """A node that does not lead answers a forwarded write with its Not leader refusal, never forwarding it on."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        other = next(i for i in c.cluster.ids if i not in (leader, follower))
        [answer] = self._request(c, follower, other, 3, b"PUT a 1")
        self.assertEqual(
            answer.body.reply,  # type: ignore[union-attr]
            f"Error: Not leader. Current leader is Node {leader} at 127.0.0.1:{5000 + leader}".encode(),
        )
