# -*- test-case-name: tests.test_raft_unsendable_entry -*-
"""
A leader whose log holds an entry too large for any peer message (left by a
release before the limit was enforced, issue 9 part 3) reports each follower
stuck behind it, and steps down when the stuck followers leave it without a
quorum, instead of staying leader forever while committing nothing: such an
entry is normally on no other node, so a node without it can lead and
overwrite it.  If a majority does have it (sent by an older release), the
leader keeps leading and committing (issue 9 part 5, review).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import HardState, Role, UnsendableEntry
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Entry
from tests.test_raft_core import TIMEOUT, bodies, drain, elect, make_core, msg, pump

_LIMITS = {"max_append_bytes": 100, "max_entries_bytes": 200}
_BIG = b"x" * 500  # 532 bytes as counted by the core's default measure
_BIG_SIZE = len(_BIG) + 32


def _cores() -> tuple[dict[int, Clock], dict]:
    """Node 1 holds the oversized entry at index 2 (term 1); nodes 2 and 3
    have only entry 1.  Each core has its own clock."""
    clocks = {i: Clock() for i in (1, 2, 3)}
    shared = [Entry(1, 1, b"a")]
    logs = {1: shared + [Entry(2, 1, _BIG)], 2: shared, 3: shared}
    cores = {
        i: make_core(i, [p for p in (1, 2, 3) if p != i], clocks[i], HardState(1, None), logs[i], **_LIMITS)
        for i in (1, 2, 3)
    }
    return clocks, cores


class UnsendableEntryTests(SynchronousTestCase):
    """An entry no message can carry makes its leader step down."""

    def test_leader_steps_down_and_reports_entry(self) -> None:
        """The leader reports each follower stuck at the oversized entry and steps down once no quorum is past it."""
        clocks, cores = _cores()
        leader = cores[1]
        elect(leader, clocks[1], [2])
        rd = drain(leader)
        probes = {p: bodies(rd.messages, AppendEntries, to=p)[0] for p in (2, 3)}
        self.assertEqual(probes[2].prev_log_index, 2)
        # Follower 2 lacks entry 2: it refuses, and the leader backs off to
        # it; one stuck follower of two still leaves a quorum.
        leader.step(msg(2, 1, AppendEntriesResponse(leader.term, False, 2, 2, 0, probes[2].round)))
        rd = leader.ready()
        self.assertEqual(rd.unsendable, [UnsendableEntry(2, 2, _BIG_SIZE, False)])
        self.assertIs(leader.role, Role.LEADER)
        self.assertFalse(bodies(rd.messages, AppendEntries, to=2))
        # Reported once, not on every heartbeat.
        clocks[1].advance(0.2)
        self.assertEqual(leader.ready().unsendable, [])
        # Follower 3 too: no quorum is past the entry.
        leader.step(msg(3, 1, AppendEntriesResponse(leader.term, False, 2, 2, 0, probes[3].round)))
        self.assertTrue(leader.has_ready())
        rd = leader.ready()
        self.assertEqual(rd.unsendable, [UnsendableEntry(3, 2, _BIG_SIZE, True)])
        self.assertIs(leader.role, Role.FOLLOWER)

    def test_majority_with_entry_keeps_leader(self) -> None:
        """If a majority has the oversized entry, the leader keeps leading and committing and reports only the stuck follower."""
        clocks = {i: Clock() for i in (1, 2, 3)}
        shared = [Entry(1, 1, b"a")]
        logs = {1: shared + [Entry(2, 1, _BIG)], 2: shared + [Entry(2, 1, _BIG)], 3: shared}
        cores = {
            i: make_core(i, [p for p in (1, 2, 3) if p != i], clocks[i], HardState(1, None), logs[i], **_LIMITS)
            for i in (1, 2, 3)
        }
        elect(cores[1], clocks[1], [2])
        reports = []
        for _ in range(3):
            for core in cores.values():
                rd = drain(core)
                reports += rd.unsendable
                for m in rd.messages + rd.messages_after_persist:
                    cores[m.receiver].step(m)
            clocks[1].advance(0.05)
        self.assertIs(cores[1].role, Role.LEADER)
        self.assertEqual(cores[1].commit_index, 3)
        self.assertEqual(reports, [UnsendableEntry(3, 2, _BIG_SIZE, False)])

    def test_half_with_entry_in_an_even_cluster_keeps_leader_and_reports_deadlock(self) -> None:
        """With 4 nodes of which 2 hold the oversized entry, no side can commit: the leader stays (stepping down
        would only start elections a holder wins again) and reports the deadlock."""
        ids = (1, 2, 3, 4)
        clocks = {i: Clock() for i in ids}
        shared = [Entry(1, 1, b"a")]
        logs = {1: shared + [Entry(2, 1, _BIG)], 2: shared + [Entry(2, 1, _BIG)], 3: shared, 4: shared}
        cores = {
            i: make_core(i, [p for p in ids if p != i], clocks[i], HardState(1, None), logs[i], **_LIMITS)
            for i in ids
        }
        elect(cores[1], clocks[1], [2, 3])
        reports = []
        for _ in range(3):
            for core in cores.values():
                rd = drain(core)
                reports += rd.unsendable
                for m in rd.messages + rd.messages_after_persist:
                    cores[m.receiver].step(m)
            clocks[1].advance(0.05)
        self.assertIs(cores[1].role, Role.LEADER)
        self.assertEqual(sorted(r.follower for r in reports), [3, 4])
        self.assertFalse(any(r.stepped_down for r in reports))
        self.assertTrue(any(r.deadlocked for r in reports))

    def test_cluster_recovers_under_another_leader(self) -> None:
        """After the step-down another node leads, commits, and overwrites the oversized entry."""
        clocks, cores = _cores()
        elect(cores[1], clocks[1], [2])
        pump(cores)
        self.assertIs(cores[1].role, Role.FOLLOWER)
        # Node 3's lease on node 1's leadership runs out (but not its own
        # election timeout), then node 2 campaigns.
        clocks[3].advance(TIMEOUT[0] + 0.001)
        self.assertIs(cores[3].role, Role.FOLLOWER)
        clocks[2].advance(TIMEOUT[1] + 0.01)
        pump(cores)
        self.assertIs(cores[2].role, Role.LEADER)
        # The followers learn the last commit from the leader's notice.
        clocks[2].advance(cores[2].config.commit_notify_delay)
        pump(cores)
        term = cores[2].term
        for core in cores.values():
            self.assertEqual(core.commit_index, core.last_index)
            self.assertEqual(core.entries(1, core.last_index), cores[2].entries(1, cores[2].last_index))
            self.assertNotIn(_BIG, [e.payload for e in core.entries(1, core.last_index)])
            self.assertEqual(core.term_at(core.last_index), term)

    def test_sendable_large_entry_keeps_leader(self) -> None:
        """An entry over the soft budget but within the hard limit is sent alone and the leader stays."""
        clocks = {i: Clock() for i in (1, 2, 3)}
        entries = [Entry(1, 1, b"a"), Entry(2, 1, b"y" * 150)]
        cores = {
            i: make_core(i, [p for p in (1, 2, 3) if p != i], clocks[i], HardState(1, None),
                         entries if i == 1 else entries[:1], **_LIMITS)
            for i in (1, 2, 3)
        }
        elect(cores[1], clocks[1], [2])
        pump(cores)
        self.assertIs(cores[1].role, Role.LEADER)
        self.assertEqual(cores[2].last_index, 3)
        self.assertEqual(cores[1].commit_index, 3)
