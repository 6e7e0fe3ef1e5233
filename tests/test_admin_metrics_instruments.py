"""
The admin endpoint's instruments on their own: fsync timing on a real
write-ahead log, the leader's round-trip bookkeeping, the reactor-lag probe,
and the peer-link metrics read from real L{PeerLink}s.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.admin.collector import NodeCollector
from kvstore.admin.instruments import ReactorLagProbe, RoundTrips, timed_file_system
from kvstore.admin.metrics import AdminMetrics
from kvstore.admin.requests import RequestCounts
from kvstore.admin.view import NodeView
from kvstore.protocols.peer_links import PeerLink
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message, RequestVote
from kvstore.storage import WriteAheadLog
from kvstore.storage.fs import FileSystem
from kvstore.testing.memory_cluster import InMemoryCluster
from tests.admin_support import scrape


def run_now(f: Any) -> Deferred[Any]:
    return succeed(f())


class _CountingFileSystem(FileSystem):
    """The real file system, counting fsyncs."""

    def __init__(self) -> None:
        self.fsyncs = 0

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)

    def fsync_dir(self, path: str) -> None:
        self.fsyncs += 1
        super().fsync_dir(path)


class WriteAheadLogMetricsTests(SynchronousTestCase):
    """fsync durations and counts, and group-commit sizes, from a real log."""

    def setUp(self) -> None:
        self.metrics = AdminMetrics(process=False)
        self.fs = _CountingFileSystem()
        self.wal = WriteAheadLog.open(
            self.mktemp(), run_in_thread=run_now, fs=timed_file_system(self.fs, self.metrics.fsync_timed)
        )
        self.flushes: list[tuple[int, int]] = []

        def on_flush(entries: int, fsyncs: int) -> None:
            self.flushes.append((entries, fsyncs))
            self.metrics.wal_flushed(entries, fsyncs)

        self.wal.on_flush = on_flush
        self.addCleanup(self.wal.close)

    def test_every_fsync_is_timed_and_counted(self) -> None:
        """Every fsync the log makes (opening it included) is one observation of the duration histogram and one of the counter."""
        self.wal.append([(1, 1, b"a"), (2, 1, b"b")])
        self.wal.sync()
        samples = scrape(self.metrics)
        self.assertGreater(self.fs.fsyncs, 0)
        self.assertEqual(samples.value("kvstore_wal_fsyncs_total"), float(self.fs.fsyncs))
        self.assertEqual(samples.value("kvstore_wal_fsync_duration_seconds_count"), float(self.fs.fsyncs))
        self.assertGreater(samples.value("kvstore_wal_fsync_duration_seconds_sum"), 0.0)

    def test_flush_reports_entries_made_durable(self) -> None:
        """Each flush reports the entries it made durable and its fsyncs; a sync with nothing to write reports nothing."""
        self.wal.append([(1, 1, b"a"), (2, 1, b"b"), (3, 1, b"c")])
        self.wal.sync()
        self.wal.sync()
        self.wal.append([(4, 1, b"d")])
        self.wal.sync()
        self.assertEqual([entries for entries, _ in self.flushes], [3, 1])
        self.assertTrue(all(fsyncs >= 1 for _, fsyncs in self.flushes))
        samples = scrape(self.metrics)
        self.assertEqual(samples.value("kvstore_wal_group_commit_entries_count"), 2.0)
        self.assertEqual(samples.value("kvstore_wal_group_commit_entries_sum"), 4.0)
        self.assertEqual(samples.bucket("kvstore_wal_group_commit_entries", "2.0"), 1.0)

    def test_the_timed_file_system_is_the_inner_one_otherwise(self) -> None:
        """Calls other than the fsyncs reach the wrapped file system unchanged."""
        fs = timed_file_system(self.fs, lambda seconds: None)
        directory = self.mktemp()
        self.assertTrue(fs.makedirs(directory))
        self.assertEqual(fs.listdir(directory), [])


def _append(sender: int, receiver: int, term: int = 1) -> Message:
    return Message(sender, receiver, AppendEntries(term, 0, 0, (), 0))


def _answer(sender: int, receiver: int, term: int = 1) -> Message:
    return Message(sender, receiver, AppendEntriesResponse(term, True, 0))


class RoundTripTests(SynchronousTestCase):
    """The leader's round-trip bookkeeping, message by message."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.observed: list[tuple[int, float]] = []
        self.trips = RoundTrips(self.clock, lambda peer, seconds: self.observed.append((peer, seconds)), 10.0)

    def rounded(self) -> list[tuple[int, float]]:
        return [(peer, round(seconds, 9)) for peer, seconds in self.observed]

    def test_one_message_answered(self) -> None:
        """The time from an AppendEntries to its answer is observed for that peer."""
        self.trips.sent(_append(0, 1))
        self.clock.advance(0.003)
        self.trips.received(_answer(1, 0))
        self.assertEqual(self.rounded(), [(1, 0.003)])

    def test_pipelined_messages_time_the_first(self) -> None:
        """With messages pipelined, the first is timed to its own answer; later answers start nothing until the next send."""
        for delay in (0.0, 0.001, 0.001):
            self.clock.advance(delay)
            self.trips.sent(_append(0, 1))
        self.clock.advance(0.004)
        self.trips.received(_answer(1, 0))  # answers the first, sent 6 ms ago
        self.trips.received(_answer(1, 0))
        self.trips.received(_answer(1, 0))
        self.assertEqual(self.rounded(), [(1, 0.006)])

    def test_probe_behind_unanswered_messages(self) -> None:
        """A message timed while earlier ones are in flight waits for its own answer, not theirs."""
        self.trips.sent(_append(0, 1))  # timed
        self.trips.sent(_append(0, 1))
        self.clock.advance(0.002)
        self.trips.received(_answer(1, 0))  # first answered: 2 ms
        self.trips.sent(_append(0, 1))  # the third, timed from now
        self.clock.advance(0.001)
        self.trips.received(_answer(1, 0))  # answers the second: not the third
        self.clock.advance(0.001)
        self.trips.received(_answer(1, 0))  # the third: 2 ms
        self.assertEqual(self.rounded(), [(1, 0.002), (1, 0.002)])

    def test_other_messages_and_terms_are_ignored(self) -> None:
        """Votes are not timed, an answer of another term does not count, and a new term starts afresh."""
        self.trips.sent(Message(0, 1, RequestVote(1, 0, 0)))
        self.trips.received(_answer(1, 0))
        self.assertEqual(self.rounded(), [])
        self.trips.sent(_append(0, 1, term=2))
        self.trips.received(_answer(1, 0, term=3))
        self.assertEqual(self.rounded(), [])
        self.trips.sent(_append(0, 1, term=3))  # a new term: this is message 1
        self.clock.advance(0.001)
        self.trips.received(_answer(1, 0, term=3))
        self.assertEqual(self.rounded(), [(1, 0.001)])

    def test_lost_messages_are_given_up(self) -> None:
        """A probe unanswered for the give-up time (its message lost) is replaced, and round trips are measured again."""
        self.trips.sent(_append(0, 1))  # lost with its connection
        self.clock.advance(11)
        self.trips.sent(_append(0, 1))  # gives the first up; timed
        self.clock.advance(0.002)
        self.trips.received(_answer(1, 0))
        self.assertEqual(self.rounded(), [(1, 0.002)])

    def test_peers_are_apart(self) -> None:
        """Each peer's messages and answers are counted apart."""
        self.trips.sent(_append(0, 1))
        self.trips.sent(_append(0, 2))
        self.clock.advance(0.001)
        self.trips.received(_answer(2, 0))
        self.clock.advance(0.001)
        self.trips.received(_answer(1, 0))
        self.assertEqual(self.rounded(), [(2, 0.001), (1, 0.002)])


