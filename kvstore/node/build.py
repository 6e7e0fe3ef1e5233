# -*- test-case-name: tests.test_build -*-
"""
The one place a node is wired.

Everything that runs a node -- the twistd service (L{kvstore.daemon.service}), the
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

With a snapshot store, L{build_node} also recovers from the newest usable
snapshot (L{kvstore.node.recovery.recover}, which may refuse start-up with a
L{kvstore.node.recovery.RecoveryError} naming a file): the state machine is
restored from it, and the core starts at it with the stored commit index,
so that the node applies what it knew committed before hearing from anyone.
"""

from __future__ import annotations

import random
from typing import Callable, Mapping, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import Cooperator
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvstore.node.monitoring import NO_METRICS, NodeMetrics
from kvstore.node.node import LogStorage, Node, PeerSender
from kvstore.node.membership import bootstrap_entry, membership_from_meta
from kvstore.node.snapshots import NodeSnapshots, SnapshotPolicy, stagger_fraction
from kvstore.protocols.peer import encoded_entry_bytes
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, RaftCore, SnapshotPoint
from kvstore.raft.membership import Configuration
from kvstore.node.recovery import recover
from kvstore.node.snapshotting import TAKE_PAUSE, snapshot_cooperator
from kvstore.statemachine import KeyValueStateMachine
from kvstore.storage import MetadataRecord
from kvstore.storage.records import LogEntry
from kvstore.storage.snapshots import SnapshotStore
from kvstore.storage.wal import ThreadRunner, default_thread_runner
from kvstore.node.snapshot_transfer import attach_transfers

__all__ = ["HardStateStore", "RecoverableLog", "StoredMetadata", "build_node"]

_logger = Logger()


