# -*- test-case-name: tests.test_raft_compaction -*-
"""
The Raft core at the compaction boundary (issue 12): a log held from an
offset after a snapshot, restart from a snapshot plus a tail and a persisted
commit index, vote comparison and prev-term lookups at the boundary, the
leader's InstallSnapshot offers when a follower needs a compacted entry, and
a follower installing (or not needing) a leader's snapshot.
"""

from __future__ import annotations

import random
from typing import Iterable

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import CompactedIndex, HardState, RaftCore, Ready, Role, SnapshotPoint
from kvstore.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
)
from tests.test_raft_core import HEARTBEAT, TIMEOUT, bodies, drain, elect, msg


def entries_with_terms(first: int, terms: Iterable[int]) -> list[Entry]:
    """Entries with the given terms at indexes C{first}, C{first + 1}, ..."""
    return [Entry(i, t, b"e%d.%d" % (i, t)) for i, t in enumerate(terms, start=first)]


def compacted_core(
    node_id: int = 1,
    peers: Iterable[int] = (2, 3),
    clock: Clock | None = None,
    hard_state: HardState = HardState(),
    entries: Iterable[Entry] = (),
    snapshot: SnapshotPoint | None = None,
    commit_index: int = 0,
    start: bool = True,
) -> RaftCore:
    """A core restarted from C{snapshot} and the log C{entries} after (or
    around) it."""
    config = RaftConfig(
        node_id=node_id,
        peers=tuple(peers),
        heartbeat_interval=HEARTBEAT,
        election_timeout_min=TIMEOUT[0],
        election_timeout_max=TIMEOUT[1],
        pre_vote=False,
    )
    core = RaftCore(
        config,
        clock if clock is not None else Clock(),
        random.Random(node_id),
        hard_state,
        list(entries),
        snapshot=snapshot,
        commit_index=commit_index,
    )
    if start:
        core.start()
    return core


def leader_with_tail(clock: Clock) -> RaftCore:
    """
    Node 1, leader of term 3, with a snapshot at (20, 2) and the catch-up
    tail 16..25 (16..20 of term 2, 21..25 of term 2), then its no-op 26.
    """
    core = compacted_core(
        clock=clock,
        hard_state=HardState(2, None),
        entries=entries_with_terms(16, [2] * 10),
        snapshot=SnapshotPoint(20, 2),
        commit_index=25,
    )
    elect(core, clock, [2])
    return core


def ack(core: RaftCore, follower: int, index: int) -> None:
    core.step(msg(follower, core.node_id, AppendEntriesResponse(core.term, True, index)))