class ReactorLagProbeTests(SynchronousTestCase):
    """The probe measures how late its timer fires."""

    def test_lag(self) -> None:
        """On time, the lag is 0; fired late, the lateness; overdue says how late the pending firing is now."""
        clock = Clock()
        lags: list[float] = []
        probe = ReactorLagProbe(clock, lags.append, interval=0.5)
        self.assertEqual(probe.overdue(), 0.0)
        probe.start()
        clock.advance(0.5)
        clock.advance(0.25)
        self.assertEqual(probe.overdue(), 0.0)
        clock.advance(1.25)  # due 0.25 s ago... and fired now, 1 s late
        self.assertEqual(lags, [0.0, 1.0])
        self.assertEqual(probe.last_lag, 1.0)
        probe.stop()
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(probe.overdue(), 0.0)

    def test_overdue(self) -> None:
        """A firing that has not happened yet is overdue by the time past its due time."""
        clock = Clock()
        probe = ReactorLagProbe(clock, lambda lag: None, interval=0.5)
        probe.start()
        self.addCleanup(probe.stop)
        clock.rightNow += 3.5  # time passes, the reactor runs nothing
        self.assertEqual(probe.overdue(), 3.0)


class _FakeProtocol:
    """Just enough of a connected peer protocol for PeerLink.send."""

    paused = False

    def __init__(self) -> None:
        self.transport = StringTransport()  # PeerLink.send writes the netstring to it


class PeerLinkMetricsTests(SynchronousTestCase):
    """Connected, sent and dropped per peer, read from the node's peer links."""

    def test_links(self) -> None:
        """A disconnected link drops (connected 0); a connected one sends (connected 1)."""
        cluster = InMemoryCluster(1)
        down = PeerLink(1, "127.0.0.1:1", b"hello")
        up = PeerLink(2, "127.0.0.1:2", b"hello")
        up.protocol = _FakeProtocol()  # type: ignore[assignment]
        down.send(b"x")
        up.send(b"x")
        up.send(b"y")
        metrics = AdminMetrics([1, 2], process=False)
        view = NodeView(cluster.node(0), "c", {0: "a", 1: "b", 2: "c"}, {1: down, 2: up})
        metrics.registry.register(NodeCollector(view, RequestCounts()))
        samples = scrape(metrics)
        self.assertEqual(samples.value("kvstore_peer_connected", peer="1"), 0.0)
        self.assertEqual(samples.value("kvstore_peer_connected", peer="2"), 1.0)
        self.assertEqual(samples.value("kvstore_peer_messages_dropped_total", peer="1"), 1.0)
        self.assertEqual(samples.value("kvstore_peer_messages_sent_total", peer="1"), 0.0)
        self.assertEqual(samples.value("kvstore_peer_messages_sent_total", peer="2"), 2.0)
        self.assertEqual(samples.value("kvstore_peer_messages_dropped_total", peer="2"), 0.0)
