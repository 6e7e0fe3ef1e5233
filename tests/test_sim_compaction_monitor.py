# -*- test-case-name: tests.test_sim_compaction_monitor -*-
"""
The safety monitor once logs are compacted (kvstore.testing.sim.safety):
it compares only what both sides still hold, counts an entry a durable
snapshot covers as held, and still catches a disagreement in the held
entries, a snapshot file with uncommitted content, and a state machine
that differs from the committed entries replayed; the simulated file
system's durable listing and a crashed process's late close.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import CompactedIndex, Role
from kvstore.raft.messages import Entry
from kvstore.statemachine import encode_put
from kvstore.testing.sim.fs import SimulatedFileSystem
from kvstore.testing.sim.safety import DurableLog, SafetyMonitor


class _CompactedCore:
    """A core holding entries C{first..} after a snapshot at C{first - 1}."""

    def __init__(self, entries: list[Entry], first: int, term: int, commit: int, role: Role = Role.FOLLOWER) -> None:
        self.held = entries
        self.first_index = first
        self.snapshot_index = first - 1
        self.term = term
        self.commit_index = commit
        self.role = role

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.held) - 1

    @property
    def last_term(self) -> int:
        return self.held[-1].term if self.held else 0

    def term_at(self, index: int) -> int:
        if index < self.first_index:
            raise CompactedIndex(index)
        return self.held[index - self.first_index].term

    def entries(self, low: int, high: int) -> list[Entry]:
        low = max(low, self.first_index)
        return self.held[low - self.first_index : high - self.first_index + 1]


class _StateMachine:
    def __init__(self, applied: int = 0, items: dict[str, str] | None = None) -> None:
        self.applied_index = applied
        self._items = items or {}

    def apply(self, index: int, data: bytes) -> Any:
        self.applied_index = index

    def items(self) -> dict[str, str]:
        return dict(self._items)


class _Node:
    def __init__(self, core: _CompactedCore, sm: _StateMachine | None = None) -> None:
        self.core = core
        self.state_machine = sm or _StateMachine()


def entries(first: int, terms: list[int], tag: bytes = b"") -> list[Entry]:
    return [Entry(first + i, t, encode_put("k", f"{first + i}{tag.decode()}")) for i, t in enumerate(terms)]


def monitor(durable: dict[int, Any] | None = None) -> SafetyMonitor:
    """A monitor of three nodes, by default each with a durable snapshot covering everything."""
    views = durable if durable is not None else {i: DurableLog(10**6) for i in range(3)}
    return SafetyMonitor(lambda: 0.0, (0, 1, 2), 2, lambda i: views.get(i, DurableLog()))


def properties(m: SafetyMonitor) -> set[str]:
    return {v.property for v in m.violations}


class LogMatchingWithOffsetsTests(SynchronousTestCase):
    """Log matching compares the entries both logs still hold, by index."""

    def test_logs_with_different_first_indexes_agree(self) -> None:
        """Two logs holding 5..9 and 8..12 of the same history pass."""
        history = entries(1, [1] * 12)
        m = monitor()
        m.watch(0, _Node(_CompactedCore(history[4:9], 5, 1, 0)))  # type: ignore[arg-type]
        m.watch(1, _Node(_CompactedCore(history[7:12], 8, 1, 0)))  # type: ignore[arg-type]
        m.full_check()
        self.assertEqual(m.violations, [])

    def test_disagreement_in_the_held_overlap_is_caught(self) -> None:
        """Same index and term at 9 but different payloads at 8 is a log-matching violation."""
        a = entries(5, [1, 1, 1, 1, 1])
        b = entries(8, [1, 1, 1], tag=b"x")
        b[1] = a[4]  # both hold entry 9 of term 1 alike, but differ at 8
        m = monitor()
        m.watch(0, _Node(_CompactedCore(a, 5, 1, 0)))  # type: ignore[arg-type]
        m.watch(1, _Node(_CompactedCore(b, 8, 1, 0)))  # type: ignore[arg-type]
        m.full_check()
        self.assertEqual(properties(m), {"log-matching"})
        self.assertIn("differ at 8", m.violations[0].detail)


class LeaderCompletenessWithSnapshotTests(SynchronousTestCase):
    """A leader may hold a committed entry in its snapshot, not in its log."""

    def test_committed_entry_in_the_leaders_snapshot(self) -> None:
        """Entries compacted into the leader's snapshot count as held; one past
        both its snapshot and its log does not."""
        m = monitor()
        history = entries(1, [1] * 8)
        m.committed.update({e.index: (e.term, e.payload, 1) for e in history[:7]})
        m.watch(0, _Node(_CompactedCore(history[4:7], 5, 2, 7, Role.LEADER)))  # type: ignore[arg-type]
        m.step()
        self.assertEqual(m.violations, [])
        m.committed[8] = (1, history[7].payload, 1)
        m.watch(1, _Node(_CompactedCore(history[4:7], 5, 3, 7, Role.LEADER)))  # type: ignore[arg-type]
        m.step()
        self.assertEqual(properties(m), {"leader-completeness"})


class DurableQuorumWithSnapshotsTests(SynchronousTestCase):
    """A durable snapshot holds every entry through its index."""

    def test_holds(self) -> None:
        """Entries through the snapshot are held, later ones only with their term."""
        view = DurableLog(4, entries(3, [1, 1, 2]))
        self.assertTrue(view.holds(1, 9))
        self.assertTrue(view.holds(5, 2))
        self.assertFalse(view.holds(5, 1))
        self.assertFalse(view.holds(6, 2))
        self.assertFalse(DurableLog().holds(1, 1))

    def test_entry_only_in_one_nodes_snapshot_is_lost(self) -> None:
        """A committed entry covered by two nodes' snapshots is durable on a
        quorum; covered by one only, it is lost."""
        m = monitor({0: DurableLog(5, []), 1: DurableLog(3, entries(4, [1, 1]))})
        m.committed.update({i: (1, b"", 1) for i in range(1, 6)})
        m.check_durable_quorum()
        self.assertEqual(m.violations, [])
        m2 = monitor({0: DurableLog(5, []), 1: DurableLog(3, entries(4, [1]))})
        m2.committed.update({i: (1, b"", 1) for i in range(1, 6)})
        m2.check_durable_quorum()
        self.assertEqual(properties(m2), {"committed-entry-lost"})
        self.assertIn("committed entry 5", m2.violations[0].detail)


class SnapshotAndStateChecksTests(SynchronousTestCase):
    """Snapshot files and state machines are checked against the committed entries."""

    def committed(self, m: SafetyMonitor) -> None:
        m.committed.update({1: (1, encode_put("a", "1"), 1), 2: (1, encode_put("b", "2"), 1)})

    def test_snapshot_with_uncommitted_content(self) -> None:
        """A snapshot whose content is not the committed entries replayed is reported at the next step."""
        m = monitor()
        self.committed(m)
        m.snapshot_written(0, "/s/ok", 2, 1, {"a": "1", "b": "2"}, "took")
        m.step()
        self.assertEqual(m.violations, [])
        m.snapshot_written(1, "/s/bad", 2, 1, {"a": "1", "b": "X"}, "received")
        m.step()
        self.assertEqual(properties(m), {"snapshot-committed"})
        self.assertIn("node 1 received /s/bad", m.violations[0].detail)
        self.assertEqual(m.snapshots_checked, 2)

    def test_snapshot_past_the_committed_entries(self) -> None:
        """A snapshot ending at an index never seen committed is reported."""
        m = monitor()
        self.committed(m)
        m.snapshot_written(0, "/s/ahead", 3, 1, {"a": "1", "b": "2"}, "took")
        m.full_check()
        self.assertEqual(properties(m), {"snapshot-committed"})

    def test_state_machine_differing_from_the_committed_entries(self) -> None:
        """A node whose state at its applied index is not the replayed committed
        entries is reported, even with no other node at that index."""
        m = monitor()
        self.committed(m)
        m.watch(0, _Node(_CompactedCore([], 3, 1, 2), _StateMachine(2, {"a": "1", "b": "2"})))  # type: ignore[arg-type]
        m.full_check()
        self.assertEqual(m.violations, [])
        m.watch(1, _Node(_CompactedCore([], 3, 1, 2), _StateMachine(2, {"a": "1"})))  # type: ignore[arg-type]
        m.full_check()
        self.assertEqual(properties(m), {"state-machines-agree"})
        self.assertIn("the committed entries replayed and node 1", m.violations[0].detail)

    def test_nodes_at_an_index_the_replay_cannot_reach(self) -> None:
        """Without the committed entries through an index, nodes at that index
        are still compared with each other (and with earlier states there)."""
        m = monitor()
        m.watch(0, _Node(_CompactedCore([], 6, 1, 5), _StateMachine(5, {"a": "1"})))  # type: ignore[arg-type]
        m.full_check()
        m.watch(1, _Node(_CompactedCore([], 6, 1, 5), _StateMachine(5, {"a": "2"})))  # type: ignore[arg-type]
        m.unwatch(0)
        m.full_check()
        self.assertEqual(properties(m), {"state-machines-agree"})
        self.assertIn("nodes 0 and 1", m.violations[0].detail)

    def test_applied_entries_are_recorded_committed(self) -> None:
        """An entry applied (and so committed) is in the committed table even
        if the node compacted it before the monitor's step."""
        m = monitor()
        core = _CompactedCore(entries(1, [1, 1]), 1, 1, 2)
        node = _Node(core)
        m.watch(0, node)  # type: ignore[arg-type]
        node.state_machine.apply(1, core.held[0].payload)
        self.assertEqual(m.committed[1][:2], (1, core.held[0].payload))


class SimulatedFileSystemTests(SynchronousTestCase):
    """The durable listing and a crashed process's descriptors."""

    def test_durable_listdir(self) -> None:
        """A renamed file is listed durable only after its directory's fsync."""
        fs = SimulatedFileSystem()
        fs.makedirs_durable("/d")
        fd = fs.create_truncate("/d/a")
        fs.fsync(fd)
        fs.close(fd)
        self.assertEqual(fs.durable_listdir("/d"), [])
        fs.fsync_dir("/d")
        self.assertEqual(fs.durable_listdir("/d"), ["a"])
        fs.unlink("/d/a")
        self.assertEqual(fs.durable_listdir("/d"), ["a"])
        self.assertEqual(fs.durable_listdir("/nowhere"), [])

    def test_close_of_a_crashed_process_descriptor(self) -> None:
        """Closing a descriptor opened before a crash does nothing; an
        unknown descriptor of the living process still fails."""
        fs = SimulatedFileSystem()
        fs.makedirs_durable("/d")
        old = fs.create_truncate("/d/a")
        fs.crash(random.Random(1))
        fs.close(old)
        new = fs.create_truncate("/d/b")
        fs.close(new)
        self.assertRaises(OSError, fs.close, new)
