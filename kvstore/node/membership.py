# -*- test-case-name: tests.test_node_membership -*-
"""
What the node adds to the Raft core's membership (issue 13,
L{kvstore.raft.membership}): how a configuration is written into a
snapshot file's metadata and read back, and the leadership transfers the
node waits on for its clients.

The core decides everything about membership; the node only carries the
configuration where the core cannot (snapshot files, peer links, the
C{MEMBERS} and C{STATUS} replies) and turns the core's answers into client
replies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred

from kvstore.raft.membership import Configuration, MalformedConfiguration, encode_configuration_entry

__all__ = ["BOOTSTRAP_TERM", "TransferWaiter", "bootstrap_entry", "membership_from_meta", "membership_to_meta"]

#: The term of the bootstrap configuration entry.
BOOTSTRAP_TERM = 1


def bootstrap_entry(configuration: Configuration) -> tuple[int, int, bytes]:
    """
    The first log entry of a bootstrapping node (issue 13): the initial
    C{configuration} at index 1, term L{BOOTSTRAP_TERM}, written committed.

    As etcd does with its bootstrap ConfChange entries, every node that
    bootstraps the cluster writes the very same entry: same index, same
    term and, given the same member list (a derived cluster id makes nodes
    with differently spelled members refuse each other), the same bytes.
    So log matching holds without any leader having sent it, and from then
    on the membership comes from the log (or a snapshot), as every later
    change does; a node that joins receives it with the rest of the log.
    The node's term stays 0 until its first election (of term 1, whose
    leader appends its no-op at index 2): no leader ever writes an entry at
    index 1 of such a cluster, and any other entry at index 1 and term 1 in
    this project is a term-1 leader's no-op, which the state machine
    applies as a no-op too.  Data directories written before this
    entry existed have none, and keep taking their initial membership from
    the data directory's identity (L{kvstore.daemon.identity}).
    """
    return (1, BOOTSTRAP_TERM, encode_configuration_entry(configuration))


def membership_to_meta(configuration: Configuration) -> dict[str, object]:
    """
    The JSON-able form of C{configuration} that a snapshot file's metadata
    carries (L{kvstore.storage.snapshots.SnapshotMeta.membership}): voters
    and learners as C{[id, address]} pairs, and the removed ids.
    """
    return {
        "voters": [[node, address] for node, address in configuration.voters.items()],
        "learners": [[node, address] for node, address in configuration.learners.items()],
        "removed": sorted(configuration.removed),
    }


def membership_from_meta(data: Any) -> Configuration | None:
    """
    The configuration a snapshot's metadata holds (L{membership_to_meta}'s
    form; snapshots written before issue 13 have no C{removed}), or L{None}
    if it holds none (an empty value, or no voter): the caller then keeps
    the configuration it has.

    @raises MalformedConfiguration: if the value is there but malformed.
    """
    if not data:
        return None
    if not isinstance(data, dict):
        raise MalformedConfiguration(f"snapshot membership must be an object, got {data!r:.100}")
    try:
        voters = {int(node): str(address) for node, address in data.get("voters", [])}
        learners = {int(node): str(address) for node, address in data.get("learners", [])}
        removed = [int(node) for node in data.get("removed", [])]
    except (TypeError, ValueError) as e:
        raise MalformedConfiguration(f"snapshot membership is malformed: {e}") from None
    if not voters:
        return None
    return Configuration(voters, learners, removed)


@dataclass
class TransferWaiter:
    """A client's C{TRANSFER}: fires once C{target} leads, fails if another
    node does, if this node resumes leading, or at C{deadline}."""

    target: int
    deferred: Deferred[None]
    deadline: float
