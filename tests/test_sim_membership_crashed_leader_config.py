"""
The durable-quorum check (C{committed-entry-lost}) counts the configuration
a crashed node will recover: a leader that promoted a learner, committed an
entry on itself and that (now voting) node, then crashed with the promotion
durable, left the entry on a majority of the configuration it restarts in.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.membership import Configuration, encode_configuration_entry
from kvstore.raft.messages import Entry
from kvstore.testing.sim.safety import SafetyMonitor

# Seed 599 (3 nodes) in miniature: node 1 removed, node 3 a learner, then
# node 3 promoted by leader 0 after the entry it committed on {0, 3}.
OLD = Configuration({0: "", 2: ""}, {3: "d:1"}, removed=[1])
PROMOTED = Configuration({0: "", 2: "", 3: "d:1"}, removed=[1])


def _config(index: int, term: int, configuration: Configuration) -> Entry:
    return Entry(index, term, encode_configuration_entry(configuration))


class CrashedLeaderConfigurationTests(SynchronousTestCase):
    """A committed entry is judged against the configuration a crashed node holds durably, too."""

    def _monitor(self, leader_log: list[Entry]) -> SafetyMonitor:
        base = [Entry(1, 1, b""), _config(2, 1, OLD)]
        entry = Entry(3, 1, b"Pk v")
        logs = {0: leader_log, 2: base, 3: [*base, entry]}
        # Node 0 has crashed: it is not watched, only its durable log is known.
        monitor = SafetyMonitor(lambda: 0.0, (0, 1, 2), 2, lambda i: logs.get(i, []), all_nodes=lambda: (0, 1, 2, 3))
        for e in (*base, entry):
            monitor.committed[e.index] = (e.term, e.payload, 0)
            monitor.configurations.record(e.index, e.payload)
        monitor.check_durable_quorum()
        return monitor

    def test_promotion_durable_on_the_crashed_leader_keeps_the_entry_safe(self) -> None:
        """Entry 3 on nodes 0 and 3 is a majority of voters {0, 2, 3}, the configuration crashed node 0 recovers."""
        base = [Entry(1, 1, b""), _config(2, 1, OLD)]
        monitor = self._monitor([*base, Entry(3, 1, b"Pk v"), _config(4, 1, PROMOTED)])
        self.assertEqual(monitor.violations, [])