class RestartFromSnapshotTests(SynchronousTestCase):
    """A core built from a snapshot, a log around it and a persisted commit index."""

    def test_restart_hands_out_committed_entries_after_the_snapshot(self) -> None:
        """The first Ready applies the entries after the snapshot through the persisted commit index, nothing at or below the snapshot."""
        core = compacted_core(
            entries=entries_with_terms(6, [2] * 5 + [3] * 5), snapshot=SnapshotPoint(10, 2), commit_index=13
        )
        self.assertEqual(
            (core.first_index, core.snapshot_index, core.snapshot_term, core.last_index, core.last_term),
            (6, 10, 2, 15, 3),
        )
        self.assertEqual((core.applied, core.commit_index), (10, 13))
        self.assertTrue(core.has_ready())
        rd = core.ready()
        self.assertEqual([e[0] for e in rd.committed], [11, 12, 13])
        self.assertEqual(rd.committed[0], (11, 3, b"e11.3"))
        self.assertIsNone(rd.install_snapshot)
        self.assertFalse(rd.needs_persist())
        self.assertEqual(core.applied, 13)

    def test_persisted_commit_index_is_clamped(self) -> None:
        """A persisted commit index past the log is cut to its end, and one below the snapshot is raised to it."""
        entries = entries_with_terms(6, [2] * 10)
        high = compacted_core(entries=entries, snapshot=SnapshotPoint(10, 2), commit_index=99)
        self.assertEqual(high.commit_index, 15)
        low = compacted_core(entries=entries, snapshot=SnapshotPoint(10, 2), commit_index=3)
        self.assertEqual((low.commit_index, low.applied), (10, 10))
        self.assertEqual(low.ready().committed, [])

    def test_commit_index_without_snapshot(self) -> None:
        """Without a snapshot a persisted commit index applies from index 1."""
        core = compacted_core(entries=entries_with_terms(1, [1, 1, 2]), commit_index=2)
        self.assertEqual([e[0] for e in core.ready().committed], [1, 2])

    def test_empty_log_after_snapshot(self) -> None:
        """With only a snapshot, the log is empty and ends at the snapshot's index and term."""
        core = compacted_core(snapshot=SnapshotPoint(10, 3))
        self.assertEqual((core.first_index, core.last_index, core.last_term), (11, 10, 3))
        self.assertEqual((core.applied, core.commit_index), (10, 10))
        self.assertEqual(core.term_at(10), 3)
        self.assertEqual(core.entries(1, 10), [])

    def test_log_that_does_not_continue_the_snapshot_is_refused(self) -> None:
        """A log with a gap after the snapshot, one ending before it, or one holding another term at its index is refused."""
        cases = {
            "gap": (entries_with_terms(12, [2, 2]), SnapshotPoint(10, 2)),
            "ends before": (entries_with_terms(5, [2, 2]), SnapshotPoint(10, 2)),
            "other term": (entries_with_terms(9, [2, 2, 2]), SnapshotPoint(10, 3)),
            "no snapshot, not from 1": (entries_with_terms(5, [2, 2]), None),
            "not contiguous": ([Entry(11, 2, b""), Entry(13, 2, b"")], SnapshotPoint(10, 2)),
        }
        for name, (entries, snapshot) in cases.items():
            with self.subTest(name):
                self.assertRaises(ValueError, compacted_core, entries=entries, snapshot=snapshot, start=False)


