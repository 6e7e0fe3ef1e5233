# -*- test-case-name: tests.integration.test_process_membership_removed_leader -*-
"""
C{REMOVENODE} of the leader itself, with real processes (issue 13: "a
removed leader keeps leading until the change that removes it commits, then
steps down and hands over leadership"; docs/operations.md: "A leader may
remove itself: it replies, then hands leadership to the most up-to-date
voter").  The followers answer it over their own links to it, which they
keep while they follow it although their configuration no longer names it.
"""

from __future__ import annotations

import time

import pytest

from kvstore.testing.processes import wait_until
from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


class RemovedLeaderProcessTests(ProcessTestCase):
    def test_the_leader_removes_itself_replies_and_hands_over(self) -> None:
        """REMOVENODE of the leader on the leader gets 'Node N removed successfully.' within an election
        timeout, another node leads at once, and the old leader knows it is removed."""
        cluster = self.make_cluster(3).start()
        leader = cluster.wait_for_leader()
        # The new configuration's quorum is both followers: let every link be up first.
        wait_until(lambda: all(len(n.status()["connected"].split(",")) == 2 for n in cluster.nodes), 10,
                   message="every peer link")
        self.assertEqual(leader.request("PUT k v"), "k added successfully.")
        started = time.monotonic()
        self.assertEqual(leader.request(f"REMOVENODE {leader.node_id}", timeout=10),
                         f"Node {leader.node_id} removed successfully.")
        self.assertLess(time.monotonic() - started, 1.0, "the removal waited for an election")
        others = [n for n in cluster.nodes if n is not leader]
        wait_until(lambda: any(n.status()["role"] == "leader" for n in others), 5, message="a new leader")
        wait_until(lambda: leader.status()["member_role"] == "removed", 5, message="the old leader to know it")
