# -*- test-case-name: tests.test_trace_stages -*-
"""
Tests for the per-stage write trace: L{kvstore.trace}, the WAL's traced
flush, and C{kvstore-bench}'s breakdown of the events.
"""

from __future__ import annotations

import os

from twisted.internet.defer import succeed
from twisted.trial.unittest import SynchronousTestCase

from kvstore import trace
from kvstore.storage.records import LogEntry
from kvstore.storage.wal import WriteAheadLog
from kvstore.tools import bench


def _trace_on(case: SynchronousTestCase, directory: str | None = None) -> list:
    """Switch tracing on for one test, with a fresh event list."""
    events: list = []
    case.patch(trace, "ENABLED", True)
    case.patch(trace, "_events", events)
    case.patch(trace, "_directory", directory)
    return events


class TraceModuleTests(SynchronousTestCase):
    def test_off_unless_the_environment_names_a_directory(self) -> None:
        """Without KVSTORE_TRACE_DIR (as in this test run) tracing is off."""
        self.assertNotIn(trace.ENVIRONMENT_VARIABLE, os.environ)
        self.assertFalse(trace.ENABLED)

    def test_save_writes_the_events_to_a_per_process_file(self) -> None:
        """save() writes every event as one JSON line to trace-<pid>.jsonl,
        which the bench reads back unchanged."""
        directory = self.mktemp()
        os.mkdir(directory)
        _trace_on(self, directory)
        trace.record("propose", 7)
        trace.record("client.received")
        trace.save()
        events = bench.read_trace_file(os.path.join(directory, f"trace-{os.getpid()}.jsonl"))
        self.assertEqual([(stage, index) for _, stage, index in events], [("propose", 7), ("client.received", None)])
        self.assertLessEqual(events[0][0], events[1][0])


class TracedFlushTests(SynchronousTestCase):
    def _log(self) -> WriteAheadLog:
        directory = self.mktemp()
        log = WriteAheadLog.open(directory, run_in_thread=lambda f: succeed(f()))
        self.addCleanup(log.close)
        return log

    def test_flush_is_traced_when_on(self) -> None:
        """With tracing on, a flush records its start and end (on the storage
        thread) and the durable index, each with the index it covers."""
        log = self._log()
        events = _trace_on(self)
        log.append([LogEntry(1, 1, b"a"), LogEntry(2, 1, b"b")])
        self.successResultOf(log.sync())
        self.assertEqual([(stage, index) for _, stage, index in events],
                         [("flush.start", 2), ("flush.end", 2), ("wal.durable", 2)])

    def test_nothing_recorded_when_off(self) -> None:
        """With tracing off a flush records nothing."""
        log = self._log()
        events: list = []
        self.patch(trace, "_events", events)
        self.patch(trace, "ENABLED", False)
        log.append([LogEntry(1, 1, b"a")])
        self.successResultOf(log.sync())
        self.assertEqual(events, [])


def _write(base: int, index: int, follower_delays: dict[str, int]) -> dict[str, list]:
    """Synthetic events of one write sent at C{base} ns: the leader's, and
    each follower's with its acknowledgement C{delay} ns after the leader's
    AppendEntries."""
    leader = [(base + 10_000, "client.received", None), (base + 20_000, "propose", index), (base + 30_000, "wal.enqueue", index),
              (base + 40_000, "ae.sent", index), (base + 50_000, "flush.start", index), (base + 150_000, "flush.end", index),
              (base + 160_000, "wal.durable", index), (base + 400_000, "ack.received", index),
              (base + 410_000, "commit", index), (base + 411_000, "apply", index), (base + 420_000, "reply.written", None)]
    nodes = {"leader": leader}
    for name, delay in follower_delays.items():
        nodes[name] = [(base + 60_000, "ae.received", index), (base + 40_000 + delay, "ack.sent", index)]
    return nodes


class BreakdownTests(SynchronousTestCase):
    def test_median_offsets_in_path_order(self) -> None:
        """Each stage is reported as the median time since the client sent,
        the follower being the one whose acknowledgement came first, and the
        rows end with the client's receipt."""
        events: dict[str, list] = {"leader": [], "f1": [], "f2": []}
        times = []
        for n, (base, fast) in enumerate([(10_000_000, "f1"), (20_000_000, "f2"), (30_000_000, "f1")]):
            slow = "f2" if fast == "f1" else "f1"
            for name, evs in _write(base, n + 1, {fast: 300_000, slow: 5_000_000}).items():
                events[name].extend(evs)
            times.append((base, base + 500_000))
        rows = bench.stage_breakdown(times, events, "leader")
        by_stage = {row["stage"]: row["p50_us"] for row in rows}
        self.assertEqual(by_stage["follower ack.sent"], 340.0)
        self.assertEqual(by_stage["leader   propose"], 20.0)
        self.assertEqual(rows[-1], {"stage": "client   reply received", "p50_us": 500.0, "samples": 3})
        self.assertEqual([row["p50_us"] for row in rows], sorted(row["p50_us"] for row in rows))
        self.assertIn("follower ack.sent", bench.format_breakdown(rows))

    def test_events_outside_the_window_are_ignored(self) -> None:
        """A stage recorded outside a write's send..receive window (a later
        write's) is not counted for it."""
        events = _write(1_000_000, 1, {"f1": 300_000})
        events["leader"] = [e for e in events["leader"] if e[1] != "commit"] + [(1_900_000, "commit", 1)]
        rows = bench.stage_breakdown([(1_000_000, 1_500_000)], events, "leader")
        self.assertNotIn("leader   commit", {row["stage"] for row in rows})


class ReadAddressTests(SynchronousTestCase):
    def test_read_targets(self) -> None:
        """--read-from picks all nodes, only the leader, or only followers."""
        cluster = bench.TargetNodes([("h", 1), ("h", 2), ("h", 3)])
        cluster.leader = ("h", 2)
        self.assertEqual(bench.read_addresses(cluster, "all"), [("h", 1), ("h", 2), ("h", 3)])
        self.assertEqual(bench.read_addresses(cluster, "leader"), [("h", 2)])
        self.assertEqual(bench.read_addresses(cluster, "followers"), [("h", 1), ("h", 3)])