class BoundaryLookupTests(SynchronousTestCase):
    """Terms, votes and prev-term lookups at the compaction boundary."""

    def test_term_at_compacted_index(self) -> None:
        """The snapshot's index and the entry just before the held log keep their terms; older ones raise CompactedIndex."""
        core = compacted_core(entries=entries_with_terms(1, [1] * 10 + [2] * 10), snapshot=SnapshotPoint(15, 2))
        core.compact(12)
        self.assertEqual(core.first_index, 13)
        self.assertEqual(core.term_at(12), 2)  # the boundary
        self.assertEqual(core.term_at(13), 2)
        self.assertRaises(CompactedIndex, core.term_at, 10)
        self.assertRaises(CompactedIndex, core.term_at, 11)
        self.assertEqual([e.index for e in core.entries(1, 14)], [13, 14])

    def test_vote_comparison_with_empty_log_after_snapshot(self) -> None:
        """An empty log after a snapshot counts as ending at the snapshot's (index, term) when granting votes."""
        for last_index, last_term, granted in [(9, 3, False), (10, 2, False), (10, 3, True), (5, 4, True)]:
            with self.subTest(last_index=last_index, last_term=last_term):
                core = compacted_core(snapshot=SnapshotPoint(10, 3), hard_state=HardState(3, None))
                core.step(msg(2, 1, RequestVote(4, last_index, last_term)))
                (reply,) = bodies(core.ready().messages_after_persist, RequestVoteResponse)
                self.assertEqual(reply.granted, granted)

    def test_candidate_with_empty_log_names_the_snapshot(self) -> None:
        """A candidate whose log is empty after a snapshot asks for votes with the snapshot's index and term."""
        clock = Clock()
        core = compacted_core(clock=clock, snapshot=SnapshotPoint(10, 3), hard_state=HardState(3, None))
        clock.advance(TIMEOUT[1] + 0.01)
        requests = bodies(core.ready().messages_after_persist, RequestVote)
        self.assertEqual({(r.last_log_index, r.last_log_term) for r in requests}, {(10, 3)})

    def test_leader_first_append_names_the_snapshot_term(self) -> None:
        """A leader whose log is empty after a snapshot sends its first AppendEntries with prev at the snapshot's index and term."""
        clock = Clock()
        core = compacted_core(clock=clock, snapshot=SnapshotPoint(10, 2), hard_state=HardState(2, None))
        elect(core, clock, [2])
        appends = bodies(drain(core).messages, AppendEntries, to=2)
        self.assertEqual([(a.prev_log_index, a.prev_log_term) for a in appends], [(10, 2)])
        self.assertEqual(appends[0].entries, ((11, 3, b""),))

    def test_follower_checks_prev_term_at_the_snapshot(self) -> None:
        """A follower with an empty log after a snapshot accepts an append whose prev is the snapshot and refuses a wrong prev term."""
        core = compacted_core(snapshot=SnapshotPoint(10, 2), hard_state=HardState(2, None))
        core.step(msg(2, 1, AppendEntries(3, 10, 1, ((11, 3, b"x"),), 11)))
        (refusal,) = bodies(core.ready().messages_after_persist, AppendEntriesResponse)
        self.assertFalse(refusal.success)
        self.assertEqual(core.last_index, 10)
        core.step(msg(2, 1, AppendEntries(3, 10, 2, ((11, 3, b"x"),), 11)))
        rd = drain(core)
        (reply,) = bodies(rd.messages_after_persist, AppendEntriesResponse)
        self.assertEqual((reply.success, reply.index), (True, 11))
        self.assertEqual(rd.entries, [(11, 3, b"x")])
        self.assertEqual(rd.committed, [(11, 3, b"x")])

    def test_follower_skips_entries_the_snapshot_covers(self) -> None:
        """An append whose prev is below the snapshot (its term compacted away) is checked only after the snapshot."""
        core = compacted_core(snapshot=SnapshotPoint(10, 2), hard_state=HardState(2, None))
        # Entirely inside the snapshot: acknowledged, nothing stored.
        inside = tuple(entries_with_terms(6, [2, 2, 2]))
        core.step(msg(2, 1, AppendEntries(3, 5, 2, inside, 10)))
        rd = drain(core)
        self.assertEqual([(r.success, r.index) for r in bodies(rd.messages_after_persist, AppendEntriesResponse)], [(True, 8)])
        self.assertEqual((rd.entries, core.last_index), ([], 10))
        # Straddling it: only the entries after it are stored.
        straddling = tuple(entries_with_terms(8, [2, 2, 2, 3, 3]))
        core.step(msg(2, 1, AppendEntries(3, 7, 2, straddling, 12)))
        rd = drain(core)
        self.assertEqual([(r.success, r.index) for r in bodies(rd.messages_after_persist, AppendEntriesResponse)], [(True, 12)])
        self.assertEqual([e[0] for e in rd.entries], [11, 12])
        self.assertEqual([e[0] for e in rd.committed], [11, 12])

    def test_conflict_hint_within_the_tail(self) -> None:
        """A follower's conflict hint names the first held index of the conflicting term, with the log held from an offset."""
        core = compacted_core(
            entries=entries_with_terms(6, [2] * 5 + [3] * 5), snapshot=SnapshotPoint(10, 2), hard_state=HardState(3, None)
        )
        core.step(msg(2, 1, AppendEntries(4, 14, 4, (), 10)))
        (reply,) = bodies(core.ready().messages_after_persist, AppendEntriesResponse)
        self.assertEqual((reply.success, reply.conflict_index, reply.conflict_term), (False, 11, 3))


