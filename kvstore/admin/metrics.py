# -*- test-case-name: tests.test_admin_metrics_node -*-
"""
The metrics of one node: their definitions, in one registry per node (never
prometheus_client's global one, so that several nodes in one process -- the
tests' in-memory clusters -- never share a metric), and the recording of
events.

Names follow etcd's (C{etcd_server_has_leader} is C{kvstore_has_leader}),
with a C{kvstore_} prefix.  Three kinds of source feed them:

  - state read from the node when a scrape renders (L{kvstore.admin.collector}):
    leadership, term, indexes, pending proposals, peer links, request
    counts kept as plain integers;
  - events the node reports through L{kvstore.node.monitoring.NodeMetrics}
    (leader changes, snapshots), implemented here by L{AdminMetrics};
  - timings from the instruments (L{kvstore.admin.instruments}): fsync
    durations (observed on the WAL's thread: prometheus_client's metrics
    take a lock per observation, so that is safe), group-commit sizes,
    peer round trips and reactor lag (on the reactor thread).

The full list, with what each means, is in docs/operations.md
("Monitoring"); L{METRIC_NAMES} lists the families, and the tests check
that the alert rules and the dashboard in etc/ use only those.
"""

from __future__ import annotations

from typing import Iterable

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, PlatformCollector, ProcessCollector

from kvstore.node.monitoring import NodeMetrics

__all__ = ["AdminMetrics", "FSYNC_BUCKETS", "METRIC_NAMES"]

#: Seconds: 0.1 ms (a fast SSD) to 8 s (etcd's 1 ms-8 s doubling, extended
#: down, since this log's fsyncs can be well under a millisecond).
FSYNC_BUCKETS = (0.0001, 0.00025, 0.0005) + tuple(0.001 * 2**i for i in range(14))
#: Entries made durable by one WAL flush: 1 to 16,384, doubling.
GROUP_COMMIT_BUCKETS = tuple(float(2**i) for i in range(15))
#: Seconds a timer fired late: 1 ms (the reactor's resolution) to 10 s.
REACTOR_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Seconds: 0.1 ms doubling to 3.3 s, as etcd's peer round-trip histogram.
ROUND_TRIP_BUCKETS = tuple(0.0001 * 2**i for i in range(16))
SNAPSHOT_SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: Bytes: 1 KiB to 4 GiB, by fours.
SNAPSHOT_BYTES_BUCKETS = tuple(float(1024 * 4**i) for i in range(12))

#: Every metric family a node exports (histograms and counters by their
#: family name; the exposition adds _bucket, _sum, _count, _total), besides
#: prometheus_client's process_* and python_info.
METRIC_NAMES = (
    "kvstore_node_info",
    "kvstore_has_leader",
    "kvstore_is_leader",
    "kvstore_current_term",
    "kvstore_leader_changes_seen_total",
    "kvstore_proposals_committed_total",
    "kvstore_proposals_applied_total",
    "kvstore_proposals_pending",
    "kvstore_proposals_failed_total",
    "kvstore_last_log_index",
    "kvstore_apply_lag_entries",
    "kvstore_client_requests_total",
    "kvstore_linearizable_reads_total",
    "kvstore_client_connections",
    "kvstore_client_connections_accepted_total",
    "kvstore_wal_fsync_duration_seconds",
    "kvstore_wal_fsyncs_total",
    "kvstore_wal_group_commit_entries",
    "kvstore_peer_connected",
    "kvstore_peer_messages_sent_total",
    "kvstore_peer_messages_dropped_total",
    "kvstore_peer_round_trip_time_seconds",
    "kvstore_reactor_lag_seconds",
    "kvstore_snapshot_save_duration_seconds",
    "kvstore_snapshot_save_bytes",
    "kvstore_snapshot_install_duration_seconds",
    "kvstore_snapshot_install_bytes",
    "kvstore_snapshot_send_duration_seconds",
    "kvstore_snapshot_sent_bytes_total",
)


