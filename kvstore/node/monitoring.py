# -*- test-case-name: tests.test_admin_metrics_node -*-
"""
What the node tells monitoring: a small interface with a no-op default.

Most of what an operator watches (term, role, commit and applied indexes,
pending requests, peer links) the admin endpoint reads from the node when it
is scraped (L{kvstore.admin.collector}).  Events that a later reading
cannot recover -- how many times the leader changed, how long a snapshot
took -- the node reports as they happen, through L{NodeMetrics}.  The node
and the builder depend only on this module, never on the metrics library:
a node built without an admin endpoint (the simulator, the tests, a node
started without C{--admin-listen}) gets L{NO_METRICS}, whose methods do
nothing.

The snapshot hooks are called by the node (a snapshot taken, one
installed: L{kvstore.node.node.Node}) and by the snapshot transfer (one sent:
L{kvstore.node.snapshot_transfer.attach_transfers}).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NO_METRICS", "NodeMetrics", "NoMetrics"]


class NodeMetrics(Protocol):
    """Events of a node that monitoring counts (see L{kvstore.admin.metrics})."""

    def leader_changed(self, term: int, leader_id: int) -> None:
        """This node learned of a new leader: C{leader_id} in C{term} (its
        own election included).  Called once per term and leader."""

    def snapshot_saved(self, seconds: float, size_bytes: int) -> None:
        """This node made a snapshot of its state machine durable: it took
        C{seconds} and the file is C{size_bytes} long."""

    def snapshot_installed(self, seconds: float, size_bytes: int) -> None:
        """This node installed a snapshot received from the leader
        (InstallSnapshot): C{seconds} from the received file's being handed
        to the node to its being verified, loaded into the state machine
        and the log reset (the transfer itself is timed on the leader,
        L{snapshot_sent}), C{size_bytes} long."""

    def snapshot_sent(self, peer: int, seconds: float, size_bytes: int) -> None:
        """This node, leading, finished sending a snapshot of C{size_bytes}
        to C{peer} in C{seconds} (from the file's opening to the follower's
        acknowledgement)."""


class NoMetrics:
    """L{NodeMetrics} that records nothing: the default."""

    def leader_changed(self, term: int, leader_id: int) -> None:
        pass

    def snapshot_saved(self, seconds: float, size_bytes: int) -> None:
        pass

    def snapshot_installed(self, seconds: float, size_bytes: int) -> None:
        pass

    def snapshot_sent(self, peer: int, seconds: float, size_bytes: int) -> None:
        pass


#: The metrics of a node without an admin endpoint: nothing is recorded.
NO_METRICS: NodeMetrics = NoMetrics()
