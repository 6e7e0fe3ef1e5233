# -*- test-case-name: tests.integration.test_client_process -*-
"""
The client library against three real node processes: redirects from a
follower's address, finding the new leader after the old one is killed
with SIGKILL, KeyNotFound, and the timeout when no node is up.
"""

from __future__ import annotations

import time

import pytest

from kvstore.client import Client, ConnectionFailed, KeyNotFound

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


class ClientProcessTests(ProcessTestCase):
    """The blocking client on a real three-node cluster."""

    def test_redirect_failover_not_found_and_timeout(self) -> None:
        """
        Writes sent to a follower's address reach the leader; after the
        leader is killed with SIGKILL the client finds the new one; a
        missing key raises KeyNotFound; with every node down a call fails
        with ConnectionFailed within about its timeout.
        """
        cluster = self.make_cluster(3).start()
        leader = cluster.wait_for_leader()
        cluster.wait_connected()
        followers = [n for n in cluster.nodes if n is not leader]

        # Only a follower listed: the client learns the leader from its reply.
        kv = Client([followers[0].address], timeout=15)
        self.addCleanup(kv.close)
        kv.put("greeting", "hello world")
        self.assertEqual(kv.node, leader.address)
        self.assertEqual(kv.get("greeting"), "hello world")
        self.assertEqual(followers[1].request("GET greeting"), "value of greeting: hello world")
        self.assertRaises(KeyNotFound, kv.get, "missing")
        self.assertRaises(KeyNotFound, kv.delete, "missing")

        # Every node listed; the leader dies between two calls.
        everyone = Client([n.address for n in cluster.nodes], timeout=15)
        self.addCleanup(everyone.close)
        everyone.put("before", "1")
        self.assertEqual(everyone.node, leader.address)
        leader.kill()
        everyone.put("after", "2")
        new_leader = cluster.wait_for_leader()
        self.assertNotEqual(new_leader.node_id, leader.node_id)
        self.assertEqual(everyone.node, new_leader.address)
        self.assertEqual(everyone.get("before"), "1")
        self.assertEqual(everyone.get("after"), "2")
        everyone.delete("after")
        self.assertRaises(KeyNotFound, everyone.get, "after")

        # Nothing up: bounded by the timeout.
        cluster.kill_all()
        short = Client([n.address for n in cluster.nodes], timeout=1.0)
        self.addCleanup(short.close)
        start = time.monotonic()
        self.assertRaises(ConnectionFailed, short.put, "k", "v")
        self.assertLess(time.monotonic() - start, 5.0)
