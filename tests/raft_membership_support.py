# -*- test-case-name: tests.test_raft_membership_changes -*-
"""
What the membership tests of the Raft core share: configurations with
addresses, and L{Cores}, a handful of L{RaftCore}s each on its own
L{Clock} (so one node's timers fire without the others'), joined by a
message pump that delivers only among the nodes a test allows and checks
that no two nodes ever commit different entries at one index.
"""

from __future__ import annotations

import random
from typing import Callable, Iterable

from twisted.internet.task import Clock

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, RaftCore, Ready, ReadState, Role, SnapshotPoint
from kvstore.raft.membership import Configuration
from kvstore.raft.messages import EntryTuple, Message

HEARTBEAT = 0.05
TIMEOUT = (0.3, 0.6)


def address(node_id: int) -> str:
    return f"127.0.0.1:{5000 + node_id}"


def configuration(voters: Iterable[int], learners: Iterable[int] = (), removed: Iterable[int] = ()) -> Configuration:
    """A configuration whose members have the addresses of L{address}."""
    return Configuration({i: address(i) for i in voters}, {i: address(i) for i in learners}, removed)


def raft_config(node_id: int, members: Configuration, **options: object) -> RaftConfig:
    options.setdefault("pre_vote", False)
    return RaftConfig(
        node_id=node_id,
        peers=tuple(sorted(members.voter_ids - {node_id})),
        heartbeat_interval=HEARTBEAT,
        election_timeout_min=TIMEOUT[0],
        election_timeout_max=TIMEOUT[1],
        **options,  # type: ignore[arg-type]
    )


def make_core(
    node_id: int,
    members: Configuration,
    clock: Clock | None = None,
    entries: Iterable[EntryTuple] = (),
    hard_state: HardState = HardState(),
    snapshot: SnapshotPoint | None = None,
    commit_index: int = 0,
    plants: frozenset[str] = frozenset(),
    start: bool = True,
    **options: object,
) -> RaftCore:
    """A core starting from the configuration C{members} (the bootstrap
    one, or the snapshot's with C{snapshot})."""
    core = RaftCore(
        raft_config(node_id, members, **options),
        clock if clock is not None else Clock(),
        random.Random(node_id),
        hard_state,
        list(entries),
        plants=plants,
        snapshot=snapshot,
        commit_index=commit_index,
        configuration=members,
    )
    if start:
        core.start()
    return core


class Conflict(AssertionError):
    """Two nodes committed different entries at one index."""


class Cores:
    """
    Cores on their own clocks and a message pump between them.

    @ivar committed: index -> (term, payload) of every entry any node was
        handed as committed; a different one at the same index raises
        L{Conflict} (State Machine Safety).
    @ivar commit_terms: index -> the term of the node that first reported
        it committed: the entry was committed in that term or earlier, so
        every leader of a later term must hold it (Leader Completeness).
    @ivar reads: node id -> the reads its Readys answered.
    """

    def __init__(
        self, members: Configuration, ids: Iterable[int] | None = None, plants: frozenset[str] = frozenset(),
        **options: object,
    ) -> None:
        self.members = members
        self.plants = plants
        self.options = options
        self.clocks: dict[int, Clock] = {}
        self.cores: dict[int, RaftCore] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.commit_terms: dict[int, int] = {}
        self.reads: dict[int, list[ReadState]] = {}
        self.bootstrap: dict[int, Configuration] = {}
        for node_id in sorted(ids if ids is not None else members.member_ids):
            self.bootstrap[node_id] = members
            self.clocks[node_id] = Clock()
            self.cores[node_id] = make_core(node_id, members, self.clocks[node_id], plants=plants, **options)

    def __getitem__(self, node_id: int) -> RaftCore:
        return self.cores[node_id]

    def add(self, node_id: int, members: Configuration, **options: object) -> RaftCore:
        """Start a new node, empty, from the configuration C{members} (for
        a joining node, typically one without itself, or without voters)."""
        self.clocks[node_id] = Clock()
        self.bootstrap[node_id] = members
        core = make_core(node_id, members, self.clocks[node_id], plants=self.plants, **{**self.options, **options})
        self.cores[node_id] = core
        return core

    def restart(self, node_id: int, members: Configuration | None = None) -> RaftCore:
        """Replace C{node_id}'s core by one built from what it persisted
        (its log and vote; the configuration it started from, or
        C{members}): a crash and restart, which also forgets the leader it
        knew."""
        old = self.cores[node_id]
        self.drain(node_id)
        self.clocks[node_id] = Clock()
        core = make_core(
            node_id,
            members if members is not None else self.bootstrap[node_id],
            self.clocks[node_id],
            entries=[tuple(e) for e in old.entries(1, old.last_index)],  # type: ignore[misc]
            hard_state=HardState(old.term, old.voted_for),
            plants=self.plants,
            **self.options,
        )
        self.cores[node_id] = core
        return core

    def drain(self, node_id: int) -> Ready:
        """Take a Ready from C{node_id}, persist it at once and record what
        it commits."""
        core = self.cores[node_id]
        rd = core.ready()
        if rd.needs_persist():
            core.persisted(*rd.persist_through)
        self.reads.setdefault(node_id, []).extend(rd.reads)
        for index, term, payload in rd.committed:
            self.commit_terms.setdefault(index, core.term)
            seen = self.committed.setdefault(index, (term, payload))
            if seen != (term, payload):
                raise Conflict(f"node {node_id} committed {(term, payload)!r} at {index}, another {seen!r}")
        return rd

    def pump(
        self, among: Iterable[int] | None = None, drop: Callable[[Message], bool] = lambda m: False,
        max_rounds: int = 1000,
    ) -> list[Message]:
        """
        Deliver messages among the nodes C{among} (all by default) until
        none are left, dropping those C{drop} picks; messages to or from
        anyone else are lost.  Return what was delivered.
        """
        allowed = set(among) if among is not None else set(self.cores)
        delivered: list[Message] = []
        for _ in range(max_rounds):
            outgoing: list[Message] = []
            for node_id in sorted(allowed):
                rd = self.drain(node_id)
                outgoing += rd.messages + rd.messages_after_persist
            if not outgoing:
                return delivered
            for message in outgoing:
                if message.receiver in allowed and not drop(message):
                    delivered.append(message)
                    self.cores[message.receiver].step(message)
        raise AssertionError("messages kept flowing")

    def campaign(self, node_id: int) -> None:
        """Let C{node_id}'s election timer fire (and only its)."""
        self.clocks[node_id].advance(TIMEOUT[1] + 0.01)

    def elect(self, node_id: int, among: Iterable[int] | None = None) -> RaftCore:
        """Make C{node_id} leader with the votes of C{among}, and commit its
        no-op there."""
        self.campaign(node_id)
        self.pump(among)
        core = self.cores[node_id]
        assert core.role is Role.LEADER, (node_id, core.role)
        return core

    def expire_lease(self, node_id: int) -> None:
        """Move C{node_id}'s clock just past its leader stickiness, not far
        enough for its own election timer (at least the minimum timeout
        after it last heard from the leader)."""
        self.clocks[node_id].advance(TIMEOUT[0] + 1e-6)

    def heartbeat(
        self, leader: int, among: Iterable[int] | None = None, beats: int = 1,
        drop: Callable[[Message], bool] = lambda m: False,
    ) -> None:
        """Let C{leader}'s heartbeat timer fire C{beats} times, pumping after each."""
        for _ in range(beats):
            self.clocks[leader].advance(HEARTBEAT)
            self.pump(among, drop)
