# -*- test-case-name: tests.test_node -*-
"""
The node: glue between the Raft core, storage, the peer network, the state
machine and waiting clients.

Everything the core asks for happens here, in the order the core's
L{Ready<kvstore.raft.core.Ready>} contract demands: persist the term/vote and
the new entries, send what may be sent at once, send acknowledgements and
votes only after the write-ahead log reports them durable, apply committed
entries in order, then fire the Deferreds of the clients that wait on them.

Inputs are processed in batches: every input (a client request, a peer
message, a timer) only schedules one processing pass for the end of the
current reactor turn, so a burst of requests becomes one L{Ready}, one WAL
append, one fsync and one AppendEntries per follower.
"""

from __future__ import annotations

import enum
import random
import time
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kvstore import trace
from kvstore.errors import KeyNotFound, NotLeader, OutcomeUnknown, Refused, Unavailable
from kvstore.node.log_compaction import StepwiseCompaction
from kvstore.node.membership import TransferWaiter, membership_from_meta, membership_to_meta
from kvstore.node.snapshots import NodeSnapshots
from kvstore.protocols.commands import parse_address
from kvstore.raft.core import (
    HardState,
    LeadershipTransferInProgress,
    NotLeaderError,
    RaftCore,
    Ready,
    Role,
    SnapshotPoint,
    TransferRefused,
    UnsendableEntry,
)
from kvstore.raft.membership import (
    AddLearner,
    ChangeRefused,
    Configuration,
    ConfigurationChange,
    MemberRole,
    RemoveMember,
)
from kvstore.raft.messages import MAX_FIELD_VALUE, AppendEntries, AppendEntriesResponse, InstallSnapshot, Message
from kvstore.node.recovery import Recovered, report_line
from kvstore.node.monitoring import NO_METRICS, NodeMetrics
from kvstore.statemachine import (
    CONTENT_FORMAT,
    ApplyResult,
    InvalidCommand,
    KeyValueStateMachine,
    SessionTag,
    encode_cas,
    encode_delete,
    encode_incr,
    encode_open_session,
    encode_put,
    encode_tagged,
)
from kvstore.storage.errors import StorageError
from kvstore.storage.snapshots import SnapshotInfo, SnapshotMeta, SnapshotStore
from kvstore.storage.wal import ThreadRunner


# Marks a committed entry that was not a valid command (see Node._apply).
_INVALID = ApplyResult(False)

# Read request ids start at a random number below 2**62 on every boot, so a
# leader's late answer to a read of an earlier incarnation of this node
# never matches a read of this one; the 2**62 ids above the start stay below
# the peer protocol's bound on integers (MAX_FIELD_VALUE, 2**63).
_READ_ID_START_BITS = 62


class FailedPart(enum.Enum):
    """
    What failed when the node stopped itself.  Each has its own log line and
    exit status (see L{kvstore.daemon.service} and docs/operations.md), because the
    operator's next step differs: check the disk, find the entry the state
    machine could not apply, or report a bug.
    """

    #: A write, truncate, fsync or metadata save of the WAL or metadata store.
    STORAGE = "storage"
    #: The state machine raised while applying a committed entry.
    APPLY = "apply"
    #: Anything else -- handling a batch of the core's outputs or a peer's
    #: message, a Raft timer, the timeout sweeper: a bug.
    INTERNAL = "internal"


_FATAL_LOG_LINES = {
    FailedPart.STORAGE: "storage failed; this node stops to protect acknowledged data",
    FailedPart.APPLY: "apply failed: the state machine raised on a committed entry; this node stops",
    FailedPart.INTERNAL: "internal error (a bug) in the Raft core or the node; this node stops",
}


class FatalError(Exception):
    """
    Why the node stopped itself: C{part} failed with C{failure} (the
    original error, with its traceback).  L{Node}'s C{on_fatal} receives it
    wrapped in a L{Failure}.
    """

    def __init__(self, part: FailedPart, failure: Failure) -> None:
        super().__init__(f"{part.value} failed: {failure.getErrorMessage()}")
        self.part = part
        self.failure = failure


class _PartFailed(Exception):
    """Carries a failure, the part it came from and where (for the log
    line) out of the Ready loop."""

    def __init__(self, part: FailedPart, failure: Failure, where: str = "") -> None:
        super().__init__(part, failure)
        self.part = part
        self.failure = failure
        self.where = where


def _storage_or_internal(failure: Failure) -> FailedPart:
    """
    What failed when a storage call failed with C{failure}: storage for an
    I/O error (or the store refusing writes after one), internal for
    anything else, such as the log refusing an append that does not
    continue it: that is a bug in the caller, and the disk is fine.
    """
    return FailedPart.STORAGE if failure.check(OSError, StorageError) else FailedPart.INTERNAL


class _FailuresOfStorage:
    """
    C{with _failures_of_storage:} attributes an exception raised in the
    block by a storage call to storage or internal (see
    L{_storage_or_internal}).  A plain object rather than a
    C{@contextmanager} generator: it guards every batch's log calls, and a
    generator, built and resumed twice per block, cost more than those
    calls' own bookkeeping.
    """

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None or not issubclass(kind, Exception) or issubclass(kind, _PartFailed):
            return  # no exception, or one that passes through as it is
        failure = Failure(value, kind, tb)
        raise _PartFailed(_storage_or_internal(failure), failure) from None


_failures_of_storage = _FailuresOfStorage()


class LogStorage(Protocol):
    """What the node needs of the write-ahead log."""

    def append(self, entries: Any) -> None: ...

    def truncate_suffix(self, from_index: int) -> None: ...

    def drop_prefix(self, upto_index: int) -> None: ...

    def reset_after(self, index: int, term: int) -> None: ...

    def sync(self, at_once: bool = False) -> Deferred[int]: ...


class MetadataStorage(Protocol):
    """What the node needs of the term/vote metadata store (see
    L{kvstore.node.build.HardStateStore}): saves of the term and vote, each
    carrying a lower bound of the commit index, and saves of a higher
    commit index alone."""

    commit_index: int

    def save(self, state: HardState, commit_index: int = 0) -> Deferred[None]: ...

    def save_commit_index(self, commit_index: int) -> Deferred[None]: ...


class PeerSender(Protocol):
    """Delivers messages to peers, best effort: Raft tolerates loss."""

    def send(self, message: Message) -> None: ...


class SnapshotOffers(Protocol):
    """
    Where a leader's core's offers to send a follower the snapshot go
    (L{Node.set_snapshot_offers}): the snapshot transfer.  Each offer is a
    C{Message(leader, follower, InstallSnapshot(term, index,
    snapshot_term))} naming the snapshot the core knows of; it never goes
    over the wire as such.  The transfer reads the file
    (L{Node.snapshot_store}, protected from pruning with
    L{Node.protect_snapshot}) and reports the outcome with
    L{Node.report_snapshot}.
    """

    def offer(self, message: Message) -> None: ...


class _NoSnapshotTransfer:
    """The default L{SnapshotOffers}: no transfer is plugged in, so an offer
    is dropped (the core offers again after its next probe)."""

    def offer(self, message: Message) -> None:
        pass


class TransferHooks(Protocol):
    """The snapshot transfer as the node sees it (a
    L{kvstore.node.snapshot_transfer.TransferRouter}, attached by
    L{kvstore.node.snapshot_transfer.attach_transfers})."""

    def offer(self, message: Message) -> bool: ...

    def receive(self, message: Message) -> bool: ...

    def stop(self) -> None: ...


