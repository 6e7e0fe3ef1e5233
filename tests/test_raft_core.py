# -*- test-case-name: tests.test_raft_core -*-
"""
Unit tests of L{kvstore.raft.core.RaftCore} driven directly: each test
builds cores on a L{Clock}, feeds them messages and inspects L{Ready}.
No node, storage or network is involved, so every Raft rule is checked in
isolation and the scenarios (Figure 8, back-off) are crafted exactly.
"""

from __future__ import annotations

import random
from typing import Iterable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, NotLeaderError, RaftCore, Ready, Role
from kvstore.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Body,
    Entry,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
)

from tests.support import parametrize

HEARTBEAT = 0.05
TIMEOUT = (0.3, 0.6)


def make_core(
    node_id: int = 1,
    peers: Iterable[int] = (2, 3),
    clock: Clock | None = None,
    hard_state: HardState = HardState(),
    entries: Iterable[tuple[int, int] | Entry] = (),
    **options: object,
) -> RaftCore:
    """A started core; C{entries} may be C{(index, term)} pairs."""
    options.setdefault("pre_vote", False)
    config = RaftConfig(
        node_id=node_id,
        peers=tuple(peers),
        heartbeat_interval=HEARTBEAT,
        election_timeout_min=TIMEOUT[0],
        election_timeout_max=TIMEOUT[1],
        **options,  # type: ignore[arg-type]
    )
    log = [e if isinstance(e, Entry) else Entry(e[0], e[1], b"x%d" % e[0]) for e in entries]
    core = RaftCore(config, clock if clock is not None else Clock(), random.Random(node_id), hard_state, log)
    core.start()
    return core


def log_of(terms: Iterable[int]) -> list[Entry]:
    """Entries with the given terms at indexes 1, 2, ..."""
    return [Entry(i, t, b"e%d.%d" % (i, t)) for i, t in enumerate(terms, start=1)]


def msg(sender: int, receiver: int, body: Body) -> Message:
    return Message(sender, receiver, body)


def drain(core: RaftCore) -> Ready:
    """Take a Ready and report it durable at once, as a synchronous disk would."""
    rd = core.ready()
    if rd.needs_persist():
        core.persisted(*rd.persist_through)
    return rd


def bodies(messages: list[Message], kind: type, to: int | None = None) -> list:
    return [m.body for m in messages if isinstance(m.body, kind) and (to is None or m.receiver == to)]


def elect(core: RaftCore, clock: Clock, voters: Iterable[int]) -> None:
    """Make C{core} leader of the next term with real (not pre-) votes."""
    clock.advance(TIMEOUT[1] + 0.01)
    assert core.role is Role.CANDIDATE
    drain(core)
    for voter in voters:
        core.step(msg(voter, core.node_id, RequestVoteResponse(core.term, True, False)))
    assert core.role is Role.LEADER


def pump(cores: dict[int, RaftCore], max_rounds: int = 10_000) -> list[Message]:
    """
    Deliver messages between C{cores} (persisting synchronously) until none
    are left; return every message delivered, in order.
    """
    delivered: list[Message] = []
    for _ in range(max_rounds):
        outgoing: list[Message] = []
        for core in cores.values():
            rd = drain(core)
            outgoing += rd.messages + rd.messages_after_persist
        if not outgoing:
            return delivered
        for message in outgoing:
            delivered.append(message)
            if message.receiver in cores:
                cores[message.receiver].step(message)
    raise AssertionError("messages kept flowing")


def _cluster_of_cores(logs: dict[int, list[Entry]], terms: dict[int, int]) -> tuple[Clock, dict[int, RaftCore]]:
    clock = Clock()
    ids = sorted(logs)
    cores = {
        i: make_core(
            node_id=i,
            peers=[p for p in ids if p != i],
            clock=clock,
            hard_state=HardState(terms[i], None),
            entries=logs[i],
        )
        for i in ids
    }
    return clock, cores


