# -*- test-case-name: tests.integration.test_process_membership_removed -*-
"""
A removed node that is still running, with real processes (issue 13: "a
removed node stops campaigning"): after C{REMOVENODE} of a running
follower, that node learns its removal committed (the leader keeps its peer
link to it until then), shows C{member_role=removed}, answers clients with
an C{Error:} line at once, and stays quiet: over many election timeouts
neither its term nor the cluster's leader and term change.
"""

from __future__ import annotations

import time

import pytest

from kvstore.testing.processes import Timeout, wait_until
from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


class RemovedNodeProcessTests(ProcessTestCase):
    def test_a_removed_running_node_knows_it_and_stays_quiet(self) -> None:
        """REMOVENODE of a running follower: it reports member_role=removed, refuses requests with an Error:
        line, and neither its term nor the cluster's leadership moves for 3 s (5 to 10 election timeouts)."""
        cluster = self.make_cluster(3).start()
        leader = cluster.wait_for_leader()
        removed = max((n for n in cluster.nodes if n is not leader), key=lambda n: n.node_id)
        self.assertEqual(leader.request(f"REMOVENODE {removed.node_id}"), f"Node {removed.node_id} removed successfully.")
        wait_until(lambda: removed.status()["member_role"] == "removed", 10, message="the node to know its removal")
        started = time.monotonic()
        self.assertEqual(
            removed.request("PUT k v", timeout=5),
            f"Error: Unavailable: Node {removed.node_id} was removed from the cluster; ask another member",
        )
        self.assertLess(time.monotonic() - started, 2.0, "the removed node made its client wait")

        def terms_and_leader() -> tuple[str, str, str]:
            return removed.status()["term"], leader.status()["term"], leader.status()["role"]

        before = terms_and_leader()
        with self.assertRaises(Timeout):
            wait_until(lambda: terms_and_leader() != before, 3.0, message="a change of term or leader")
        self.assertEqual(leader.request("PUT k v"), "k added successfully.")
