"""
The C{/livez} and C{/readyz} checks (L{kvstore.admin.health}) on an
in-memory cluster: ready when healthy, not ready when cut off, ready again
once healed, and each check's own failure.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from kvstore.admin.health import Check, HealthChecks
from kvstore.admin.instruments import ReactorLagProbe
from kvstore.admin.view import NodeView
from kvstore.testing.memory_cluster import CLUSTER_ID
from tests.admin_support import MeteredCluster


def failed(checks: list[Check]) -> dict[str, str]:
    """The failed checks' names and reasons."""
    return {check.name: check.reason for check in checks if not check.ok}


class ReadinessTests(SynchronousTestCase):
    """/readyz's checks as the cluster's state changes."""

    def setUp(self) -> None:
        self.cluster = MeteredCluster(3, seed=11)
        self.leader = self.cluster.wait_for_leader()
        self.follower = next(i for i in self.cluster.ids if i != self.leader)

    def checks(self, node_id: int) -> HealthChecks:
        checks = self.cluster.admin(node_id).checks
        assert checks is not None
        return checks

    def readyz(self, node_id: int) -> list[Check]:
        result = self.cluster.resolve(self.checks(node_id).readyz())
        assert isinstance(result, list), result
        return result

    def test_every_node_is_ready(self) -> None:
        """With a leader and every link up, every node passes every readiness check."""
        for node_id in self.cluster.ids:
            checks = self.readyz(node_id)
            self.assertEqual([c.name for c in checks], ["serving", "leader", "voter", "applied", "read_index"])
            self.assertEqual(failed(checks), {}, node_id)

    def test_cut_off_then_healed(self) -> None:
        """A follower cut off from the others is not ready (no leader, no read); healed, it is ready again."""
        self.cluster.network.isolate(self.follower, self.cluster.ids)
        self.assertTrue(self.cluster.run_until(lambda: self.cluster.node(self.follower).core.leader_id is None, 5))
        problems = failed(self.readyz(self.follower))
        self.assertEqual(set(problems), {"leader", "read_index"})
        self.assertIn("no leader", problems["leader"])
        self.assertEqual(failed(self.readyz(self.leader)), {}, "the others still form a majority")
        self.cluster.network.heal()
        self.assertTrue(self.cluster.run_until(lambda: self.cluster.node(self.follower).core.leader_id is not None, 10))
        self.assertEqual(failed(self.readyz(self.follower)), {})

    def test_leader_cut_off_is_not_ready(self) -> None:
        """A leader cut off from both followers steps down (check-quorum) and is then not ready."""
        self.cluster.network.isolate(self.leader, self.cluster.ids)
        self.assertTrue(self.cluster.run_until(lambda: self.cluster.node(self.leader).core.leader_id != self.leader, 10))
        self.assertIn("read_index", failed(self.readyz(self.leader)))

    def test_read_that_does_not_complete_in_time(self) -> None:
        """A follower whose requests no longer reach the leader (it still hears heartbeats) fails the read check at its timeout, and passes again once the link is back."""
        self.cluster.network.cut([self.follower], [self.leader], both_ways=False)
        checks = self.checks(self.follower)
        started = self.cluster.clock.seconds()
        problems = failed(self.readyz(self.follower))
        self.assertEqual(list(problems), ["read_index"])
        self.assertIn(f"did not complete within {checks.read_timeout:g} s", problems["read_index"])
        self.assertLess(abs(self.cluster.clock.seconds() - started - checks.read_timeout), 0.01)
        self.cluster.network.heal()
        self.assertEqual(failed(self.readyz(self.follower)), {})

    def test_concurrent_requests_share_one_read(self) -> None:
        """/readyz requests arriving while a read is under way wait for it rather than start another."""
        node = self.cluster.node(self.follower)
        reads: list[str] = []
        original = node.get

        def counting_get(key: str, stale: bool = False) -> Deferred[str]:
            reads.append(key)
            return original(key, stale)

        node.get = counting_get  # type: ignore[method-assign]
        checks = self.checks(self.follower)
        first, second = checks.readyz(), checks.readyz()
        results = [self.cluster.resolve(first), self.cluster.resolve(second)]
        self.assertEqual(len(reads), 1)
        self.assertEqual([failed(r) for r in results], [{}, {}])
        self.cluster.resolve(checks.readyz())
        self.assertEqual(len(reads), 2, "a later request starts a new read")

    def test_applied_index_far_behind(self) -> None:
        """A node whose applied index is more than the limit behind its commit index is not ready."""

        class Lagging(NodeView):
            @property
            def commit_index(self) -> int:
                return self.node.core.commit_index + 100

        node = self.cluster.node(self.leader)
        view = Lagging(node, CLUSTER_ID, {})
        probe = ReactorLagProbe(self.cluster.clock, lambda lag: None)
        problems = failed(self.cluster.resolve(HealthChecks(view, self.cluster.clock, probe, max_apply_lag=99).readyz()))
        self.assertEqual(list(problems), ["applied"])
        self.assertIn("100 entries behind", problems["applied"])
        self.assertEqual(
            failed(self.cluster.resolve(HealthChecks(view, self.cluster.clock, probe, max_apply_lag=100).readyz())), {}
        )

    def test_default_apply_lag_limit(self) -> None:
        """By default a node may be two apply batches behind."""
        self.assertEqual(self.checks(self.leader).max_apply_lag, 2 * self.cluster.node(self.leader).core.config.max_apply_batch)


class LivenessTests(SynchronousTestCase):
    """/livez's checks."""

    def setUp(self) -> None:
        self.cluster = MeteredCluster(1, seed=12)
        self.cluster.wait_for_leader()
        self.admin = self.cluster.admin(0)
        self.admin.probe.start()
        self.addCleanup(self.admin.probe.stop)

    def livez(self) -> list[Check]:
        assert self.admin.checks is not None
        result: Any = self.cluster.resolve(self.admin.checks.livez())
        return result  # type: ignore[no-any-return]

    def test_live(self) -> None:
        """A serving node with a turning reactor is live."""
        self.cluster.run(2)
        checks = self.livez()
        self.assertEqual([c.name for c in checks], ["serving", "reactor"])
        self.assertEqual(failed(checks), {})

    def test_blocked_reactor(self) -> None:
        """A reactor that ran nothing for longer than the limit (the probe overdue) fails the reactor check, until the probe runs on time again."""
        self.cluster.clock.rightNow += 6.0  # blocked: time passes, nothing runs
        problems = failed(self.livez())
        self.assertEqual(list(problems), ["reactor"])
        self.assertIn("blocked for 5.5 s", problems["reactor"])
        self.cluster.clock.advance(0)  # the probe fires, 5.5 s late
        self.assertEqual(list(failed(self.livez())), ["reactor"], "its last lag is still over the limit")
        self.cluster.run(1)
        self.assertEqual(failed(self.livez()), {})

    def test_stopped_node(self) -> None:
        """A node that has stopped (shutting down, or after a failure) fails the serving check."""
        self.cluster.node(0).stop()
        self.assertEqual(failed(self.livez()), {"serving": "the node is shutting down"})