class RaftElectionTests(SynchronousTestCase):
    """Campaigns, pre-votes and the rules for granting a vote."""

    def test_election_timeout_starts_campaign_with_durable_self_vote(self):
        """A follower that hears nothing campaigns in a new term, and its vote
        requests wait until the new term and self-vote are persisted."""
        clock = Clock()
        core = make_core(clock=clock, entries=[(1, 1)], hard_state=HardState(1, None))
        clock.advance(TIMEOUT[1] + 0.01)
        assert core.role is Role.CANDIDATE and core.term == 2
        rd = core.ready()
        assert rd.hard_state == HardState(2, 1)
        assert rd.messages == []
        assert sorted(m.receiver for m in rd.messages_after_persist) == [2, 3]
        assert all(m.body == RequestVote(2, 1, 1, False) for m in rd.messages_after_persist)

    def test_vote_granted_only_after_it_is_durable(self):
        """A granted vote is persisted in Ready.hard_state and its response is
        released only after persistence (messages_after_persist)."""
        core = make_core(hard_state=HardState(1, None), entries=[(1, 1)])
        core.step(msg(2, 1, RequestVote(2, 1, 1)))
        rd = core.ready()
        assert rd.hard_state == HardState(2, 2)
        assert bodies(rd.messages, RequestVoteResponse) == []
        assert bodies(rd.messages_after_persist, RequestVoteResponse, to=2) == [RequestVoteResponse(2, True, False)]

    @parametrize(
        "last_index, last_term",
        [(1, 2), (5, 1), (0, 0)],
        ids=["shorter-log-same-term", "longer-log-older-term", "empty-log"],
    )
    def test_vote_refused_to_candidate_with_out_of_date_log(self, last_index, last_term):
        """A candidate whose log is older (last term lower) or shorter at the
        same last term is refused (section 5.4.1 up-to-date check)."""
        core = make_core(hard_state=HardState(2, None), entries=log_of([1, 2]))
        core.step(msg(2, 1, RequestVote(3, last_index, last_term)))
        rd = core.ready()
        assert bodies(rd.messages + rd.messages_after_persist, RequestVoteResponse) == [
            RequestVoteResponse(3, False, False)
        ]
        assert core.voted_for is None

    @parametrize("last_index, last_term", [(2, 2), (3, 2), (1, 3)])
    def test_vote_granted_to_candidate_with_up_to_date_log(self, last_index, last_term):
        """A candidate whose log is at least as up to date gets the vote."""
        core = make_core(hard_state=HardState(2, None), entries=log_of([1, 2]))
        core.step(msg(2, 1, RequestVote(3, last_index, last_term)))
        rd = core.ready()
        assert bodies(rd.messages_after_persist, RequestVoteResponse) == [RequestVoteResponse(3, True, False)]
        assert core.voted_for == 2

    def test_one_vote_per_term_even_across_restart(self):
        """After voting for one candidate in a term, a node refuses another in
        the same term, also after a restart from its persisted hard state."""
        core = make_core(hard_state=HardState(1, None))
        core.step(msg(2, 1, RequestVote(2, 0, 0)))
        persisted = core.ready().hard_state
        assert persisted == HardState(2, 2)
        core.step(msg(3, 1, RequestVote(2, 0, 0)))
        assert bodies(core.ready().messages_after_persist, RequestVoteResponse) == [RequestVoteResponse(2, False)]

        restarted = make_core(hard_state=persisted)
        restarted.step(msg(3, 1, RequestVote(2, 0, 0)))
        rd = restarted.ready()
        assert bodies(rd.messages_after_persist, RequestVoteResponse) == [RequestVoteResponse(2, False)]
        assert rd.hard_state is None and restarted.voted_for == 2
        # The same candidate asking again (a retransmission) is granted again.
        restarted.step(msg(2, 1, RequestVote(2, 0, 0)))
        assert bodies(restarted.ready().messages_after_persist, RequestVoteResponse) == [RequestVoteResponse(2, True)]

    def test_candidate_becomes_leader_with_majority_and_appends_noop(self):
        """A candidate with a majority of votes leads and appends a no-op entry
        of its term, which it replicates to every peer."""
        clock = Clock()
        core = make_core(clock=clock, entries=log_of([1]), hard_state=HardState(1, None))
        elect(core, clock, [2])
        rd = core.ready()
        assert rd.entries == [Entry(2, 2, b"")]
        appends = bodies(rd.messages, AppendEntries)
        assert len(appends) == 2 and all(a.entries == (Entry(2, 2, b""),) for a in appends)

    def test_candidate_without_majority_does_not_lead(self):
        """Votes refused or from an earlier term do not count."""
        clock = Clock()
        core = make_core(clock=clock, peers=(2, 3, 4, 5))
        clock.advance(TIMEOUT[1] + 0.01)
        term = core.term
        core.step(msg(2, 1, RequestVoteResponse(term, True)))
        core.step(msg(2, 1, RequestVoteResponse(term, True)))  # duplicate
        core.step(msg(3, 1, RequestVoteResponse(term, False)))
        core.step(msg(4, 1, RequestVoteResponse(term - 1, True)))
        assert core.role is Role.CANDIDATE

    def test_pre_vote_changes_no_state(self):
        """A pre-vote campaign does not bump the term or vote, and a granted
        pre-vote does not make the voter change its term or vote."""
        clock = Clock()
        core = make_core(clock=clock, hard_state=HardState(3, None), pre_vote=True)
        clock.advance(TIMEOUT[1] + 0.01)
        assert core.role is Role.PRE_CANDIDATE and core.term == 3
        rd = core.ready()
        assert rd.hard_state is None
        assert all(m.body == RequestVote(4, 0, 0, True) for m in rd.messages)

        voter = make_core(node_id=2, peers=(1, 3), hard_state=HardState(3, None), pre_vote=True)
        voter.step(msg(1, 2, RequestVote(4, 0, 0, True)))
        vrd = voter.ready()
        assert voter.term == 3 and voter.voted_for is None and vrd.hard_state is None
        assert bodies(vrd.messages, RequestVoteResponse) == [RequestVoteResponse(4, True, True)]

        core.step(msg(2, 1, RequestVoteResponse(4, True, True)))
        assert core.role is Role.CANDIDATE and core.term == 4

    def test_follower_with_live_leader_refuses_votes(self):
        """A follower that heard from its leader within the minimum election
        timeout refuses (pre-)votes and keeps its term (leader stickiness)."""
        clock = Clock()
        core = make_core(clock=clock, hard_state=HardState(2, None), pre_vote=True)
        core.step(msg(2, 1, AppendEntries(2, 0, 0, (), 0)))
        drain(core)
        core.step(msg(3, 1, RequestVote(3, 10, 2, False)))
        core.step(msg(3, 1, RequestVote(3, 10, 2, True)))
        rd = core.ready()
        assert core.term == 2 and core.leader_id == 2
        assert [b.granted for b in bodies(rd.messages + rd.messages_after_persist, RequestVoteResponse)] == [False, False]


