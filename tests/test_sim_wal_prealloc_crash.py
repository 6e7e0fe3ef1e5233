# -*- test-case-name: tests.test_sim_wal_prealloc_crash -*-
"""
The simulator's post-crash look at a node's storage opens the write-ahead
log as the node's restart does, with preallocation (issue 16): it must not
rewrite the crashed node's files into a shape the restart would never see.
Opened without preallocation, it truncated the zeros after the last
segment's records (logging a torn tail that was not there), so every
restart in every run began from a trimmed segment and the restart path
over preallocated zeros was never simulated.
"""

from __future__ import annotations

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.storage.records import RECORD_HEADER_SIZE
from kvstore.testing.sim.world import DATA, SimConfig, Simulation


class PostCrashOpenTests(SynchronousTestCase):
    def test_crash_check_keeps_the_preallocated_zeros(self) -> None:
        """A crash without tearing leaves the last segment's zeros in place and logs no torn tail."""
        sim = Simulation(SimConfig(1, 3))
        sim.tear_probability = 0.0
        sim.boot(0)
        fs = sim.members[0].fs
        wal = f"{DATA}/wal"
        segment = f"{wal}/{max(n for n in fs.listdir(wal) if n.endswith('.log'))}"
        before = fs.read_file(segment)
        self.assertEqual(before[-RECORD_HEADER_SIZE:], bytes(RECORD_HEADER_SIZE))
        with capturedLogs() as events:
            sim.crash(0, "test")
        warnings = [e for e in events if e["log_level"] == LogLevel.warn and "torn tail" in e.get("log_format", "")]
        self.assertEqual(warnings, [])
        self.assertEqual(fs.read_file(segment), before)
