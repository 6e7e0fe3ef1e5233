"""
ReadIndex reads on followers survive lost messages: a read forwarded to the
leader is asked again if no answer comes, instead of waiting for the read
timeout.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.memory_cluster import InMemoryCluster


class RaftReadTests(SynchronousTestCase):
    """Linearizable reads on followers in a simulated cluster: forwarding, retries and failures."""

    def test_forwarded_read_is_retried_after_a_lost_request(self) -> None:
        """A follower whose read request to the leader was dropped asks again at
        a later heartbeat and answers well before the read timeout."""
        cluster = InMemoryCluster(3, seed=3, read_timeout=5.0)
        leader = cluster.wait_for_leader()
        assert cluster.resolve(cluster.node(leader).put("k", "v")) is None
        follower = next(i for i in cluster.ids if i != leader)
        cluster.network.blocked.add((follower, leader))
        started = cluster.clock.seconds()
        read = cluster.node(follower).get("k")
        cluster.run(0.05)
        cluster.network.blocked.clear()
        result = cluster.resolve(read, timeout=5.0)
        assert result == "v", result
        assert cluster.clock.seconds() - started < 1.0

    def test_follower_read_fails_cleanly_when_leader_unreachable(self) -> None:
        """A read on a follower that cannot reach the leader fails with
        Unavailable (no stale value) once the read timeout passes or an election
        starts."""
        cluster = InMemoryCluster(3, seed=4, read_timeout=1.0)
        leader = cluster.wait_for_leader()
        follower = next(i for i in cluster.ids if i != leader)
        cluster.network.isolate(follower, cluster.ids)
        result = cluster.resolve(cluster.node(follower).get("k"), timeout=5.0)
        assert isinstance(result, Failure)
        assert type(result.value).__name__ == "Unavailable"

    def test_read_confirmation_starts_at_once_not_at_the_next_heartbeat(self) -> None:
        """A linearizable read on the leader or a follower completes in a few
        network round trips, without waiting for the next heartbeat to start
        the leadership-confirming round."""
        cluster = InMemoryCluster(3, seed=5, heartbeat_interval=0.05)
        leader = cluster.wait_for_leader()
        assert cluster.resolve(cluster.node(leader).put("k", "v")) is None
        follower = next(i for i in cluster.ids if i != leader)
        for node_id in (leader, follower):
            cluster.run(0.01)  # land somewhere between heartbeats
            started = cluster.clock.seconds()
            assert cluster.resolve(cluster.node(node_id).get("k")) == "v"
            # Simulated links take at most 2 ms each way.
            assert cluster.clock.seconds() - started < 0.015, (node_id, cluster.clock.seconds() - started)
