"""
The simulator's configuration-aware checkers (issue 13) fail on known-bad
histories: a commit counted with a learner's copy, a configuration change
appended while another is uncommitted or before the leader's own term
committed, and a committed entry left only on a removed node; the same
histories with the right holders pass.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Role
from kvstore.raft.membership import AddLearner, Configuration, RemoveMember, encode_configuration_entry
from kvstore.raft.messages import Entry
from kvstore.testing.sim.safety import SafetyMonitor

THREE = Configuration({0: "", 1: "", 2: ""})
WITH_LEARNER = Configuration({0: "", 1: "", 2: ""}, {3: "d:1"})
WITHOUT_TWO = Configuration({0: "", 1: ""}, removed=[2])


def _config(index: int, term: int, configuration: Configuration) -> Entry:
    return Entry(index, term, encode_configuration_entry(configuration))


class _Core:
    def __init__(self, entries: list[Entry], term: int, commit: int, role: Role = Role.FOLLOWER) -> None:
        self.log = list(entries)
        self.term = term
        self.commit_index = commit
        self.role = role
        self.first_index = 1
        self.snapshot_index = 0
        self.snapshot_term = 0

    @property
    def last_index(self) -> int:
        return len(self.log)

    def term_at(self, index: int) -> int:
        return self.log[index - 1].term if 0 < index <= len(self.log) else 0

    def entries(self, start: int, end: int) -> list[Entry]:
        return self.log[start - 1 : end]

    def propose_change(self, change: Any) -> tuple[int, int] | None:
        configuration = WITH_LEARNER if isinstance(change, AddLearner) else WITHOUT_TWO
        index = self.last_index + 1
        self.log.append(_config(index, self.term, configuration))
        return index, self.term


class _StateMachine:
    def apply(self, index: int, data: bytes) -> Any:
        return None


class _Node:
    def __init__(self, core: _Core) -> None:
        self.core = core
        self.state_machine = _StateMachine()


def _monitor(durable: dict[int, list[Entry]] | None = None) -> SafetyMonitor:
    logs = durable or {}
    return SafetyMonitor(lambda: 0.0, (0, 1, 2), 2, lambda i: logs.get(i, []), all_nodes=lambda: (0, 1, 2, 3))


def _properties(monitor: SafetyMonitor) -> set[str]:
    return {v.property for v in monitor.violations}


class CommitQuorumTests(SynchronousTestCase):
    """A leader's commit index advances only with a majority of the voters in force at it."""

    def _history(self, follower_has_entry: bool) -> SafetyMonitor:
        base = [Entry(1, 1, b""), _config(2, 1, WITH_LEARNER)]
        new = Entry(3, 1, b"Pk v")
        monitor = _monitor()
        leader = _Core([*base, new], 1, 2, Role.LEADER)
        monitor.watch(0, _Node(leader))  # type: ignore[arg-type]
        monitor.watch(1, _Node(_Core([*base, new] if follower_has_entry else base, 1, 2)))  # type: ignore[arg-type]
        monitor.watch(2, _Node(_Core(base, 1, 2)))  # type: ignore[arg-type]
        monitor.watch(3, _Node(_Core([*base, new], 1, 2)))  # type: ignore[arg-type]  # the learner
        monitor.step()
        leader.commit_index = 3
        monitor.step()
        return monitor

    def test_commit_held_by_the_leader_and_a_learner_only_is_caught(self) -> None:
        """The learner's copy does not count: the leader and one learner are not a majority of three voters."""
        self.assertIn("commit-quorum", _properties(self._history(follower_has_entry=False)))

    def test_commit_held_by_a_majority_of_voters_passes(self) -> None:
        """With a second voter holding the entry the commit is sound."""
        self.assertEqual(self._history(follower_has_entry=True).violations, [])


class ChangeRulesTests(SynchronousTestCase):
    """A leader appends a configuration change only when the previous one committed and its own term did."""

    def _leader(self, commit: int, entries: list[Entry]) -> tuple[SafetyMonitor, _Core]:
        monitor = _monitor()
        core = _Core(entries, 2, commit, Role.LEADER)
        monitor.watch(0, _Node(core))  # type: ignore[arg-type]
        return monitor, core

    def test_a_change_while_another_is_uncommitted_is_caught(self) -> None:
        """Appending a removal while the learner's addition is not committed breaks the one-at-a-time rule."""
        monitor, core = self._leader(2, [Entry(1, 1, b""), Entry(2, 2, b""), _config(3, 2, WITH_LEARNER)])
        core.propose_change(RemoveMember(2))
        self.assertIn("membership-change-rules", _properties(monitor))

    def test_a_change_before_the_own_term_commits_is_caught(self) -> None:
        """A leader of term 2 whose commit index is still an entry of term 1 may not change the membership."""
        monitor, core = self._leader(1, [Entry(1, 1, b""), Entry(2, 2, b"")])
        core.propose_change(AddLearner(3, "d:1"))
        self.assertIn("membership-change-rules", _properties(monitor))

    def test_a_change_after_the_own_term_committed_passes(self) -> None:
        """With an entry of its term committed and no change pending, the change keeps the rules."""
        monitor, core = self._leader(2, [Entry(1, 1, b""), Entry(2, 2, b"")])
        core.propose_change(AddLearner(3, "d:1"))
        self.assertEqual(monitor.violations, [])


class DurableQuorumTests(SynchronousTestCase):
    """Committed entries must stay durable on a majority of the voters of a configuration that can elect."""

    def test_an_entry_left_only_on_a_removed_node_is_lost(self) -> None:
        """Once node 2's removal is committed, an entry held by node 0 and node 2 only is not safe."""
        removal = _config(2, 1, WITHOUT_TWO)
        entry = Entry(3, 1, b"Pk v")
        monitor = _monitor({0: [Entry(1, 1, b""), removal, entry], 1: [Entry(1, 1, b""), removal],
                            2: [Entry(1, 1, b""), removal, entry]})
        for e in (Entry(1, 1, b""), removal, entry):
            monitor.committed[e.index] = (e.term, e.payload, 1)
            monitor.configurations.record(e.index, e.payload)
        monitor.check_durable_quorum()
        self.assertIn("committed-entry-lost", _properties(monitor))

    def test_a_removed_node_without_the_entry_is_not_a_loss(self) -> None:
        """The remaining voters hold every entry: that the removed node lacks one is not reported."""
        removal = _config(2, 1, WITHOUT_TWO)
        entry = Entry(3, 1, b"Pk v")
        monitor = _monitor({0: [Entry(1, 1, b""), removal, entry], 1: [Entry(1, 1, b""), removal, entry],
                            2: [Entry(1, 1, b"")]})
        for e in (Entry(1, 1, b""), removal, entry):
            monitor.committed[e.index] = (e.term, e.payload, 1)
            monitor.configurations.record(e.index, e.payload)
        monitor.check_durable_quorum()
        self.assertEqual(monitor.violations, [])
