# -*- test-case-name: tests.test_raft_cluster -*-
"""
A whole kvstore cluster in one process, on simulated time.

Each member is the production L{Node} around the production L{RaftCore} and
L{KeyValueStateMachine}, over in-memory storage; members talk through a
L{SimulatedNetwork} that delivers messages after a delay on a shared
C{task.Clock} and can cut any link.  Nothing here reimplements Raft: it only
replaces the disk, the sockets and the wall clock, which is what makes the
tests deterministic and fast (seconds of simulated time take milliseconds).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kvstore.build import build_node
from kvstore.node import Node
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import RaftCore, Role
from kvstore.raft.messages import Entry, Message
from kvstore.storage import MemoryLog, MemoryMetadata

CLUSTER_ID = "simulated"


class SimulatedNetwork:
    """
    Delivers messages between members after a random delay, in the order a
    TCP connection would (per link, a message is never delivered before an
    earlier one on the same link), unless told to drop them.

    @ivar blocked: directed links C{(sender, receiver)} that drop everything.
    @ivar filters: callables C{filter(message) -> bool}; a message for which
        any returns true is dropped when sent (to lose only some message
        types, for example).
    @ivar observers: callables C{observer(event, message)} told of every
        message as it is C{"sent"}, C{"dropped"} or C{"delivered"}; tests
        use them to count messages in flight.
    """

    def __init__(self, clock: Clock, rng: random.Random, latency: tuple[float, float] = (0.0005, 0.002)) -> None:
        self._clock = clock
        self._rng = rng
        self._latency = latency
        self.blocked: set[tuple[int, int]] = set()
        self._deliver: dict[int, Callable[[Message], None]] = {}
        self._last_arrival: dict[tuple[int, int], float] = {}
        self.filters: list[Callable[[Message], bool]] = []
        self.observers: list[Callable[[str, Message], None]] = []
        self.sent = 0
        self.dropped = 0

    def _notify(self, event: str, message: Message) -> None:
        for observer in self.observers:
            observer(event, message)

    def attach(self, node_id: int, deliver: Callable[[Message], None]) -> None:
        self._deliver[node_id] = deliver

    def detach(self, node_id: int) -> None:
        self._deliver.pop(node_id, None)

    def send(self, message: Message) -> None:
        link = (message.sender, message.receiver)
        self.sent += 1
        self._notify("sent", message)
        if link in self.blocked or any(f(message) for f in self.filters):
            self.dropped += 1
            self._notify("dropped", message)
            return
        now = self._clock.seconds()
        arrival = max(now + self._rng.uniform(*self._latency), self._last_arrival.get(link, 0.0))
        self._last_arrival[link] = arrival
        self._clock.callLater(arrival - now, self._arrive, message)

    def _arrive(self, message: Message) -> None:
        if (message.sender, message.receiver) in self.blocked:
            self.dropped += 1
            self._notify("dropped", message)
            return
        deliver = self._deliver.get(message.receiver)
        if deliver is None:
            self._notify("dropped", message)
            return
        self._notify("delivered", message)
        deliver(message)

    def isolate(self, node_id: int, members: Iterable[int]) -> None:
        """Cut every link to and from C{node_id}."""
        for other in members:
            if other != node_id:
                self.blocked.add((node_id, other))
                self.blocked.add((other, node_id))

    def partition(self, *groups: Iterable[int]) -> None:
        """Allow traffic only within each group."""
        sets = [set(g) for g in groups]
        for a in sets:
            for b in sets:
                if a is not b:
                    for x in a:
                        for y in b:
                            self.blocked.add((x, y))

    def heal(self) -> None:
        self.blocked.clear()


@dataclass
class SimulatedMember:
    """One member's durable storage, and its running node when it is up."""

    node_id: int
    log: MemoryLog = field(default_factory=MemoryLog)
    metadata: MemoryMetadata = field(default_factory=MemoryMetadata)
    node: Node | None = None

    @property
    def core(self) -> RaftCore:
        assert self.node is not None, f"node {self.node_id} is down"
        return self.node.core


