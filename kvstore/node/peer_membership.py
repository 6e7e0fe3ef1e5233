# -*- test-case-name: tests.test_peer_membership -*-
"""
The peer network follows the Raft core's configuration (issue 13): a link
to every other member of the current configuration, and a peer server that
accepts connections from those members and from every other id known (the
seed, earlier configurations) that no configuration removed: a node whose
configuration lags behind the cluster's must still hear its leader.

L{FollowConfiguration} is one of the node's configuration observers
(L{kvstore.node.node.Node.configuration_observers}): the node calls it after the
batch that made a new configuration current (a configuration takes effect
when appended, so a new member is linked to at once and a removed one is
dropped at once; a truncated change is undone the same way).  A node that
is joining holds an empty configuration until the leader's entries or
snapshot reach it; until then it links to, and accepts, the members it
joined through (C{seed}).

A leader removing a member keeps its link to it while the core still
replicates to it (L{kvstore.raft.core.RaftCore.departing}: until the
removal commits, and a little after), so that a removed node that is still
running learns that its removal committed and stops campaigning; a
follower keeps its link to the leader it follows while its configuration
does not name it (a leader removing itself, or a joining node whose first
configuration is the bootstrap members'): it answers the leader over it.
"""

from __future__ import annotations

from typing import Mapping, Protocol

from twisted.logger import Logger

from kvstore.protocols.commands import parse_address
from kvstore.protocols.peer import Membership
from kvstore.raft.membership import Configuration

__all__ = ["FollowConfiguration", "MAX_STRANGERS"]

#: How many non-members (L{FollowConfiguration.stranger}) a node links back
#: to at once: an unknown peer cannot make it open links without bound.
MAX_STRANGERS = 8


class _Links(Protocol):
    def add(self, peer_id: int, host: str, port: int) -> None: ...

    def remove(self, peer_id: int) -> None: ...


class _Server(Protocol):
    membership: Membership


class FollowConfiguration:
    """
    Keep C{links} (L{kvstore.protocols.peer_links.PeerLinks}) and
    C{server}'s membership check (L{kvstore.protocols.peer.PeerServerFactory})
    in step with the configuration it is called with.

    @param addresses: the links C{links} starts with, id -> C{host:port}.
    @param seed: the members a joining node links to while its own
        configuration is empty.

    L{departing_changed} is one of the node's departing observers
    (L{kvstore.node.node.Node.departing_observers}): the links to, and the peer
    server's acceptance of, the ids no longer members that the core still
    replicates to (L{RaftCore.departing}) are kept until they leave it, or
    opened again at their last known address (a leader elected while a
    removal is pending closed its link when it appended the removal).
    """

    log = Logger()

    def __init__(
        self,
        node_id: int,
        cluster_id: str,
        links: _Links,
        server: _Server,
        addresses: Mapping[int, str],
        seed: Mapping[int, str] | None = None,
    ) -> None:
        self._node_id = node_id
        self._cluster_id = cluster_id
        self._links = links
        self._server = server
        self._addresses = dict(addresses)
        self._seed = dict(seed or {})
        self._departing: frozenset[int] = frozenset()
        self._configuration: Configuration | None = None
        # The last address of every member seen (and of the seed): a node
        # elected leader while a removal is pending replicates to the
        # removed member, whose link it closed when it appended that removal
        # as a follower; a joining node follows a leader that the first
        # configuration it receives (the bootstrap members') may not name.
        self._known = {**self._seed, **addresses}
        self._committed: Configuration | None = None
        # Non-members that connected to this node with their address: a
        # leader (or member) this node's configuration does not know yet.
        self._strangers: dict[int, str] = {}

    def committed_changed(self, committed: Configuration) -> None:
        """A configuration entry committed: the links follow the union of
        the current and the committed configuration, so a follower that
        appended the entry removing the leader still answers that leader
        until the removal commits (and the leader learns it did)."""
        self._committed = committed
        if self._configuration is not None:
            self(self._configuration)

    def departing_changed(self, departing: frozenset[int]) -> None:
        """The core's departing members are now C{departing}: keep the
        links to them, drop the links to those that left it."""
        self._departing = departing
        if self._configuration is not None:
            self(self._configuration)

    def _removed(self) -> frozenset[int]:
        """The ids a committed configuration removed (never reused)."""
        return self._committed.removed if self._committed is not None else frozenset()

    def stranger(self, peer_id: int, address: str | None) -> None:
        """
        Node C{peer_id}, not a member of this node's configuration nor
        removed by a committed one, connected from C{address}: link back
        to it, so that this node can answer a leader it does not know yet
        (its configuration is behind).  One link per id, at most
        L{MAX_STRANGERS} of them, the address checked; the link is dropped
        when a committed configuration removes the id.
        """
        if peer_id == self._node_id or peer_id in self._removed() or address is None:
            return
        try:
            parse_address(address)
        except ValueError as e:
            self.log.warn("no peer link back to node {peer}: {error}", peer=peer_id, error=str(e))
            return
        if self._strangers.get(peer_id) == address:
            return
        if peer_id not in self._strangers and len(self._strangers) >= MAX_STRANGERS:
            self.log.warn("no peer link back to node {peer}: too many non-members linked", peer=peer_id)
            return
        self.log.info("node {peer}, not a member here yet, connected: linking back to {address}",
                      peer=peer_id, address=address)
        self._strangers[peer_id] = address
        if self._configuration is not None:
            self(self._configuration)

    def __call__(self, configuration: Configuration) -> None:
        self._configuration = configuration
        members = {node: address for node, address, _ in configuration.members()}
        self._known.update((node, address) for node, address in members.items() if address)
        if self._committed is not None:
            for node, address, _ in self._committed.members():
                members.setdefault(node, address)  # removed by an entry not committed yet: kept
        wanted = dict(members if members else self._seed)
        removed = self._removed()
        known = set(wanted) | configuration.member_ids
        for node in list(self._strangers):
            if node in removed or node in known:
                del self._strangers[node]  # removed for good, or a member now (linked as one)
        for node, address in self._strangers.items():
            wanted.setdefault(node, address)
        wanted = {node: address for node, address in wanted.items() if node != self._node_id}
        for node in self._departing:
            if node in self._known and node not in wanted and node != self._node_id:
                wanted[node] = self._known[node]  # kept, or linked again, until the core lets it go
        for node in sorted(set(self._addresses) - set(wanted)):
            self.log.info("closing the peer link to node {peer}: no longer a member", peer=node)
            self._links.remove(node)
            del self._addresses[node]
        for node, address in sorted(wanted.items()):
            if not address or self._addresses.get(node) == address:
                continue  # unknown (a configuration without addresses), or linked already
            try:
                host, port = parse_address(address)
            except ValueError as e:
                self.log.warn("no peer link to node {peer}: {error}", peer=node, error=str(e))
                continue
            if node in self._addresses:
                self._links.remove(node)
            self.log.info("opening a peer link to node {peer} at {address}", peer=node, address=address)
            self._links.add(node, host, port)
            self._addresses[node] = address
        # Accepted: the linked peers, and every other id of this cluster that
        # no committed configuration removed (Membership.accepts): a
        # configuration that lags behind the cluster's (a joining node's
        # first one, the bootstrap members') must not refuse the member
        # that leads now; a non-member that connects is linked back to.
        self._server.membership = Membership(
            self._node_id, self._cluster_id, frozenset(wanted) - set(self._strangers), removed
        )