class CompactTests(SynchronousTestCase):
    """snapshot_taken and compact keep within what is applied."""

    def _applied_core(self) -> RaftCore:
        core = compacted_core(entries=entries_with_terms(1, [1] * 10 + [2] * 10), commit_index=15)
        core.ready()
        return core

    def test_compact_never_past_the_snapshot(self) -> None:
        """compact past the snapshot index, or snapshot_taken past the applied index, raises and changes nothing."""
        core = self._applied_core()
        self.assertRaises(ValueError, core.compact, 1)  # no snapshot yet
        self.assertRaises(ValueError, core.snapshot_taken, 16, 2)
        core.snapshot_taken(12, 2)
        self.assertRaises(ValueError, core.compact, 13)
        self.assertEqual((core.first_index, core.snapshot_index, core.snapshot_term), (1, 12, 2))

    def test_snapshot_taken_checks_the_term(self) -> None:
        """A snapshot said to end with another term than the log holds there is refused."""
        core = self._applied_core()
        self.assertRaises(ValueError, core.snapshot_taken, 12, 1)
        self.assertEqual(core.snapshot_index, 0)

    def test_compact_drops_a_prefix(self) -> None:
        """compact drops the entries through its index, and an older snapshot report or compaction changes nothing."""
        core = self._applied_core()
        core.snapshot_taken(15, 2)
        core.compact(8)
        self.assertEqual((core.first_index, core.last_index, core.term_at(8)), (9, 20, 1))
        core.compact(5)
        core.snapshot_taken(12, 2)
        self.assertEqual((core.first_index, core.snapshot_index), (9, 15))
        core.compact(15)
        self.assertEqual((core.first_index, core.last_index, core.term_at(15)), (16, 20, 2))
        # Applying continues unchanged.
        core.step(msg(2, 1, AppendEntries(2, 20, 2, (), 18)))
        self.assertEqual([e[0] for e in core.ready().committed], [16, 17, 18])


