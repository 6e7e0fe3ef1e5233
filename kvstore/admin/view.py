# -*- test-case-name: tests.test_admin_health -*-
"""
The admin endpoint's read-only view of a node: what metrics, health checks
and C{/status} may read, in one place, so that they depend on a handful of
the node's attributes rather than on its internals.  Read on the reactor
thread only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

from kvstore.node.node import Node
from kvstore.raft.core import Role

__all__ = ["LinkState", "NodeView"]


class LinkState(Protocol):
    """What the view reads of an outbound peer link
    (L{kvstore.protocols.peer_links.PeerLink})."""

    @property
    def protocol(self) -> object | None:
        """The connection, or L{None} while disconnected."""

    @property
    def sent(self) -> int:
        """Messages written to the connection since start."""

    @property
    def dropped(self) -> int:
        """Messages dropped since start (not connected, or backed up)."""


@dataclass(frozen=True)
class NodeView:
    """
    @ivar node: the node.
    @ivar cluster_id: its cluster's id.
    @ivar members: every member's id and client address, this node included.
    @ivar links: this node's outbound link to each peer, by peer id (none
        in the in-memory clusters of the tests).
    """

    node: Node
    cluster_id: str
    members: Mapping[int, str]
    links: Mapping[int, LinkState] = field(default_factory=dict)

    @property
    def node_id(self) -> int:
        return self.node.core.node_id

    @property
    def leader_id(self) -> int | None:
        return self.node.core.leader_id

    @property
    def is_leader(self) -> bool:
        return self.node.core.role is Role.LEADER

    @property
    def role(self) -> str:
        return self.node.core.role.value

    @property
    def term(self) -> int:
        return self.node.core.term

    @property
    def commit_index(self) -> int:
        return self.node.core.commit_index

    @property
    def applied_index(self) -> int:
        return self.node.state_machine.applied_index

    @property
    def last_index(self) -> int:
        return self.node.core.last_index

    @property
    def is_voter(self) -> bool:
        """Whether this node votes and counts towards commit majorities: a
        voter of the core's current configuration (a learner or a removed
        node is not; the command line's bootstrap membership says nothing
        once membership has changed)."""
        return self.node_id in self.node.core.configuration.voter_ids

    def status(self) -> dict[str, object]:
        """The node's C{STATUS} fields."""
        return self.node.status()
