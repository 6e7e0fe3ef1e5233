# -*- test-case-name: tests.test_sim_churn -*-
"""
Membership churn in a simulated run (issue 13): nodes are added, removed
and replaced, and leadership is transferred, while the usual crashes,
partitions, message loss and snapshots go on.

L{MembershipChurn} plays an impatient operator.  During the fault phase it
starts, at random times:

  - I{add}: boot a new node (a new id, an empty data directory, an empty
    configuration and the current members as its seed, as C{--join} does)
    and send C{ADDNODE} to the leader (L{kvstore.node.node.Node.add_node}); the
    leader's core promotes the learner by itself once it has caught up;
  - I{remove}: C{REMOVENODE} a voter or a learner, sometimes the leader
    itself; once the removal is acknowledged the node keeps running a little
    (a removed node must not disrupt the cluster) and is then stopped for
    good;
  - I{replace}: an add, then the removal of an old member as soon as the add
    is acknowledged (often while the new learner's promotion is in flight,
    so the leader must refuse one of the two);
  - I{transfer}: C{TRANSFER} to a voter (L{kvstore.node.node.Node.transfer_leadership}).

Each command goes through the node's admin methods, as the client port's
C{ADDNODE}, C{REMOVENODE} and C{TRANSFER} do, and is retried the way an
operator would: after C{Not leader}, C{Membership change in progress}, an
unknown outcome or a timeout, and at once when a new leader appears.  The
commands are idempotent, so a retry of an applied change is a no-op.
Voters stay between 3 and 5 (a seed that starts with fewer never removes,
one with more never adds).

L{PeerLinkModel} stands in for the TCP peer links: every node runs the
production L{FollowConfiguration} (the links and the peer server's accepted
ids follow the core's configuration), and a message from A to B passes only
if A has a link to B and B's server accepted A when the link was
established (the handshake checks membership; an established connection
stays until either end drops it or crashes).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.python.failure import Failure

from kvstore.errors import NotLeader, OutcomeUnknown, Refused, Unavailable
from kvstore.node.peer_membership import FollowConfiguration
from kvstore.protocols.peer import Membership
from kvstore.raft.membership import Configuration
from kvstore.raft.messages import Message

if TYPE_CHECKING:
    from kvstore.node.node import Node
    from kvstore.testing.sim.world import Simulation

__all__ = ["COVERAGE", "MembershipChurn", "PeerLinkModel", "address_of"]

#: The soak's membership coverage counters (the monitor counts the
#: committed changes; this module the commands).
COVERAGE = ("membership_changes", "members_added", "learners_promoted", "members_removed", "transfers",
            "transfers_done", "changes_refused", "removed_leaders")

MIN_VOTERS = 3
MAX_MEMBERS = 5


def address_of(node_id: int) -> str:
    """The simulated address of a node (a C{host:port} the peer code parses)."""
    return f"sim-{node_id}:7000"


class _Links:
    """One node's peer links (L{kvstore.protocols.peer_links.PeerLinks}'s add/remove)."""

    def __init__(self, model: PeerLinkModel, node_id: int) -> None:
        self._model = model
        self._node_id = node_id

    def add(self, peer_id: int, host: str, port: int) -> None:
        self._model.links.setdefault(self._node_id, set()).add(peer_id)

    def remove(self, peer_id: int) -> None:
        self._model.links.setdefault(self._node_id, set()).discard(peer_id)
        self._model.connected.discard((self._node_id, peer_id))


@dataclass
class _Server:
    membership: Membership


class PeerLinkModel:
    """See the module docstring."""

    def __init__(self, cluster_id: str) -> None:
        self._cluster_id = cluster_id
        self.links: dict[int, set[int]] = {}
        self.servers: dict[int, _Server] = {}
        self.follows: dict[int, FollowConfiguration] = {}
        self.connected: set[tuple[int, int]] = set()
        self.refused = 0

    def attach(self, node_id: int, node: Node, seed: dict[int, str]) -> None:
        """Give a new incarnation of C{node_id} its links and peer server,
        kept in step with its core's configuration by the production code."""
        self.detach(node_id)
        self.links[node_id] = set()
        server = self.servers[node_id] = _Server(Membership(node_id, self._cluster_id, frozenset()))
        follow = FollowConfiguration(node_id, self._cluster_id, _Links(self, node_id), server, {}, seed=seed)
        self.follows[node_id] = follow
        follow(node.core.configuration)
        node.configuration_observers.append(follow)
        node.departing_observers.append(follow.departing_changed)
        node.committed_configuration_observers.append(follow.committed_changed)
        node.peer_connected = lambda peer: self.reachable(node_id, peer)

    def detach(self, node_id: int) -> None:
        """C{node_id} stopped: its connections, both ways, are gone."""
        self.links.pop(node_id, None)
        self.servers.pop(node_id, None)
        self.follows.pop(node_id, None)
        self.connected = {pair for pair in self.connected if node_id not in pair}

    def reachable(self, sender: int, receiver: int) -> bool:
        if (sender, receiver) in self.connected:
            return True
        server = self.servers.get(receiver)
        return (receiver in self.links.get(sender, ()) and server is not None
                and server.membership.accepts(sender))

    def refuses(self, message: Message) -> bool:
        """The network filter: whether no connection carries C{message}."""
        pair = (message.sender, message.receiver)
        if pair in self.connected:
            return False
        if message.receiver not in self.links.get(message.sender, ()):
            self.refused += 1
            return True
        server = self.servers.get(message.receiver)
        if server is None:
            return False  # the receiver is down: lost on arrival, no connection yet
        if not server.membership.accepts(message.sender):
            self.refused += 1
            return True
        self.connected.add(pair)
        follow = self.follows.get(message.receiver)
        if follow is not None and message.sender not in server.membership.peer_ids:
            # The hello names the sender's address: the receiver links back.
            follow.stranger(message.sender, address_of(message.sender))
        return False


