# -*- test-case-name: tests.test_raft_core -*-
"""
The Raft consensus algorithm as a deterministic state machine with no I/O.

L{RaftCore} takes inputs -- a peer message (L{RaftCore.step}), a client
command (L{RaftCore.propose}), a read request (L{RaftCore.request_read}),
notice that entries became durable (L{RaftCore.persisted}) and its own timers
-- and accumulates outputs that the caller collects with L{RaftCore.ready}.
The caller (L{kvstore.node.node}) must handle a L{Ready} in this order:

  0. install C{install_snapshot}, if set, before anything else in the
     batch: replace the state machine with the snapshot's content and reset
     the log storage to continue after the snapshot's C{(index, term)},
     durably (the entries of the batch continue it; C{committed} never holds
     an entry at or below an installed snapshot);
  1. persist C{hard_state}, then C{truncate_from}/C{entries};
  2. send C{messages} at once, before step 1 if the caller likes (they do
     not depend on local durability);
  3. send C{messages_after_persist} only once step 1 is durable;
  4. apply C{committed} entries in order, and answer C{reads} once the
     state machine has applied up to each read's index.

Log compaction (Raft paper section 7): the core holds its log as a plain
list of entries starting at C{first_index}; everything before is covered by
the snapshot the core knows of (C{snapshot_index}/C{snapshot_term}),
possibly with a catch-up tail of older entries still held.  The node reports
a durable local snapshot with L{RaftCore.snapshot_taken} and drops entries
with L{RaftCore.compact}.  A leader whose follower needs a compacted entry
emits an L{InstallSnapshot} body in C{messages} for the node to hand to its
snapshot transfer (it never goes over the wire as such); the node reports
the transfer's end with L{RaftCore.report_snapshot}.  A follower's node
steps an L{InstallSnapshot} once the whole file is verified on disk.

Time comes only from the injected C{IReactorTime} and randomness only from the
injected C{random.Random}, so the same inputs always give the same outputs:
this is what lets the tests and the simulator run whole clusters on a
C{task.Clock}.  Timer callbacks change state and queue outputs, then call the
injected C{wake} hook; they never do I/O.  An exception in a timer callback
is a bug; it goes to the C{on_timer_error} hook given to L{RaftCore.start}
(the node fail-stops), because raised into the reactor it would only be
logged, and a heartbeat timer that raised once would never be rescheduled.

The algorithm follows the extended Raft paper (Figure 2, sections 5 and 8)
and Ongaro's thesis: Pre-Vote (9.6), leader stickiness and check-quorum
(4.2.3, 6.2), the no-op entry at the start of a term and ReadIndex (6.4),
and a conflict hint for fast log back-off (5.3).

Membership (thesis chapter 4, L{kvstore.raft.membership}): the core keeps
the current L{Configuration} of voters and learners; only voters count in
elections, commit, ReadIndex and check-quorum, and only voters campaign
(and a node whose removal it holds but does not know to be committed: see
L{RaftCore._may_campaign}).
A change is one server at a time (L{RaftCore.propose_change}), logged as a
configuration entry holding the whole new configuration.  A configuration
takes effect on each node as soon as its entry is I{appended} to that
node's log, not when it commits (thesis 4.1): a leader must count the new
configuration's quorum for the very entry that introduces it, and a node
must use the newest configuration it holds so that any two quorums of
consecutive configurations overlap.  If the entry is truncated, the node
rolls back to the configuration before it (the core keeps the
C{(index, configuration)} history of the entries it holds).  Two rules make
single-server changes safe: a leader starts a change only once an entry of
its own term has committed (otherwise an older uncommitted configuration
on another node can elect a leader that overwrites a committed change: the
bug in the thesis's algorithm, fixed in Ongaro's 2015 erratum), and only
when no other configuration entry is uncommitted.  A leader that removes
itself keeps leading, without counting itself, until the change commits,
then steps down and sends L{TimeoutNow} to its most up-to-date voter.
Vote requests from removed ids, and any of their messages with a higher
term, are dropped (ids are never reused), so a removed node cannot
disrupt the cluster.  Vote requests from ids this node does not know
(yet) are still answered, as the thesis requires (4.1): a node whose log
lacks a newer member's addition may hold the vote that member needs, and
only a node that is a voter in its own configuration ever campaigns.

Leadership transfer (thesis 3.10, L{RaftCore.transfer_leadership}): the
leader stops accepting proposals, brings the target's log up to date, sends
it L{TimeoutNow}, and resumes if the target has not taken over within the
minimum election timeout.  The target campaigns at once, without Pre-Vote
and with C{leadership_transfer} set so that leader stickiness lets its
vote requests through.
"""

from __future__ import annotations

import bisect
import enum
import random
from operator import itemgetter
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from kvstore.raft.config import RaftConfig
from kvstore.raft.membership import (
    ChangeInProgress,
    ChangeRefused,
    Configuration,
    ConfigurationChange,
    LeaderNotReady,
    MemberRole,
    PromoteLearner,
    decode_configuration_entry,
    encode_configuration_entry,
    is_raft_payload,
)
from kvstore.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Body,
    Entry,
    EntryTuple,
    InstallSnapshot,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    TimeoutNow,
)


_term_of = itemgetter(1)  # the term of an (index, term, payload) entry
_payload_of = itemgetter(2)


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryTooLarge(ValueError):
    """A proposal was refused because its entry alone would exceed the hard
    per-message limit (L{RaftConfig.max_entries_bytes}): it could never be
    replicated.  Nothing was appended.  The node's option validation makes
    this unreachable for client commands; it guards the core's contract."""


def _default_entry_size(payload: bytes) -> int:
    """The size an entry is counted at when the caller gives no measure:
    its payload plus a fixed allowance for index, term and framing."""
    return len(payload) + 32


class CompactedIndex(LookupError):
    """The term of an index below the held log was asked for: the entry was
    compacted into the snapshot and its term is no longer known (only the
    snapshot's own index, and the entry just before the held log when known,
    keep theirs)."""


@dataclass(frozen=True)
class SnapshotPoint:
    """The last entry a snapshot covers: its C{index} and C{term}."""

    index: int
    term: int


_NO_SNAPSHOT = SnapshotPoint(0, 0)


class NotLeaderError(Exception):
    """A proposal was refused because this node is not the leader; nothing
    was appended.  C{leader_id} is the leader this node knows of, if any."""

    def __init__(self, leader_id: int | None) -> None:
        super().__init__(leader_id)
        self.leader_id = leader_id


class LeadershipTransferInProgress(NotLeaderError):
    """A proposal was refused because this leader is handing leadership to
    C{target} (L{RaftCore.transfer_leadership}); nothing was appended.  It
    is a L{NotLeaderError} naming the target, so a client retries there."""

    def __init__(self, target: int) -> None:
        super().__init__(target)
        self.target = target

    def __str__(self) -> str:
        return f"leadership is being transferred to node {self.target}"


class TransferRefused(Exception):
    """L{RaftCore.transfer_leadership} refused; str() is the text after
    C{"Error: "} in the node's reply."""


class TransferToSelf(TransferRefused):
    def __init__(self, node_id: int) -> None:
        super().__init__(f"Node {node_id} is already the leader")


class TransferToLearner(TransferRefused):
    def __init__(self, node_id: int) -> None:
        super().__init__(f"Node {node_id} is a learner; leadership goes only to a voter")


class TransferToNonMember(TransferRefused):
    def __init__(self, node_id: int) -> None:
        super().__init__(f"Node {node_id} is not a member")


class TransferInProgress(TransferRefused):
    def __init__(self, target: int) -> None:
        super().__init__(f"Leadership transfer to node {target} in progress")
        self.target = target


@dataclass(frozen=True)
class HardState:
    """The state that must be durable before any message depending on it is
    sent: the current term and the vote cast in it."""

    term: int = 0
    voted_for: int | None = None


@dataclass(frozen=True)
class ReadState:
    """A read may be answered once the state machine has applied C{index}."""

    request_id: int
    index: int


@dataclass(frozen=True)
class UnsendableEntry:
    """
    The leader cannot send C{follower} the entry at C{index}: it is C{size}
    bytes on the wire, over the per-message limit (a release before the
    limit accepted it).  With C{stepped_down}, too few followers are past
    such entries for anything to commit, and the leader stepped down.  With
    C{deadlocked}, too few are past it for this leader to commit and too few
    lack it for any of them to be elected: the leader stays (stepping down
    would only start elections that a node holding the entry wins again), and
    nothing commits until an operator acts.
    """

    follower: int
    index: int
    size: int
    stepped_down: bool
    deadlocked: bool = False


@dataclass
class Ready:
    """
    One batch of outputs; see the module docstring for the order in which
    they must be handled.

    @ivar install_snapshot: a snapshot a leader sent, which replaces this
        follower's state machine and whole log; handled before everything
        else in the batch (see the module docstring).  L{None} almost always.
    @ivar hard_state: the new term/vote to persist, or L{None} if unchanged.
    @ivar truncate_from: drop every stored entry with an index at or above
        this before appending C{entries}; L{None} if nothing is dropped.
    @ivar entries: entries to append to stable storage, as plain
        C{(index, term, payload)} tuples (see L{EntryTuple}).
    @ivar persist_through: C{(index, term)} of the last entry in the log
        after this batch; report it to L{RaftCore.persisted} once durable.
    @ivar messages: messages that may be sent immediately.
    @ivar messages_after_persist: messages that may be sent only after
        C{hard_state} and C{entries} are durable (votes, acknowledgements).
    @ivar committed: committed C{(index, term, payload)} tuples to apply, in
        order, exactly once.
    @ivar reads: reads whose index is now known.
    @ivar failed_reads: reads that cannot be served, with a reason.
    @ivar unsendable: followers newly found to need an entry too large for
        any peer message (see L{RaftCore._handle_unsendable}); empty almost
        always.
    """

    hard_state: HardState | None = None
    truncate_from: int | None = None
    entries: list[EntryTuple] = field(default_factory=list)
    persist_through: tuple[int, int] = (0, 0)
    messages: list[Message] = field(default_factory=list)
    messages_after_persist: list[Message] = field(default_factory=list)
    committed: list[EntryTuple] = field(default_factory=list)
    reads: list[ReadState] = field(default_factory=list)
    failed_reads: list[tuple[int, str]] = field(default_factory=list)
    unsendable: list[UnsendableEntry] = field(default_factory=list)
    install_snapshot: SnapshotPoint | None = None

    def needs_persist(self) -> bool:
        return (
            self.hard_state is not None
            or self.truncate_from is not None
            or bool(self.entries)
            or self.install_snapshot is not None
        )