class RecoverableLog(LogStorage, Protocol):
    """A log the node can start from: what the node writes, plus the
    entries recovered at open and where they start."""

    def entry_tuples(self) -> list[tuple[int, int, bytes]]: ...

    @property
    def first_index(self) -> int: ...

    @property
    def last_index(self) -> int: ...

    def entry(self, index: int) -> LogEntry: ...


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
    with (storage knows no Raft, so it keeps its own record type) and the
    lower bound of the commit index (see L{kvstore.storage.metadata}).

    @ivar commit_index: the highest commit index saved (or being saved) so
        far; saves never lower it.
    """

    def __init__(self, metadata: StoredMetadata, cluster_id: str) -> None:
        self._metadata = metadata
        self._cluster_id = cluster_id
        stored = metadata.state
        # What the next commit-only save writes: the stored term and vote,
        # then the last ones saved (never the core's, which may be ahead).
        self._hard_state = HardState(stored.term, stored.voted_for)
        self.commit_index = stored.commit_index

    def load(self) -> HardState:
        """The term and vote recovered when the store was opened."""
        stored = self._metadata.state
        return HardState(stored.term, stored.voted_for)

    def save(self, state: HardState, commit_index: int = 0) -> Deferred[None]:
        """Save C{state} (with C{commit_index} if it is higher than the one
        saved before) durably; the Deferred fires once it is."""
        self._hard_state = state
        self.commit_index = max(self.commit_index, commit_index)
        return self._metadata.save(
            MetadataRecord(state.term, state.voted_for, self._cluster_id, self.commit_index)
        )

    def save_commit_index(self, commit_index: int) -> Deferred[None]:
        """Save a higher commit index with the last saved term and vote."""
        return self.save(self._hard_state, commit_index)


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
    commit_save_interval: float = 1.0,
    snapshots: SnapshotStore | None = None,
    snapshot_policy: SnapshotPolicy = SnapshotPolicy(),
    snapshot_runner: ThreadRunner | None = None,
    cooperator: Cooperator | None = None,
    recovery_started: float | None = None,
    metrics: NodeMetrics = NO_METRICS,
    configuration: Configuration | None = None,
    bootstrap: bool = False,
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
    @param commit_save_interval: how often, in seconds, the node saves the
        commit index in the metadata file if it moved (0: only with term
        and vote saves); see L{Node.save_commit_index}.
    @param snapshots: the opened snapshot store; without one the node
        neither recovers from nor takes snapshots.
    @param snapshot_policy: when to snapshot and how much log to keep.
    @param snapshot_runner: runs the snapshots' blocking file work (the
        production service gives a thread apart from the log's).
    @param cooperator: schedules a snapshot's slices (by default turns of
        about a millisecond on C{clock}, with pauses between them while a
        snapshot is taken: L{kvstore.node.snapshotting.TAKE_PAUSE}).
    @param recovery_started: when start-up began (C{time.monotonic}), for
        the restart report; by default when recovery begins.
    @param configuration: the membership the log starts from (issue 13):
        the one recorded when the data directory was bootstrapped, or an
        empty one for a node that joins an existing cluster.  By default
        C{config}'s node and peers, all voters, at C{member_addresses}.  A
        recovered snapshot's membership replaces it, and the log's
        configuration entries after that are replayed by the core.
    @param bootstrap: this node bootstraps a new cluster with
        C{configuration} (not a node that joins): if its storage is still
        empty (no entry, no snapshot, term 0), the core appends
        C{configuration} as the log's first entry (L{bootstrap_entry}),
        which the node's first batch writes.  Storage that is not empty
        is left as it is (a data directory of an earlier release starts
        from C{configuration} as before).
    @raise kvstore.node.recovery.RecoveryError: if the snapshots and the log on
        disk do not fit together (the message names the file).
    @param metrics: told of the events monitoring counts
        (L{kvstore.node.monitoring}; the admin endpoint's L{kvstore.admin.metrics}).
    """
    hard_state_store = HardStateStore(metadata, cluster_id)
    machine = state_machine if state_machine is not None else KeyValueStateMachine()
    recovered = recover(
        log, snapshots, machine, commit_index=metadata.state.commit_index, cluster_id=cluster_id,
        started=recovery_started,
    )
    if recovered.log_reset:
        # Queued ahead of every later write, so nothing can be acknowledged
        # before it is durable; flushed now rather than with the first write.
        log.sync().addErrback(lambda f: _logger.failure("resetting the log after the snapshot failed", f))
    if configuration is None:
        configuration = Configuration.bootstrap(config.node_id, config.peers, member_addresses)
    if recovered.snapshot is not None and recovered.snapshot.meta is not None:
        configuration = membership_from_meta(recovered.snapshot.meta.membership) or configuration
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
        snapshot=SnapshotPoint(recovered.index, recovered.term) if recovered.snapshot is not None else None,
        commit_index=recovered.commit_index,
        configuration=configuration,
        bootstrap=bootstrap_entry(configuration) if bootstrap else None,
    )
    node_snapshots = None
    if snapshots is not None:
        node_snapshots = NodeSnapshots(
            snapshots,
            snapshot_policy,
            snapshot_runner if snapshot_runner is not None else default_thread_runner,
            cooperator if cooperator is not None else snapshot_cooperator(clock),
            index=recovered.index,
            take_cooperator=cooperator if cooperator is not None else snapshot_cooperator(clock, pause=TAKE_PAUSE),
            # Each member its own phase, so that they do not all snapshot at once.
            stagger=stagger_fraction(config.node_id, len(configuration.member_ids)),
        )
    node = Node(
        core,
        log,
        hard_state_store,
        machine,
        peers,
        clock,
        member_addresses=dict(member_addresses),
        commit_timeout=commit_timeout,
        read_timeout=read_timeout,
        on_fatal=on_fatal,
        extra_status=extra_status,
        plants=plants,
        rng=read_id_rng,
        commit_save_interval=commit_save_interval,
        snapshots=node_snapshots,
        cluster_id=cluster_id,
        recovered=recovered,
        metrics=metrics,
    )
    if node_snapshots is not None:
        # The chunked InstallSnapshot transfer, over the same snapshot
        # directory and the snapshots' file thread.
        attach_transfers(
            node, snapshots, peers, clock,
            run_in_thread=snapshot_runner if snapshot_runner is not None else default_thread_runner,
        )
    return node