class SimulatedCluster:
    """
    C{size} members on one L{Clock}.  Use L{run} to let simulated time pass.
    """

    def __init__(
        self,
        size: int = 3,
        seed: int = 0,
        *,
        heartbeat_interval: float = 0.05,
        election_timeout: tuple[float, float] = (0.3, 0.6),
        commit_timeout: float = 5.0,
        read_timeout: float = 5.0,
        **raft_options: Any,
    ) -> None:
        self.clock = Clock()
        self.rng = random.Random(seed)
        self.network = SimulatedNetwork(self.clock, self.rng)
        self.ids = tuple(range(size))
        self._heartbeat_interval = heartbeat_interval
        self._election_timeout = election_timeout
        self._commit_timeout = commit_timeout
        self._read_timeout = read_timeout
        self._raft_options = raft_options
        self.members = {i: SimulatedMember(i) for i in self.ids}
        for i in self.ids:
            self.start(i)

    # -- membership of the simulation ---------------------------------

    def start(self, node_id: int) -> Node:
        """Start (or restart) a member from its durable storage."""
        member = self.members[node_id]
        assert member.node is None, f"node {node_id} is already running"
        config = RaftConfig(
            node_id=node_id,
            peers=tuple(i for i in self.ids if i != node_id),
            heartbeat_interval=self._heartbeat_interval,
            election_timeout_min=self._election_timeout[0],
            election_timeout_max=self._election_timeout[1],
            **self._raft_options,
        )
        node = build_node(
            config,
            clock=self.clock,
            rng=random.Random(self.rng.random()),
            log=member.log,
            metadata=member.metadata,
            cluster_id=CLUSTER_ID,
            peers=self.network,
            member_addresses={i: f"127.0.0.1:{5000 + i}" for i in self.ids},
            commit_timeout=self._commit_timeout,
            read_timeout=self._read_timeout,
        )
        member.node = node
        self.network.attach(node_id, node.receive)
        node.start()
        return node

    def crash(self, node_id: int) -> None:
        """Stop a member abruptly.  In-memory storage keeps what was synced
        (everything, as it syncs synchronously); the state machine and all
        volatile Raft state are lost."""
        member = self.members[node_id]
        assert member.node is not None
        self.network.detach(node_id)
        member.node.stop()
        member.node = None
        # Reopen storage as a restarted process would find it.
        durable = [e for e in member.log.entries if e.index <= member.log.durable_index]
        member.log = MemoryLog(durable)
        member.metadata = MemoryMetadata(member.metadata.durable_state)

    # -- driving time --------------------------------------------------

    def run(self, seconds: float, step: float = 0.001, check: Callable[[], None] | None = None) -> None:
        """Advance simulated time by C{seconds}, firing due calls, and call
        C{check()} (an invariant assertion) after every step."""
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))
            if check is not None:
                check()

    def run_until(
        self,
        condition: Callable[[], bool],
        timeout: float = 10.0,
        step: float = 0.001,
        check: Callable[[], None] | None = None,
    ) -> bool:
        """Advance time until C{condition()} holds; False on timeout.
        C{check()}, if given, runs after every step."""
        end = self.clock.seconds() + timeout
        while not condition():
            if self.clock.seconds() >= end:
                return False
            self.clock.advance(step)
            if check is not None:
                check()
        return True

    def resolve(self, d: Deferred[Any], timeout: float = 10.0) -> Any:
        """Run until C{d} fires; return its result (a Failure on error)."""
        box: list[Any] = []
        d.addBoth(box.append)
        if not self.run_until(lambda: bool(box), timeout):
            raise AssertionError(f"deferred did not fire within {timeout} simulated seconds")
        return box[0]

    # -- observation ---------------------------------------------------

    def running(self) -> list[int]:
        return [i for i in self.ids if self.members[i].node is not None]

    def node(self, node_id: int) -> Node:
        node = self.members[node_id].node
        assert node is not None, f"node {node_id} is down"
        return node

    def leaders(self) -> list[int]:
        """Running members that believe they lead, highest term first."""
        leaders = [i for i in self.running() if self.node(i).core.role is Role.LEADER]
        return sorted(leaders, key=lambda i: -self.node(i).core.term)

    def leader(self) -> int | None:
        """The leader with the highest term, if any."""
        leaders = self.leaders()
        return leaders[0] if leaders else None

    def log_of(self, node_id: int) -> list[Entry]:
        """The running member's whole in-memory Raft log."""
        core = self.node(node_id).core
        return core.entries(1, core.last_index)

    def data_of(self, node_id: int) -> dict[str, str]:
        """The running member's state machine contents."""
        return dict(self.node(node_id).state_machine._data)

    def wait_for_leader(self, timeout: float = 10.0, among: Iterable[int] | None = None) -> int:
        allowed = set(among) if among is not None else set(self.ids)

        def ready() -> bool:
            leader = self.leader()
            return leader is not None and leader in allowed and self.node(leader).core.commit_index > 0 and (
                self.node(leader).core.term_at(self.node(leader).core.commit_index) == self.node(leader).core.term
            )

        if not self.run_until(ready, timeout):
            raise AssertionError(f"no leader among {sorted(allowed)} within {timeout} simulated seconds")
        leader = self.leader()
        assert leader is not None
        return leader