@dataclass
class _PendingWrite:
    term: int
    deferred: Deferred[Any]
    key: str
    deadline: float


@dataclass
class _PendingRead:
    key: str
    deferred: Deferred[str]
    deadline: float
    index: int | None = None


class Node:
    """
    One kvstore member.  Implements the client protocol's
    C{KeyValueService}: L{put}, L{delete}, L{incr}, L{cas},
    L{open_session}, L{get} and L{status}.

    Build one with L{kvstore.node.build.build_node}, which wires the core and
    the storage adapters; the node attaches itself as the core's wake hook.

    @param on_fatal: called with a L{Failure} of a L{FatalError} naming the
        L{FailedPart} when the node stops itself (fail-stop): after a failed
        fsync, a failed apply or an internal error in the middle of a batch
        it cannot continue safely, so the service stops.
    @param rng: where the random start of this boot's read request ids comes
        from (the operating system's generator by default; the simulator
        passes a seeded one so that a run replays).
    @param metrics: told of events monitoring counts (L{kvstore.node.monitoring});
        by default nothing is recorded.
    """

    log = Logger()

    def __init__(
        self,
        core: RaftCore,
        wal: LogStorage,
        metadata: MetadataStorage,
        state_machine: KeyValueStateMachine,
        peers: PeerSender,
        clock: IReactorTime,
        *,
        member_addresses: dict[int, str],
        commit_timeout: float = 5.0,
        read_timeout: float = 5.0,
        on_fatal: Callable[[Failure], None] = lambda f: None,
        extra_status: Callable[[], dict[str, object]] = dict,
        plants: frozenset[str] = frozenset(),
        rng: random.Random | None = None,
        commit_save_interval: float = 1.0,
        snapshots: NodeSnapshots | None = None,
        cluster_id: str | None = None,
        recovered: Recovered | None = None,
        metrics: NodeMetrics = NO_METRICS,
    ) -> None:
        self.core = core
        core.set_wake(self.wake)  # the core's outputs schedule a processing pass
        self._wal = wal
        self._metadata = metadata
        self.state_machine = state_machine
        self._peers = peers
        self._clock = clock
        self._member_addresses = member_addresses
        self._commit_timeout = commit_timeout
        self._read_timeout = read_timeout
        self._on_fatal = on_fatal
        self._extra_status = extra_status
        self._plants = plants  # planted bugs, for the simulator's tests only (kvstore.testing.sim.plants)

        self._process_call: IDelayedCall | None = None
        self._pending_writes: OrderedDict[int, _PendingWrite] = OrderedDict()
        self._pending_reads: dict[int, _PendingRead] = {}
        self._reads_waiting_apply: list[_PendingRead] = []
        self._rng = rng if rng is not None else random.SystemRandom()
        self._next_read_id = self._first_read_id()
        self._metadata_barrier: Deferred[None] | None = None
        self._leader_term: int | None = None
        self._sweep_call: IDelayedCall | None = None
        self._commit_save_interval = commit_save_interval
        self._commit_save_call: IDelayedCall | None = None
        self._commit_save_running = False
        self._snapshots = snapshots
        self._cluster_id = cluster_id
        self._snapshot_offers: SnapshotOffers = _NoSnapshotTransfer()
        self._routes: dict[type, Callable[[Message], None]] = {}
        self._installing: SnapshotPoint | None = None
        #: Drops the log prefix after a snapshot, a bounded step per turn.
        self.compaction = StepwiseCompaction(
            clock, self._compact_step, lambda: self.core.first_index, self._compaction_finished
        )
        # Logged once the state machine has applied what start-up recovered.
        self._recovered = recovered
        self._stopped = False
        self._failed = False
        self._failed_reason = ""
        #: Takes the core's InstallSnapshot messages (they name a file to
        #: send, they do not go on the wire) and the snapshot chunks and
        #: their answers, which the core never sees.
        self.transfers: TransferHooks | None = None
        self.metrics = metrics
        self._seen_leader: tuple[int, int] | None = None  # (term, leader) last told to metrics
        self._last_stamp = 0  # the last session stamp this node proposed or saw applied (ms)
        # Log time minus this node's clock (ms), set from the log time it has
        # seen (see _stamp); None until the node starts.
        self._log_time_offset: int | None = None
        # Membership (issue 13): told of each new current configuration
        # (the service's peer links and peer server follow it); whether a
        # peer is connected (TRANSFER refuses one that is not); clients'
        # TRANSFERs waiting for their target to lead.
        self.configuration_observers: list[Callable[[Configuration], None]] = []
        self.peer_connected: Callable[[int], bool] = lambda peer: True
        # (getattr: the fake cores of some tests have no configuration.)
        self._configuration_seen: Configuration | None = getattr(core, "configuration", None)
        # Told of each change of the departing peers (removed, still
        # talked to for a while, so the links to them stay: _departing).
        self.departing_observers: list[Callable[[frozenset[int]], None]] = []
        self._departing_seen: frozenset[int] = frozenset()
        # Told of each new committed configuration: the peer links follow
        # the committed one too, so a leader removing itself still hears
        # the acks that commit its removal.
        self.committed_configuration_observers: list[Callable[[Configuration], None]] = []
        self._committed_configuration_seen: Configuration | None = None
        self._transfer_waiters: list[TransferWaiter] = []
        #: Called with no arguments at the end of every processing pass,
        #: after leadership is checked: write forwarding
        #: (L{kvstore.node.forwarding}) watches the leader and its link here.
        self.after_process: list[Callable[[], None]] = []

    # ------------------------------------------------------------------
    # Lifecycle

    def start(self) -> None:
        """Start the core's timers and the timeout sweeper.  An exception in
        a core timer is a bug and stops the node, as one in L{_process}
        does: left to the reactor it would only be logged, and the timer
        (a leader's heartbeat) would never run again."""
        self.core.start(on_timer_error=lambda failure: self._fatal(failure, FailedPart.INTERNAL, "a Raft timer"))
        self._schedule_sweep()
        self._schedule_commit_save()
        self._follow_log_time()  # log time runs on from the recovered one, from now
        self._maybe_report_recovery()
        self.wake()

    def stop(self) -> None:
        """Stop timers; pending clients get an outcome-unknown or
        unavailable error."""
        self._stopped = True
        self.core.stop()
        self.compaction.cancel()
        for call in (self._process_call, self._sweep_call, self._commit_save_call):
            if call is not None and call.active():
                call.cancel()
        self._fail_writes("the node is shutting down")
        self._fail_reads("the node is shutting down")
        self._fail_transfers("the node is shutting down")
        if self.transfers is not None:
            self.transfers.stop()
        if trace.ENABLED:
            trace.save()

    def wake(self) -> None:
        """Schedule one processing pass at the end of this reactor turn."""
        if self._process_call is None and not self._stopped:
            self._process_call = self._clock.callLater(0, self._process)

    # ------------------------------------------------------------------
    # KeyValueService

    def put(self, key: str, value: str, session: SessionTag | None = None) -> Deferred[None]:
        """Replicate C{key = value}; fires once committed and applied.  Every
        write takes an optional exactly-once C{session} tag (issue 14)."""
        return self._propose(key, encode_put(key, value), session)

    def delete(self, key: str, session: SessionTag | None = None) -> Deferred[None]:
        """Replicate the removal of C{key}; fails with L{KeyNotFound} if it
        had no value when the delete was applied."""
        return self._propose(key, encode_delete(key), session)

    def incr(self, key: str, delta: int, session: SessionTag | None = None) -> Deferred[int]:
        """Replicate adding C{delta} to the integer in C{key}; fires with the
        new value computed when it was applied."""
        return self._propose(key, encode_incr(key, delta), session)

    def cas(self, key: str, expected: str, new: str, session: SessionTag | None = None) -> Deferred[None]:
        """Replicate setting C{key} to C{new} if its value is C{expected}."""
        return self._propose(key, encode_cas(key, expected, new), session)

    def open_session(self) -> Deferred[int]:
        """Replicate the registration of a session; fires with its id."""
        return self._propose("", encode_open_session(self._stamp()))

    def _stamp(self) -> int:
        """
        The log time in ms for an entry that needs it (a session's): the
        log time this node has seen plus the time its own clock says has
        elapsed since, never below a stamp it gave before nor the log time
        it has applied.

        Only elapsed time is taken from this node's clock, never its
        reading: in production the reactor's clock is C{time.monotonic}
        (L{kvstore.daemon.clock}), the time since this machine booted, which
        differs between machines by days.  Stamping the reading made a
        leader up for longer than the last one expire every session at once
        (just when clients retry after a leader died), and one up for less
        stop log time until its uptime caught up (found in review).  So log
        time advances at the rate of the leaders' clocks and stands still
        while no leader stamps (a cluster's downtime does not age sessions),
        as LogCabin's cluster time does.
        """
        offset = self._follow_log_time()
        stamp = max(int(self._clock.seconds() * 1000) + offset, self._last_stamp)
        self._last_stamp = stamp
        return stamp

    def _follow_log_time(self) -> int:
        """Take the applied log time as this node's time base when another
        leader's stamps (or a snapshot) moved it past this node's own;
        return log time minus this node's clock."""
        log_time = self.state_machine.log_time
        offset = self._log_time_offset
        if offset is None or log_time > self._last_stamp:
            offset = log_time - int(self._clock.seconds() * 1000)
            self._log_time_offset = offset
            self._last_stamp = max(self._last_stamp, log_time)
        return offset

    def get(self, key: str, stale: bool = False) -> Deferred[str]:
        """
        Read C{key}.  By default linearizable: the read reflects every write
        acknowledged before it began, on any node (ReadIndex).  With
        C{stale}, read this node's state machine at once, which may lag.
        """
        removed = self._removed_error()
        if removed is not None:
            return fail(removed)
        if stale:
            return self._read_now(key)
        if self._stopped:
            return fail(Unavailable("the node is shutting down"))
        if self._failed:
            return fail(Unavailable(self._failed_reason))
        read_id = self._next_read_id
        self._next_read_id += 1
        if self._next_read_id >= MAX_FIELD_VALUE:
            self._next_read_id = self._first_read_id()
        read = _PendingRead(key, Deferred(), self._clock.seconds() + self._read_timeout)
        self._pending_reads[read_id] = read
        self.core.request_read(read_id)
        self.wake()
        return read.deferred

    def _first_read_id(self) -> int:
        """
        Where this boot's read request ids start.  The leader answers a
        forwarded read by id alone, possibly long after it was asked (a slow
        confirmation round, a delayed message): ids numbered from 1 on every
        boot would let a restarted node take the answer to its previous
        incarnation's read, at an older read index, for a new read, and
        serve a stale value (issue 9).
        """
        if "reuse-read-ids" in self._plants:
            return 1
        return self._rng.getrandbits(_READ_ID_START_BITS) + 1

    def status(self) -> dict[str, object]:
        """The node's state as C{name: value} pairs, for C{STATUS}."""
        core = self.core
        leader = core.leader_id
        result: dict[str, object] = {
            "node": core.node_id,
            "role": core.role.value,
            "term": core.term,
            "leader": leader if leader is not None else "none",
            "commit": core.commit_index,
            "applied": self.state_machine.applied_index,
            "last_index": core.last_index,
            "last_term": core.last_term,
            "first_index": core.first_index,
            "snapshot": core.snapshot_index,
            "keys": len(self.state_machine),
            "members": ",".join(str(m) for m in sorted(core.configuration.voter_ids)) or "none",
            "learners": ",".join(str(m) for m in sorted(core.configuration.learner_ids)) or "none",
            "member_role": _member_role(core.configuration, core.node_id, getattr(core, "removed", False)),
        }
        result.update(self._extra_status())
        return result

    @property
    def not_serving_reason(self) -> str | None:
        """Why this node no longer serves requests (it is shutting down, or
        stopped itself after a failure), or L{None} while it serves: for
        health checks."""
        if self._failed:
            return self._failed_reason
        return "the node is shutting down" if self._stopped else None

    @property
    def commit_timeout(self) -> float:
        """How long a write may take to commit before its client is told
        its outcome is unknown (changed by L{set_timeouts})."""
        return self._commit_timeout

    def leader_address(self) -> str | None:
        """C{host:port} of the leader this node knows of."""
        leader = self.core.leader_id
        return None if leader is None else self.address_of(leader)

    def address_of(self, node_id: int) -> str | None:
        """C{host:port} of C{node_id}: from the current configuration, or
        the command line's for a member whose address it does not hold."""
        return self.core.configuration.address(node_id) or self._member_addresses.get(node_id)

    def _not_leader(self, error: NotLeaderError | None = None) -> NotLeader:
        """The client's C{Not leader} error: naming the leader this node
        knows of, or the target of its leadership transfer."""
        leader = self.core.leader_id
        if isinstance(error, LeadershipTransferInProgress):
            leader = error.target
        if leader is None or leader == self.core.node_id:
            return NotLeader(None, None)
        return NotLeader(leader, self.address_of(leader))

    # ------------------------------------------------------------------
    # Membership admin (issue 13): MEMBERS, ADDNODE, REMOVENODE, TRANSFER

    def members_text(self) -> str:
        """
        The C{MEMBERS} reply: C{<id>@<host>:<port>/<role>} per member, in
        id order, from the leader's current configuration.

        @raises NotLeader: on any other node, as a write would.
        @raises Unavailable: on a node removed from the cluster.
        """
        removed = self._removed_error()
        if removed is not None:
            raise removed
        if self.core.role is not Role.LEADER:
            raise self._not_leader()
        return self.core.configuration.members_text()

    def add_node(self, node_id: int, address: str) -> Deferred[None]:
        """Add C{node_id} at C{address} as a learner (the leader promotes
        it once caught up); fires once the change is committed, at once if
        it already is (the same id and address again)."""
        try:
            parse_address(address)
        except ValueError as e:
            return fail(Refused(str(e)))
        return self._change(AddLearner(node_id, address))

    def remove_node(self, node_id: int) -> Deferred[None]:
        """Remove C{node_id} for good; fires once the change is committed."""
        return self._change(RemoveMember(node_id))

    def _change(self, change: ConfigurationChange) -> Deferred[None]:
        """Propose C{change}; the client waits for its configuration entry
        as for a write (same deadline, same errors if leadership is lost)."""
        removed = self._removed_error()
        if removed is not None:
            return fail(removed)
        if self._stopped:
            return fail(Unavailable("the node is shutting down"))
        if self._failed:
            return fail(Unavailable(self._failed_reason))
        try:
            proposed = self.core.propose_change(change)
        except NotLeaderError as e:
            return fail(self._not_leader(e))
        except ChangeRefused as e:
            return fail(Refused(str(e)))
        if proposed is None:
            return succeed(None)  # already in effect and committed
        index, term = proposed
        self.log.info("membership change proposed at index {index}: {change}", index=index, change=change)
        write = _PendingWrite(term, Deferred(), "", self._clock.seconds() + self._commit_timeout)
        self._pending_writes[index] = write
        self.wake()
        return write.deferred

    def transfer_leadership(self, node_id: int) -> Deferred[None]:
        """
        Hand leadership to the voter C{node_id} (thesis 3.10); fires once it
        leads.  Refused for a learner, a non-member, or a node this leader
        is not connected to; fails if the target does not take over within
        the core's bound (this node then leads on) or another node does.
        Asking the leader to transfer to itself succeeds at once.
        """
        core = self.core
        removed = self._removed_error()
        if removed is not None:
            return fail(removed)
        if self._stopped:
            return fail(Unavailable("the node is shutting down"))
        if self._failed:
            return fail(Unavailable(self._failed_reason))
        if core.role is not Role.LEADER:
            return fail(self._not_leader())
        if node_id == core.node_id and core.transfer_target is None:
            return succeed(None)
        if core.configuration.role(node_id) is MemberRole.VOTER and not self.peer_connected(node_id):
            return fail(Refused(f"Node {node_id} is not connected to the leader"))
        try:
            core.transfer_leadership(node_id)
        except NotLeaderError as e:
            return fail(self._not_leader(e))
        except TransferRefused as e:
            return fail(Refused(str(e)))
        self.log.info("transferring leadership to node {target}", target=node_id)
        waiter = TransferWaiter(node_id, Deferred(), self._clock.seconds() + self._commit_timeout)
        self._transfer_waiters.append(waiter)
        self.wake()
        return waiter.deferred

    def hand_over_leadership(self, timeout: float) -> Deferred[int | None]:
        """
        Before a planned stop (SIGTERM): if this node leads, hand leadership
        to the most up-to-date connected voter and wait, at most
        C{timeout} seconds, until it leads, so that the cluster never waits
        an election timeout for a leader.  Fires with the new leader's id,
        or L{None} if there was nobody to hand over to or it did not happen
        in time (the node stops anyway; the others elect a leader as usual).
        """
        core = self.core
        if self._stopped or self._failed or core.role is not Role.LEADER:
            return succeed(None)
        candidates = [
            peer for peer in core.configuration.voter_ids - {core.node_id} if self.peer_connected(peer)
        ]
        if not candidates:
            return succeed(None)
        target = max(candidates, key=lambda peer: (core.match_index(peer) or 0, -peer))
        self.log.info("stopping: handing leadership to node {target} first", target=target)
        result: Deferred[int | None] = Deferred()

        def give_up() -> None:
            if not result.called:
                result.callback(None)

        timer = self._clock.callLater(timeout, give_up)

        def done(outcome: object) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                result.callback(target if outcome is None else None)

        self.transfer_leadership(target).addBoth(done)
        return result

    def _check_transfers(self) -> None:
        """Settle the clients' TRANSFERs whose outcome is now known."""
        if not self._transfer_waiters:
            return
        core = self.core
        now = self._clock.seconds()
        waiting = []
        for waiter in self._transfer_waiters:
            leader = core.leader_id
            if leader == waiter.target:
                waiter.deferred.callback(None)
            elif core.role is Role.LEADER and core.transfer_target is None:
                waiter.deferred.errback(
                    Refused(f"Node {waiter.target} did not take over in time; Node {core.node_id} still leads")
                )
            elif leader is not None and leader != core.node_id:
                waiter.deferred.errback(Refused(f"Node {leader} took over leadership, not Node {waiter.target}"))
            elif waiter.deadline <= now:
                waiter.deferred.errback(
                    Unavailable(f"no leader known after the transfer to Node {waiter.target}")
                )
            else:
                waiting.append(waiter)
        self._transfer_waiters = waiting

    def _removed_error(self) -> Unavailable | None:
        """
        The error every client request gets once a committed configuration
        removed this node (issue 13): it is out of the cluster for good,
        its data no longer follows the cluster's and no leader answers it,
        so a request would only wait for its timeout.  L{None} otherwise.
        (getattr: the fake cores of some tests have no membership.)
        """
        if not getattr(self.core, "removed", False):
            return None
        return Unavailable(f"Node {self.core.node_id} was removed from the cluster; ask another member")

    def _departing(self) -> frozenset[int]:
        """
        The peers the current configuration no longer names that this node
        still talks to: on a leader, the removed members its core still
        replicates to (L{RaftCore.departing}); on a follower, the leader it
        follows, which a pending change removes (a follower answers over its
        own link to the leader: without it, a leader removing itself would
        never hear its removal is stored, and could not commit it).
        """
        core = self.core
        departing: frozenset[int] = getattr(core, "departing", frozenset())
        leader = getattr(core, "leader_id", None)
        configuration = getattr(core, "configuration", None)
        if (
            leader is not None
            and leader != getattr(core, "node_id", None)
            and configuration is not None
            and leader not in configuration.member_ids
        ):
            departing |= {leader}
        return departing

    def _notice_configuration(self) -> None:
        """Tell the observers (peer links, peer server) of a new current
        configuration, once per change, after the batch that made it; and
        the departing observers of each change of the peers no longer
        members that this node must still reach (L{_departing}), before."""
        departing = self._departing()
        if departing != self._departing_seen:
            # First: a link to a member just removed is then kept at once.
            self._departing_seen = departing
            for departing_observer in self.departing_observers:
                departing_observer(departing)
        self._notice_committed_configuration()
        configuration = getattr(self.core, "configuration", None)
        if configuration is None or configuration is self._configuration_seen:
            return
        self._configuration_seen = configuration
        self.log.info("membership is now {members}", members=configuration.to_text() or "(none yet)")
        for observer in self.configuration_observers:
            observer(configuration)

    def _notice_committed_configuration(self) -> None:
        """Tell the committed-configuration observers of a newly committed
        configuration (before the current one's observers)."""
        configuration_at = getattr(self.core, "configuration_at", None)
        if configuration_at is None or not self.committed_configuration_observers:
            return
        try:
            committed = configuration_at(self.core.commit_index)
        except ValueError:
            return  # before the snapshot: not known
        if committed is self._committed_configuration_seen:
            return
        self._committed_configuration_seen = committed
        for observer in self.committed_configuration_observers:
            observer(committed)

    def _propose(self, key: str, data: bytes, session: SessionTag | None = None) -> Deferred[Any]:
        removed = self._removed_error()
        if removed is not None:
            return fail(removed)
        if session is not None:
            data = encode_tagged(session, self._stamp(), data)
        if self._stopped:
            return fail(Unavailable("the node is shutting down"))
        if self._failed:
            return fail(Unavailable(self._failed_reason))
        try:
            index, term = self.core.propose(data)
        except NotLeaderError as e:
            return fail(self._not_leader(e))
        if trace.ENABLED:
            trace.record("propose", index)
        write = _PendingWrite(term, Deferred(), key, self._clock.seconds() + self._commit_timeout)
        self._pending_writes[index] = write
        self.wake()
        return write.deferred

    def _read_now(self, key: str) -> Deferred[str]:
        value = self.state_machine.get(key)
        if value is None:
            return fail(KeyNotFound(key))
        return succeed(value)

    # ------------------------------------------------------------------
    # Peer input

    def route(self, body_type: type, handler: Callable[[Message], None]) -> None:
        """
        Deliver incoming messages whose body is a C{body_type} to
        C{handler} instead of the Raft core (the snapshot transfer's chunk
        messages, which the core never sees).
        """
        self._routes[body_type] = handler

    def receive(self, message: Message) -> None:
        """A validated message from a member arrived."""
        if self._stopped or self._failed:
            return
        handler = self._routes.get(type(message.body)) if self._routes else None
        if handler is not None:
            handler(message)
            return
        if trace.ENABLED:
            _trace_received(message)
        try:
            if self.transfers is not None and self.transfers.receive(message):
                return  # the snapshot transfer's own message
            self.core.step(message)
        except Exception:
            # The protocol layer has rejected malformed messages, so this is
            # a bug in the core (see RaftCore.step), and the core may be
            # half-way through a state change: stop, as in _process.
            self._fatal(Failure(), FailedPart.INTERNAL, f"handling a message from node {message.sender}")
            return
        self.wake()

    # ------------------------------------------------------------------
    # The Ready loop

    def _process(self) -> None:
        self._process_call = None
        if self._stopped or self._failed or self._installing is not None:
            return
        # A bounded number of passes per turn keeps the reactor responsive
        # even if the core keeps producing work (a long catch-up).
        for _ in range(8):
            if self._installing is not None or not self.core.has_ready():
                break
            try:
                ready = self.core.ready()
                self._handle_ready(ready)
            except _PartFailed as e:
                # The core has handed this batch over; a half-handled batch
                # would leave core, log and state machine out of step (for
                # example acknowledging entries the log refused).  Stop.
                self._fatal(e.failure, e.part, e.where)
                return
            except Exception:
                self._fatal(Failure(), FailedPart.INTERNAL)
                return
        else:
            if self.core.has_ready():
                self.wake()
        try:
            self._check_leadership()
            self._check_transfers()
            self._notice_configuration()
            for observer in self.after_process:
                observer()
        except Exception:
            self._fatal(Failure(), FailedPart.INTERNAL, "checking leadership")

    def _handle_ready(self, ready: Ready, installed: bool = False) -> None:
        if ready.install_snapshot is not None and not installed:
            # Before anything else in the batch (the core's ordering rule);
            # the rest of the batch, and every later one, waits for it.
            self._install(ready)
            return
        if "ack-before-fsync" in self._plants:
            ready.messages, ready.messages_after_persist = ready.messages + ready.messages_after_persist, []
        if ready.hard_state is not None:
            with _failures_of_storage:
                self._save_hard_state(ready.hard_state)
        # The messages that need nothing durable go first (a leader's
        # AppendEntries): the followers' append and fsync is the longer half
        # of a write, so they start it before this node spends anything on
        # its own log.  The batch's flush then runs at once if it runs on
        # the reactor, and starts on the storage thread otherwise; its
        # result is handled after the sends either way (a synchronous
        # runner's Deferred has fired already, a threaded one fires in a
        # later reactor iteration).
        for message in ready.messages:
            if type(message.body) is InstallSnapshot:
                self._snapshot_offers.offer(message)
            else:
                self._peers.send(message)
        synced = None
        with _failures_of_storage:
            if ready.truncate_from is not None:
                self._wal.truncate_suffix(ready.truncate_from)
            if ready.entries:
                if trace.ENABLED:
                    trace.record("wal.enqueue", ready.entries[-1][0])
                # Core entries have the log's fields; no conversion needed.
                self._wal.append(ready.entries)
            if ready.needs_persist() or ready.messages_after_persist:
                # Nothing is left to send first: a flush on the reactor
                # may run now rather than at the end of the turn.
                synced = self._wal.sync(at_once=True)
        if synced is not None:
            self._after_durable(ready, synced)
        if ready.committed:
            self._apply(ready)
            self._maybe_snapshot()
        for unsendable in ready.unsendable:
            self._log_unsendable(unsendable)
        for read_state in ready.reads:
            read = self._pending_reads.pop(read_state.request_id, None)
            if read is not None:
                read.index = read_state.index
                if read_state.index <= self.state_machine.applied_index:
                    self._finish_read(read)
                else:
                    self._reads_waiting_apply.append(read)
        for request_id, reason in ready.failed_reads:
            read = self._pending_reads.pop(request_id, None)
            if read is not None:
                read.deferred.errback(Unavailable(reason))

    def _log_unsendable(self, unsendable: UnsendableEntry) -> None:
        """Say why a follower cannot catch up, and why this node steps down
        if it does (see L{RaftCore._handle_unsendable})."""
        consequence = (
            "too few followers have it for anything to commit, so this node steps down for a node without it"
            " to lead and overwrite it here (it was never committed)"
            if unsendable.stepped_down
            else "too few followers have it for anything to commit, and too few lack it to elect a node without"
            " it, so no leader can commit: see 'An entry too large to replicate' in docs/operations.md"
            if unsendable.deadlocked
            else "that follower cannot catch up with this leader; the others still commit"
        )
        self.log.error(
            "log entry {index} is {size} bytes on the wire, over the peer message limit of {limit} bytes"
            " (a release before issue 9 accepted it): follower {follower} can never receive it; {consequence}",
            index=unsendable.index,
            size=unsendable.size,
            limit=self.core.config.max_entries_bytes,
            follower=unsendable.follower,
            stepped_down=unsendable.stepped_down,
            consequence=consequence,
        )

    def _durable_commit(self) -> int:
        """
        The commit index a restart may apply through: committed, and every
        entry up to it durable in this node's log with the content the core
        holds.  A commit index learnt from a leader in the same batch as the
        entries it covers (or as a truncation that replaced them) would be
        neither until the log's flush finishes, and the metadata file may
        become durable first: saved before its entries, it could make a
        restart apply an older, conflicting entry as committed.
        """
        core = self.core
        return min(core.commit_index, core.durable_index)

    def _schedule_commit_save(self) -> None:
        if self._commit_save_interval > 0 and not self._stopped:
            self._commit_save_call = self._clock.callLater(self._commit_save_interval, self._commit_save_tick)

    def _commit_save_tick(self) -> None:
        self._commit_save_call = None
        if self._stopped or self._failed:
            return
        try:
            self.save_commit_index()
        except Exception:
            self._fatal(Failure(), FailedPart.INTERNAL, "saving the commit index")
            return
        self._schedule_commit_save()

    def save_commit_index(self) -> Deferred[None]:
        """
        Save the durable commit index (L{_durable_commit}) with the last
        saved term and vote, if it moved since the last save and no such
        save is running; the Deferred fires once it is on disk.

        Called every C{commit_save_interval} seconds and by the service as
        it stops: never on a write's path, so it adds no fsync to it.  A
        restart applies through what was saved (at most an interval behind
        what was committed), before hearing from any leader.  A failed save
        stops the node like any other failed metadata save.
        """
        commit = self._durable_commit()
        if self._failed or self._commit_save_running or commit <= self._metadata.commit_index:
            return succeed(None)
        self._commit_save_running = True
        saved = self._metadata.save_commit_index(commit)

        def done(result: object) -> None:
            self._commit_save_running = False
            if isinstance(result, Failure):
                self._fatal(result, _storage_or_internal(result), "saving the commit index")

        return saved.addBoth(done)

    def _save_hard_state(self, hard_state: HardState) -> None:
        saved = self._metadata.save(hard_state, self._durable_commit())
        barrier: Deferred[None] = Deferred()

        def done(result: object) -> object:
            if isinstance(result, Failure):
                self._fatal(result, _storage_or_internal(result))
            barrier.callback(None)
            return None

        saved.addBoth(done)
        self._metadata_barrier = barrier

    def _after_durable(self, ready: Ready, synced: Deferred[Any]) -> None:
        """Send the batch's dependent messages and tell the core once the WAL
        (C{synced}) and any term/vote change are durable."""
        barrier = self._metadata_barrier
        if barrier is None or barrier.called:
            # The common case, on every write's path: the WAL alone.
            synced.addCallbacks(self._durable, self._durable_failed, callbackArgs=(ready,))
            return
        follower: Deferred[None] = Deferred()

        def release_follower(r: object) -> object:
            follower.callback(None)
            return r

        barrier.addCallback(release_follower)

        def both_durable(results: list[tuple[bool, Any]]) -> None:
            for ok, value in results:
                if not ok:
                    self._durable_failed(value)
                    return
            self._durable(None, ready)

        DeferredList([synced, follower], consumeErrors=True).addCallback(both_durable)

    def _durable(self, _: object, ready: Ready) -> None:
        """C{ready}'s entries and term/vote are durable: send its dependent
        messages and tell the core."""
        if self._stopped or self._failed:
            return
        try:
            for message in ready.messages_after_persist:
                self._peers.send(message)
            self.core.persisted(*ready.persist_through)
            # Only if the news gave the core work (a leader's commit): a
            # pass with nothing ready costs a reactor iteration per write on
            # every node, and persisted() changes nothing the pass's other
            # checks look at.
            wanted = self.core.has_ready()
        except Exception:
            # This runs in a Deferred callback: an exception would only end
            # up in the Deferred, and the core, never told, would stall
            # every later write.  Stop, as in _process.
            self._fatal(Failure(), FailedPart.INTERNAL)
            return
        if wanted:
            self.wake()

    def _durable_failed(self, failure: Failure) -> None:
        """A batch could not be made durable: stop (L{_storage_or_internal})."""
        self._fatal(failure, _storage_or_internal(failure))

    def _fatal(self, failure: Failure, part: FailedPart, where: str = "") -> None:
        """Fail-stop: log what failed, fail every waiting client, and ask
        the service to stop the process (with C{part}'s exit status)."""
        if self._failed:
            return
        self._failed = True
        article = "an" if part.value[0] in "aeiou" else "a"
        self._failed_reason = f"the node has stopped after {article} {part.value} failure"
        self.log.failure(
            _FATAL_LOG_LINES[part] + (" ({where})" if where else ""), failure, part=part.value, where=where
        )
        self._fail_writes(f"{part.value} failed")
        self._fail_reads(f"{part.value} failed")
        self._fail_transfers(f"{part.value} failed")
        self._on_fatal(Failure(FatalError(part, failure)))

    def _apply(self, ready: Ready) -> None:
        state_machine = self.state_machine
        pending = self._pending_writes
        if trace.ENABLED:
            trace.record("commit", ready.committed[-1][0])
        if self._snapshots is not None:
            self._snapshots.note_applied(sum(len(e[2]) for e in ready.committed), len(ready.committed))
        for index, term, payload in ready.committed:
            try:
                result = state_machine.apply(index, payload)
            except InvalidCommand as e:
                # Committed everywhere, so every node skips it alike; it
                # counts as applied (the state machine moved past it).
                self.log.error("skipping committed entry {index}: {error}", index=index, error=str(e))
                result = _INVALID
            except Exception:
                raise _PartFailed(FailedPart.APPLY, Failure(), f"log entry {index}") from None
            write = pending.pop(index, None) if pending else None
            if write is None:
                continue
            if trace.ENABLED:
                trace.record("apply", index)
            if write.term != term:
                # Another leader's entry took this index: ours was dropped.
                write.deferred.errback(OutcomeUnknown("leadership changed before the write committed"))
            elif result is _INVALID:
                write.deferred.errback(OutcomeUnknown("the committed entry was not a valid command"))
            elif (error := result.error(write.key)) is None:
                write.deferred.callback(result.value)
            else:
                write.deferred.errback(error)
        if state_machine.log_time > self._last_stamp:
            self._follow_log_time()
        self._finish_waiting_reads()
        self._maybe_report_recovery()

    def _finish_waiting_reads(self) -> None:
        """Answer the reads whose index the state machine has now applied."""
        state_machine = self.state_machine
        if self._reads_waiting_apply:
            applied = state_machine.applied_index
            still_waiting = []
            for read in self._reads_waiting_apply:
                if read.index is not None and read.index <= applied:
                    self._finish_read(read)
                else:
                    still_waiting.append(read)
            self._reads_waiting_apply = still_waiting

    def _finish_read(self, read: _PendingRead) -> None:
        value = self.state_machine.get(read.key)
        if value is None:
            read.deferred.errback(KeyNotFound(read.key))
        else:
            read.deferred.callback(value)

    def _check_leadership(self) -> None:
        core = self.core
        if core.leader_id is not None and (core.term, core.leader_id) != self._seen_leader:
            self._seen_leader = (core.term, core.leader_id)
            self.metrics.leader_changed(core.term, core.leader_id)
        if core.role is Role.LEADER:
            if self._leader_term != core.term:
                self._leader_term = core.term
                self.log.info("node {node} became leader in term {term}", node=core.node_id, term=core.term)
        else:
            if self._leader_term is not None:
                self.log.info("node {node} is no longer leader (term {term})", node=core.node_id, term=core.term)
                self._leader_term = None
            if self._pending_writes:
                self._fail_writes("leadership was lost before the write committed")

    # ------------------------------------------------------------------
    # Snapshots (issue 12)
    #
    # Taking one: once the policy says so after applying, the state machine
    # is snapshotted without stalling the reactor (NodeSnapshots.take); once
    # the file is durable the core is told (snapshot_taken), the core and
    # the log drop what lies catch-up entries before it, or less on a
    # leader sending a follower a snapshot (core.compaction_point; compact,
    # drop_prefix: only now, so that a crash never leaves a log whose
    # prefix is gone without a durable snapshot covering it; in bounded
    # steps across reactor turns, kvstore.node.log_compaction), and all but
    # the newest two snapshots and any being sent are deleted.
    #
    # Installing one (Ready.install_snapshot, from a leader through the
    # snapshot transfer): before anything else in the batch, the state
    # machine is replaced from the received file (a chunk per reactor
    # turn, no later batch is handled meanwhile) and the log reset to
    # continue after it; then the rest of the batch is handled as usual, so
    # its acknowledgement leaves only once the reset is durable.

    @property
    def snapshot_store(self) -> SnapshotStore | None:
        """This node's snapshot directory (for the snapshot transfer)."""
        return self._snapshots.store if self._snapshots is not None else None

    @property
    def snapshot_runner(self) -> ThreadRunner | None:
        """Runs the snapshots' blocking file work (reading chunks to send,
        writing received ones) off the reactor: the node's own snapshot
        thread, apart from the log's."""
        return self._snapshots.run_in_thread if self._snapshots is not None else None

    def set_snapshot_offers(self, offers: SnapshotOffers) -> None:
        """Hand the core's InstallSnapshot offers to C{offers} (the snapshot
        transfer's sender side) from now on."""
        self._snapshot_offers = offers

    def protect_snapshot(self, name: str) -> None:
        """Keep the snapshot file C{name} (its base name) from being
        deleted until L{release_snapshot}: a transfer is reading it."""
        if self._snapshots is not None:
            self._snapshots.protect(name)

    def release_snapshot(self, name: str) -> None:
        """Undo one L{protect_snapshot}."""
        if self._snapshots is not None:
            self._snapshots.release(name)

    def report_snapshot(self, follower: int, ok: bool) -> None:
        """The transfer of the offered snapshot to C{follower} ended: whole
        (C{ok}) or given up.  Tells the core, which probes the follower."""
        if self._stopped or self._failed:
            return
        try:
            self.core.report_snapshot(follower, ok)
        except Exception:
            self._fatal(Failure(), FailedPart.INTERNAL, f"reporting the snapshot sent to node {follower}")
            return
        self.wake()

    def step_installed_snapshot(self, leader: int, term: int, index: int, snapshot_term: int) -> None:
        """
        The snapshot C{leader} sent in C{term}, through C{index} (whose
        entry has C{snapshot_term}), is received whole, verified and
        installed in the snapshot directory: step it into the core, which
        acknowledges it (once durable) and, unless its log already covers
        it, has the node install it (L{Ready.install_snapshot}) with the
        configuration its metadata carries.
        """
        configuration = self._snapshot_configuration(index, snapshot_term)
        self.receive(Message(leader, self.core.node_id, InstallSnapshot(term, index, snapshot_term, configuration)))

    def _snapshot_configuration(self, index: int, term: int) -> Configuration | None:
        """The configuration recorded in the snapshot file C{(index, term)}
        (its header only is read), or L{None} if it holds none."""
        store = self.snapshot_store
        if store is None:
            return None
        try:
            return membership_from_meta(store.read_meta(index, term).membership)
        except Exception as e:
            self.log.warn(
                "snapshot at index {index} term {term}: no usable membership ({error}); keeping this node's",
                index=index, term=term, error=str(e),
            )
            return None

    def _maybe_snapshot(self) -> None:
        snapshots = self._snapshots
        if snapshots is None or self._installing is not None or self._stopped or self._failed:
            return
        core = self.core
        if core.snapshot_index > self.state_machine.applied_index:
            # The core took a leader's snapshot that the node has not
            # installed yet: it no longer holds the applied index's term, and
            # the state machine is about to be replaced anyway.
            return
        if not snapshots.due(self.state_machine.applied_index):
            return
        self._take_snapshot(snapshots).addErrback(lambda _: None)  # _snapshot_failed has dealt with it

    def _take_snapshot(self, snapshots: NodeSnapshots) -> Deferred[SnapshotInfo]:
        core = self.core

        def make_meta(index: int) -> SnapshotMeta:
            return SnapshotMeta(
                index,
                core.term_at(index),
                cluster_id=self._cluster_id,
                membership=membership_to_meta(core.configuration_at(index)),
                content_format=CONTENT_FORMAT,
            )

        started = self._clock.seconds()

        def done(info: SnapshotInfo) -> SnapshotInfo:
            self._snapshot_done(info, started)
            return info

        def failed(failure: Failure) -> Failure:
            self._snapshot_failed(failure)
            return failure

        self.log.debug("snapshotting the state machine at index {index}", index=self.state_machine.applied_index)
        index = self.state_machine.applied_index
        taken = snapshots.take(self.state_machine, make_meta).addCallbacks(done, failed)
        if "compact-wal-before-snapshot-durable" in self._plants and not self._stopped and not self._failed:
            # The planted bug: the core and the log drop the prefix as soon
            # as the snapshot starts, not once its file is durable.
            self._snapshot_done(
                SnapshotInfo(snapshots.path(index, core.term_at(index)), index, core.term_at(index)), started
            )
        return taken

    def snapshot_now(self) -> Deferred[SnapshotInfo]:
        """
        Take a snapshot of the state machine as of its applied index now,
        due or not, through the same steps as a due one (the core is told,
        the log compacted and old snapshots pruned once it is durable), and
        fire with it: an online backup (L{kvstore.protocols.backup}) streams
        it.  If a snapshot is being taken, wait for it to end first; while
        the leader's snapshot is being installed, fail with L{Unavailable}.
        """
        snapshots = self._snapshots
        if snapshots is None:
            return fail(Unavailable("this node keeps no snapshots"))
        if self._stopped or self._failed:
            return fail(Unavailable(self._failed_reason if self._failed else "the node is shutting down"))
        if self._installing is not None:
            return fail(Unavailable("installing the leader's snapshot; try again"))
        if snapshots.busy is not None:
            # Not a callback's result on busy: whoever else waits for it
            # (an install) must get it unchanged.
            later: Deferred[SnapshotInfo] = Deferred()

            def again(result: object) -> object:
                self.snapshot_now().chainDeferred(later)
                return result

            snapshots.busy.addBoth(again)
            return later
        return self._take_snapshot(snapshots)

    def _snapshot_done(self, info: SnapshotInfo, started: float) -> None:
        if self._stopped or self._failed:
            return
        snapshots = self._snapshots
        assert snapshots is not None
        self.log.info(
            "snapshot at index {index} term {term} written ({size} bytes)", index=info.index, term=info.term,
            size=info.size,
        )
        self.metrics.snapshot_saved(self._clock.seconds() - started, info.size or 0)
        try:
            core = self.core
            if self._installing is None and info.index > core.snapshot_index:
                core.snapshot_taken(info.index, info.term)
            # Never past the snapshot the core knows of (an installed one
            # may have replaced this one meanwhile: then nothing is held).
            through = min(snapshots.compact_through(info.index), core.snapshot_index)
            # A leader holds back what a follower being sent a snapshot, or
            # catching up from one, needs next (up to a cap): otherwise it
            # compacts past the snapshot while it travels and the follower
            # needs another one as soon as it has installed it.
            wanted, through = through, core.compaction_point(through, snapshots.max_held_for_followers())
            if through < wanted and wanted >= core.first_index:
                self.log.info(
                    "log kept from index {first} (instead of {wanted}) for a follower receiving or catching up from a snapshot",
                    first=through + 1, wanted=wanted + 1,
                )
            if self._installing is None and through >= core.first_index:
                # In bounded steps, one per reactor turn (the first now):
                # dropping 100,000 entries at once stalled the reactor ~20 ms.
                self.compaction.request(through)
        except Exception:
            self._fatal(Failure(), FailedPart.INTERNAL, "compacting the log after a snapshot")
            return
        self._prune()
        self._maybe_snapshot()

    def _compact_step(self, through: int) -> bool:
        """One step of L{compaction}: drop the core's and the log's entries
        through C{through}; whether the steps may go on (not while a
        snapshot is installed: that resets the log anyway)."""
        if self._stopped or self._failed or self._installing is not None:
            return False
        try:
            self.core.compact(through)
            with _failures_of_storage:
                self._wal.drop_prefix(through)
        except _PartFailed as e:
            self._fatal(e.failure, e.part, "compacting the log after a snapshot")
            return False
        except Exception:
            self._fatal(Failure(), FailedPart.INTERNAL, "compacting the log after a snapshot")
            return False
        return True

    def _compaction_finished(self, through: int) -> None:
        """The log is dropped through C{through}: make the deletion of the
        segments it no longer needs durable."""
        if self._stopped or self._failed:
            return
        try:
            with _failures_of_storage:
                self._wal.sync().addErrback(self._storage_failed, "dropping the log before a snapshot")
        except _PartFailed as e:
            self._fatal(e.failure, e.part, "compacting the log after a snapshot")

    def _snapshot_failed(self, failure: Failure) -> None:
        """
        A snapshot could not be taken.  An I/O error stops the node, as any
        storage failure does.  A refusal by the snapshot store (a snapshot
        of the same index and term is being received from the leader right
        now) only skips this one: nothing was compacted, and the next
        applied entry tries again.
        """
        if self._stopped or self._failed:
            return
        if not failure.check(OSError) and failure.check(StorageError):
            self.log.warn("snapshot skipped: {error}", error=failure.getErrorMessage())
            return
        self._fatal(failure, _storage_or_internal(failure), "taking a snapshot")

    def _storage_failed(self, failure: Failure, where: str) -> None:
        if not (self._stopped or self._failed):
            self._fatal(failure, _storage_or_internal(failure), where)

    def _prune(self) -> None:
        if self._snapshots is not None:
            self._snapshots.prune().addErrback(self._storage_failed, "deleting old snapshots")

    def _install(self, ready: Ready) -> None:
        """Install C{ready.install_snapshot}, then handle the rest of C{ready}
        (see the section comment above)."""
        point = ready.install_snapshot
        assert point is not None
        snapshots = self._snapshots
        if snapshots is None:
            raise _PartFailed(
                FailedPart.INTERNAL,
                Failure(RuntimeError("a snapshot to install, but this node has no snapshot directory")),
            )
        self._installing = point
        started = self._clock.seconds()
        self.log.info(
            "installing the leader's snapshot at index {index} term {term}", index=point.index, term=point.term
        )

        def restore(_: object = None) -> None:
            if self._stopped or self._failed:
                return
            snapshots.restore(self.state_machine, point.index, point.term).addCallbacks(restored, failed)

        def restored(keys: int) -> None:
            if self._stopped or self._failed:
                return
            try:
                with _failures_of_storage:
                    self._wal.reset_after(point.index, point.term)
                self._installing = None
                # needs_persist() counts the reset: the batch's sync makes
                # it durable before the acknowledgement leaves.
                self._handle_ready(ready, installed=True)
                self._finish_waiting_reads()
            except _PartFailed as e:
                self._fatal(e.failure, e.part, e.where or "installing a snapshot")
                return
            except Exception:
                self._fatal(Failure(), FailedPart.INTERNAL, "installing a snapshot")
                return
            self.log.info(
                "installed the leader's snapshot at index {index}: {keys} keys", index=point.index, keys=keys
            )
            self.metrics.snapshot_installed(self._clock.seconds() - started, snapshots.restored_bytes)
            self._prune()
            self.wake()

        def failed(failure: Failure) -> None:
            self._storage_failed(failure, f"installing the snapshot at index {point.index}")

        # A snapshot of the state machine being taken must end first: the
        # state machine cannot be replaced while it is frozen.
        if snapshots.busy is not None:
            snapshots.busy.addCallback(restore)
        else:
            restore()

    def _maybe_report_recovery(self) -> None:
        """Log the restart report once everything known committed at
        start-up is applied (L{kvstore.node.recovery.report_line})."""
        recovered = self._recovered
        if recovered is not None and self.state_machine.applied_index >= recovered.commit_index:
            self._recovered = None
            self.log.info(
                "{report}", report=report_line(recovered, len(self.state_machine), time.monotonic())
            )

    # ------------------------------------------------------------------
    # Timeouts

    def set_timeouts(self, commit_timeout: float, read_timeout: float) -> None:
        """
        Change the commit and read timeouts while the node runs (a
        configuration reload, L{kvstore.daemon.reload}).  New requests get the new
        ones; a request already waiting keeps its deadline, but no later
        than the new timeout from now, which also keeps the writes'
        deadlines in index order (L{_expire} relies on it).
        """
        now = self._clock.seconds()
        self._commit_timeout, self._read_timeout = commit_timeout, read_timeout
        for write in self._pending_writes.values():
            write.deadline = min(write.deadline, now + commit_timeout)
        for read in [*self._pending_reads.values(), *self._reads_waiting_apply]:
            read.deadline = min(read.deadline, now + read_timeout)
        if self._sweep_call is not None and self._sweep_call.active():
            self._sweep_call.cancel()  # its interval follows the timeouts
            self._schedule_sweep()

    def _schedule_sweep(self) -> None:
        interval = max(0.05, min(self._commit_timeout, self._read_timeout) / 4)
        self._sweep_call = self._clock.callLater(interval, self._sweep)

    def _sweep(self) -> None:
        self._sweep_call = None
        if self._stopped or self._failed:
            return
        try:
            self._expire()
        except Exception:
            # Raised into the reactor, this would only be logged and the
            # sweeper never rescheduled: clients would wait forever.
            self._fatal(Failure(), FailedPart.INTERNAL, "the timeout sweeper")
            return
        self._schedule_sweep()

    def _expire(self) -> None:
        """Fail the writes and reads whose deadline has passed."""
        now = self._clock.seconds()
        pending = self._pending_writes
        # Writes are ordered by index and deadlines grow with it.
        while pending:
            index, write = next(iter(pending.items()))
            if write.deadline > now:
                break
            del pending[index]
            write.deferred.errback(OutcomeUnknown("the write did not commit in time"))
        expired = [rid for rid, read in self._pending_reads.items() if read.deadline <= now]
        for rid in expired:
            self.core.forget_read(rid)
            self._pending_reads.pop(rid).deferred.errback(Unavailable("the read index was not confirmed in time"))
        if self._reads_waiting_apply:
            waiting = []
            for read in self._reads_waiting_apply:
                if read.deadline <= now:
                    read.deferred.errback(Unavailable("this node did not catch up in time"))
                else:
                    waiting.append(read)
            self._reads_waiting_apply = waiting
        self._check_transfers()

    def _fail_writes(self, reason: str) -> None:
        pending, self._pending_writes = self._pending_writes, OrderedDict()
        for write in pending.values():
            write.deferred.errback(OutcomeUnknown(reason))

    def _fail_transfers(self, reason: str) -> None:
        waiters, self._transfer_waiters = self._transfer_waiters, []
        for waiter in waiters:
            waiter.deferred.errback(Unavailable(reason))

    def _fail_reads(self, reason: str) -> None:
        reads = list(self._pending_reads.values()) + self._reads_waiting_apply
        self._pending_reads = {}
        self._reads_waiting_apply = []
        for read in reads:
            read.deferred.errback(Unavailable(reason))


def _member_role(configuration: Configuration, node_id: int, removed: bool = False) -> str:
    """This node's role in C{configuration}, for C{STATUS}: C{voter},
    C{learner}, C{removed} (by a committed configuration) or C{none}
    (joining, or removed by a configuration not known to be committed)."""
    if removed:
        return "removed"
    role = configuration.role(node_id)
    return role.value if role is not None else "none"


def _trace_received(message: Message) -> None:
    """Trace the arrival of new entries (follower) and of acknowledgements
    of them (leader); heartbeats and refusals are not stages of a write."""
    body = message.body
    if type(body) is AppendEntries and body.entries:
        trace.record("ae.received", body.entries[-1][0])
    elif type(body) is AppendEntriesResponse and body.success:
        trace.record("ack.received", body.index)
