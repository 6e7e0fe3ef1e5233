# -*- test-case-name: tests.test_admin_metrics_node -*-
"""
The metrics read from the node when a scrape renders: a prometheus_client
custom collector over a L{NodeView} and the L{RequestCounts}.

It reads the node's attributes directly, without a lock, which is safe only
on the reactor thread: the admin endpoint renders C{/metrics} there
(L{kvstore.admin.web.MetricsPage}), never in prometheus_client's thread
pool.  Reading costs a few attribute loads per metric, so the node pays
nothing between scrapes for any of these.
"""

from __future__ import annotations

from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kvstore import __version__
from kvstore.admin.requests import RequestCounts
from kvstore.admin.view import NodeView

__all__ = ["NodeCollector"]


class NodeCollector(Collector):
    """The node's state and request counts as metric families."""

    def __init__(self, view: NodeView, counts: RequestCounts) -> None:
        self._view = view
        self._counts = counts

    def describe(self) -> Iterable[Metric]:
        # No description up front: the registry then never calls collect()
        # off the reactor thread (at registration, say).
        return []

    def collect(self) -> Iterable[Metric]:
        view = self._view
        counts = self._counts
        info = GaugeMetricFamily(
            "kvstore_node_info", "This node: its id, cluster and kvstore version (always 1).",
            labels=["node_id", "cluster_id", "version"],
        )
        info.add_metric([str(view.node_id), view.cluster_id, __version__], 1)
        yield info
        yield GaugeMetricFamily(
            "kvstore_has_leader", "1 if this node knows a leader (itself included), else 0.",
            value=int(view.leader_id is not None),
        )
        yield GaugeMetricFamily("kvstore_is_leader", "1 if this node is the leader, else 0.", value=int(view.is_leader))
        yield GaugeMetricFamily("kvstore_current_term", "This node's current Raft term.", value=view.term)
        commit, applied = view.commit_index, view.applied_index
        # etcd's names and types: the indexes, as gauges (they restart from
        # 0 with the process until the leader tells this node its commit).
        yield GaugeMetricFamily(
            "kvstore_proposals_committed_total", "This node's commit index: log entries known committed.",
            value=commit,
        )
        yield GaugeMetricFamily(
            "kvstore_proposals_applied_total", "This node's applied index: log entries applied to its state machine.",
            value=applied,
        )
        yield GaugeMetricFamily(
            "kvstore_apply_lag_entries", "Committed log entries not yet applied on this node (commit - applied).",
            value=max(0, commit - applied),
        )
        yield GaugeMetricFamily("kvstore_last_log_index", "The index of the last entry in this node's log.",
                                value=view.last_index)
        yield GaugeMetricFamily(
            "kvstore_proposals_pending", "Client writes (PUT, DELETE) proposed through this node and not yet answered.",
            value=counts.pending_writes,
        )
        yield CounterMetricFamily(
            "kvstore_proposals_failed",
            "Client writes appended through this node whose outcome became unknown (leadership lost, commit "
            "timeout) or that the node could no longer serve.",
            value=counts.failed_proposals,
        )
        requests = CounterMetricFamily(
            "kvstore_client_requests", "Client requests completed, by command and result.", labels=["command", "result"]
        )
        for (command, result), count in sorted(counts.requests().items()):
            requests.add_metric([command, result], count)
        yield requests
        reads = CounterMetricFamily(
            "kvstore_linearizable_reads",
            "Linearizable GETs completed: ok (served, the key found or not) or unavailable (no leader, or "
            "leadership not confirmed in time).",
            labels=["result"],
        )
        for result, count in sorted(counts.linearizable_reads().items()):
            reads.add_metric([result], count)
        yield reads
        yield GaugeMetricFamily("kvstore_client_connections", "Client connections open now.", value=counts.connections)
        yield CounterMetricFamily(
            "kvstore_client_connections_accepted", "Client connections accepted.", value=counts.connections_accepted
        )
        connected = GaugeMetricFamily(
            "kvstore_peer_connected", "1 while this node's outbound connection to the peer is up, else 0.",
            labels=["peer"],
        )
        sent = CounterMetricFamily(
            "kvstore_peer_messages_sent", "Raft messages this node wrote to the peer's connection.", labels=["peer"]
        )
        dropped = CounterMetricFamily(
            "kvstore_peer_messages_dropped",
            "Raft messages for the peer this node dropped: not connected, or the connection backed up.",
            labels=["peer"],
        )
        for peer, link in sorted(view.links.items()):
            label = [str(peer)]
            connected.add_metric(label, int(link.protocol is not None))
            sent.add_metric(label, link.sent)
            dropped.add_metric(label, link.dropped)
        yield connected
        yield sent
        yield dropped