class RaftCommitTests(SynchronousTestCase):
    """When an entry counts as committed, and how followers learn it."""

    def test_figure8_old_term_entry_not_committed_by_counting_replicas(self):
        """A term-4 leader does not commit a term-2 entry stored on a majority
        until an entry of its own term is stored on a majority (Figure 8)."""
        clock = Clock()
        # Log: index 1 (term 1), index 2 (term 2), as S1 in Figure 8 (c)/(d).
        core = make_core(clock=clock, peers=(2, 3, 4, 5), hard_state=HardState(3, 1), entries=log_of([1, 2]))
        elect(core, clock, [2, 3])
        assert core.term == 4 and core.last_index == 3 and core.term_at(3) == 4
        drain(core)  # the leader's own no-op (index 3) is durable locally now
        # S2 and S3 acknowledge index 2 (term 2): with the leader that is a
        # majority (3 of 5) holding index 2, but it is from an old term.
        core.step(msg(2, 1, AppendEntriesResponse(4, True, 2)))
        core.step(msg(3, 1, AppendEntriesResponse(4, True, 2)))
        assert core.commit_index == 0
        assert drain(core).committed == []
        # Only one follower has the term-4 entry: still no majority for it.
        core.step(msg(2, 1, AppendEntriesResponse(4, True, 3)))
        assert core.commit_index == 0
        # A majority stores the term-4 entry: it and everything before commit.
        core.step(msg(3, 1, AppendEntriesResponse(4, True, 3)))
        assert core.commit_index == 3
        assert [e[0] for e in drain(core).committed] == [1, 2, 3]

    def test_leader_counts_itself_only_once_durable(self):
        """A leader's own entry counts toward the majority only after it has
        been reported persisted."""
        clock = Clock()
        core = make_core(clock=clock, peers=(2, 3))
        elect(core, clock, [2])
        rd = core.ready()  # handed out, not yet reported durable
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        assert core.commit_index == 0  # only one of three stores it durably
        core.persisted(*rd.persist_through)
        assert core.commit_index == 1

    def test_followers_learn_new_commit_index_without_waiting_for_heartbeat(self):
        """With C{commit_notify_delay=0} a leader whose commit index advances
        tells every follower at once (an AppendEntries carrying the new
        commit); the default delay is in tests.test_raft_commit_notice."""
        clock = Clock()
        core = make_core(clock=clock, commit_notify_delay=0)
        elect(core, clock, [2])
        drain(core)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        assert core.commit_index == 1
        rd = drain(core)
        assert {m.receiver for m in rd.messages if isinstance(m.body, AppendEntries) and m.body.leader_commit == 1} == {
            2,
            3,
        }

    def test_follower_commit_bounded_by_verified_entries(self):
        """A follower advances its commit index only through entries it knows
        match the leader's log, never to the leader's commit index blindly."""
        core = make_core(hard_state=HardState(1, None), entries=log_of([1, 1, 1]))
        # The heartbeat only verifies index 1; indexes 2-3 might be stale.
        core.step(msg(2, 1, AppendEntries(2, 1, 1, (), leader_commit=3)))
        assert core.commit_index == 1
        assert [e[0] for e in drain(core).committed] == [1]

    def test_applied_never_exceeds_commit_and_batches_are_bounded(self):
        """Committed entries are handed out in order, once, never beyond the
        commit index, at most max_apply_batch per Ready."""
        core = make_core(hard_state=HardState(1, None), max_apply_batch=3)
        entries = tuple(Entry(i, 1, b"v%d" % i) for i in range(1, 9))
        core.step(msg(2, 1, AppendEntries(1, 0, 0, entries, leader_commit=7)))
        seen = []
        while core.has_ready():
            rd = drain(core)
            assert len(rd.committed) <= 3
            seen += [e[0] for e in rd.committed]
            assert core.applied <= core.commit_index
        assert seen == list(range(1, 8))


