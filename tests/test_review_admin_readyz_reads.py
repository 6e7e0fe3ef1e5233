# -*- test-case-name: tests.test_review_admin_readyz_reads -*-
"""
C{/readyz}'s ReadIndex check on a follower that hears its leader but cannot
reach it (a one-way cut), scraped every second (found in review): each
round forwards a read the leader never answers.  The node gives up on it
after its read timeout, and the Raft core must forget it then too, or it
keeps every one and asks the leader again for all of them every few
heartbeats -- messages growing without bound for as long as the cut lasts.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.messages import Message, ReadIndexRequest
from tests.admin_support import MeteredCluster


class ForwardedReadsTests(SynchronousTestCase):
    """Reads a node gave up on are forgotten by its core."""

    def test_readyz_rounds_do_not_pile_up_on_a_one_way_cut_follower(self) -> None:
        """After 5 minutes of /readyz every second on a follower whose messages to the leader are lost, it sends
        about as many read index requests per 10 seconds as after the first minute, not ever more."""
        cluster = MeteredCluster(3, seed=3)
        leader = cluster.wait_for_leader()
        follower = next(i for i in cluster.ids if i != leader)
        checks = cluster.admin(follower).checks
        assert checks is not None
        requests: list[float] = []

        def count(message: Message) -> None:
            if message.sender == follower and type(message.body) is ReadIndexRequest:
                requests.append(cluster.clock.seconds())

        cluster.network.on_send.append(count)
        cluster.network.cut([follower], [leader], both_ways=False)
        results: list[object] = []
        rates = []
        for second in range(300):
            checks.readyz().addBoth(results.append)
            cluster.run(1.0, step=0.01)
            if second in (59, 299):
                now = cluster.clock.seconds()
                rates.append(sum(1 for t in requests if t > now - 10))
        self.assertEqual(cluster.node(follower).core.leader_id, leader, "the follower still follows")
        self.assertEqual(len(results), 300)
        self.assertLessEqual(rates[1], 2 * rates[0] + 10, rates)
        self.assertLess(len(cluster.node(follower).core._forwarded_reads), 10)
