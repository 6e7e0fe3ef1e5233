# -*- test-case-name: tests.test_raft_unsendable_entry -*-
"""
A leader whose log holds an entry too large for any peer message (left by a
release before the limit was enforced, issue 9 part 3) steps down and says
so, instead of staying leader forever while committing nothing: no follower
ever received such an entry, so it is uncommitted and a node without it can
lead and overwrite it (issue 9 part 5, review).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import HardState, Role
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
        """The leader steps down once a follower needs the oversized entry, and the Ready names its index and size."""
        clocks, cores = _cores()
        leader = cores[1]
        elect(leader, clocks[1], [2])
        rd = drain(leader)
        [probe] = bodies(rd.messages, AppendEntries, to=2)
        self.assertEqual(probe.prev_log_index, 2)
        # Follower 2 lacks entry 2: it refuses, and the leader backs off to it.
        leader.step(msg(2, 1, AppendEntriesResponse(leader.term, False, 2, 2, 0, probe.round)))
        self.assertTrue(leader.has_ready())
        rd = leader.ready()
        self.assertEqual(rd.unsendable_entry, (2, _BIG_SIZE))
        self.assertIs(leader.role, Role.FOLLOWER)
        self.assertFalse(bodies(rd.messages, AppendEntries, to=2))

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