class RaftFollowerReplicationTests(SynchronousTestCase):
    """How a follower accepts, rejects and reconciles AppendEntries."""

    def test_conflicting_uncommitted_entries_are_replaced(self):
        """A follower with divergent uncommitted entries from an old term
        truncates them and takes the leader's entries in their place."""
        core = make_core(hard_state=HardState(2, None), entries=log_of([1, 2, 2]))
        new = (Entry(2, 3, b"a"), Entry(3, 3, b"b"), Entry(4, 3, b"c"))
        core.step(msg(2, 1, AppendEntries(3, 1, 1, new, leader_commit=4)))
        rd = core.ready()
        assert rd.truncate_from == 2
        assert rd.entries == list(new)
        assert core.entries(1, core.last_index) == [log_of([1])[0], *new]
        assert bodies(rd.messages_after_persist, AppendEntriesResponse) == [AppendEntriesResponse(3, True, 4)]
        assert core.commit_index == 4
        assert [e[0] for e in rd.committed] == [1, 2, 3, 4]

    def test_matching_entries_are_not_truncated(self):
        """A stale or duplicate AppendEntries whose entries already match does
        not truncate entries that follow them."""
        core = make_core(hard_state=HardState(2, None), entries=log_of([1, 2, 2]))
        core.step(msg(2, 1, AppendEntries(2, 1, 1, tuple(log_of([1, 2])[1:]), leader_commit=0)))
        rd = core.ready()
        assert rd.truncate_from is None and rd.entries == []
        assert core.last_index == 3

    def test_acknowledgement_waits_for_persistence(self):
        """A follower's success response is sent only after its new entries are
        durable (it is in messages_after_persist with the entries)."""
        core = make_core(hard_state=HardState(1, None))
        core.step(msg(2, 1, AppendEntries(1, 0, 0, (Entry(1, 1, b"a"),), 0)))
        rd = core.ready()
        assert rd.entries == [Entry(1, 1, b"a")]
        assert bodies(rd.messages, AppendEntriesResponse) == []
        assert bodies(rd.messages_after_persist, AppendEntriesResponse) == [AppendEntriesResponse(1, True, 1)]

    def test_rejection_carries_conflict_hint(self):
        """A consistency-check failure names the first index of the conflicting
        term, or the follower's last index plus one when its log is short."""
        core = make_core(hard_state=HardState(3, None), entries=log_of([1, 2, 2, 2]))
        core.step(msg(2, 1, AppendEntries(3, 4, 3, (), 0)))
        core.step(msg(2, 1, AppendEntries(3, 9, 3, (), 0)))
        rd = core.ready()
        assert bodies(rd.messages_after_persist, AppendEntriesResponse) == [
            AppendEntriesResponse(3, False, 4, conflict_index=2, conflict_term=2),
            AppendEntriesResponse(3, False, 9, conflict_index=5, conflict_term=0),
        ]

    def test_stale_term_append_is_rejected_with_current_term(self):
        """An AppendEntries from an older term is refused and tells the stale
        leader the current term, without touching the log."""
        core = make_core(hard_state=HardState(5, None), entries=log_of([1]))
        core.step(msg(2, 1, AppendEntries(4, 1, 1, (Entry(2, 4, b"z"),), 2)))
        rd = core.ready()
        assert bodies(rd.messages, AppendEntriesResponse) == [AppendEntriesResponse(5, False, 1)]
        assert core.last_index == 1 and core.commit_index == 0

    def test_leader_steps_down_on_higher_term(self):
        """A leader that sees a higher term in a response becomes a follower of
        that term."""
        clock = Clock()
        core = make_core(clock=clock)
        elect(core, clock, [2])
        core.step(msg(3, 1, AppendEntriesResponse(core.term + 1, False, 0)))
        assert core.role is Role.FOLLOWER and core.term == 2


