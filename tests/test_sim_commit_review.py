# -*- test-case-name: tests.test_sim_commit_review -*-
"""
The durable-quorum check (C{committed-entry-lost}) must not let the
configuration a leader committed an entry under hide a real loss.

A majority of that configuration meets every majority of the latest
committed one, but not every quorum of a I{newer} configuration some node
holds: a stale, never-committed configuration entry left in a crashed node's
log from an earlier term.  The shape (nodes 1..5, C{ack-before-fsync}-style
loss of an unsynced entry):

  - committed: entry 1, and at 2 (term 1) learner 5 added: voters {1, 2, 3, 4};
  - node 1, leader of term 1, appended at 3 the removal of 4 (voters
    {1, 2, 3}) and crashed with it durable; nobody else has it;
  - node 3 leads term 2 with 3 (its no-op), 4 (a write) and at 5 the
    promotion of 5; within one step its commit index goes from 2 to 4:
    3 on {2, 3, 4} under {1, 2, 3, 4}, then 4 on {3, 4, 5} under the
    promotion, so the monitor records 3..4 under the promotion;
  - node 2 crashes having acknowledged 3 without syncing it.

Entries 3 and 4 are now durable on {3, 4, 5} only.  Restarted node 1 campaigns
under its stale {1, 2, 3} and wins with node 2's vote (node 2's log ends at 2
of term 1, behind node 1's 3 of term 1): a leader without committed 3 and 4,
which it overwrites.  The entries are lost and must be reported.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Role
from kvstore.raft.membership import Configuration, encode_configuration_entry
from kvstore.raft.messages import Entry
from kvstore.testing.sim.safety import SafetyMonitor
from tests.test_sim_commit_lost import _Core, _Node

LEARNER = Configuration({1: "", 2: "", 3: "", 4: ""}, {5: "d:1"})
STALE_REMOVAL = Configuration({1: "", 2: "", 3: ""}, {5: "d:1"}, removed=[4])
PROMOTED = Configuration({1: "", 2: "", 3: "", 4: "", 5: "d:1"})
NODES = (1, 2, 3, 4, 5)


def _config(index: int, term: int, configuration: Configuration) -> Entry:
    return Entry(index, term, encode_configuration_entry(configuration))


BASE = [Entry(1, 1, b""), _config(2, 1, LEARNER)]
NOOP, WRITE = Entry(3, 2, b""), Entry(4, 2, b"Pk a")
PROMOTION = _config(5, 2, PROMOTED)


def _after_node_2_crash(stale_on_node_1: bool) -> SafetyMonitor:
    """
    Run the shape above through L{SafetyMonitor.step} and check the durable
    quorum once node 2 has crashed; node 1 (crashed before it all) holds the
    stale removal durably if C{stale_on_node_1}, else only 1..2.
    """
    logs = {
        1: [*BASE, _config(3, 1, STALE_REMOVAL)] if stale_on_node_1 else list(BASE),
        2: [*BASE, NOOP],
        3: [*BASE, NOOP, WRITE, PROMOTION],
        4: [*BASE, NOOP, WRITE],
        5: [*BASE, NOOP, WRITE],
    }
    monitor = SafetyMonitor(lambda: 0.0, (1, 2, 3, 4), 3, lambda i: logs[i], all_nodes=lambda: NODES)
    leader = _Core([*BASE, NOOP], 2, 2, Role.LEADER)
    for i in (2, 3, 4, 5):
        monitor.watch(i, _Node(leader if i == 3 else _Core(logs[i], 2, 2)))  # type: ignore[arg-type]
    monitor.step()
    leader.log += [WRITE, PROMOTION]
    leader.commit_index = 4
    monitor.step()
    self_check = [v.property for v in monitor.violations]
    assert self_check == [], self_check  # the history itself breaks no rule the monitor checks
    logs[2] = list(BASE)  # acknowledged 3 before syncing it, then crashed
    monitor.unwatch(2)
    monitor.check_durable_quorum()
    return monitor


class CommitConfigurationHidesNoLossTests(SynchronousTestCase):
    """A configuration an entry was committed under never hides a loss that a newer configuration makes possible."""

    def test_entries_a_stale_configuration_can_elect_past_are_lost(self) -> None:
        """Entries durable on {3, 4, 5}, a majority of the promotion they were committed under, are reported lost when {1, 2} can elect under the stale {1, 2, 3}."""
        monitor = _after_node_2_crash(stale_on_node_1=True)
        self.assertEqual([v.property for v in monitor.violations], ["committed-entry-lost"])
        self.assertIn("committed entry 3 (term 2)", monitor.violations[0].detail)

    def test_without_the_stale_configuration_the_entries_are_kept(self) -> None:
        """The same entries on {3, 4, 5} are safe when only {1, 2, 3, 4} can elect: every 3 of them include 3 or 4."""
        monitor = _after_node_2_crash(stale_on_node_1=False)
        self.assertEqual(monitor.violations, [])