class LeaderOffersSnapshotTests(SynchronousTestCase):
    """A leader whose follower needs a compacted entry offers a snapshot."""

    def _lagging(self) -> tuple[Clock, RaftCore]:
        """Follower 2 refuses the leader's first probe, naming index 5."""
        clock = Clock()
        leader = leader_with_tail(clock)
        (probe,) = bodies(drain(leader).messages, AppendEntries, to=2)
        self.assertEqual((probe.prev_log_index, probe.prev_log_term), (25, 2))
        leader.step(msg(2, 1, AppendEntriesResponse(3, False, 25, 5, 0)))
        return clock, leader

    def test_back_off_into_compacted_region_offers_snapshot(self) -> None:
        """A back-off below the held log makes the leader emit InstallSnapshot naming its snapshot, and no AppendEntries."""
        _, leader = self._lagging()
        rd = drain(leader)
        self.assertEqual(bodies(rd.messages, InstallSnapshot, to=2), [InstallSnapshot(3, 20, 2, leader.configuration)])
        self.assertEqual(bodies(rd.messages, AppendEntries, to=2), [])
        self.assertEqual(rd.messages_after_persist, [])

    def test_back_off_into_the_tail_does_not_offer_snapshot(self) -> None:
        """A follower whose next entry is still held catches up from the log."""
        clock = Clock()
        leader = leader_with_tail(clock)
        drain(leader)
        leader.step(msg(2, 1, AppendEntriesResponse(3, False, 25, 17, 0)))
        rd = drain(leader)
        self.assertEqual(bodies(rd.messages, InstallSnapshot), [])
        (append,) = bodies(rd.messages, AppendEntries, to=2)
        self.assertEqual((append.prev_log_index, append.prev_log_term, append.entries[0][0]), (16, 2, 17))

    def test_boundary_entry_still_reachable_after_compaction(self) -> None:
        """After compacting into the tail, a follower needing the first held entry still gets an append anchored at the boundary."""
        clock = Clock()
        leader = leader_with_tail(clock)
        drain(leader)
        leader.compact(17)
        leader.step(msg(2, 1, AppendEntriesResponse(3, False, 25, 18, 0)))
        (append,) = bodies(drain(leader).messages, AppendEntries, to=2)
        self.assertEqual((append.prev_log_index, append.prev_log_term), (17, 2))
        leader.step(msg(3, 1, AppendEntriesResponse(3, False, 25, 17, 0)))
        self.assertEqual(bodies(drain(leader).messages, InstallSnapshot, to=3), [InstallSnapshot(3, 20, 2, leader.configuration)])

    def test_follower_in_snapshot_state_gets_only_heartbeats(self) -> None:
        """While the snapshot is sent, proposals send the follower nothing and heartbeats are anchored at the snapshot."""
        clock, leader = self._lagging()
        drain(leader)
        ack(leader, 3, 26)
        drain(leader)
        leader.propose(b"new")
        rd = drain(leader)
        self.assertEqual(bodies(rd.messages, AppendEntries, to=2), [])
        self.assertEqual([[e[0] for e in a.entries] for a in bodies(rd.messages, AppendEntries, to=3)], [[27]])
        clock.advance(HEARTBEAT)
        rd = drain(leader)
        heartbeats = bodies(rd.messages, AppendEntries, to=2)
        self.assertEqual([(h.prev_log_index, h.prev_log_term, h.entries) for h in heartbeats], [(20, 2, ())])
        self.assertEqual(bodies(rd.messages, InstallSnapshot), [])
        # The follower's refusal of such a heartbeat changes nothing.
        leader.step(msg(2, 1, AppendEntriesResponse(3, False, 20, 1, 0)))
        rd = drain(leader)
        self.assertEqual(bodies(rd.messages, AppendEntries, to=2) + bodies(rd.messages, InstallSnapshot), [])

    def test_acknowledgement_past_the_snapshot_ends_snapshot_state(self) -> None:
        """A follower's success at the snapshot's index ends the transfer state and appends resume after it."""
        _, leader = self._lagging()
        drain(leader)
        ack(leader, 2, 20)
        rd = drain(leader)
        (append,) = bodies(rd.messages, AppendEntries, to=2)
        self.assertEqual((append.prev_log_index, [e[0] for e in append.entries]), (20, [21, 22, 23, 24, 25, 26]))
        # A late report of the transfer's end changes nothing.
        leader.report_snapshot(2, True)
        self.assertEqual(bodies(drain(leader).messages, AppendEntries, to=2), [])

    def test_report_snapshot_ok_probes_after_the_snapshot(self) -> None:
        """After a successful transfer the leader probes the follower just past the snapshot."""
        _, leader = self._lagging()
        drain(leader)
        leader.report_snapshot(2, True)
        (append,) = bodies(drain(leader).messages, AppendEntries, to=2)
        self.assertEqual((append.prev_log_index, append.prev_log_term, append.entries[0][0]), (20, 2, 21))
        ack(leader, 2, 26)
        self.assertEqual(leader.commit_index, 26)

    def test_report_snapshot_failure_offers_again_later(self) -> None:
        """After a failed transfer the follower is probed again: at the next heartbeat it gets a new offer, not at once."""
        clock, leader = self._lagging()
        drain(leader)
        leader.report_snapshot(2, False)
        rd = drain(leader)
        self.assertEqual(bodies(rd.messages, InstallSnapshot) + bodies(rd.messages, AppendEntries, to=2), [])
        clock.advance(HEARTBEAT)
        self.assertEqual(bodies(drain(leader).messages, InstallSnapshot, to=2), [InstallSnapshot(3, 20, 2, leader.configuration)])

    def test_new_offer_names_the_newest_snapshot(self) -> None:
        """An offer made after a newer local snapshot names that one."""
        clock, leader = self._lagging()
        drain(leader)
        leader.report_snapshot(2, False)
        ack(leader, 3, 26)
        drain(leader)
        leader.snapshot_taken(26, 3)
        leader.compact(26)
        clock.advance(HEARTBEAT)
        self.assertEqual(bodies(drain(leader).messages, InstallSnapshot, to=2), [InstallSnapshot(3, 26, 3, leader.configuration)])

    def test_report_for_follower_not_in_snapshot_state_is_ignored(self) -> None:
        """A report about a follower that is not being sent a snapshot, or from a non-leader, changes nothing."""
        clock = Clock()
        leader = leader_with_tail(clock)
        drain(leader)
        leader.report_snapshot(3, False)
        leader.report_snapshot(7, True)
        ack(leader, 3, 26)
        self.assertEqual(leader.commit_index, 26)
        follower = compacted_core(snapshot=SnapshotPoint(10, 2))
        follower.report_snapshot(2, True)
        self.assertFalse(follower.has_ready())

    def test_replicating_follower_behind_compaction_gets_offer(self) -> None:
        """A replicating follower whose pipelined entries were lost while the leader compacted past them is offered the snapshot."""
        clock = Clock()
        leader = leader_with_tail(clock)
        drain(leader)
        ack(leader, 2, 18)  # follower 2 replicates: 19..26 go out (and are lost)
        ack(leader, 3, 26)
        drain(leader)
        leader.snapshot_taken(26, 3)
        leader.compact(26)
        leader.propose(b"more")
        (append,) = bodies(drain(leader).messages, AppendEntries, to=2)
        self.assertEqual(append.prev_log_index, 26)
        # Follower 2 never got 19..26: it refuses, and 19 is compacted away.
        leader.step(msg(2, 1, AppendEntriesResponse(3, False, 26, 19, 0)))
        rd = drain(leader)
        self.assertEqual(bodies(rd.messages, InstallSnapshot, to=2), [InstallSnapshot(3, 26, 3, leader.configuration)])
        self.assertEqual(bodies(rd.messages, AppendEntries, to=2), [])


