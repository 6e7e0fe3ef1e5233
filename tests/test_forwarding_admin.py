# -*- test-case-name: tests.test_forwarding_admin -*-
"""
The membership admin commands through write forwarding (C{--forward-writes}),
in an in-memory cluster on simulated time: a forwarded C{TRANSFER} answers
what the leader answers (its success is a leadership change, which must not
turn it into C{Outcome unknown}), and C{MEMBERS} on a follower is forwarded
as a write is, while a follower without the option still refuses both with
C{Not leader}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.forwarding_messages import ForwardResponse
from tests.forwarding_support import ForwardingCluster


def not_leader(leader: int) -> str:
    return f"Error: Not leader. Current leader is Node {leader} at 127.0.0.1:{5000 + leader}"


class TransferTests(SynchronousTestCase):
    """A forwarded TRANSFER gets the leader's answer."""

    def test_transfer_to_another_follower(self) -> None:
        """TRANSFER sent to a follower, naming a third node, answers the leader's success line once that node
        leads (it used to answer Outcome unknown, leadership having changed)."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        target = next(i for i in c.cluster.ids if i not in (leader, follower))
        conn = c.connect(follower)
        conn.send(f"TRANSFER {target}")
        self.assertEqual(c.run_until_replies(conn, 1), [f"Leadership transferred to Node {target}."])
        self.assertEqual(c.cluster.wait_for_leader(), target)
        self.assertEqual(c.forwarding[follower].forwarder.in_flight, 0)

    def test_transfer_to_the_forwarding_follower(self) -> None:
        """TRANSFER naming the follower it is sent to answers the leader's success line, though that follower
        leads by the time the answer comes."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        conn = c.connect(follower)
        conn.send(f"TRANSFER {follower}", "PUT k v", "GET k")
        self.assertEqual(c.run_until_replies(conn, 3),
                         [f"Leadership transferred to Node {follower}.", "k added successfully.", "value of k: v"])
        self.assertEqual(c.cluster.wait_for_leader(), follower)

    def test_refused_transfer_is_the_leaders_error(self) -> None:
        """A TRANSFER the leader refuses answers the leader's Error line."""
        c = ForwardingCluster()
        _, follower = c.leader_and_follower()
        conn = c.connect(follower)
        conn.send("TRANSFER 42")
        [reply] = c.run_until_replies(conn, 1)
        self.assertTrue(reply.startswith("Error: ") and "Outcome unknown" not in reply, reply)

    def test_lost_answer_after_a_transfer_is_still_outcome_unknown(self) -> None:
        """If the leader's answer never comes, a forwarded TRANSFER still ends with Outcome unknown (no hang)."""
        c = ForwardingCluster(commit_timeout=2.0)
        leader, follower = c.leader_and_follower()
        target = next(i for i in c.cluster.ids if i not in (leader, follower))
        c.cluster.network.filters.append(lambda m: isinstance(m.body, ForwardResponse))
        conn = c.connect(follower)
        conn.send(f"TRANSFER {target}")
        [reply] = c.run_until_replies(conn, 1, timeout=5.0)
        self.assertTrue(reply.startswith("Error: Outcome unknown: "), reply)
        self.assertEqual(c.forwarding[follower].forwarder.in_flight, 0)


class MembersTests(SynchronousTestCase):
    """MEMBERS on a follower: forwarded with the option, Not leader without."""

    def test_forwarded_members_is_the_leaders_answer(self) -> None:
        """With forwarding, MEMBERS on a follower answers the leader's MEMBERS line."""
        c = ForwardingCluster()
        leader, follower = c.leader_and_follower()
        expected = c.cluster.node(leader).members_text()
        conn = c.connect(follower)
        conn.send("MEMBERS", "PUT k v", "MEMBERS")
        self.assertEqual(c.run_until_replies(conn, 3), [expected, "k added successfully.", expected])
        self.assertTrue(expected.startswith("0@"), expected)

    def test_without_forwarding_members_is_not_leader(self) -> None:
        """Without forwarding a follower still refuses MEMBERS (and TRANSFER) as a write: Not leader."""
        c = ForwardingCluster(forward=())
        leader, follower = c.leader_and_follower()
        conn = c.connect(follower)
        conn.send("MEMBERS", "TRANSFER 0")
        self.assertEqual(c.run_until_replies(conn, 2), [not_leader(leader)] * 2)

    def test_members_on_the_leader(self) -> None:
        """On the leader MEMBERS answers at once, forwarding or not."""
        c = ForwardingCluster()
        leader, _ = c.leader_and_follower()
        conn = c.connect(leader)
        conn.send("MEMBERS")
        self.assertEqual(conn.replies(), [c.cluster.node(leader).members_text()])
