# -*- test-case-name: tests.test_raft_cluster -*-
"""
L{InMemoryCluster}: a whole kvstore cluster in one process, on simulated
time, for unit tests that drive it step by step (unlike the simulator,
L{kvstore.testing.sim}, which runs a seeded fault schedule on its own).

Each member is the production L{Node} (built by L{build_node}) around the
production L{RaftCore} and L{KeyValueStateMachine}, over in-memory storage;
members talk through the simulator's L{SimulatedNetwork}, in order per
link and with fair weather, after a delay on a shared C{task.Clock}; any
link can be cut.  Nothing here reimplements Raft: it only
replaces the disk, the sockets and the wall clock, which is what makes the
tests deterministic and fast (seconds of simulated time take milliseconds).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kvstore.admin.wiring import Instruments, NoInstruments
from kvstore.node.build import build_node
from kvstore.node.node import Node
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import RaftCore, Role
from kvstore.raft.messages import Entry
from kvstore.storage import MemoryLog, MemoryMetadata
from kvstore.testing.sim.network import SimulatedNetwork, Weather

CLUSTER_ID = "simulated"


@dataclass
class InMemoryMember:
    """One member's durable storage, and its running node when it is up."""

    node_id: int
    log: MemoryLog = field(default_factory=MemoryLog)
    metadata: MemoryMetadata = field(default_factory=MemoryMetadata)
    node: Node | None = None

    @property
    def core(self) -> RaftCore:
        assert self.node is not None, f"node {self.node_id} is down"
        return self.node.core


class InMemoryCluster:
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
        instruments: Callable[[int, Clock], Instruments] | None = None,
        bootstrap: bool = False,
        **raft_options: Any,
    ) -> None:
        self.clock = Clock()
        self.rng = random.Random(seed)
        self.network = SimulatedNetwork(self.clock, self.rng, Weather(latency=(0.0005, 0.002)), in_order=True)
        self.ids = tuple(range(size))
        self._heartbeat_interval = heartbeat_interval
        self._election_timeout = election_timeout
        self._commit_timeout = commit_timeout
        self._read_timeout = read_timeout
        self._raft_options = raft_options
        # Start each empty member's log with the initial configuration, as
        # the service does (issue 13; build_node's bootstrap).
        self._bootstrap = bootstrap
        # Monitoring (kvstore.admin) for each member, made anew at each start.
        self._make_instruments = instruments
        self.instruments: dict[int, Instruments] = {}
        self.members = {i: InMemoryMember(i) for i in self.ids}
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
        instruments = NoInstruments() if self._make_instruments is None else self._make_instruments(node_id, self.clock)
        self.instruments[node_id] = instruments
        instruments.watch_log(member.log)
        node = build_node(
            config,
            clock=self.clock,
            rng=random.Random(self.rng.random()),
            log=member.log,
            metadata=member.metadata,
            cluster_id=CLUSTER_ID,
            peers=instruments.peers(self.network),
            member_addresses={i: f"127.0.0.1:{5000 + i}" for i in self.ids},
            commit_timeout=self._commit_timeout,
            read_timeout=self._read_timeout,
            metrics=instruments.metrics,
            bootstrap=self._bootstrap,
        )
        member.node = node
        self.network.attach(node_id, instruments.receive(node.receive))
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
