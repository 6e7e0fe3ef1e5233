# -*- test-case-name: tests.test_raft_legitimate_reordering -*-
"""
Since the node fail-stops on any exception from L{RaftCore.step} or a Raft
timer (issue 9 part 5), no message a correct peer sends may make a core
raise, however late, duplicated or reordered it arrives, and across crashes
that lose whatever was not yet durable (a torn WAL tail, a lost metadata
save).  These tests run whole clusters of cores on an adversarial network:
every message in flight may be delivered at any later point, twice, or
never; and they check that nothing raises, that each term has at most one
leader, that committed entries agree, and that no leader ever receives a
legitimate acknowledgement beyond its own log (the case the core now
ignores, which would otherwise hide a bug).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, RaftCore, Ready, Role
from kvstore.raft.messages import AppendEntriesResponse, Message

_HEARTBEAT = 0.05
_TIMEOUT = (0.3, 0.6)


@dataclass
class _Batch:
    """One Ready's durable part, waiting for its WAL sync and metadata save."""

    hard_state: HardState | None
    truncate_from: int | None
    entries: list
    persist_through: tuple[int, int]
    after_persist: list[Message]
    wal_done: bool = False
    meta_done: bool = False


@dataclass
class _Disk:
    """What survives a crash: only what a completed sync or save wrote."""

    hard_state: HardState = HardState()
    log: list = field(default_factory=list)


class _Cluster:
    """Cores on one clock, a network that holds every message until the
    test decides its fate, and disks whose WAL and metadata become durable
    independently (as the node's WAL sync and metadata save do)."""

    def __init__(self, size: int, seed: int) -> None:
        self.clock = Clock()
        self.ids = list(range(1, size + 1))
        self.disks = {i: _Disk() for i in self.ids}
        self.pending: dict[int, list[_Batch]] = {i: [] for i in self.ids}
        self.in_flight: list[Message] = []
        self.timer_errors: list[Failure] = []
        self.leaders: dict[int, int] = {}
        self.committed: dict[int, tuple] = {}
        self.acks_beyond_log: list[Message] = []
        self.isolated: set[int] = set()
        self._seed = seed
        self._boots = 0
        self.cores: dict[int, RaftCore] = {}
        for i in self.ids:
            self._boot(i)

    def _boot(self, node_id: int) -> None:
        self._boots += 1
        disk = self.disks[node_id]
        config = RaftConfig(
            node_id=node_id,
            peers=tuple(p for p in self.ids if p != node_id),
            heartbeat_interval=_HEARTBEAT,
            election_timeout_min=_TIMEOUT[0],
            election_timeout_max=_TIMEOUT[1],
        )
        core = RaftCore(config, self.clock, random.Random(self._seed * 1000 + self._boots), disk.hard_state, list(disk.log))
        core.start(on_timer_error=self.timer_errors.append)
        self.cores[node_id] = core

    def crash(self, node_id: int) -> None:
        """Lose every unsynced write and restart from the disk."""
        self.cores[node_id].stop()
        self.pending[node_id] = []
        self._boot(node_id)

    def deliver(self, position: int, keep: bool) -> None:
        message = self.in_flight[position] if keep else self.in_flight.pop(position)
        if {message.sender, message.receiver} & self.isolated:
            return
        core = self.cores[message.receiver]
        body = message.body
        if (
            isinstance(body, AppendEntriesResponse)
            and core.role is Role.LEADER
            and body.term == core.term
            and body.index > core.last_index
        ):
            self.acks_beyond_log.append(message)
        core.step(message)

    def sync(self, node_id: int, wal: bool) -> None:
        """Complete a node's WAL sync (everything appended so far becomes
        durable) or its metadata saves."""
        batches = self.pending[node_id]
        disk = self.disks[node_id]
        for batch in batches:
            if wal and not batch.wal_done:
                batch.wal_done = True
                if batch.truncate_from is not None:
                    del disk.log[batch.truncate_from - 1 :]
                disk.log.extend(batch.entries)
            if not wal and not batch.meta_done:
                batch.meta_done = True
                if batch.hard_state is not None:
                    disk.hard_state = batch.hard_state
        # A batch's acknowledgements leave once it and all before it are durable.
        while batches and batches[0].wal_done and batches[0].meta_done:
            done = batches.pop(0)
            self.in_flight.extend(done.after_persist)
            self.cores[node_id].persisted(*done.persist_through)

    def propose(self, payload: bytes) -> None:
        for core in self.cores.values():
            if core.role is Role.LEADER:
                core.propose(payload)

    def settle(self) -> None:
        """Hand out every core's Ready, as the node's processing pass does."""
        for node_id, core in self.cores.items():
            while core.has_ready():
                rd: Ready = core.ready()
                self.in_flight.extend(rd.messages)
                if rd.needs_persist() or rd.messages_after_persist:
                    self.pending[node_id].append(
                        _Batch(rd.hard_state, rd.truncate_from, list(rd.entries), rd.persist_through,
                               rd.messages_after_persist, meta_done=rd.hard_state is None)
                    )
                for index, term, payload in rd.committed:
                    first = self.committed.setdefault(index, (term, payload))
                    assert first == (term, payload), f"index {index}: {first} and {(term, payload)} both committed"
            if core.role is Role.LEADER:
                other = self.leaders.setdefault(core.term, node_id)
                assert other == node_id, f"two leaders in term {core.term}: {other} and {node_id}"