class _ProgressState(enum.Enum):
    PROBE = "probe"  # one message at a time until the follower's log position is found
    REPLICATE = "replicate"  # optimistic pipelining up to max_inflight messages
    SNAPSHOT = "snapshot"  # needs a compacted entry: a snapshot transfer is under way, only heartbeats go


class _Progress:
    """The leader's view of one follower."""

    __slots__ = (
        "next_index", "match_index", "state", "inflight", "probe_sent", "acked_round", "active", "pending_snapshot",
        "recent", "caught_up_beats", "catching_up", "commit_sent",
    )

    def __init__(self, next_index: int) -> None:
        self.next_index = next_index
        self.match_index = 0
        self.state = _ProgressState.PROBE
        self.inflight: deque[int] = deque()  # last index of each unacknowledged message
        self.probe_sent = False
        self.acked_round = 0
        self.active = False  # heard from since the last check-quorum
        # In the SNAPSHOT state: the snapshot offered to this follower.
        self.pending_snapshot = _NO_SNAPSHOT
        # Learner promotion: heard from since the last heartbeat, and for
        # how many heartbeats in a row it was close to the leader's log.
        self.recent = False
        self.caught_up_beats = 0
        # Installed a snapshot and is catching up from its index: until its
        # match index reaches this index (the leader's last index when the
        # install ended, i.e. what was written meanwhile), the leader's
        # compaction holds the log at its match index (see
        # RaftCore.compaction_point).  0 when not catching up.
        self.catching_up = 0
        # The commit index of the last AppendEntries sent to it: a commit
        # notice goes only to followers not told of the current one.
        self.commit_sent = 0

    def become_probe(self) -> None:
        self.state = _ProgressState.PROBE
        self.inflight.clear()
        self.probe_sent = False
        self.next_index = self.match_index + 1

    def become_replicate(self) -> None:
        self.state = _ProgressState.REPLICATE
        self.inflight.clear()
        self.probe_sent = False
        self.next_index = self.match_index + 1

    def become_snapshot(self, snapshot: SnapshotPoint) -> None:
        self.state = _ProgressState.SNAPSHOT
        self.inflight.clear()
        self.probe_sent = False
        self.pending_snapshot = snapshot


@dataclass
class _PendingRead:
    origin: int
    request_id: int
    index: int
    round: int | None = None


