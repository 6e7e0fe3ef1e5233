# -*- test-case-name: tests.test_build -*-
"""
The one place a node is wired.

Everything that runs a node -- the twistd service (L{kvstore.service}), the
simulator (L{kvstore.testing.sim.world}), the in-memory cluster
(L{kvstore.testing.memory_cluster}) and the node tests -- hands
L{build_node} its adapters and gets back a wired L{Node}: the Raft core
recovered from the stored term, vote and log, the state machine, and the
metadata store seen through L{HardStateStore}.  What differs between them is
only the adapters: a reactor or a C{task.Clock}, a seeded or a system RNG,
the real write-ahead log or an in-memory one, TCP peer links or a simulated
network, and what to do when the node stops itself.  Storage arrives
already open: whoever opens it chooses its file system and the runner its
fsyncs go through (a thread, the simulated disk, a test's manual runner), and
learns of a corrupt log before any node exists.
"""

from __future__ import annotations

import random
from typing import Callable, Mapping, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from kvstore.monitoring import NO_METRICS, NodeMetrics
from kvstore.node import LogStorage, Node, PeerSender
from kvstore.protocols.peer import encoded_entry_bytes
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, RaftCore
from kvstore.statemachine import KeyValueStateMachine
from kvstore.storage import MetadataRecord

__all__ = ["HardStateStore", "RecoverableLog", "StoredMetadata", "build_node"]


class RecoverableLog(LogStorage, Protocol):
    """A log the node can start from: what the node writes, plus the
    entries recovered at open."""

    def entry_tuples(self) -> list[tuple[int, int, bytes]]: ...


class StoredMetadata(Protocol):
    """A metadata store (L{kvstore.storage.MetadataStore} or its in-memory
    twin): the record recovered at open, and atomic saves."""

    @property
    def state(self) -> MetadataRecord: ...

    def save(self, state: MetadataRecord) -> Deferred[None]: ...


class HardStateStore:
    """
    The metadata store as the node sees it: Raft's L{HardState} in and out,
    saved together with the cluster id the data directory was bootstrapped
    with (storage knows no Raft, so it keeps its own record type).
    """

    def __init__(self, metadata: StoredMetadata, cluster_id: str) -> None:
        self._metadata = metadata
        self._cluster_id = cluster_id

    def load(self) -> HardState:
        """The term and vote recovered when the store was opened."""
        stored = self._metadata.state
        return HardState(stored.term, stored.voted_for)

    def save(self, state: HardState) -> Deferred[None]:
        """Save C{state} durably; the Deferred fires once it is."""
        return self._metadata.save(MetadataRecord(state.term, state.voted_for, self._cluster_id))


def build_node(
    config: RaftConfig,
    *,
    clock: IReactorTime,
    rng: random.Random,
    log: RecoverableLog,
    metadata: StoredMetadata,
    cluster_id: str,
    peers: PeerSender,
    member_addresses: Mapping[int, str],
    state_machine: KeyValueStateMachine | None = None,
    commit_timeout: float = 5.0,
    read_timeout: float = 5.0,
    on_fatal: Callable[[Failure], None] = lambda failure: None,
    extra_status: Callable[[], dict[str, object]] = dict,
    plants: frozenset[str] = frozenset(),
    read_id_rng: random.Random | None = None,
    metrics: NodeMetrics = NO_METRICS,
) -> Node:
    """
    Wire a node from its adapters; it does nothing until C{start()}.

    @param config: the validated Raft timers and replication limits
        (L{RaftConfig.validate} runs here, once more, as the core starts).
    @param clock: schedules every timer (the reactor, or a C{task.Clock}).
    @param rng: randomizes election timeouts.
    @param log: the opened log; the core starts from its entries, sharing
        the log's own tuples rather than holding every entry twice.
    @param metadata: the opened metadata store; the core starts from its
        term and vote, and saves go through L{HardStateStore}.
    @param cluster_id: recorded with every save of the term and vote.
    @param peers: delivers messages to the other members.
    @param member_addresses: each member's client address, named in
        C{Not leader} errors.
    @param on_fatal: told when the node stops itself (fail-stop).
    @param extra_status: more C{name=value} pairs for C{STATUS}.
    @param plants: planted bugs, for the simulator's own tests only
        (L{kvstore.testing.sim.plants}).
    @param read_id_rng: where the random start of this boot's read request
        ids comes from (the operating system's by default; the simulator
        passes a seeded one so that a run replays).
    @param metrics: told of the events monitoring counts
        (L{kvstore.monitoring}; the admin endpoint's L{kvstore.admin.metrics}).
    """
    hard_state_store = HardStateStore(metadata, cluster_id)
    core = RaftCore(
        config,
        clock,
        rng,
        hard_state=hard_state_store.load(),
        entries=log.entry_tuples(),
        plants=plants,
        # Count entries as the peer protocol encodes them, so that no
        # AppendEntries exceeds the message limit a follower enforces.
        entry_size=encoded_entry_bytes,
    )
    return Node(
        core,
        log,
        hard_state_store,
        state_machine if state_machine is not None else KeyValueStateMachine(),
        peers,
        clock,
        member_addresses=dict(member_addresses),
        commit_timeout=commit_timeout,
        read_timeout=read_timeout,
        on_fatal=on_fatal,
        extra_status=extra_status,
        plants=plants,
        rng=read_id_rng,
        metrics=metrics,
    )
