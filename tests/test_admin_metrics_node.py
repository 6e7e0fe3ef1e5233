"""
The admin endpoint's metrics move as the node works: an in-memory cluster
on a C{task.Clock}, instrumented as C{--admin-listen} instruments a real
node, scraped (rendered and parsed) as Prometheus would.
"""

from __future__ import annotations

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.admin.metrics import METRIC_NAMES, AdminMetrics
from kvstore.raft.core import Role
from tests.admin_support import MeteredCluster, scrape


def _count_metric_names(names: set[str]) -> set[str]:
    """Family names as METRIC_NAMES spells them, from sample names."""
    families = set()
    for name in names:
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        families.add(name)
    return families


class LeadershipMetricsTests(SynchronousTestCase):
    """has_leader, is_leader, current term and leader changes."""

    def setUp(self) -> None:
        self.cluster = MeteredCluster(3, seed=1)
        self.leader = self.cluster.wait_for_leader()

    def test_every_metric_family_is_exported(self) -> None:
        """
        A node's scrape has every family METRIC_NAMES lists, and no kvstore_
        family it does not list; but the peer links' (an in-memory cluster
        has no TCP links: tests/test_admin_metrics_instruments.py reads real
        ones).
        """
        names = _count_metric_names(self.cluster.scrape(self.leader).names())
        link_families = {"kvstore_peer_connected", "kvstore_peer_messages_sent_total", "kvstore_peer_messages_dropped_total"}
        self.assertEqual({n for n in names if n.startswith("kvstore_")}, set(METRIC_NAMES) - link_families)

    def test_exactly_one_node_is_leader_and_all_know_it(self) -> None:
        """After an election, is_leader is 1 on the leader only, has_leader 1 everywhere, term as the core's."""
        for node_id in self.cluster.ids:
            samples = self.cluster.scrape(node_id)
            core = self.cluster.node(node_id).core
            self.assertEqual(samples.value("kvstore_is_leader"), float(node_id == self.leader))
            self.assertEqual(samples.value("kvstore_has_leader"), 1.0)
            self.assertEqual(samples.value("kvstore_current_term"), float(core.term))
            self.assertEqual(
                samples.value("kvstore_leader_changes_seen_total"), 1.0, f"node {node_id} saw one leader"
            )

    def test_a_new_leader_counts_as_a_change(self) -> None:
        """When the leader crashes and another is elected, the survivors count one more leader change and has_leader returns to 1."""
        survivors = [i for i in self.cluster.ids if i != self.leader]
        before = {i: self.cluster.scrape(i).value("kvstore_leader_changes_seen_total") for i in survivors}
        self.cluster.crash(self.leader)
        new_leader = self.cluster.wait_for_leader(among=survivors)
        self.cluster.run(0.2)
        for i in survivors:
            samples = self.cluster.scrape(i)
            self.assertEqual(samples.value("kvstore_leader_changes_seen_total"), before[i] + 1)
            self.assertEqual(samples.value("kvstore_has_leader"), 1.0)
            self.assertEqual(samples.value("kvstore_is_leader"), float(i == new_leader))

    def test_has_leader_drops_on_a_node_cut_off(self) -> None:
        """A follower cut off from the others loses its leader (has_leader 0) once its election timeout passes."""
        follower = next(i for i in self.cluster.ids if i != self.leader)
        self.cluster.network.isolate(follower, self.cluster.ids)
        self.assertTrue(self.cluster.run_until(lambda: self.cluster.node(follower).core.leader_id is None, 5))
        self.assertEqual(self.cluster.scrape(follower).value("kvstore_has_leader"), 0.0)