class FollowerInstallTests(SynchronousTestCase):
    """A follower stepping a leader's verified snapshot."""

    def test_install_discards_a_conflicting_log(self) -> None:
        """A follower whose log holds another term at the snapshot's index discards its whole log and installs the snapshot first."""
        core = compacted_core(entries=entries_with_terms(1, [1] * 5 + [2] * 7), commit_index=3, hard_state=HardState(2, None))
        self.assertEqual([e[0] for e in core.ready().committed], [1, 2, 3])
        core.step(msg(2, 1, InstallSnapshot(4, 10, 3)))
        self.assertTrue(core.has_ready())
        rd = core.ready()
        self.assertEqual(rd.install_snapshot, SnapshotPoint(10, 3))
        self.assertTrue(rd.needs_persist())
        self.assertEqual((rd.entries, rd.truncate_from, rd.committed), ([], None, []))
        self.assertEqual(rd.hard_state, HardState(4, None))
        self.assertEqual(rd.persist_through, (10, 3))
        self.assertEqual(
            [(m.receiver, m.body) for m in rd.messages_after_persist], [(2, AppendEntriesResponse(4, True, 10))]
        )
        self.assertEqual(rd.messages, [])
        self.assertEqual((core.first_index, core.last_index, core.last_term), (11, 10, 3))
        self.assertEqual((core.commit_index, core.applied, core.snapshot_index, core.snapshot_term), (10, 10, 10, 3))
        self.assertEqual((core.role, core.leader_id), (Role.FOLLOWER, 2))
        self.assertRaises(CompactedIndex, core.term_at, 9)
        # The log continues after the snapshot.
        core.persisted(*rd.persist_through)
        core.step(msg(2, 1, AppendEntries(4, 10, 3, ((11, 4, b"x"),), 11)))
        rd = drain(core)
        self.assertEqual((rd.install_snapshot, rd.entries, rd.committed), (None, [(11, 4, b"x")], [(11, 4, b"x")]))

    def test_install_discards_a_short_log_and_pending_applies(self) -> None:
        """A follower behind the snapshot never applies the entries the snapshot covers, even ones already committed."""
        core = compacted_core(entries=entries_with_terms(1, [1] * 6), commit_index=2, hard_state=HardState(1, None))
        core.step(msg(2, 1, AppendEntries(1, 6, 1, (), 5)))  # commit 5, not yet handed out
        core.step(msg(2, 1, InstallSnapshot(1, 10, 1)))
        rd = core.ready()
        self.assertEqual(rd.install_snapshot, SnapshotPoint(10, 1))
        self.assertEqual(rd.committed, [])
        self.assertEqual(core.applied, 10)

    def test_install_replaces_entries_not_yet_persisted(self) -> None:
        """Entries appended but not yet handed out before an install are not handed out after it; later ones are."""
        core = compacted_core(hard_state=HardState(1, None))
        core.step(msg(2, 1, AppendEntries(1, 0, 0, tuple(entries_with_terms(1, [1, 1])), 0)))
        core.step(msg(2, 1, InstallSnapshot(1, 5, 1)))
        core.step(msg(2, 1, AppendEntries(1, 5, 1, ((6, 1, b"six"),), 5)))
        rd = core.ready()
        self.assertEqual(rd.install_snapshot, SnapshotPoint(5, 1))
        self.assertEqual((rd.entries, rd.truncate_from, rd.committed), ([(6, 1, b"six")], None, []))

    def test_follower_already_covered_only_acknowledges(self) -> None:
        """A snapshot at or below the follower's commit index changes nothing and is acknowledged at the commit index."""
        entries = entries_with_terms(1, [1] * 5 + [2] * 10)
        core = compacted_core(entries=entries, commit_index=12, hard_state=HardState(2, None))
        core.ready()
        core.step(msg(2, 1, InstallSnapshot(2, 10, 2)))
        rd = core.ready()
        self.assertIsNone(rd.install_snapshot)
        self.assertEqual((rd.entries, rd.committed, rd.truncate_from), ([], [], None))
        self.assertEqual(bodies(rd.messages_after_persist, AppendEntriesResponse), [AppendEntriesResponse(2, True, 12)])
        self.assertEqual((core.first_index, core.last_index, core.snapshot_index, core.commit_index), (1, 15, 0, 12))

    def test_follower_holding_the_snapshot_entry_keeps_its_suffix(self) -> None:
        """A follower whose log holds the snapshot's index with its term keeps the whole log and commits through that index."""
        entries = entries_with_terms(1, [1] * 5 + [3] * 10)
        core = compacted_core(entries=entries, commit_index=5, hard_state=HardState(3, None))
        core.ready()
        core.step(msg(2, 1, InstallSnapshot(3, 10, 3)))
        rd = core.ready()
        self.assertIsNone(rd.install_snapshot)
        self.assertEqual([e[0] for e in rd.committed], [6, 7, 8, 9, 10])
        self.assertEqual(bodies(rd.messages_after_persist, AppendEntriesResponse), [AppendEntriesResponse(3, True, 10)])
        self.assertEqual((core.first_index, core.last_index, core.commit_index, core.snapshot_index), (1, 15, 10, 0))

    def test_stale_install_is_refused(self) -> None:
        """An InstallSnapshot from an older term changes nothing and tells the sender the current term."""
        core = compacted_core(entries=entries_with_terms(1, [1, 1]), hard_state=HardState(5, None))
        core.step(msg(2, 1, InstallSnapshot(4, 10, 3)))
        rd = core.ready()
        self.assertIsNone(rd.install_snapshot)
        self.assertEqual(bodies(rd.messages, AppendEntriesResponse), [AppendEntriesResponse(5, False, 10)])
        self.assertEqual((core.last_index, core.commit_index), (2, 0))

    def test_candidate_follows_the_leader_whose_snapshot_it_installs(self) -> None:
        """A candidate receiving the leader's snapshot in its term follows that leader."""
        clock = Clock()
        core = compacted_core(clock=clock, hard_state=HardState(1, None))
        clock.advance(TIMEOUT[1] + 0.01)
        self.assertIs(core.role, Role.CANDIDATE)
        core.step(msg(3, 1, InstallSnapshot(core.term, 4, 1)))
        self.assertEqual((core.role, core.leader_id), (Role.FOLLOWER, 3))
        self.assertEqual(core.ready().install_snapshot, SnapshotPoint(4, 1))


