"""
Write forwarding against real processes: a follower started with
C{--forward-writes} answers raw C{nc}-style write lines with the leader's
replies, over the real peer links (protocol version 4).
"""

from __future__ import annotations

import pytest

from kvstore.client.lines import LineConnection
from kvstore.testing.processes import FAST_ELECTIONS, ProcessCluster, wait_until

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


class ForwardingProcessTests(ProcessTestCase):
    """A real 3-node cluster whose nodes forward writes."""

    def _cluster(self, *extra: str) -> ProcessCluster:
        cluster = ProcessCluster(self.tmp_path / "cluster", 3, extra_args=FAST_ELECTIONS + extra)
        self.started_nodes.extend(cluster.nodes)
        cluster.start()
        self.addCleanup(cluster.stop)
        return cluster

    def test_follower_forwards_raw_lines(self) -> None:
        """Pipelined write lines on a follower get the leader's replies, in order, and a GET behind them sees them."""
        cluster = self._cluster("--forward-writes")
        leader = cluster.wait_for_leader()
        cluster.wait_connected()
        follower = cluster.followers(leader)[0]
        with LineConnection(follower.address) as connection:
            replies = connection.pipeline(
                ["PUT k1 hello world", "PUT k2 x", "DELETE k2", "DELETE k2", "GET k1", "PUT k1 again", "GET k1"]
            )
        assert replies == [
            "k1 added successfully.", "k2 added successfully.", "k2 deleted successfully.",
            "Error: Key k2 not found", "value of k1: hello world", "k1 added successfully.", "value of k1: again",
        ], replies
        with LineConnection(leader.address) as connection:
            assert connection.request("GET k1") == "value of k1: again"
        log = follower.log_path.read_text()
        assert f"peer node {leader.node_id} speaks peer protocol version 4 with this node" in log

    def test_without_the_option_a_follower_refuses(self) -> None:
        """Without --forward-writes a follower still replies Not leader, naming the leader."""
        cluster = self._cluster()
        leader = cluster.wait_for_leader()
        follower = cluster.followers(leader)[0]
        with LineConnection(follower.address) as connection:
            reply = connection.request("PUT k v")
        assert reply == f"Error: Not leader. Current leader is Node {leader.node_id} at {leader.address}", reply

    def test_leader_killed_mid_stream_never_says_not_leader_for_a_sent_write(self) -> None:
        """Writes streamed to a follower while the leader is killed get a success, Outcome unknown or an honest Not leader; every success is in the data."""
        cluster = self._cluster("--forward-writes")
        leader = cluster.wait_for_leader()
        cluster.wait_connected()
        follower = cluster.followers(leader)[0]
        with LineConnection(follower.address, timeout=30) as connection:
            first = connection.pipeline([f"PUT a{i} {i}" for i in range(20)])
            assert first == [f"a{i} added successfully." for i in range(20)], first
            leader.kill()
            replies = connection.pipeline([f"PUT b{i} {i}" for i in range(20)])
        for reply in replies:
            assert (
                reply.endswith("added successfully.")
                or reply.startswith("Error: Outcome unknown: ")
                or reply.startswith("Error: Not leader. ")
            ), replies
        new_leader = wait_until(cluster.stable_leader, 20, message=lambda: "a new leader")
        with LineConnection(new_leader.address) as connection:
            for i, reply in enumerate(replies):
                if reply.endswith("added successfully."):
                    assert connection.request(f"GET b{i}") == f"value of b{i}: {i}"
