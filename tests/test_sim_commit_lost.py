# -*- test-case-name: tests.test_sim_commit_lost -*-
"""
The durable-quorum check (C{committed-entry-lost}) in the shape of seed 1397
(5 nodes), driven through L{SafetyMonitor.step} with stand-in nodes: leader
1 appends the promotion of learner 5 (it takes effect once appended), its
commit index jumps over entries 3 and 4 (3 committed indirectly) under the
promoted configuration, and it crashes with 3..5 unsynced.  Held durably by
{0, 3, 5}, a majority of the configuration they were committed under, both
entries are safe (every 3-of-4 quorum of the voters left meets {0, 3}); held
by {0, 5} only, they are lost and must be reported.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import Role
from kvstore.raft.membership import Configuration
from kvstore.raft.messages import Entry
from kvstore.testing.sim.safety import SafetyMonitor
from tests.test_sim_membership_checks import _config, _Core, _Node  # the stand-ins for a node the monitor reads

# Node 2 removed, 5 a learner: voters {0, 1, 3, 4}; then 5 promoted.
COMMITTED = Configuration({0: "", 1: "", 3: "", 4: ""}, {5: "d:1"}, removed=[2])
PROMOTED = Configuration({0: "", 1: "", 3: "", 4: "", 5: "d:1"}, removed=[2])
NODES = (0, 1, 2, 3, 4, 5)

BASE = [Entry(1, 1, b""), _config(2, 1, COMMITTED)]
NEW = [Entry(3, 2, b"Pk a"), Entry(4, 2, b"Pk b")]
PROMOTION = _config(5, 2, PROMOTED)


def _after_crash(holders: set[int]) -> SafetyMonitor:
    """
    Leader 1 (term 2) holds 1..5, C{holders} hold 1..4, the others 1..2; its
    commit index goes from 2 to 4 in one step, then it crashes having
    synced only 1..2, and the durable quorum is checked.
    """
    logs = {i: [*BASE, *NEW] if i in holders else list(BASE) for i in NODES}
    logs[2] = [BASE[0]]
    monitor = SafetyMonitor(lambda: 0.0, (0, 1, 2, 3, 4), 3, lambda i: logs[i], all_nodes=lambda: NODES)
    leader = _Core([*BASE, *NEW, PROMOTION], 2, 2, Role.LEADER)
    for i in NODES:
        if i != 2:
            monitor.watch(i, _Node(leader if i == 1 else _Core(logs[i], 2, 2)))  # type: ignore[arg-type]
    monitor.step()
    leader.commit_index = 4
    monitor.step()
    logs[1] = list(BASE)
    monitor.unwatch(1)
    monitor.check_durable_quorum()
    return monitor


class CommitConfigurationLossTests(SynchronousTestCase):
    """The configuration an entry was committed under saves it only with a durable majority of that configuration."""

    def test_indirectly_committed_entry_on_a_majority_of_its_commit_configuration_is_kept(self) -> None:
        """Entry 3, committed indirectly by the jump to 4, on {0, 3, 5} (3 of the 5 promoted voters) is not lost."""
        monitor = _after_crash({0, 3, 5})
        self.assertEqual(monitor.violations, [])

    def test_entries_on_a_minority_of_their_commit_configuration_are_lost(self) -> None:
        """On {0, 5}, 2 of the 5 promoted voters and 1 of the 4 left, the committed entries are reported lost."""
        monitor = _after_crash({0, 5})
        self.assertEqual([v.property for v in monitor.violations], ["committed-entry-lost"])
        self.assertIn("committed entry 3 (term 2)", monitor.violations[0].detail)