def _run(cores: dict[int, RaftCore], readies: dict[int, list[Ready]], rounds: int = 200) -> None:
    """Deliver messages between cores (InstallSnapshot straight to the
    follower, as a transfer that completes at once) until none are left."""
    for _ in range(rounds):
        outgoing: list[Message] = []
        for node_id, core in cores.items():
            rd = drain(core)
            readies[node_id].append(rd)
            outgoing += rd.messages + rd.messages_after_persist
        if not outgoing:
            return
        for message in outgoing:
            cores[message.receiver].step(message)
    raise AssertionError("messages kept flowing")


class CatchUpBySnapshotTests(SynchronousTestCase):
    """A whole exchange: a new empty node catches up from a compacted leader."""

    def test_empty_follower_catches_up_through_snapshot(self) -> None:
        """An empty follower is offered the snapshot, installs it, and then receives only the entries after it."""
        clocks = {i: Clock() for i in (1, 2, 3)}
        full = entries_with_terms(1, [1] * 30)
        cores = {
            i: compacted_core(
                i,
                [p for p in (1, 2, 3) if p != i],
                clocks[i],
                HardState(1, None),
                full[15:],
                SnapshotPoint(20, 1),
                commit_index=30,
            )
            for i in (1, 2)
        }
        cores[3] = compacted_core(3, (1, 2), clocks[3])
        elect(cores[1], clocks[1], [2])
        readies: dict[int, list[Ready]] = {i: [] for i in cores}
        _run(cores, readies)
        installs = [rd.install_snapshot for rd in readies[3] if rd.install_snapshot is not None]
        self.assertEqual(installs, [SnapshotPoint(20, 1)])
        stored = [e[0] for rd in readies[3] for e in rd.entries]
        self.assertEqual(stored, list(range(21, 32)))
        applied = [e[0] for rd in readies[3] for e in rd.committed]
        self.assertEqual(applied, list(range(21, 32)))
        self.assertEqual(cores[3].entries(1, 31), cores[1].entries(21, 31))
        self.assertEqual(cores[1].commit_index, 31)