class RaftCore:
    """
    One member's Raft state.  See the module docstring for the contract.

    Invariants: C{snapshot_index <= applied <= commit_index <= last_index};
    C{first_index <= snapshot_index + 1}; C{durable_index <= last_index};
    every entry at or below C{commit_index} is committed and is never
    truncated.

    @param snapshot: the newest durable snapshot, when the node restarts
        from one.  C{entries} then continue it: they may start at any index
        up to C{snapshot.index + 1} (older ones are the catch-up tail) and
        must reach C{snapshot.index}; without a snapshot they start at 1.
    @param commit_index: the persisted commit index, clamped to
        C{[snapshot.index, last index]}.  The first L{ready} hands out the
        entries after the snapshot through it as C{committed}, so a
        restarted node applies what it knows is committed before it hears
        from a leader.
    @param configuration: the configuration as of the snapshot (the one the
        snapshot carries) or, without a snapshot, the bootstrap
        configuration the log starts from; configuration entries in
        C{entries} after it are replayed.  L{None}: the bootstrap
        configuration of C{config} (C{node_id} and C{peers}, all voters,
        addresses unknown).
    @param bootstrap: the entry a node bootstrapping a new cluster starts
        its log with (the initial configuration at index 1, the same on
        every bootstrapping node: L{kvstore.node.membership.bootstrap_entry}):
        appended, to be persisted with the first L{Ready}, if the log is
        empty, there is no snapshot and the term is 0; ignored otherwise (a
        restart, or storage written before such entries existed).
    """

    def __init__(
        self,
        config: RaftConfig,
        clock: IReactorTime,
        rng: random.Random,
        hard_state: HardState = HardState(),
        entries: Sequence[Entry | EntryTuple] = (),
        wake: Callable[[], None] = lambda: None,
        plants: frozenset[str] = frozenset(),
        entry_size: Callable[[bytes], int] = _default_entry_size,
        *,
        snapshot: SnapshotPoint | None = None,
        commit_index: int = 0,
        configuration: Configuration | None = None,
        bootstrap: EntryTuple | None = None,
    ) -> None:
        config.validate()
        # How many bytes an entry with this payload takes in an
        # AppendEntries on the wire (the core knows no encoding; the
        # composition root passes the peer protocol's measure).
        self._entry_size = entry_size
        self.config = config
        self.node_id = config.node_id
        self._clock = clock
        self._rng = rng
        self._wake = wake
        self._plants = plants  # planted bugs, for the simulator's tests only (kvstore.testing.sim.plants)

        self.term = hard_state.term
        self.voted_for = None if "forget-vote-on-restart" in plants else hard_state.voted_for
        self.role = Role.FOLLOWER
        self.leader_id: int | None = None

        # Plain tuples, never named ones: see EntryTuple.  tuple() of a plain
        # tuple is the same object, so a list from storage is shared, not copied.
        self._log: list[EntryTuple] = [tuple(e) for e in entries]  # type: ignore[misc]  # tuple(e) of a 3-tuple is a 3-tuple; mypy widens it to tuple[Any, ...]
        # The log is held from _first on: the entry at index i is
        # _log[i - _first].  Older entries are compacted into _snapshot.
        self._snapshot = snapshot if snapshot is not None else _NO_SNAPSHOT
        self._first = self._log[0][0] if self._log else self._snapshot.index + 1
        for position, entry in enumerate(self._log, start=self._first):
            if entry[0] != position:
                raise ValueError(f"log entries must be contiguous, found {entry[0]} at {position}")
        bootstrapping = False
        if bootstrap is not None and not self._log and self._snapshot.index == 0 and self.term == 0:
            self._log.append(bootstrap)
            bootstrapping = True
        self._check_log_continues_snapshot()
        # The term of the entry just before the held log, when known: it
        # lets an AppendEntries start right at the held log.
        self._boundary_term: int | None = self._known_boundary_term()
        self.applied = self._snapshot.index  # highest index handed out in Ready.committed (or installed)
        self.commit_index = max(self._snapshot.index, min(commit_index, self.last_index))
        # Everything recovered from storage is durable already (not a
        # bootstrap entry just appended).
        self.durable_index = 0 if bootstrapping else self.last_index
        self._unstable_from = self.durable_index + 1
        self._truncate_from: int | None = None
        self._hard_state_dirty = False
        # The term of the last hard state handed out in a Ready (the storage's
        # term at start): messages in a newer term wait for it to be durable.
        self._term_handed_out = hard_state.term
        self._install: SnapshotPoint | None = None  # for the next Ready

        # Membership: the configuration as of the snapshot (or the bootstrap
        # one), then one (index, configuration) per configuration entry in
        # the held log after it.  The last is current (effective once
        # appended); a truncation pops what it removes.
        base = configuration if configuration is not None else Configuration.bootstrap(config.node_id, config.peers)
        self._snapshot_configuration = base
        self._configurations: list[tuple[int, Configuration]] = [(self._snapshot.index, base)]
        for index, _, payload in self._log:
            if index > self._snapshot.index and is_raft_payload(payload):
                self._configurations.append((index, decode_configuration_entry(payload)))
        self._leadership_transfer: int | None = None  # the target, while this leader hands over
        self._leadership_transfer_deadline = 0.0
        # Leader: a configuration was appended whose commit it must act on
        # (see _on_configuration_committed).
        self._configuration_unsettled = False
        # Leader: members removed by a committed configuration that it still
        # replicates to until this time, so they learn of their removal.
        self._departing: dict[int, float] = {}

        self._messages: list[Message] = []
        self._messages_after_persist: list[Message] = []
        self._reads: list[ReadState] = []
        self._failed_reads: list[tuple[int, str]] = []

        self._votes: set[int] = set()
        self._progress: dict[int, _Progress] = {}
        self._round = 0
        self._read_round_in_flight: int | None = None
        # Some pending read has no round yet: the next ready() starts one.
        self._read_round_wanted = False
        self._pending_reads: list[_PendingRead] = []
        self._reads_awaiting_commit: list[_PendingRead] = []
        # Reads forwarded to the leader: request id -> when last sent.
        self._forwarded_reads: dict[int, float] = {}
        self._needs_broadcast = False
        self._commit_to_broadcast = False

        self._last_heard_from_leader: float | None = None
        self._election_deadline = 0.0
        self._election_timer: IDelayedCall | None = None
        self._heartbeat_timer: IDelayedCall | None = None
        self._commit_notify_timer: IDelayedCall | None = None
        self._quorum_check_at = 0.0
        self._started = False
        self._on_timer_error: Callable[[Failure], None] | None = None
        # Leader only: follower -> (index, size) of an entry too large for
        # any message that it needs, and which of those are not yet reported.
        self._stuck: dict[int, tuple[int, int]] = {}
        self._stuck_unreported: list[int] = []
        self._use_configuration()

    # ------------------------------------------------------------------
    # Membership

    @property
    def configuration(self) -> Configuration:
        """The current configuration: the newest in the log, committed or
        not (a configuration takes effect when appended; see the module
        docstring).  The node compares it after each L{ready} to add and
        remove peer links."""
        return self._configuration

    @property
    def configuration_index(self) -> int:
        """The index of the entry holding the current configuration (the
        snapshot's index, or 0, when no configuration entry is held after
        it)."""
        return self._configurations[-1][0]

    @property
    def configuration_change_pending(self) -> bool:
        """Whether the current configuration is not committed yet."""
        return self._configurations[-1][0] > self.commit_index

    @property
    def departing(self) -> frozenset[int]:
        """
        Leader: the ids it still replicates to although the current
        configuration no longer holds them: removed by an uncommitted
        configuration, or by a committed one for a short while after the
        commit (see L{_on_configuration_committed}).  The node keeps its
        peer links to them meanwhile.  Empty on any other node.
        """
        if self.role is not Role.LEADER:
            return frozenset()
        return frozenset(self._progress.keys() - self._configuration.member_ids)

    @property
    def removed(self) -> bool:
        """Whether a committed configuration removed this node: it never
        campaigns again and serves no client (ids are never reused)."""
        # Removed ids only accumulate along the history: if the newest
        # configuration does not name this node, none does (the fast path,
        # on every client request).
        if self.node_id not in self._configuration.removed:
            return False
        return self.node_id in self.configuration_at(self.commit_index).removed

    @property
    def snapshot_configuration(self) -> Configuration:
        """The configuration as of L{snapshot_index}: what the node writes
        into the snapshot, and what a snapshot offer carries."""
        return self._snapshot_configuration

    def configuration_at(self, index: int) -> Configuration:
        """
        The configuration in effect at C{index}: the one of the last
        configuration entry at or before it.  The node asks for it when it
        snapshots the state machine at its applied index.

        @raises ValueError: if C{index} is before the snapshot (its
            configuration is no longer known).
        """
        if index < self._configurations[0][0]:
            raise ValueError(f"the configuration at index {index}, before the snapshot, is not known")
        for at, configuration in reversed(self._configurations):
            if at <= index:
                return configuration
        raise AssertionError("unreachable: the first configuration is at or before the snapshot")

    def _quorum_of(self, configuration: Configuration) -> int:
        if "even-quorum-too-small" in self._plants:
            # The planted bug: half the voters of an even-sized cluster.
            return (len(configuration.voter_ids) - 1) // 2 + 1
        return configuration.quorum

    def _use_configuration(self) -> None:
        """Make the last configuration of the history current (after an
        append, a truncation, a snapshot install or at start)."""
        configuration = self._configurations[-1][1]
        self._configuration = configuration
        self._is_voter = self.node_id in configuration.voter_ids
        # The other voters, whose acknowledgements count in quorums.
        self._voter_peers = tuple(sorted(configuration.voter_ids - {self.node_id}))
        self._quorum = self._quorum_of(configuration)
        if self.role is Role.LEADER:
            # New members get replicated to at once, probed with the
            # configuration entry itself (the last one): the answer says
            # where their log ends.  Members removed keep their progress
            # until the change commits, so they can learn of it (they no
            # longer count: _voter_peers).
            for peer in sorted(configuration.member_ids - {self.node_id} - self._progress.keys()):
                self._progress[peer] = _Progress(self.last_index)
            self._configuration_unsettled = True
            self._ensure_heartbeat_timer()

    def _note_configurations(self, entries: Sequence[EntryTuple]) -> None:
        """Record the configuration entries among C{entries}, just
        appended; the last becomes current at once."""
        # On every append, so the common case is one pass in C: a batch
        # with no payload below b"\x01" (only empty no-ops and 0x00 entries
        # are) holds no configuration entry.
        if not entries or min(map(_payload_of, entries)) >= b"\x01":
            return
        found = False
        for index, _, payload in entries:
            if payload[:1] == b"\x00":
                self._configurations.append((index, decode_configuration_entry(payload)))
                found = True
        if found:
            self._use_configuration()

    def _change_refusal(self) -> ChangeRefused | NotLeaderError | None:
        """Why this node may not start a configuration change now, if it may not."""
        if self.role is not Role.LEADER:
            return NotLeaderError(self.leader_id)
        if self._leadership_transfer is not None:
            return LeadershipTransferInProgress(self._leadership_transfer)
        if not self._committed_in_current_term() and "change-before-own-term-commit" not in self._plants:
            return LeaderNotReady()
        if self.configuration_change_pending and "two-changes-at-once" not in self._plants:
            return ChangeInProgress()
        return None

    def propose_change(self, change: ConfigurationChange) -> tuple[int, int] | None:
        """
        Start a single-server membership change: append a configuration
        entry holding the configuration C{change} leads to.  It takes effect
        here at once (and on each follower when appended there).

        @return: C{(index, term)} of the configuration entry: the change is
            done when an entry with this index and term is committed (the
            node waits for it as for a write).  L{None} if the current
            configuration already is what C{change} asks for and is
            committed (an idempotent retry): nothing was appended.
        @raises NotLeaderError: this node is not the leader (a
            L{LeadershipTransferInProgress} while it hands leadership over).
        @raises LeaderNotReady: no entry of this leader's term has committed
            yet.
        @raises ChangeInProgress: another configuration entry is not
            committed yet.
        @raises ChangeRefused: the change itself is refused: the subclasses
            L{UnknownMember}, L{IdTaken}, L{AddressTaken}, L{IdRemoved}, L{LastVoter},
            L{InvalidAddress} of L{kvstore.raft.membership}.
        """
        refusal = self._change_refusal()
        if refusal is not None:
            raise refusal
        configuration = self._configuration.after(change)
        if configuration is None:
            return None
        index = self.last_index + 1
        entry = (index, self.term, encode_configuration_entry(configuration))
        self._append([entry])
        self._needs_broadcast = True
        self._maybe_commit()
        return index, self.term

    def _on_configuration_committed(self) -> None:
        """
        Leader: the current configuration just committed.  Keep replicating
        to the members it removed for the minimum election timeout more
        (every heartbeat carries the commit index, so a removed node that is
        still running learns that its removal committed and stops
        campaigning, even if the message that first told it was lost), then
        stop (L{_drop_departed}).  If it removed this leader, step down and
        hand leadership to the voter whose log is furthest ahead (it holds
        the committed change) with L{TimeoutNow}, so the cluster need not
        wait an election timeout.
        """
        configuration = self._configuration
        until = self._clock.seconds() + self.config.election_timeout_min
        for peer in self._progress:
            if peer not in configuration.member_ids:
                self._departing.setdefault(peer, until)
        if self._is_voter:
            return
        # Tell the followers the commit index now: the notice timer dies
        # with this leadership, and they would otherwise learn that their
        # leader's removal (and whatever else it committed last) committed
        # only once a successor has been elected and has committed.
        self._send_commit_notices()
        successor = max(self._voter_peers, key=lambda p: (self._progress[p].match_index, -p), default=None)
        if successor is not None and self._progress[successor].match_index >= self.configuration_index:
            self._send(successor, TimeoutNow(self.term))
        self._become_follower(self.term, None)

    def _drop_departed(self) -> None:
        """Leader, at each heartbeat: stop replicating to removed members
        whose time after the commit of their removal is up."""
        now = self._clock.seconds()
        for peer, until in list(self._departing.items()):
            if now >= until:
                del self._departing[peer]
                self._progress.pop(peer, None)
                self._stuck.pop(peer, None)
                # Not reported either: the report reads _stuck.
                self._stuck_unreported = [p for p in self._stuck_unreported if p != peer]

    def _maybe_promote_learners(self) -> None:
        """
        At each heartbeat: promote a learner that has been within
        C{learner_promotion_lag} entries of this leader's log, and heard
        from, for C{learner_promotion_heartbeats} heartbeats in a row.  One
        at a time (a change is refused while another is pending; the count
        carries on and the promotion happens at a later heartbeat).
        """
        config = self.config
        ready: list[int] = []
        for peer in sorted(self._configuration.learner_ids):
            progress = self._progress.get(peer)
            if progress is None:
                continue
            if progress.recent and self.last_index - progress.match_index <= config.learner_promotion_lag:
                progress.caught_up_beats += 1
            else:
                progress.caught_up_beats = 0
            progress.recent = False
            if progress.caught_up_beats >= config.learner_promotion_heartbeats:
                ready.append(peer)
        if ready and config.auto_promote_learners and self._change_refusal() is None:
            self.propose_change(PromoteLearner(ready[0]))

    # ------------------------------------------------------------------
    # Leadership transfer

    @property
    def transfer_target(self) -> int | None:
        """The voter this leader is handing leadership to, if any; while
        set, proposals are refused with L{LeadershipTransferInProgress}."""
        return self._leadership_transfer

    def transfer_leadership(self, target: int) -> None:
        """
        Hand leadership to the voter C{target} (thesis 3.10): refuse
        proposals from now on, bring C{target}'s log up to date, then send
        it L{TimeoutNow}.  The transfer ends when this node learns of a
        newer term (normally C{target}'s election) or, if C{target} has not
        taken over within the minimum election timeout, is abandoned and
        proposals are accepted again.  Asking again for the same target
        while it runs changes nothing.

        @raises NotLeaderError: this node is not the leader.
        @raises TransferRefused: C{target} is this node, a learner or not a
            member (L{TransferToSelf}, L{TransferToLearner},
            L{TransferToNonMember}), or a transfer to another node is under
            way (L{TransferInProgress}).
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if target == self.node_id:
            raise TransferToSelf(target)
        if self._leadership_transfer is not None:
            if self._leadership_transfer == target:
                return
            raise TransferInProgress(self._leadership_transfer)
        role = self._configuration.role(target)
        if role is None:
            raise TransferToNonMember(target)
        if role is MemberRole.LEARNER:
            raise TransferToLearner(target)
        self._leadership_transfer = target
        self._leadership_transfer_deadline = self._clock.seconds() + self.config.election_timeout_min
        if self._progress[target].match_index == self.last_index:
            self._send(target, TimeoutNow(self.term))
        else:
            # Entries if any may go, else a heartbeat: its answer shows
            # where the target's log stands and drives the catch-up.
            self._send_append(target, heartbeat=True)

    def match_index(self, peer: int) -> int | None:
        """Leader: how far C{peer}'s log is known to match this one's
        (L{None} if not leading or not replicating to it); the node picks
        the most up-to-date voter to hand leadership to at shutdown."""
        progress = self._progress.get(peer) if self.role is Role.LEADER else None
        return progress.match_index if progress is not None else None

    def _maybe_send_timeout_now(self, peer: int) -> None:
        """Send the transfer target L{TimeoutNow} once its log matches this
        leader's (no proposal can lengthen the log meanwhile); again at
        each acknowledgement, in case one is lost."""
        if self._leadership_transfer == peer and self._progress[peer].match_index == self.last_index:
            self._send(peer, TimeoutNow(self.term))

    def _handle_timeout_now(self, sender: int) -> None:
        """This node's leader asks it to take over: campaign at once."""
        if self.role is Role.LEADER or sender != self.leader_id or not self._is_voter:
            return
        self._campaign(pre_vote=False, leadership_transfer=True)

    # ------------------------------------------------------------------
    # Lifecycle

    def start(self, on_timer_error: Callable[[Failure], None] | None = None) -> None:
        """
        Start the timers.  A node that is the only voter of its
        configuration elects itself at once.

        @param on_timer_error: receives the failure of a timer callback that
            raised (a bug); without it the exception propagates to whoever
            runs the timer.  The caller, not the core, decides what a bug
            means (the node fail-stops), so the core stays free of I/O.
        """
        self._started = True
        self._on_timer_error = on_timer_error
        if self._is_voter and not self._voter_peers:
            self._campaign(pre_vote=False)
        else:
            self._reset_election_deadline()
        self._wake()

    def stop(self) -> None:
        """Cancel all timers; the core does nothing further by itself."""
        self._started = False
        for timer in (self._election_timer, self._heartbeat_timer, self._commit_notify_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._election_timer = self._heartbeat_timer = self._commit_notify_timer = None

    def set_wake(self, wake: Callable[[], None]) -> None:
        """
        Attach the hook called whenever the core has new output for
        L{ready}.  The node attaches its own C{wake} when it is built around
        the core, so nothing needs a forward reference to the node.
        """
        self._wake = wake

    # ------------------------------------------------------------------
    # Log helpers

    def _check_log_continues_snapshot(self) -> None:
        """Refuse a log that does not continue the snapshot: a gap after it,
        or a different entry at its index, means the caller's recovery chose
        a snapshot and a log that do not belong together."""
        snapshot = self._snapshot
        if snapshot.index == 0:
            if self._first != 1:
                raise ValueError(f"without a snapshot the log must start at index 1, not {self._first}")
            return
        if self._first > snapshot.index + 1:
            raise ValueError(
                f"log starts at index {self._first}, leaving a gap after the snapshot at index {snapshot.index}"
            )
        if self.last_index < snapshot.index:
            raise ValueError(f"log ends at index {self.last_index}, before the snapshot at index {snapshot.index}")
        term = self._log[snapshot.index - self._first][1] if self._first <= snapshot.index else snapshot.term
        if term != snapshot.term:
            raise ValueError(
                f"log holds entry {snapshot.index} of term {term}, the snapshot says term {snapshot.term}"
            )

    def _known_boundary_term(self) -> int | None:
        """The term of the entry at C{first_index - 1}, if the log starts at
        the beginning or right after the snapshot; L{None} otherwise."""
        if self._first == 1:
            return 0
        if self._first == self._snapshot.index + 1:
            return self._snapshot.term
        return None

    @property
    def first_index(self) -> int:
        """The index of the first entry still held (C{last_index + 1} if
        none is)."""
        return self._first

    @property
    def last_index(self) -> int:
        return self._first + len(self._log) - 1

    @property
    def last_term(self) -> int:
        if self._log:
            return self._log[-1][1]
        # An empty log follows the snapshot (or nothing: term 0).
        return self._snapshot.term

    @property
    def snapshot_index(self) -> int:
        """The index of the newest snapshot the core knows of (0 if none)."""
        return self._snapshot.index

    @property
    def snapshot_term(self) -> int:
        """The term of the entry at L{snapshot_index} (0 if none)."""
        return self._snapshot.term

    def term_at(self, index: int) -> int:
        """
        The term of the entry at C{index} (0 for index 0).

        @raises CompactedIndex: if the entry was compacted away and is not
            the snapshot's own, whose term is kept.
        """
        position = index - self._first
        if position >= 0:
            return self._log[position][1]
        term = self._term_if_known(index)
        if term is None:
            raise CompactedIndex(index)
        return term

    def _term_if_known(self, index: int) -> int | None:
        """The term of the entry at C{index} at or below C{last_index}, or
        L{None} if it was compacted away and its term is not kept."""
        position = index - self._first
        if position >= 0:
            return self._log[position][1]
        # The held log starts at most just after the snapshot, so the
        # snapshot's own entry is either held or this boundary entry.
        if position == -1:
            return self._boundary_term
        return None

    def entries(self, low: int, high: int) -> list[Entry]:
        """Entries with C{low <= index <= high} that are still held, as named
        L{Entry}s (a copy; for inspection, not the hot path)."""
        low = max(low, self._first)
        if high < low:
            return []
        return [Entry._make(t) for t in self._log[low - self._first : high - self._first + 1]]

    def _truncate(self, from_index: int) -> None:
        if from_index <= self.commit_index:
            raise AssertionError(
                f"refusing to truncate committed entry {from_index} (commit index {self.commit_index})"
            )
        del self._log[from_index - self._first :]
        if self._configurations[-1][0] >= from_index:
            # A configuration entry went with the suffix: roll back to the
            # one before it (the first is at the snapshot, never truncated).
            while self._configurations[-1][0] >= from_index:
                self._configurations.pop()
            self._use_configuration()
        self._truncate_from = from_index if self._truncate_from is None else min(self._truncate_from, from_index)
        self._unstable_from = min(self._unstable_from, from_index)
        self.durable_index = min(self.durable_index, from_index - 1)

    def _append(self, entries: Sequence[EntryTuple]) -> None:
        self._log.extend(map(tuple, entries))  # type: ignore[arg-type]  # tuple(e) of a 3-tuple is a 3-tuple; mypy widens it to tuple[Any, ...]
        self._note_configurations(entries)

    # ------------------------------------------------------------------
    # Output

    def has_ready(self) -> bool:
        """Whether L{ready} would return anything to do."""
        return bool(
            self._hard_state_dirty
            or self._install is not None
            or self._truncate_from is not None
            or self._unstable_from <= self.last_index
            or self._messages
            or self._messages_after_persist
            or self.applied < self.commit_index
            or self._reads
            or self._failed_reads
            or self._needs_broadcast
            or (self._read_round_wanted and self._read_round_in_flight is None)
            or bool(self._stuck_unreported)
            or (self._configuration_unsettled and self.role is Role.LEADER and not self.configuration_change_pending)
        )

    def ready(self) -> Ready:
        """
        Collect everything to do since the last call.  Ownership of the
        outputs passes to the caller, who must handle them as the module
        docstring says.
        """
        if self.role is Role.LEADER:
            if self._needs_broadcast:
                self._needs_broadcast = False
                # Send even without new entries if the commit index moved,
                # so followers learn it now rather than a heartbeat later.
                commit_moved, self._commit_to_broadcast = self._commit_to_broadcast, False
                for peer in self._progress:
                    self._send_append(peer, heartbeat=commit_moved)
            self._maybe_start_read_round()
            if self._configuration_unsettled and not self.configuration_change_pending:
                self._configuration_unsettled = False
                self._on_configuration_committed()
        unsendable = self._handle_unsendable()
        rd = Ready()
        rd.unsendable = unsendable
        rd.install_snapshot, self._install = self._install, None
        if self._hard_state_dirty:
            rd.hard_state = HardState(self.term, self.voted_for)
            self._hard_state_dirty = False
        rd.truncate_from = self._truncate_from
        self._truncate_from = None
        if self._unstable_from <= self.last_index:
            rd.entries = self._log[self._unstable_from - self._first :]
        self._unstable_from = self.last_index + 1
        rd.persist_through = (self.last_index, self.last_term)
        rd.messages, self._messages = self._messages, []
        rd.messages_after_persist, self._messages_after_persist = self._messages_after_persist, []
        if rd.hard_state is not None and rd.hard_state.term != self._term_handed_out:
            # Nothing in a term goes out before that term is durable here: a
            # node that is the only voter wins its election in the batch that
            # raised its term, and its AppendEntries sent at once would let a
            # crash before the term is on disk bring it back in the old term,
            # win the same term again and write a different entry at an index
            # its followers already hold with that term (two leaders' logs in
            # one term: found by kvstore-sim's churn, seed 1375).
            rd.messages_after_persist = rd.messages + rd.messages_after_persist
            rd.messages = []
            self._term_handed_out = rd.hard_state.term
        if self.applied < self.commit_index:
            upto = min(self.commit_index, self.applied + self.config.max_apply_batch)
            rd.committed = self._log[self.applied + 1 - self._first : upto + 1 - self._first]
            self.applied = upto
        rd.reads, self._reads = self._reads, []
        rd.failed_reads, self._failed_reads = self._failed_reads, []
        return rd

    def persisted(self, index: int, term: int) -> None:
        """
        Report that the local log is durable through C{index}, whose entry
        had C{term} when it was handed out.  A report about entries that have
        since been truncated is recognised by the term and ignored.
        """
        if index <= self.durable_index or index > self.last_index or self._term_if_known(index) != term:
            return
        self.durable_index = index
        if self.role is Role.LEADER:
            self._maybe_commit()

    # ------------------------------------------------------------------
    # Snapshots and compaction

    def snapshot_taken(self, index: int, term: int) -> None:
        """
        Report a durable local snapshot of the state machine through
        C{index}, whose entry has C{term}.  The core offers the newest one
        it knows of to followers that need compacted entries, and allows
        L{compact} up to it.  An older one than the core knows is ignored.

        @raises ValueError: if C{index} has not been applied yet, or the log
            holds another term there.
        """
        if index > self.applied:
            raise ValueError(f"snapshot at index {index} is past the applied index {self.applied}")
        if index <= self._snapshot.index:
            return
        if self.term_at(index) != term:
            raise ValueError(f"snapshot at index {index} says term {term}, the log holds term {self.term_at(index)}")
        self._snapshot = SnapshotPoint(index, term)
        # The configuration history now starts at the snapshot.
        configuration = self._snapshot_configuration = self.configuration_at(index)
        self._configurations = [(index, configuration)] + [c for c in self._configurations if c[0] > index]

    def compact(self, through_index: int) -> None:
        """
        Drop the held entries at or below C{through_index}, which the
        snapshot covers.  Entries already dropped are not an error.

        @raises ValueError: if C{through_index} is past the snapshot index
            (and so possibly past what has been applied).
        """
        if "compact-past-applied" in self._plants:
            # The planted bug: compact everything committed, applied (and
            # in a snapshot) or not, and count what was dropped as applied.
            through_index = max(through_index, self.commit_index)
            self.applied = max(self.applied, through_index)
        elif through_index > self._snapshot.index:
            raise ValueError(
                f"cannot compact through index {through_index}: the snapshot covers only {self._snapshot.index}"
            )
        if through_index < self._first:
            return
        self._boundary_term = self._log[through_index - self._first][1]
        del self._log[: through_index - self._first + 1]
        self._first = through_index + 1

    def compaction_point(self, through_index: int, max_held: int) -> int:
        """
        The index the log may really be compacted through when the node
        would drop it through C{through_index}: a leader holds back what a
        follower is about to need, so that a follower that needed a
        snapshot does not need another one as soon as it has installed it
        (with writes going on, the leader would otherwise compact past the
        snapshot being sent while it travels, and the follower never
        catches up).  Held back:

          - for a follower being sent a snapshot, the entries after the
            snapshot offered to it;
          - for a follower that installed one and is still catching up
            (its match index is below this leader's last index when the
            install ended), the entries after its match index.

        At most C{max_held} entries before C{through_index} are held, so a
        dead or hopeless follower cannot make the log grow without bound
        (past that, it needs a newer snapshot).  Pure: it decides, the
        caller compacts (L{compact}) exactly that far.
        """
        floor = through_index
        if self.role is Role.LEADER:
            for progress in self._progress.values():
                if progress.state is _ProgressState.SNAPSHOT:
                    floor = min(floor, progress.pending_snapshot.index)
                elif progress.catching_up:
                    floor = min(floor, progress.match_index)
        return max(floor, through_index - max(0, max_held))

    def report_snapshot(self, follower: int, ok: bool) -> None:
        """
        The node's transfer of the snapshot offered to C{follower} ended:
        C{ok} if the follower received it whole, otherwise it gave up.
        Either way the follower is probed again: after success from just
        past the snapshot (its acknowledgement usually arrives first and has
        already ended the transfer state); after failure from its match
        index, which offers a snapshot again at the next heartbeat if it
        still needs one.
        """
        progress = self._progress.get(follower) if self.role is Role.LEADER else None
        if progress is None or progress.state is not _ProgressState.SNAPSHOT:
            return
        offered = progress.pending_snapshot.index
        progress.become_probe()
        if ok:
            progress.catching_up = self.last_index
            progress.next_index = max(progress.next_index, offered + 1)
            self._send_append(follower)
        else:
            # The heartbeat timer clears this, so the offer is not repeated
            # at once in a loop.
            progress.probe_sent = True

    def snapshot_offer_renewed(self, follower: int, index: int, term: int) -> None:
        """
        The node's transfer sends C{follower} a newer snapshot of this
        leader, at C{index}/C{term}, than the one offered (a retry that
        waited out its back-off sends the newest).  The transfer state
        follows it: heartbeats are anchored at it, only an acknowledgement
        at or past it ends the state, and compaction holds the log after
        it (a heartbeat anchored at the older one would be acknowledged at
        that index, and the follower offered yet another snapshot).
        """
        progress = self._progress.get(follower) if self.role is Role.LEADER else None
        if progress is None or progress.state is not _ProgressState.SNAPSHOT:
            return
        if not progress.pending_snapshot.index < index <= self._snapshot.index:
            return
        known = self._snapshot.term if index == self._snapshot.index else self._term_if_known(index)
        if known == term:
            progress.pending_snapshot = SnapshotPoint(index, term)

    def _offer_snapshot(self, peer: int, progress: _Progress) -> None:
        """Ask the node to send C{peer} the newest snapshot: its next entry
        was compacted away, so no AppendEntries can reach it."""
        progress.become_snapshot(self._snapshot)
        self._send(
            peer, InstallSnapshot(self.term, self._snapshot.index, self._snapshot.term, self._snapshot_configuration)
        )

    def _handle_install_snapshot(self, sender: int, install: InstallSnapshot) -> None:
        """
        A leader's snapshot through C{install.index} is on disk here.  If
        this node's commit index covers it, nothing changes; if its log
        holds that entry, the snapshot agrees with the log, which is kept;
        otherwise the snapshot replaces the state machine and the whole log.
        The acknowledgement claims everything through the snapshot's index
        is stored, so it leaves only once the batch is durable.
        """
        if self.role is not Role.FOLLOWER or self.leader_id != sender:
            self._become_follower(self.term, sender)
        self._last_heard_from_leader = self._clock.seconds()
        self._reset_election_deadline()
        index = install.index
        if index <= self.commit_index:
            acknowledged = self.commit_index
        elif index <= self.last_index and (
            self._term_if_known(index) == install.snapshot_term or "keep-conflicting-suffix-after-install" in self._plants
        ):
            # The entry is committed (a snapshot holds only committed
            # entries), and by log matching so is everything before it.
            acknowledged = self.commit_index = index
        else:
            point = SnapshotPoint(index, install.snapshot_term)
            self._log = []
            self._first = index + 1
            self._snapshot = point
            self._boundary_term = point.term
            self.commit_index = self.applied = index
            self.durable_index = min(self.durable_index, index)
            self._unstable_from = index + 1
            # The log storage is reset, so nothing older is left to drop.
            self._truncate_from = None
            self._install = point
            # The snapshot's configuration replaces the whole history (a
            # sender that does not know it leaves this node's own in force).
            configuration = install.configuration if install.configuration is not None else self._configuration
            self._snapshot_configuration = configuration
            self._configurations = [(index, configuration)]
            self._use_configuration()
            acknowledged = index
        self._send(sender, AppendEntriesResponse(self.term, True, acknowledged), after_persist=True)

    def _send(self, to: int, body: Body, after_persist: bool = False) -> None:
        message = Message(self.node_id, to, body)
        if after_persist:
            self._messages_after_persist.append(message)
        else:
            self._messages.append(message)

    # ------------------------------------------------------------------
    # Timers

    def _call_later(self, delay: float, callback: Callable[[], None]) -> IDelayedCall:
        """Schedule a timer callback whose exception goes to the
        C{on_timer_error} hook (see L{start})."""
        return self._clock.callLater(delay, self._run_timer, callback)

    def _run_timer(self, callback: Callable[[], None]) -> None:
        try:
            callback()
        except Exception:
            if self._on_timer_error is None:
                raise
            self._on_timer_error(Failure())

    def _random_timeout(self) -> float:
        return self._rng.uniform(self.config.election_timeout_min, self.config.election_timeout_max)

    def _reset_election_deadline(self) -> None:
        self._election_deadline = self._clock.seconds() + self._random_timeout()
        if self._election_timer is None or not self._election_timer.active():
            self._election_timer = self._call_later(
                self._election_deadline - self._clock.seconds(), self._on_election_timer
            )

    def _on_election_timer(self) -> None:
        self._election_timer = None
        if not self._started or self.role is Role.LEADER:
            return
        now = self._clock.seconds()
        if now < self._election_deadline:
            # The deadline moved while the timer was pending; sleep again.
            self._election_timer = self._call_later(self._election_deadline - now, self._on_election_timer)
            return
        if not self._may_campaign():
            # A learner, a removed node or one not yet told it was added:
            # it never campaigns, but keeps the timer for when it is a voter.
            self._reset_election_deadline()
            return
        self._campaign(pre_vote=self.config.pre_vote)
        self._wake()

    def _may_campaign(self) -> bool:
        """
        Whether this node may start an election: if it is a voter; or if
        the configuration that removed it is not known to be committed and
        it was a voter before.  The latter is the removed leader that
        crashed before its removal committed: it may be the only node
        holding that entry, and the voters it leaves behind (which lack it)
        cannot win without its vote, since its log is longer.  It counts the
        votes of the new configuration's voters only, never its own, and
        steps down once the removal commits.  Once it knows the removal is
        committed, it never campaigns again.
        """
        if self._is_voter:
            return True
        history = self._configurations
        return (
            len(history) > 1
            and history[-1][0] > self.commit_index
            and self.node_id in history[-2][1].voter_ids
            and bool(self._voter_peers)
        )

    def _on_heartbeat_timer(self) -> None:
        self._heartbeat_timer = None
        if not self._started or self.role is not Role.LEADER:
            return
        now = self._clock.seconds()
        if now >= self._quorum_check_at and not self._check_quorum():
            self._wake()
            return
        if self._leadership_transfer is not None and now >= self._leadership_transfer_deadline:
            # The target has not taken over in time: accept proposals again.
            self._leadership_transfer = None
        if self._departing:
            self._drop_departed()
        for peer, progress in self._progress.items():
            # A probe that got no answer within a heartbeat is retried.
            progress.probe_sent = False
            self._send_append(peer, heartbeat=True)
        self._maybe_promote_learners()
        self._heartbeat_timer = self._call_later(self.config.heartbeat_interval, self._on_heartbeat_timer)
        self._wake()

    def _check_quorum(self) -> bool:
        """
        Step down if a majority has not been heard from for an election
        timeout: a leader cut off from the majority stops accepting writes
        instead of letting clients wait for commits that cannot come.
        """
        active = self._is_voter + sum(1 for p in self._voter_peers if self._progress[p].active)
        for progress in self._progress.values():
            progress.active = False
        self._quorum_check_at = self._clock.seconds() + self.config.election_timeout_max
        if active < self._quorum and "no-check-quorum" not in self._plants:
            self._become_follower(self.term, None)
            return False
        return True

    # ------------------------------------------------------------------
    # Role changes

    def _set_hard_state(self, term: int, voted_for: int | None) -> None:
        if (term, voted_for) != (self.term, self.voted_for):
            self.term, self.voted_for = term, voted_for
            self._hard_state_dirty = True

    def _become_follower(self, term: int, leader_id: int | None) -> None:
        was_leader = self.role is Role.LEADER
        if term > self.term:
            self._set_hard_state(term, None)
            self._fail_forwarded_reads("term changed")
        self.role = Role.FOLLOWER
        self.leader_id = leader_id
        self._votes.clear()
        # Only a leader broadcasts; a stale flag would make has_ready() true
        # forever and spin the node's processing loop.
        self._needs_broadcast = self._commit_to_broadcast = False
        if was_leader:
            self._progress.clear()
            self._leadership_transfer = None
            self._configuration_unsettled = False
            self._departing.clear()
            self._stuck.clear()
            self._stuck_unreported.clear()
            for timer in (self._heartbeat_timer, self._commit_notify_timer):
                if timer is not None and timer.active():
                    timer.cancel()
            self._heartbeat_timer = self._commit_notify_timer = None
            self._fail_leader_reads("leadership lost")
        if self._started:
            self._reset_election_deadline()

    def _campaign(self, pre_vote: bool, leadership_transfer: bool = False) -> None:
        """Start an election (callers check that this node is a voter)."""
        if pre_vote:
            self.role = Role.PRE_CANDIDATE
            term = self.term + 1
        else:
            self.role = Role.CANDIDATE
            self._set_hard_state(self.term + 1, self.node_id)
            term = self.term
            self._fail_forwarded_reads("election started")
        self.leader_id = None
        # A node removed by an uncommitted configuration may campaign (see
        # _may_campaign) but its own vote does not count.
        self._votes = {self.node_id} if self._is_voter else set()
        if len(self._votes) >= self._quorum:
            if pre_vote:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
            return
        self._reset_election_deadline()
        for peer in self._voter_peers:
            # A real vote request depends on the durable term and self-vote;
            # a pre-vote request depends on nothing.
            self._send(
                peer,
                RequestVote(term, self.last_index, self.last_term, pre_vote, leadership_transfer),
                after_persist=not pre_vote,
            )

    def _become_leader(self) -> None:
        self.role = Role.LEADER
        self.leader_id = self.node_id
        self._votes.clear()
        self._round = 0
        self._read_round_in_flight = None
        self._read_round_wanted = False
        # Members removed by a configuration not committed yet are
        # replicated to as well, so that they learn of their removal.
        previous = self._configurations[-2][1].member_ids if self.configuration_change_pending else frozenset()
        self._progress = {
            peer: _Progress(self.last_index + 1)
            for peer in sorted((self._configuration.member_ids | previous) - {self.node_id})
        }
        # Act on the current configuration's commit (a leader elected while
        # its own removal is uncommitted steps down once it commits).
        self._configuration_unsettled = True
        # The no-op entry lets this term commit something promptly, which
        # both commits older entries (Figure 8 rule) and enables reads.
        self._append([(self.last_index + 1, self.term, b"")])
        self._needs_broadcast = True
        self._quorum_check_at = self._clock.seconds() + self.config.election_timeout_max
        self._ensure_heartbeat_timer()
        self._maybe_commit()

    def _ensure_heartbeat_timer(self) -> None:
        """A leader with anyone to replicate to runs the heartbeat timer (a
        leader alone in its configuration needs none until a learner joins)."""
        if self._heartbeat_timer is None and self._progress and self.role is Role.LEADER:
            self._heartbeat_timer = self._call_later(self.config.heartbeat_interval, self._on_heartbeat_timer)

    # ------------------------------------------------------------------
    # Client inputs

    def propose(self, data: bytes) -> tuple[int, int]:
        """
        Append a command to the leader's log.

        @return: C{(index, term)} of the new entry; the command is committed
            if and when an entry with this index I{and this term} is applied.
        @raises NotLeaderError: if this node is not the leader, or it is
            handing leadership over (L{LeadershipTransferInProgress}, naming
            the target); nothing was appended.
        @raises EntryTooLarge: if the entry could never fit in a message.
        @raises ValueError: if C{data} starts with C{0x00}, which marks
            Raft's own entries (L{kvstore.raft.membership}).
        """
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self._leadership_transfer is not None:
            raise LeadershipTransferInProgress(self._leadership_transfer)
        if is_raft_payload(data):
            raise ValueError("payloads starting with 0x00 are Raft's own entries; use propose_change")
        size = self._entry_size(data)
        if size > self.config.max_entries_bytes:
            raise EntryTooLarge(
                f"an entry of {size} bytes on the wire exceeds the per-message limit of "
                f"{self.config.max_entries_bytes} bytes"
            )
        index = self.last_index + 1
        self._log.append((index, self.term, data))
        self._needs_broadcast = True
        self._maybe_commit()
        return index, self.term

    def request_read(self, request_id: int) -> None:
        """
        Ask for a linearizable read index (thesis section 6.4).  The answer
        comes back in a later L{Ready}: a L{ReadState} with this
        C{request_id}, or a failure with a reason.  Request ids must be
        unique among this node's reads across restarts, not only among its
        outstanding ones: a leader may answer a read forwarded by an earlier
        incarnation of this node, and the answer is matched by id.
        """
        if self.role is Role.LEADER:
            self._leader_read(_PendingRead(self.node_id, request_id, 0))
        elif self.leader_id is not None and self.role is Role.FOLLOWER:
            self._forwarded_reads[request_id] = self._clock.seconds()
            self._send(self.leader_id, ReadIndexRequest(self.term, request_id))
        else:
            self._failed_reads.append((request_id, "no leader elected yet"))

    def forget_read(self, request_id: int) -> None:
        """
        The node gave up on read C{request_id} (its read timeout): stop
        asking the leader for it.  A forwarded read the leader never answers
        (this node hears the leader but cannot reach it) would otherwise be
        kept, and asked for again every few heartbeats, until the term
        changes -- possibly never.  A late answer is then ignored.
        """
        self._forwarded_reads.pop(request_id, None)

    def _committed_in_current_term(self) -> bool:
        return self.commit_index > 0 and self.term_at(self.commit_index) == self.term

    def _leader_read(self, read: _PendingRead) -> None:
        if not self._committed_in_current_term():
            # Until the no-op of this term commits, the leader's commit index
            # may be behind what earlier leaders committed.
            self._reads_awaiting_commit.append(read)
            return
        read.index = self.commit_index
        if (self._is_voter and self._quorum == 1) or "read-without-leadership-check" in self._plants:
            self._finish_read(read)
        else:
            self._pending_reads.append(read)
            self._read_round_wanted = True

    def _finish_read(self, read: _PendingRead) -> None:
        if read.origin == self.node_id:
            self._reads.append(ReadState(read.request_id, read.index))
        else:
            self._send(read.origin, ReadIndexResponse(self.term, read.request_id, read.index))

    def _fail_read(self, read: _PendingRead, reason: str) -> None:
        if read.origin == self.node_id:
            self._failed_reads.append((read.request_id, reason))
        else:
            self._send(read.origin, ReadIndexResponse(self.term, read.request_id, None))

    def _fail_leader_reads(self, reason: str) -> None:
        for read in self._reads_awaiting_commit + self._pending_reads:
            self._fail_read(read, reason)
        self._reads_awaiting_commit = []
        self._pending_reads = []
        self._read_round_in_flight = None
        self._read_round_wanted = False

    def _resend_forwarded_reads(self, leader: int) -> None:
        """
        Ask again for read indexes that got no answer within a few heartbeat
        intervals: the request or its answer may have been lost (a peer
        connection that was not up yet, or that dropped).  A duplicate
        answer is ignored.
        """
        now = self._clock.seconds()
        patience = 3 * self.config.heartbeat_interval
        for request_id, sent in self._forwarded_reads.items():
            if now - sent >= patience:
                self._forwarded_reads[request_id] = now
                self._send(leader, ReadIndexRequest(self.term, request_id))

    def _fail_forwarded_reads(self, reason: str) -> None:
        for request_id in sorted(self._forwarded_reads):
            self._failed_reads.append((request_id, reason))
        self._forwarded_reads.clear()

    def _maybe_start_read_round(self) -> None:
        """
        Start one heartbeat round that confirms leadership for every read
        that has arrived since the last round began.  Only one read round is
        in flight at a time, so reads arriving meanwhile share the next one.
        """
        if self._read_round_in_flight is not None or not self._read_round_wanted:
            return
        self._read_round_wanted = False
        waiting = [r for r in self._pending_reads if r.round is None]
        if not waiting:
            return
        self._round += 1
        self._read_round_in_flight = self._round
        for read in waiting:
            read.round = self._round
        # Only voters' acknowledgements confirm a round (learners get the
        # round number with their next heartbeat, which confirms nothing).
        for peer in self._voter_peers:
            self._send_append(peer, heartbeat=True)

    def _confirm_reads(self) -> None:
        if self._read_round_in_flight is None:
            return
        acked = sorted((self._progress[p].acked_round for p in self._voter_peers), reverse=True)
        # The leader itself counts as one acknowledgement of every round
        # (unless it is removing itself: then it is no voter).
        needed = self._quorum - self._is_voter - ("read-index-one-ack-short" in self._plants)
        confirmed = acked[needed - 1] if needed > 0 else self._round
        if confirmed < self._read_round_in_flight:
            return
        remaining = []
        for read in self._pending_reads:
            if read.round is not None and read.round <= confirmed:
                self._finish_read(read)
            else:
                remaining.append(read)
        self._pending_reads = remaining
        self._read_round_in_flight = None

    # ------------------------------------------------------------------
    # Replication (leader side)

    def _send_append(self, peer: int, heartbeat: bool = False) -> None:
        progress = self._progress[peer]
        if not heartbeat and progress.next_index > self.last_index:
            # Nothing to send (every acknowledgement of a follower that keeps
            # up asks): the entry before next_index is the last one, whose
            # term is always known, so no snapshot offer is due either.
            return
        prev_index = progress.next_index - 1
        prev_term = None if progress.state is _ProgressState.SNAPSHOT else self._term_if_known(prev_index)
        if prev_term is None:
            # The follower needs an entry that was compacted away: offer the
            # snapshot, paced like a probe (after a failed transfer, at the
            # next heartbeat).
            if progress.state is _ProgressState.REPLICATE or (
                progress.state is _ProgressState.PROBE and not progress.probe_sent
            ):
                self._offer_snapshot(peer, progress)
            # Only heartbeats go meanwhile, anchored at a snapshot (which is
            # committed): they keep the follower from campaigning and count
            # for reads, and once it holds the snapshot its success ends the
            # transfer state even if its first acknowledgement was lost.
            if heartbeat:
                anchor = progress.pending_snapshot if progress.state is _ProgressState.SNAPSHOT else self._snapshot
                self._send(
                    peer,
                    AppendEntries(self.term, anchor.index, anchor.term, (), self.commit_index, self._round),
                )
                progress.commit_sent = self.commit_index
            return
        entries: tuple[EntryTuple, ...] = ()
        can_send_entries = (
            progress.state is _ProgressState.PROBE and not progress.probe_sent
        ) or (progress.state is _ProgressState.REPLICATE and len(progress.inflight) < self.config.max_inflight)
        if can_send_entries and progress.next_index <= self.last_index:
            entries = tuple(self._slice_for_message(progress.next_index))
            if not entries:
                # Too large for any message: this follower can never get
                # past it (see _handle_unsendable).
                index = progress.next_index
                if self._stuck.get(peer, (0, 0))[0] != index:
                    self._stuck[peer] = (index, self._entry_size(self._log[index - self._first][2]))
                    self._stuck_unreported.append(peer)
        if not entries and not heartbeat:
            return
        self._send(
            peer,
            AppendEntries(
                term=self.term,
                prev_log_index=prev_index,
                prev_log_term=prev_term,
                entries=entries,
                leader_commit=self.commit_index,
                round=self._round,
            ),
        )
        progress.commit_sent = self.commit_index
        if entries:
            if progress.state is _ProgressState.REPLICATE:
                progress.next_index = entries[-1][0] + 1
                progress.inflight.append(entries[-1][0])
            else:
                progress.probe_sent = True

    def _slice_for_message(self, start: int) -> list[EntryTuple]:
        """
        The entries for one AppendEntries starting at C{start}, counted in
        encoded bytes (C{entry_size}): up to the soft budget, but always at
        least one entry so that a large entry still moves; and never over
        the hard limit, so no follower ever has to refuse a message.  An
        entry too large for any message (only possible in a log written
        before the limit was enforced) is not sent at all.
        """
        budget = self.config.max_append_bytes
        hard_limit = self.config.max_entries_bytes
        entry_size = self._entry_size
        end = min(self.last_index, start + self.config.max_append_entries - 1)
        result: list[EntryTuple] = []
        total = 0
        for entry in self._log[start - self._first : end - self._first + 1]:
            total += entry_size(entry[2])
            if total > hard_limit or (total > budget and result):
                break
            result.append(entry)
        return result

    def _handle_unsendable(self) -> list[UnsendableEntry]:
        """
        Report followers newly found to need an entry too large for any
        message (only a release before the limit was enforced could have
        accepted one), and step down if too few followers are past such
        entries to form a quorum with this node.

        Such an entry could normally never be received by any peer, so it
        exists only here, uncommitted; kept as leader by followers that
        answer its heartbeats, this node would commit nothing ever again,
        silently.  Stepping down lets a node without it lead and overwrite
        it here.  But an entry just over the limit may have been sent by an
        older release, whose message headers were smaller than the largest
        one the limit allows for, to a majority: then this leader still
        commits, only the followers stuck behind it can never catch up, and
        stepping down would hand leadership around among nodes that all
        have it, forever.  So the leader steps down only when the stuck
        followers leave it without a quorum, and only if those followers
        (which lack the entry) are themselves a quorum: a node without the
        entry needs their votes alone, since a node holding the entry (a
        longer log) refuses it.  In an even-sized cluster where exactly half
        hold it, neither side can commit: stepping down would start an
        election every timeout, each won by a node holding the entry, so the
        leader stays and the report says the cluster is deadlocked.
        """
        if not self._stuck_unreported:
            return []
        unreported, self._stuck_unreported = self._stuck_unreported, []
        if self.role is not Role.LEADER:
            return []
        # A voter is stuck while it still waits for that entry (learners
        # count for neither side).
        stuck = sum(
            1 for peer, (index, _) in self._stuck.items()
            if peer in self._voter_peers
            and self._progress[peer].next_index == index and self._progress[peer].match_index < index
        )
        no_quorum = self._is_voter + len(self._voter_peers) - stuck < self._quorum
        step_down = no_quorum and stuck >= self._quorum
        deadlocked = no_quorum and not step_down
        report = [
            UnsendableEntry(peer, *self._stuck[peer], step_down, deadlocked) for peer in dict.fromkeys(unreported)
        ]
        if step_down:
            self._become_follower(self.term, None)
        return report

    def _maybe_commit(self) -> None:
        """
        Advance the commit index to the highest index stored on a majority,
        but only through an entry of the current term (Figure 8): an older
        term's entry is committed indirectly, by committing a later one.
        """
        progress = self._progress
        voters = self._voter_peers if "learner-counted-in-quorum" not in self._plants else progress
        matches = [progress[p].match_index for p in voters]
        if self._is_voter:
            matches.append(self.durable_index)
        matches.sort(reverse=True)
        candidate = matches[self._quorum - 1]
        if candidate > self.commit_index and (self.term_at(candidate) == self.term or "commit-old-term" in self._plants):
            self.commit_index = candidate
            if self._reads_awaiting_commit:
                waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
                for read in waiting:
                    self._leader_read(read)
            # Followers learn the new commit index promptly, not only with
            # the next heartbeat, so their reads and applies do not lag:
            # with the next entries sent, or a notice shortly after.
            if self.config.commit_notify_delay <= 0:
                self._needs_broadcast = True
                self._commit_to_broadcast = True
            elif self._commit_notify_timer is None and self._progress:
                # (A leader alone in its configuration has no one to tell.)
                self._commit_notify_timer = self._call_later(
                    self.config.commit_notify_delay, self._on_commit_notify_timer
                )

    def _on_commit_notify_timer(self) -> None:
        """Tell the followers that no AppendEntries has told since the commit
        index last moved (see C{RaftConfig.commit_notify_delay})."""
        self._commit_notify_timer = None
        if not self._started or self.role is not Role.LEADER:
            return
        self._send_commit_notices()
        self._wake()

    def _send_commit_notices(self) -> None:
        """Leader: send an AppendEntries to each follower that none has told
        of the current commit index yet."""
        commit = self.commit_index
        for peer, progress in self._progress.items():
            # One receiving a snapshot could not use it (its heartbeats are
            # anchored at the snapshot): it learns with its next entries.
            if progress.commit_sent < commit and progress.state is not _ProgressState.SNAPSHOT:
                self._send_append(peer, heartbeat=True)

    def _handle_append_response(self, sender: int, response: AppendEntriesResponse) -> None:
        progress = self._progress.get(sender)
        if progress is None:
            return
        if response.index > self.last_index:
            # No correct follower acknowledges or refuses an entry this
            # leader never had (its log only grows within its term): ignore
            # it; used as an index it would raise (issue 9, review).
            return
        progress.active = progress.recent = True
        progress.acked_round = max(progress.acked_round, response.round)
        if response.success:
            while progress.inflight and progress.inflight[0] <= response.index:
                progress.inflight.popleft()
            if response.index > progress.match_index:
                progress.match_index = response.index
                if progress.state is _ProgressState.PROBE:
                    progress.become_replicate()
                elif progress.state is _ProgressState.SNAPSHOT:
                    # At or past the snapshot offered, the follower holds it.
                    if response.index >= progress.pending_snapshot.index:
                        progress.become_replicate()
                        progress.catching_up = self.last_index
                elif progress.next_index <= response.index:
                    progress.next_index = response.index + 1
                if progress.catching_up and progress.match_index >= progress.catching_up:
                    # It has what was written while it installed: from now
                    # on it keeps up, the usual catch-up window covers it.
                    progress.catching_up = 0
                self._maybe_commit()
            elif progress.state is _ProgressState.PROBE:
                progress.become_replicate()
            self._send_append(sender)
            if self._leadership_transfer == sender:
                self._maybe_send_timeout_now(sender)
        else:
            # Ignore stale rejections: of a message that was not the probe
            # we are waiting for, or of an index already known to match.
            if response.index <= progress.match_index:
                pass
            elif progress.state is _ProgressState.SNAPSHOT:
                pass  # a heartbeat's, while the follower waits for the snapshot
            elif progress.state is _ProgressState.PROBE and response.index != progress.next_index - 1:
                pass
            else:
                next_index = response.conflict_index
                if response.conflict_term:
                    last_of_term = self._last_index_of_term(response.conflict_term, response.index)
                    if last_of_term:
                        next_index = last_of_term + 1
                progress.become_probe()
                progress.next_index = max(progress.match_index + 1, min(next_index, response.index))
                self._send_append(sender)
        self._confirm_reads()

    def _last_index_of_term(self, term: int, at_or_below: int) -> int:
        """The last index at or below C{at_or_below} holding C{term}, or 0
        (also when that entry was compacted away and its term not kept).
        Terms never decrease along the log, so this is a binary search: a
        scan would stall the reactor on a log of millions of entries."""
        first = self._first
        high = min(at_or_below, self.last_index) - first + 1
        position = bisect.bisect_right(self._log, term, hi=high, key=_term_of) if high > 0 else 0
        # position - 1 is the last held entry with a term <= term; before
        # the held log, only the boundary entry's term may be known.
        index = first + position - 1
        if index >= 0 and index <= at_or_below and self._term_if_known(index) == term:
            return index
        return 0

    # ------------------------------------------------------------------
    # Message input

    def step(self, message: Message) -> None:
        """
        Handle one message from a peer.  Anything about the message is
        checked here and a message that makes no sense is ignored: one from
        this node's own id, and, from an id this node's configuration says
        was removed, any vote request and anything of a higher term (so a
        removed node cannot disrupt the cluster; a removed leader still
        leads its term until the change commits, and a removed follower
        still answers it).  Messages from ids this node does not know yet
        are handled (see the module docstring: a newer configuration may
        hold them); only voters are counted.
        """
        body = message.body
        sender = message.sender
        if sender == self.node_id or message.receiver != self.node_id:
            return
        if sender in self._configuration.removed and (
            body.term > self.term or isinstance(body, (RequestVote, RequestVoteResponse))
        ):
            return
        if body.term > self.term:
            if isinstance(body, RequestVote):
                if self._in_leader_lease() and not body.leadership_transfer:
                    # A live leader exists; a node that cannot hear it must
                    # not depose it (thesis 4.2.3).
                    self._send(sender, RequestVoteResponse(self.term, False, body.pre_vote))
                    return
                if not body.pre_vote:
                    self._become_follower(body.term, None)
            elif isinstance(body, RequestVoteResponse) and body.pre_vote and body.granted:
                pass  # a granted pre-vote echoes the term we asked about
            elif isinstance(body, (AppendEntries, InstallSnapshot, TimeoutNow)):
                self._become_follower(body.term, sender)
            else:
                self._become_follower(body.term, None)
        elif body.term < self.term:
            # A stale leader or candidate learns the current term from us.
            if isinstance(body, AppendEntries):
                self._send(sender, AppendEntriesResponse(self.term, False, body.prev_log_index))
            elif isinstance(body, InstallSnapshot):
                self._send(sender, AppendEntriesResponse(self.term, False, body.index))
            elif isinstance(body, RequestVote):
                self._send(sender, RequestVoteResponse(self.term, False, body.pre_vote))
            elif isinstance(body, ReadIndexRequest):
                self._send(sender, ReadIndexResponse(self.term, body.request_id, None))
            return

        if isinstance(body, AppendEntries):
            self._handle_append(sender, body)
        elif isinstance(body, AppendEntriesResponse):
            if self.role is Role.LEADER:
                self._handle_append_response(sender, body)
        elif isinstance(body, RequestVote):
            self._handle_vote_request(sender, body)
        elif isinstance(body, RequestVoteResponse):
            self._handle_vote_response(sender, body)
        elif isinstance(body, ReadIndexRequest):
            if self.role is Role.LEADER:
                self._leader_read(_PendingRead(sender, body.request_id, 0))
            else:
                self._send(sender, ReadIndexResponse(self.term, body.request_id, None))
        elif isinstance(body, InstallSnapshot):
            self._handle_install_snapshot(sender, body)
        elif isinstance(body, TimeoutNow):
            self._handle_timeout_now(sender)
        elif isinstance(body, ReadIndexResponse):
            # A change of term fails every forwarded read, so this answer is
            # from this term's leader; the id names one read of this
            # incarnation only if ids are never reused (see request_read).
            if self._forwarded_reads.pop(body.request_id, None) is not None:
                if body.index is None:
                    self._failed_reads.append((body.request_id, "the leader could not confirm its leadership"))
                else:
                    self._reads.append(ReadState(body.request_id, body.index))

    def _in_leader_lease(self) -> bool:
        if self.role is Role.LEADER:
            return True
        return (
            self.leader_id is not None
            and self._last_heard_from_leader is not None
            and self._clock.seconds() - self._last_heard_from_leader < self.config.election_timeout_min
        )

    def _handle_append(self, sender: int, append: AppendEntries) -> None:
        if self.role is not Role.FOLLOWER or self.leader_id != sender:
            self._become_follower(self.term, sender)
        self._last_heard_from_leader = self._clock.seconds()
        self._reset_election_deadline()
        if self._forwarded_reads:
            self._resend_forwarded_reads(sender)

        prev = append.prev_log_index
        entries = append.entries
        last_new = prev + len(entries)
        snapshot_index = self._snapshot.index
        if prev < snapshot_index:
            # Everything through the snapshot is committed, so it matches
            # the log of any leader of this term (and the term of prev may
            # be compacted away): only the entries after it need checking.
            entries = entries[snapshot_index - prev :]
            prev = snapshot_index
        elif prev > self.last_index:
            self._send(
                sender,
                AppendEntriesResponse(self.term, False, prev, self.last_index + 1, 0, append.round),
                after_persist=True,
            )
            return
        elif self.term_at(prev) != append.prev_log_term:
            conflict_term = self.term_at(prev)
            # The first index held of the conflicting term (binary search:
            # terms never decrease along the log).  prev is at or past the
            # snapshot index, so hi is never negative.
            first = bisect.bisect_left(self._log, conflict_term, hi=prev - self._first + 1, key=_term_of) + self._first
            self._send(
                sender,
                AppendEntriesResponse(self.term, False, prev, first, conflict_term, append.round),
                after_persist=True,
            )
            return

        new_entries: Sequence[EntryTuple] = ()
        log = self._log
        first_held = self._first
        last_index = self.last_index
        for offset, (index, term, _) in enumerate(entries):
            if index > last_index:
                new_entries = entries[offset:]
                break
            # index > prev >= the snapshot index >= first_held - 1: held.
            if log[index - first_held][1] != term:
                self._truncate(index)
                new_entries = entries[offset:]
                break
        if new_entries:
            self._append(new_entries)
        if append.leader_commit > self.commit_index:
            self.commit_index = max(self.commit_index, min(append.leader_commit, last_new))
        # The acknowledgement claims everything through last_new is stored,
        # so it may leave only after this batch is durable.
        self._send(
            sender,
            AppendEntriesResponse(self.term, True, last_new, 0, 0, append.round),
            after_persist=True,
        )

    def _log_is_up_to_date(self, last_index: int, last_term: int) -> bool:
        return (last_term, last_index) >= (self.last_term, self.last_index)

    def _handle_vote_request(self, sender: int, request: RequestVote) -> None:
        up_to_date = self._log_is_up_to_date(request.last_log_index, request.last_log_term) or "vote-without-log-check" in self._plants
        if request.pre_vote:
            granted = up_to_date and request.term > self.term
            # A granted pre-vote answers in the asked-about term so the
            # pre-candidate can count it; a refusal tells it our term.
            self._send(sender, RequestVoteResponse(request.term if granted else self.term, granted, True))
            return
        granted = up_to_date and self.voted_for in (None, sender) and self.role is not Role.LEADER
        if granted:
            self._set_hard_state(self.term, sender)
            self._reset_election_deadline()
        # The reply depends on the vote being durable.
        self._send(sender, RequestVoteResponse(self.term, granted, False), after_persist=True)

    def _handle_vote_response(self, sender: int, response: RequestVoteResponse) -> None:
        if response.pre_vote:
            if self.role is not Role.PRE_CANDIDATE or response.term != self.term + 1:
                return
        elif self.role is not Role.CANDIDATE or response.term != self.term:
            return
        if not response.granted or sender not in self._voter_peers:
            return  # only the voters of this node's configuration count
        self._votes.add(sender)
        if len(self._votes) >= self._quorum:
            if response.pre_vote:
                self._campaign(pre_vote=False)
            else:
                self._become_leader()