@dataclass
class _Op:
    kind: str  # "add", "remove", "transfer"
    target: int | None = None  # the node added, removed, or handed leadership
    then_remove: int | None = None  # replace: remove this one once the add is acknowledged
    attempts: int = 0
    token: int = 0
    waiting: bool = False  # an attempt is in flight
    leader_tried: int | None = None
    history: list[str] = field(default_factory=list)


class MembershipChurn:
    """See the module docstring.  C{enabled} is drawn per seed by the simulation."""

    def __init__(self, sim: Simulation, rng: random.Random, enabled: bool) -> None:
        self.sim = sim
        self.rng = rng
        self.enabled = enabled
        self.gap = rng.choice((0.25, 0.4, 0.7))
        self.linger = rng.choice((0.0, 0.1, 0.4))  # how long a removed node keeps running
        self.ops: list[_Op] = []
        self.decommissioned: set[int] = set()
        self.next_id = max(sim.ids) + 1
        self.min_voters = min(MIN_VOTERS, len(sim.ids))
        self.max_members = max(MAX_MEMBERS, len(sim.ids))
        self._token = 0
        self._last_leader: int | None = None

    def describe(self) -> str:
        return f"churn gap={self.gap} linger={self.linger}" if self.enabled else "churn off"

    def idle(self) -> bool:
        return not self.ops

    # -- schedule ------------------------------------------------------------

    def schedule(self, fault_time: float) -> None:
        if not self.enabled:
            return
        rng = self.rng
        t = rng.uniform(0.3, 0.3 + self.gap)
        while t < fault_time:
            kind = rng.choices(("add", "remove", "replace", "transfer"), weights=(3, 2, 3, 3))[0]
            self.sim.clock.callLater(t, self._start, kind)
            t += rng.expovariate(1 / self.gap)

    def _leader_configuration(self) -> tuple[int, Configuration] | None:
        leader = self.sim.leader()
        if leader is None:
            return None
        node = self.sim.members[leader].node
        assert node is not None
        return leader, node.core.configuration

    def _start(self, kind: str) -> None:
        sim = self.sim
        if sim._healed:
            return
        found = self._leader_configuration()
        if found is None:
            return
        leader, configuration = found
        busy = {op.kind for op in self.ops}
        rng = self.rng
        if kind == "transfer":
            voters = sorted(configuration.voter_ids - {leader})
            if voters and "transfer" not in busy:
                self._begin(_Op("transfer", rng.choice(voters)))
            return
        if self._joiner_waiting():
            # As an operator does: no other change until the node added last
            # has heard from the cluster.  (A joining node accepts peer
            # connections only from the members it joined through until it
            # learns the configuration: see docs/simulation.md.)
            return
        if kind in ("add", "replace"):
            if "add" in busy or len(configuration.member_ids) >= self.max_members:
                return
            old = None
            if kind == "replace":
                candidates = sorted(configuration.voter_ids)
                old = rng.choice(candidates) if candidates else None
            new = self.next_id
            self.next_id += 1
            self._begin(_Op("add", new, then_remove=old))
            return
        if "remove" in busy or len(configuration.voter_ids) <= self.min_voters:
            return
        members = sorted(configuration.member_ids)
        target = leader if rng.random() < 0.3 else rng.choice(members)
        self._begin(_Op("remove", target))

    def _joiner_waiting(self) -> bool:
        """Whether a node that joined still knows no configuration."""
        for node_id in self.sim.ids:
            member = self.sim.members[node_id]
            if member.joined and node_id not in self.decommissioned:
                node = member.node
                if node is None or not node.core.configuration.member_ids:
                    return True
        return False

    def _begin(self, op: _Op) -> None:
        sim = self.sim
        self.ops.append(op)
        sim.fault(f"churn-{op.kind} {op.target}" + (f" (replacing {op.then_remove})" if op.then_remove is not None else ""))
        if op.kind == "add":
            assert op.target is not None
            # An empty data directory, an empty configuration and the
            # current members as its seed: a node started with --join.
            seed = {}
            found = self._leader_configuration()
            if found is not None:
                seed = {i: address_of(i) for i in found[1].member_ids}
            sim.add_member(op.target, seed)
        self._attempt(op)

    # -- attempts --------------------------------------------------------------

    def _attempt(self, op: _Op) -> None:
        sim = self.sim
        if op not in self.ops or op.waiting:
            return
        leader = sim.leader()
        if leader is None:
            self._retry(op)
            return
        node = sim.members[leader].node
        assert node is not None and op.target is not None
        op.attempts += 1
        op.leader_tried = leader
        self._token += 1
        op.token = token = self._token
        op.waiting = True
        if op.kind == "add":
            d = node.add_node(op.target, address_of(op.target))
        elif op.kind == "remove":
            d = node.remove_node(op.target)
        else:
            sim.stats["transfers"] += 1
            d = node.transfer_leadership(op.target)
        sim.event(f"churn {op.kind} {op.target} via {leader} (attempt {op.attempts})")
        sim.clock.callLater(sim.commit_timeout + 0.2, self._timeout, op, token)
        d.addBoth(self._result, op, token, leader)

    def _timeout(self, op: _Op, token: int) -> None:
        if op.token == token and op.waiting:
            op.waiting = False
            op.token = 0
            self._retry(op)

    def _retry(self, op: _Op) -> None:
        if op.kind == "transfer" and (op.attempts >= 2 or self.sim._healed):
            self._finish(op, "given up")
            return
        self.sim.clock.callLater(self.rng.uniform(0.02, 0.15), self._attempt, op)

    def _result(self, result: Any, op: _Op, token: int, via: int) -> None:
        if op.token != token:
            return None
        op.waiting = False
        op.token = 0
        sim = self.sim
        if not isinstance(result, Failure):
            if op.kind == "transfer":
                sim.stats["transfers_done"] += 1
            elif op.kind == "remove":
                if op.target == via:
                    sim.stats["removed_leaders"] += 1
                assert op.target is not None
                sim.clock.callLater(self.rng.uniform(0.0, self.linger) if self.linger else 0.0,
                                    self._decommission, op.target)
            self._finish(op, "done")
            if op.kind == "add" and op.then_remove is not None and not sim._healed:
                self._begin(_Op("remove", op.then_remove))
            return None
        error = result.value
        if isinstance(error, Refused):
            sim.stats["changes_refused"] += 1
            if op.kind == "transfer" or not _transient(error):
                self._finish(op, f"refused: {error}")
                return None
        elif not isinstance(error, (NotLeader, Unavailable, OutcomeUnknown)):
            sim.monitor.violate("unexpected-error", f"churn {op.kind} {op.target} got {result.getTraceback()}")
            self._finish(op, "error")
            return None
        self._retry(op)
        return None

    def _finish(self, op: _Op, outcome: str) -> None:
        if op in self.ops:
            self.ops.remove(op)
        self.sim.event(f"churn {op.kind} {op.target} {outcome}")

    def after_step(self) -> None:
        """Retry a waiting command at once when a new leader appears (as an
        operator's script does), which is also when a leader is most likely
        not to have committed an entry of its term yet."""
        if not self.ops:
            return
        leader = self.sim.leader()
        if leader == self._last_leader:
            return
        self._last_leader = leader
        if leader is None:
            return
        for op in list(self.ops):
            if not op.waiting and op.leader_tried != leader:
                self._attempt(op)

    def _decommission(self, node_id: int) -> None:
        """The removal of C{node_id} was acknowledged: its machine goes away."""
        self.decommissioned.add(node_id)
        self.sim.retire(node_id)


def _transient(error: Refused) -> bool:
    """Whether a refused change may succeed if sent again later."""
    text = str(error)
    return "in progress" in text or "not committed an entry" in text or "retry" in text