class RaftLeaderReplicationTests(SynchronousTestCase):
    """How a leader replicates proposals, backs off and bounds what is in flight."""

    @parametrize("kind", ["missing", "conflicting"])
    def test_fast_backoff_needs_rejections_per_term_not_per_entry(self, kind):
        """A follower missing, or holding 1000 conflicting, entries is brought
        in line with a handful of rejections (O(terms), not O(entries))."""
        n = 1000
        leader_log = log_of([1] * 10 + [3] * n)
        if kind == "missing":
            follower_log = log_of([1] * 10)
        else:
            follower_log = log_of([1] * 10 + [2] * n)
        clock, cores = _cluster_of_cores({1: leader_log, 2: follower_log, 3: leader_log}, {1: 3, 2: 3, 3: 3})
        # Only node 1 times out: the others heard from "a leader" recently.
        for i in (2, 3):
            cores[i].stop()
        clock.advance(TIMEOUT[1] + 0.01)
        drain(cores[1])
        cores[1].step(msg(3, 1, RequestVoteResponse(cores[1].term, True)))
        assert cores[1].role is Role.LEADER
        delivered = pump(cores)
        clock.advance(HEARTBEAT)  # the next heartbeat carries the final commit index
        delivered += pump(cores)
        rejections = [m for m in delivered if isinstance(m.body, AppendEntriesResponse) and not m.body.success]
        assert len(rejections) <= 3, [m.body for m in rejections]
        assert cores[2].entries(1, cores[2].last_index) == cores[1].entries(1, cores[1].last_index)
        assert cores[2].commit_index == cores[1].commit_index == cores[1].last_index

    def test_proposal_replicated_and_committed_through_majority(self):
        """A proposal on the leader is appended, replicated, committed once a
        majority stores it, and then handed out for applying on every node."""
        clock, cores = _cluster_of_cores({i: [] for i in (1, 2, 3)}, {i: 1 for i in (1, 2, 3)})
        for i in (2, 3):
            cores[i].stop()
        clock.advance(TIMEOUT[1] + 0.01)
        drain(cores[1])
        cores[1].step(msg(2, 1, RequestVoteResponse(cores[1].term, True)))
        pump(cores)
        index, term = cores[1].propose(b"hello")
        assert (index, term) == (2, cores[1].term)
        applied: dict[int, list[Entry]] = {i: [] for i in cores}
        for _ in range(10):
            for i, core in cores.items():
                rd = drain(core)
                applied[i] += rd.committed
                for m in rd.messages + rd.messages_after_persist:
                    cores[m.receiver].step(m)
            clock.advance(HEARTBEAT)
        for i in cores:
            assert [(e[0], e[2]) for e in applied[i]][-1] == (2, b"hello")

    def test_proposal_on_follower_raises_not_leader_with_leader_id(self):
        """A follower refuses a proposal, naming the leader it knows of, and
        appends nothing."""
        core = make_core(hard_state=HardState(1, None))
        with self.assertRaises(NotLeaderError) as e:
            core.propose(b"x")
        assert e.exception.leader_id is None
        core.step(msg(3, 1, AppendEntries(1, 0, 0, (), 0)))
        with self.assertRaises(NotLeaderError) as e:
            core.propose(b"x")
        assert e.exception.leader_id == 3
        assert core.last_index == 0

    def test_max_inflight_bounds_unacknowledged_appends(self):
        """A leader in the replicate state sends at most max_inflight
        AppendEntries with entries to a follower that has not acknowledged."""
        clock = Clock()
        core = make_core(clock=clock, max_inflight=4, max_append_entries=1)
        elect(core, clock, [2])
        drain(core)
        # Bring follower 2 into replicate state by acknowledging the no-op.
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        drain(core)

        def entry_appends_to_2(rd: Ready) -> list[AppendEntries]:
            return [b for b in bodies(rd.messages, AppendEntries, to=2) if b.entries]

        sent: list[AppendEntries] = []
        for i in range(20):  # one proposal per processing pass, as separate turns
            core.propose(b"p%d" % i)
            sent += entry_appends_to_2(drain(core))
        assert len(sent) == 4
        clock.advance(HEARTBEAT * 3)  # heartbeats must not overfill the window
        assert entry_appends_to_2(drain(core)) == []
        # An acknowledgement through the second message frees two slots.
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, sent[1].entries[-1][0])))
        for _ in range(5):
            core.propose(b"more")
            sent += entry_appends_to_2(drain(core))
        assert len(sent) == 6

    def test_deposed_leader_has_nothing_left_to_do(self):
        """A leader deposed after a proposal but before its next Ready has no
        broadcast left pending: has_ready() becomes false after one Ready (a
        stale flag would keep the node's processing loop spinning)."""
        clock = Clock()
        core = make_core(clock=clock)
        elect(core, clock, [2])
        drain(core)
        core.propose(b"x")
        core.step(msg(3, 1, AppendEntriesResponse(core.term + 1, False, 0)))
        assert core.role is Role.FOLLOWER
        rd = drain(core)
        assert bodies(rd.messages, AppendEntries) == []
        assert not core.has_ready()