_ACTIONS = {
    "deliver": 40, "deliver-late": 4, "deliver-keep": 2, "drop": 2, "tick": 6,
    "wal": 30, "meta": 30, "crash": 1, "propose": 6, "isolate": 1, "heal": 0.25,
}


def _run(seed: int, size: int, steps: int) -> _Cluster:
    """Run a cluster for C{steps} actions drawn from C{seed}: delivering
    the oldest messages mostly, any message sometimes (reordering, by far
    more than a timeout), a copy of one (duplication), dropping one,
    advancing time, completing a sync or save, crashing a node, proposing,
    cutting one node off (what it sends or is sent meanwhile is lost) and
    healing."""
    rng = random.Random(seed)
    cluster = _Cluster(size, seed)
    for step in range(steps):
        action = rng.choices(list(_ACTIONS), weights=list(_ACTIONS.values()))[0]
        node = rng.choice(cluster.ids)
        if action.startswith("deliver") or action == "drop":
            if not cluster.in_flight:
                action = "tick"
            else:
                span = len(cluster.in_flight)
                position = rng.randrange(span) if action == "deliver-late" else rng.randrange(min(3, span))
                if action == "drop":
                    cluster.in_flight.pop(position)
                else:
                    cluster.deliver(position, keep=action == "deliver-keep")
        if action == "tick":
            cluster.clock.advance(rng.choice([0.01, 0.01, 0.01, _HEARTBEAT, _HEARTBEAT, _TIMEOUT[0], _TIMEOUT[1] + 0.01]))
        elif action in ("wal", "meta"):
            cluster.sync(node, wal=action == "wal")
        elif action == "crash":
            cluster.crash(node)
        elif action == "propose":
            cluster.propose(b"p%d" % step)
        elif action == "isolate":
            cluster.isolated = {node}
        elif action == "heal":
            cluster.isolated = set()
        cluster.settle()
    return cluster


class LegitimateMessagesNeverRaiseTests(SynchronousTestCase):
    """Late, duplicated, reordered and lost messages of correct peers never make a core raise."""

    def _check(self, seed: int, size: int) -> None:
        cluster = _run(seed, size, 800)
        self.assertEqual(cluster.timer_errors, [])
        self.assertEqual(cluster.acks_beyond_log, [])

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.integers(0, 2**32))
    def test_three_nodes(self, seed: int) -> None:
        """A three-node cluster under reordering, duplication, loss and crashes raises nothing and stays safe."""
        self._check(seed, 3)

    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.integers(0, 2**32))
    def test_four_nodes(self, seed: int) -> None:
        """A four-node cluster under reordering, duplication, loss and crashes raises nothing and stays safe."""
        self._check(seed, 4)