class AdminMetrics(NodeMetrics):
    """
    One node's registry and the metrics recorded as events happen; the
    node's L{NodeMetrics}.  The metrics read from the node's state are added
    by L{kvstore.admin.collector.NodeCollector}.

    @param peers: the other members' ids: every per-peer metric starts at
        zero for each, so that a dashboard and the alert rules see every
        link from the first scrape.
    @param process: also export prometheus_client's process, platform and
        garbage-collector metrics (CPU, memory, open files; C{python_info};
        C{python_gc_*}, read from C{gc.get_stats()} when scraped).  They describe
        the whole process, so the tests' in-process clusters leave them out.
    """

    def __init__(self, peers: Iterable[int] = (), *, process: bool = True) -> None:
        # Counters and histograms would each add a *_created gauge (the time
        # the series began); Prometheus does not need it, and it doubles the
        # series.  This is a process-wide switch of prometheus_client.
        prometheus_client.disable_created_metrics()
        self.registry = registry = CollectorRegistry()
        peer_ids = [str(p) for p in sorted(peers)]
        self.leader_changes = Counter(
            "kvstore_leader_changes_seen",
            "Leaders this node has learned of (each new term with a leader, its own elections included).",
            registry=registry,
        )
        self.fsync_duration = Histogram(
            "kvstore_wal_fsync_duration_seconds",
            "Duration of each fsync of the write-ahead log's files and directory.",
            buckets=FSYNC_BUCKETS,
            registry=registry,
        )
        self.fsyncs = Counter(
            "kvstore_wal_fsyncs",
            "fsyncs of the write-ahead log's files and directory (the fsync duration histogram's count).",
            registry=registry,
        )
        self.group_commit = Histogram(
            "kvstore_wal_group_commit_entries",
            "Log entries made durable by one flush of the write-ahead log (one group commit; "
            "flushes that only truncate count as 0).",
            buckets=GROUP_COMMIT_BUCKETS,
            registry=registry,
        )
        self.peer_round_trip = Histogram(
            "kvstore_peer_round_trip_time_seconds",
            "On the leader: time from sending an AppendEntries to a peer to its answer, which the peer "
            "sends once the message's entries are durable (network round trip plus, with entries, its fsync).",
            ["peer"],
            buckets=ROUND_TRIP_BUCKETS,
            registry=registry,
        )
        self.reactor_lag = Histogram(
            "kvstore_reactor_lag_seconds",
            "How late a periodic probe timer fired: time the reactor spent busy or blocked.",
            buckets=REACTOR_LAG_BUCKETS,
            registry=registry,
        )
        self.snapshot_save_duration = Histogram(
            "kvstore_snapshot_save_duration_seconds",
            "Time to make a snapshot of the state machine durable.",
            buckets=SNAPSHOT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.snapshot_save_bytes = Histogram(
            "kvstore_snapshot_save_bytes",
            "Size of each snapshot this node saved.",
            buckets=SNAPSHOT_BYTES_BUCKETS,
            registry=registry,
        )
        self.snapshot_install_duration = Histogram(
            "kvstore_snapshot_install_duration_seconds",
            "Time to install a snapshot received from the leader (InstallSnapshot): verify it, load it into the state "
            "machine, reset the log.",
            buckets=SNAPSHOT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.snapshot_install_bytes = Histogram(
            "kvstore_snapshot_install_bytes",
            "Size of each snapshot installed from the leader.",
            buckets=SNAPSHOT_BYTES_BUCKETS,
            registry=registry,
        )
        self.snapshot_send_duration = Histogram(
            "kvstore_snapshot_send_duration_seconds",
            "On the leader: time to send a snapshot to a peer (InstallSnapshot).",
            ["peer"],
            buckets=SNAPSHOT_SECONDS_BUCKETS,
            registry=registry,
        )
        self.snapshot_sent_bytes = Counter(
            "kvstore_snapshot_sent_bytes",
            "On the leader: bytes of snapshots sent to each peer.",
            ["peer"],
            registry=registry,
        )
        for peer in peer_ids:
            self.peer_round_trip.labels(peer)
            self.snapshot_send_duration.labels(peer)
            self.snapshot_sent_bytes.labels(peer)
        if process:
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)

    # -- kvstore.node.monitoring.NodeMetrics ---------------------------------

    def leader_changed(self, term: int, leader_id: int) -> None:
        self.leader_changes.inc()

    def snapshot_saved(self, seconds: float, size_bytes: int) -> None:
        self.snapshot_save_duration.observe(seconds)
        self.snapshot_save_bytes.observe(size_bytes)

    def snapshot_installed(self, seconds: float, size_bytes: int) -> None:
        self.snapshot_install_duration.observe(seconds)
        self.snapshot_install_bytes.observe(size_bytes)

    def snapshot_sent(self, peer: int, seconds: float, size_bytes: int) -> None:
        self.snapshot_send_duration.labels(str(peer)).observe(seconds)
        self.snapshot_sent_bytes.labels(str(peer)).inc(size_bytes)

    # -- the instruments' events ----------------------------------------

    def fsync_timed(self, seconds: float) -> None:
        """One fsync of the WAL took C{seconds}.  Called on the WAL's thread
        (both metrics take a lock)."""
        self.fsync_duration.observe(seconds)
        self.fsyncs.inc()

    def wal_flushed(self, entries: int, fsyncs: int) -> None:
        """A WAL flush made C{entries} durable with C{fsyncs} fsyncs (the
        log's C{on_flush} hook, on the reactor thread).  The fsyncs are
        counted as they are timed (L{fsync_timed}), with those of opening
        the log."""
        self.group_commit.observe(entries)

    def round_trip(self, peer: int, seconds: float) -> None:
        """An AppendEntries to C{peer} was answered after C{seconds}."""
        self.peer_round_trip.labels(str(peer)).observe(seconds)

    def reactor_late(self, seconds: float) -> None:
        """The reactor-lag probe fired C{seconds} late."""
        self.reactor_lag.observe(seconds)