class RaftReadIndexTests(SynchronousTestCase):
    """Check-quorum step-down and ReadIndex reads on leaders and followers."""

    def test_leader_without_majority_steps_down_by_check_quorum(self):
        """A leader that has not heard from a majority for an election timeout
        steps down instead of pretending to lead."""
        clock = Clock()
        core = make_core(clock=clock)
        elect(core, clock, [2])
        drain(core)
        clock.advance(TIMEOUT[1] * 2 + HEARTBEAT)
        assert core.role is Role.FOLLOWER and core.leader_id is None

    def test_read_index_waits_for_current_term_commit_and_quorum_round(self):
        """A leader answers a read only after an entry of its term committed and
        a majority acknowledged a heartbeat sent after the read arrived."""
        clock = Clock()
        core = make_core(clock=clock, entries=log_of([1]), hard_state=HardState(1, None))
        elect(core, clock, [2])
        drain(core)
        core.request_read(7)
        assert drain(core).reads == []  # the no-op of term 2 is not committed
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 2, round=0)))
        assert core.commit_index == 2
        rd = drain(core)
        assert rd.reads == []  # the read's heartbeat round is not yet acknowledged
        rounds = {m.body.round for m in rd.messages if isinstance(m.body, AppendEntries)}
        assert 1 in rounds  # a new round confirms leadership for the read
        core.step(msg(3, 1, AppendEntriesResponse(core.term, True, 2, round=0)))  # an older round
        assert drain(core).reads == []
        core.step(msg(3, 1, AppendEntriesResponse(core.term, True, 2, round=1)))
        rd = drain(core)
        assert [(r.request_id, r.index) for r in rd.reads] == [(7, 2)]

    def test_read_index_fails_when_leadership_is_lost(self):
        """Reads waiting on a leader fail when it steps down, for local and
        forwarded requests alike."""
        clock = Clock()
        core = make_core(clock=clock)
        elect(core, clock, [2])
        drain(core)
        core.step(msg(2, 1, AppendEntriesResponse(core.term, True, 1)))
        core.request_read(1)
        core.step(msg(3, 1, ReadIndexRequest(core.term, 9)))
        drain(core)
        core.step(msg(3, 1, AppendEntriesResponse(core.term + 1, False, 0)))
        rd = core.ready()
        assert [rid for rid, _ in rd.failed_reads] == [1]
        # The batch raised the term, so its messages wait for the term to be durable (messages_after_persist).
        sent = rd.messages + rd.messages_after_persist
        assert bodies(sent, ReadIndexResponse, to=3) == [ReadIndexResponse(core.term - 1, 9, None)] or bodies(
            sent, ReadIndexResponse, to=3
        )[0].index is None

    def test_forwarded_read_on_follower_completes_from_leader_answer(self):
        """A follower forwards a read to its leader and reports the index the
        leader returns; a refusal becomes a failed read."""
        core = make_core(hard_state=HardState(1, None))
        core.step(msg(2, 1, AppendEntries(1, 0, 0, (), 0)))
        drain(core)
        core.request_read(5)
        core.request_read(6)
        assert bodies(core.ready().messages, ReadIndexRequest, to=2) == [ReadIndexRequest(1, 5), ReadIndexRequest(1, 6)]
        core.step(msg(2, 1, ReadIndexResponse(1, 5, 3)))
        core.step(msg(2, 1, ReadIndexResponse(1, 6, None)))
        core.step(msg(2, 1, ReadIndexResponse(1, 5, 9)))  # duplicate: ignored
        rd = core.ready()
        assert [(r.request_id, r.index) for r in rd.reads] == [(5, 3)]
        assert [rid for rid, _ in rd.failed_reads] == [6]

    def test_forwarded_read_fails_on_term_change(self):
        """A read forwarded to a leader fails when the follower moves to a new
        term, so an answer from a deposed leader can never be used."""
        core = make_core(hard_state=HardState(1, None))
        core.step(msg(2, 1, AppendEntries(1, 0, 0, (), 0)))
        drain(core)
        core.request_read(5)
        drain(core)
        core.step(msg(3, 1, AppendEntries(2, 0, 0, (), 0)))
        core.step(msg(2, 1, ReadIndexResponse(1, 5, 3)))  # late answer of the old leader
        rd = core.ready()
        assert rd.reads == [] and [rid for rid, _ in rd.failed_reads] == [5]