class LogMetricsTests(SynchronousTestCase):
    """Indexes, proposals and the group commit."""

    def setUp(self) -> None:
        self.cluster = MeteredCluster(3, seed=2)
        self.leader = self.cluster.wait_for_leader()

    def _write(self, count: int) -> None:
        client = self.cluster.connect(self.leader)
        for i in range(count):
            self.assertEqual(client.ask(f"PUT k{i} v"), [f"k{i} added successfully."])

    def test_indexes_follow_the_log(self) -> None:
        """Commit and applied indexes, apply lag and the last log index are the node's own, on every node."""
        self._write(5)
        self.cluster.run(0.5)
        for node_id in self.cluster.ids:
            node = self.cluster.node(node_id)
            samples = self.cluster.scrape(node_id)
            self.assertEqual(samples.value("kvstore_proposals_committed_total"), float(node.core.commit_index))
            self.assertEqual(samples.value("kvstore_proposals_applied_total"), float(node.state_machine.applied_index))
            self.assertEqual(samples.value("kvstore_last_log_index"), float(node.core.last_index))
            self.assertEqual(samples.value("kvstore_apply_lag_entries"), 0.0)
            self.assertGreaterEqual(node.core.commit_index, 6)  # the no-op and five writes

    def test_group_commit_counts_every_entry_made_durable(self) -> None:
        """The group-commit histogram's sum is every entry the log made durable, its count the flushes that wrote."""
        before = self.cluster.scrape(self.leader)
        flushes = before.value("kvstore_wal_group_commit_entries_count")
        self._write(3)
        after = self.cluster.scrape(self.leader)
        self.assertEqual(
            after.value("kvstore_wal_group_commit_entries_sum"), float(self.cluster.members[self.leader].log.durable_index)
        )
        self.assertGreater(after.value("kvstore_wal_group_commit_entries_count"), flushes)

    def test_batched_writes_share_a_flush(self) -> None:
        """Writes proposed in one reactor turn are made durable by one flush: one observation of their number."""
        client = self.cluster.connect(self.leader)
        before = self.cluster.scrape(self.leader)
        client.send(*(f"PUT b{i} v" for i in range(10)))
        self.assertEqual(self.cluster.scrape(self.leader).value("kvstore_proposals_pending"), 10.0)
        self.assertTrue(self.cluster.run_until(lambda: len(client.replies()) == 10, 10))
        after = self.cluster.scrape(self.leader)
        self.assertEqual(after.value("kvstore_proposals_pending"), 0.0)
        added = after.bucket("kvstore_wal_group_commit_entries", "16.0") - before.bucket(
            "kvstore_wal_group_commit_entries", "16.0"
        )
        added_small = after.bucket("kvstore_wal_group_commit_entries", "8.0") - before.bucket(
            "kvstore_wal_group_commit_entries", "8.0"
        )
        self.assertEqual((added, added_small), (1.0, 0.0), "one flush of 9 to 16 entries")

    def test_failed_proposal(self) -> None:
        """A write appended by a leader that is then cut off fails (outcome unknown): counted as a failed proposal."""
        self.cluster.network.isolate(self.leader, self.cluster.ids)
        [reply] = self.cluster.ask(self.leader, "PUT lost v")
        self.assertTrue(reply.startswith("Error: Outcome unknown"), reply)
        samples = self.cluster.scrape(self.leader)
        self.assertEqual(samples.value("kvstore_proposals_failed_total"), 1.0)
        self.assertEqual(samples.value("kvstore_client_requests_total", command="put", result="outcome_unknown"), 1.0)
        self.assertEqual(samples.value("kvstore_proposals_pending"), 0.0)


class RequestMetricsTests(SynchronousTestCase):
    """Client requests by command and result, and linearizable reads."""

    def setUp(self) -> None:
        self.cluster = MeteredCluster(3, seed=3)
        self.leader = self.cluster.wait_for_leader()
        self.follower = next(i for i in self.cluster.ids if i != self.leader)

    def test_requests_by_command_and_result(self) -> None:
        """Each PUT, DELETE, GET, GET STALE and STATUS is counted once under its command and result."""
        replies = self.cluster.ask(
            self.leader, "PUT a 1", "GET a", "GET missing", "GET a STALE", "DELETE missing", "STATUS"
        )
        self.assertEqual(replies[:5], [
            "a added successfully.", "value of a: 1", "Error: Key missing not found", "value of a: 1",
            "Error: Key missing not found",
        ])
        [refused] = self.cluster.ask(self.follower, "PUT b 2")
        self.assertTrue(refused.startswith("Error: Not leader"), refused)
        samples = self.cluster.scrape(self.leader)
        expected = {
            ("put", "ok"): 1, ("get", "ok"): 1, ("get", "not_found"): 1, ("get_stale", "ok"): 1,
            ("delete", "not_found"): 1, ("status", "ok"): 1, ("delete", "ok"): 0,
        }
        for (command, result), count in expected.items():
            self.assertEqual(
                samples.value("kvstore_client_requests_total", command=command, result=result), float(count),
                (command, result),
            )
        self.assertEqual(samples.value("kvstore_linearizable_reads_total", result="ok"), 2.0)
        follower = self.cluster.scrape(self.follower)
        self.assertEqual(follower.value("kvstore_client_requests_total", command="put", result="not_leader"), 1.0)
        self.assertEqual(follower.value("kvstore_proposals_failed_total"), 0.0, "a refused write was never proposed")

    def test_linearizable_read_on_a_follower(self) -> None:
        """A follower's linearizable GET (through the leader's read index) counts as an ok read on the follower."""
        self.cluster.ask(self.leader, "PUT a 1")
        self.assertEqual(self.cluster.ask(self.follower, "GET a"), ["value of a: 1"])
        self.assertEqual(self.cluster.scrape(self.follower).value("kvstore_linearizable_reads_total", result="ok"), 1.0)

    def test_unavailable_read(self) -> None:
        """A linearizable GET on a follower cut off from the leader fails: counted as an unavailable read."""
        self.cluster.network.isolate(self.follower, self.cluster.ids)
        self.cluster.run_until(lambda: self.cluster.node(self.follower).core.leader_id is None, 5)
        [reply] = self.cluster.ask(self.follower, "GET a")
        self.assertTrue(reply.startswith("Error: Unavailable"), reply)
        samples = self.cluster.scrape(self.follower)
        self.assertEqual(samples.value("kvstore_linearizable_reads_total", result="unavailable"), 1.0)
        self.assertEqual(samples.value("kvstore_client_requests_total", command="get", result="unavailable"), 1.0)

    def test_connections(self) -> None:
        """Open client connections are a gauge; accepted ones a counter."""
        first, second = self.cluster.connect(self.leader), self.cluster.connect(self.leader)
        samples = self.cluster.scrape(self.leader)
        self.assertEqual(samples.value("kvstore_client_connections"), 2.0)
        first.protocol.connectionLost(Failure(ConnectionError()))
        samples = self.cluster.scrape(self.leader)
        self.assertEqual(samples.value("kvstore_client_connections"), 1.0)
        self.assertEqual(samples.value("kvstore_client_connections_accepted_total"), 2.0)
        del second