class LogSearchWithOffsetTests(SynchronousTestCase):
    """The binary searches over a log held from an offset agree with a scan."""

    @given(st.lists(st.integers(0, 2), min_size=1, max_size=40), st.data())
    def test_last_index_of_term_matches_a_scan(self, steps: list[int], data: st.DataObject) -> None:
        """The last index of a term at or below a bound is what a scan over the held log and the boundary entry finds."""
        terms, term = [], 1
        for step in steps:
            term += step
            terms.append(term)
        snapshot_index = data.draw(st.integers(1, len(terms)))
        through = data.draw(st.integers(0, snapshot_index))
        entries = entries_with_terms(1, terms)
        core = compacted_core(entries=entries, snapshot=SnapshotPoint(snapshot_index, terms[snapshot_index - 1]), start=False)
        core.compact(through)
        wanted = data.draw(st.integers(0, terms[-1] + 1))
        bound = data.draw(st.integers(0, len(terms) + 2))
        expected = 0
        # Known terms: the held log, the boundary entry just before it.
        for index in range(min(bound, len(terms)), max(through, 1) - 1, -1):
            if terms[index - 1] == wanted:
                expected = index
                break
            if terms[index - 1] < wanted:
                break
        self.assertEqual(core._last_index_of_term(wanted, bound), expected)