class PeerAndReactorMetricsTests(SynchronousTestCase):
    """Round trips to peers, and the reactor-lag probe."""

    def test_round_trips_are_timed_on_the_leader(self) -> None:
        """The leader times round trips to every follower, within the simulated network's latency; followers time none."""
        cluster = MeteredCluster(3, seed=4)
        leader = cluster.wait_for_leader()
        cluster.run(1.0)
        for node_id in cluster.ids:
            samples = cluster.scrape(node_id)
            for peer in cluster.ids:
                if peer == node_id:
                    continue
                count = samples.value("kvstore_peer_round_trip_time_seconds_count", peer=str(peer))
                if node_id != leader:
                    self.assertEqual(count, 0.0)
                    continue
                self.assertGreater(count, 10.0, "heartbeats every 50 ms for a second")
                mean = samples.value("kvstore_peer_round_trip_time_seconds_sum", peer=str(peer)) / count
                # Each way takes 0.5-2 ms in the simulated network, plus the
                # clock's 1 ms steps.
                self.assertTrue(0.001 <= mean <= 0.008, mean)

    def test_reactor_lag(self) -> None:
        """A probe that fires two seconds late is observed in the histogram's bucket above 1 s."""
        cluster = MeteredCluster(1, seed=5)
        admin = cluster.admin(0)
        admin.probe.start()
        self.addCleanup(admin.probe.stop)
        cluster.clock.advance(admin.probe.interval)  # on time
        cluster.clock.advance(admin.probe.interval + 2.0)  # two seconds late
        samples = scrape(admin)
        self.assertEqual(samples.value("kvstore_reactor_lag_seconds_count"), 2.0)
        self.assertEqual(samples.bucket("kvstore_reactor_lag_seconds", "1.0"), 1.0)
        self.assertEqual(samples.bucket("kvstore_reactor_lag_seconds", "2.5"), 2.0)


class SnapshotHookTests(SynchronousTestCase):
    """The snapshot metrics that log compaction will feed through the node's metrics."""

    def test_snapshot_hooks(self) -> None:
        """Each snapshot hook observes its duration and size."""
        metrics = AdminMetrics([1, 2], process=False)
        metrics.snapshot_saved(0.3, 2048)
        metrics.snapshot_installed(1.5, 4096)
        metrics.snapshot_sent(2, 0.7, 1000)
        samples = scrape(metrics)
        self.assertEqual(samples.value("kvstore_snapshot_save_duration_seconds_sum"), 0.3)
        self.assertEqual(samples.bucket("kvstore_snapshot_save_bytes", "4096.0"), 1.0)
        self.assertEqual(samples.value("kvstore_snapshot_install_duration_seconds_count"), 1.0)
        self.assertEqual(samples.value("kvstore_snapshot_install_bytes_sum"), 4096.0)
        self.assertEqual(samples.value("kvstore_snapshot_send_duration_seconds_count", peer="2"), 1.0)
        self.assertEqual(samples.value("kvstore_snapshot_sent_bytes_total", peer="2"), 1000.0)
        self.assertEqual(samples.value("kvstore_snapshot_sent_bytes_total", peer="1"), 0.0)

    def test_node_reports_through_its_metrics(self) -> None:
        """The node built with instruments holds them as its metrics (where compaction's hooks report)."""
        cluster = MeteredCluster(1, seed=6)
        self.assertIs(cluster.node(0).metrics, cluster.admin(0).metrics)
        self.assertTrue(cluster.run_until(lambda: cluster.node(0).core.role is Role.LEADER, 5))
        cluster.run(0.01)  # the node's processing pass after the election
        self.assertEqual(cluster.scrape(0).value("kvstore_leader_changes_seen_total"), 1.0)
