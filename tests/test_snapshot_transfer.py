# -*- test-case-name: tests.test_snapshot_transfer -*-
"""
Tests for the leader's side of the snapshot transfer and the router
(L{kvstore.node.snapshot_transfer.SnapshotSender}, L{TransferRouter}): a whole
transfer installs an identical file, at most C{window} chunks are ever
unacknowledged, loss is repaired by going back (at once on a refusal, or
after a timeout), a silent follower is given up on, the file is protected
from pruning exactly while it is being sent, and the node hears of the end
exactly once.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.messages import (
    AppendEntriesResponse,
    InstallSnapshot,
    Message,
    SnapshotChunk,
    SnapshotChunkResponse,
)
from kvstore.node.snapshot_transfer import DEFAULT_WINDOW, SnapshotSender
from kvstore.storage.snapshots import snapshot_name
from kvstore.testing.runners import ManualRunner
from tests.snapshot_support import read_content
from tests.snapshot_transfer_support import CHUNK, FOLLOWER, LEADER, TERM, Pair


def unacknowledged_peak(pair: Pair) -> int:
    """Deliver chunk by chunk, each answer at once, never more than one
    message at a time, and return the most chunks ever sent but not
    acknowledged (a chunk is acknowledged by an answer past its end)."""
    peak = 0
    acked = 0
    for _ in range(10_000):
        if not pair.network.queue:
            break
        in_flight = [c for c in pair.network.chunks_sent() if c.offset + len(c.data) > acked]
        peak = max(peak, len({c.offset for c in in_flight}))
        message = pair.deliver_one()
        if isinstance(message.body, SnapshotChunkResponse):
            acked = max(acked, message.body.offset)
    return peak


class WholeTransferTests(SynchronousTestCase):
    """A transfer on a perfect network."""

    def test_installs_an_identical_file_and_reports_once(self) -> None:
        """The follower ends with the leader's file (same digest, same
        content), the node is told once with the leader, term, index and
        snapshot term, and the leader stops when the core acknowledges."""
        pair = Pair(10_500)
        pair.offer()
        pair.deliver_all()
        self.assertEqual(pair.installs, [(LEADER, TERM, 50, 2)])
        [installed] = pair.installed_files()
        verified = pair.follower_store.verify(installed)
        self.assertEqual(verified.digest, pair.info.digest)
        self.assertEqual(read_content(pair.follower_store, verified), pair.content)
        self.assertEqual(pair.follower_files(), [snapshot_name(50, 2)])  # no temporary file left
        # The core's acknowledgement (an AppendEntriesResponse at the
        # snapshot's index) ends the sender.
        self.assertEqual(pair.reports, [])
        self.assertFalse(pair.leader.receive(Message(FOLLOWER, LEADER, AppendEntriesResponse(TERM, True, 50))))
        self.assertEqual(pair.reports, [(FOLLOWER, True)])
        self.assertEqual(pair.leader.senders, {})

    def test_chunks_are_of_the_configured_size_and_cover_the_file_once(self) -> None:
        """Chunks are chunk_bytes long (the last one shorter), in order, each sent once."""
        pair = Pair(10_500)
        pair.offer()
        pair.deliver_all()
        chunks = pair.network.chunks_sent()
        assert pair.info.size is not None
        self.assertEqual([c.offset for c in chunks], list(range(0, pair.info.size, CHUNK)))
        self.assertTrue(all(len(c.data) == CHUNK for c in chunks[:-1]))
        self.assertEqual(b"".join(c.data for c in chunks), pair.leader_fs.read_file(pair.info.path))
        self.assertTrue(all(c.size == pair.info.size and c.term == TERM for c in chunks))

    def test_an_unrelated_append_response_does_not_end_it(self) -> None:
        """Only a successful answer of the transfer's term at or past the
        snapshot's index is the core's acknowledgement."""
        pair = Pair()
        pair.offer()
        for body in (AppendEntriesResponse(TERM, True, 49), AppendEntriesResponse(TERM, False, 50),
                     AppendEntriesResponse(TERM + 1, True, 60)):
            pair.leader.receive(Message(FOLLOWER, LEADER, body))
        pair.leader.receive(Message(3, LEADER, AppendEntriesResponse(TERM, True, 60)))  # another follower
        self.assertEqual(pair.reports, [])
        self.assertIn(FOLLOWER, pair.leader.senders)

    def test_done_answer_after_the_node_acknowledges(self) -> None:
        """When the node's hook returns a Deferred, the follower answers done
        only once it fires, and that answer ends the sender."""
        acknowledged: Deferred[None] = Deferred()
        pair = Pair(installed_result=lambda: acknowledged)
        pair.offer()
        pair.deliver_all()
        self.assertEqual(len(pair.installs), 1)
        self.assertFalse(any(r.done for r in pair.network.responses_sent()))
        self.assertEqual(pair.reports, [])
        acknowledged.callback(None)
        self.assertTrue(pair.network.responses_sent()[-1].done)
        pair.deliver_all()
        self.assertEqual(pair.reports, [(FOLLOWER, True)])

    def test_with_file_work_in_a_runner(self) -> None:
        """With reads and writes held in a runner (as in a thread), the
        transfer still completes and never runs two jobs of one side at once."""
        runner = ManualRunner()
        pair = Pair(7_000, run_in_thread=runner)
        pair.offer()
        for _ in range(1000):
            if not runner.jobs and not pair.network.queue:
                break
            self.assertLessEqual(len(runner.jobs), 2)  # one per side at most
            if runner.jobs:
                runner.release()
            pair.deliver_all()
        self.assertEqual(pair.installs, [(LEADER, TERM, 50, 2)])
        self.assertEqual(pair.follower_store.verify(pair.installed_files()[0]).digest, pair.info.digest)


class FlowControlTests(SynchronousTestCase):
    """At most C{window} chunks are unacknowledged."""

    def test_default_window_is_four(self) -> None:
        """The default window is 4 chunks, and nothing more is sent before an answer."""
        self.assertEqual(DEFAULT_WINDOW, 4)
        pair = Pair(20_000)
        pair.offer()
        self.assertEqual(len(pair.network.chunks_sent()), 4)
        pair.clock.advance(0.5)  # time alone sends nothing new
        self.assertEqual(len(pair.network.chunks_sent()), 4)

    def test_window_respected_through_a_transfer(self) -> None:
        """For windows 1, 2, 4 and 7 the most unacknowledged chunks is exactly the window."""
        for window in (1, 2, 4, 7):
            with self.subTest(window=window):
                pair = Pair(20_000, window=window)
                pair.offer()
                self.assertEqual(unacknowledged_peak(pair), window)
                self.assertEqual(len(pair.installs), 1)

    def test_each_answer_opens_the_window_by_what_it_acknowledges(self) -> None:
        """An answer acknowledging one chunk lets exactly one more go."""
        pair = Pair(20_000)
        pair.offer()
        chunks = [m for m in pair.network.queue]
        pair.network.queue.clear()
        pair.follower.receive(chunks[0])
        self.assertEqual(len(pair.network.queue), 1)  # the answer
        pair.deliver_one()
        self.assertEqual(len(pair.network.chunks_sent()), 5)
        self.assertEqual(pair.network.chunks_sent()[-1].offset, 4 * CHUNK)


class LossTests(SynchronousTestCase):
    """Lost chunks and answers are repaired."""

    def test_lost_chunk_is_sent_again_at_the_first_refusal(self) -> None:
        """When the second chunk is lost, the follower refuses the third (out
        of order), and the sender goes back to the second at once, without
        waiting for a timeout."""
        pair = Pair(10_000)
        lost: list[int] = []

        def lose(message: Message) -> bool:
            if isinstance(message.body, SnapshotChunk) and message.body.offset == CHUNK and not lost:
                lost.append(1)
                return True
            return False

        pair.network.lose = lose
        pair.offer()
        with capturedLogs() as events:
            pair.deliver_all()
        self.assertEqual(len(pair.installs), 1)
        self.assertEqual(pair.clock.seconds(), 0)  # no timeout was needed
        sender_stats = pair.network.chunks_sent()
        self.assertEqual([c.offset for c in sender_stats].count(CHUNK), 2)
        refusals = [formatEvent(e) for e in events if "out-of-order chunk at offset 2000, expected 1000" in formatEvent(e)]
        self.assertEqual(len(refusals), 1, refusals)
        self.assertEqual(pair.follower_store.verify(pair.installed_files()[0]).digest, pair.info.digest)

    def test_lost_answers_are_repaired_by_the_timeout(self) -> None:
        """When every answer to the window is lost, nothing moves until the
        timeout; then the window is sent again, the follower answers where it
        is, and the transfer goes on."""
        pair = Pair(10_000, timeout=2.0)
        losing = [True]
        pair.network.lose = lambda m: losing[0] and isinstance(m.body, SnapshotChunkResponse)
        pair.offer()
        pair.deliver_all()
        self.assertEqual(len(pair.network.chunks_sent()), 4)
        losing[0] = False
        pair.clock.advance(1.9)
        self.assertEqual(len(pair.network.chunks_sent()), 4)
        pair.clock.advance(0.1)
        self.assertEqual(len(pair.network.chunks_sent()), 8)  # the window again
        pair.deliver_all()
        self.assertEqual(len(pair.installs), 1)
        self.assertEqual(pair.follower_store.verify(pair.installed_files()[0]).digest, pair.info.digest)

    def test_lost_last_chunk_is_sent_again_by_the_timeout(self) -> None:
        """With nothing after it to be refused, a lost last chunk is sent again after the timeout."""
        pair = Pair(3_500)
        lost: list[int] = []

        def lose(message: Message) -> bool:
            if isinstance(message.body, SnapshotChunk) and message.body.offset == 3 * CHUNK and not lost:
                lost.append(1)
                return True
            return False

        pair.network.lose = lose
        pair.offer()
        pair.deliver_all()
        self.assertEqual(pair.installs, [])
        pair.clock.advance(2.0)
        pair.deliver_all()
        self.assertEqual(len(pair.installs), 1)


class GiveUpTests(SynchronousTestCase):
    """A follower that never answers is given up on, once, and the file released."""

    def test_silent_follower_gives_up_after_the_retries(self) -> None:
        """With no answer at all, the window is sent 1 + max_retries times, then
        the node is told the transfer failed, with a warning, and the file is
        no longer protected."""
        pair = Pair(10_000, timeout=2.0, max_retries=3)
        pair.network.lose = lambda m: True
        pair.offer()
        self.assertEqual(pair.leader.protected(), frozenset({snapshot_name(50, 2)}))
        with capturedLogs() as events:
            pair.clock.pump([2.0] * 3)
            self.assertEqual(pair.reports, [])
            pair.clock.advance(2.0)
        self.assertEqual(pair.reports, [(FOLLOWER, False)])
        self.assertEqual(len(pair.network.chunks_sent()), 4 * 4)
        self.assertEqual(pair.leader.protected(), frozenset())
        self.assertEqual(pair.leader.senders, {})
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("gave up sending snapshot", warnings[0])
        pair.clock.advance(100)
        self.assertEqual(pair.reports, [(FOLLOWER, False)])  # once

    def test_progress_resets_the_retries(self) -> None:
        """Slow but steady progress never gives up: each acknowledgement starts the count again."""
        pair = Pair(10_000, timeout=2.0, max_retries=1, window=1)
        pair.offer()
        while pair.network.queue:
            pair.clock.advance(1.9)  # each chunk is answered just under the timeout after it left
            pair.deliver_one()  # the chunk
            pair.deliver_one()  # its answer, which sends the next chunk
        self.assertGreater(pair.clock.seconds(), 10 * 2.0)
        self.assertEqual(len(pair.installs), 1)
        self.assertNotIn((FOLLOWER, False), pair.reports)

    def test_retries_count_only_timeouts_in_a_row(self) -> None:
        """Two losses far apart, each repaired by one timeout, do not add up
        to a give-up when only one timeout in a row is allowed."""
        pair = Pair(10_000, timeout=2.0, max_retries=1, window=1)
        lost: set[int] = set()

        def lose(message: Message) -> bool:
            body = message.body
            if isinstance(body, SnapshotChunk) and body.offset in (0, 5 * CHUNK) and body.offset not in lost:
                lost.add(body.offset)
                return True
            return False

        pair.network.lose = lose
        pair.offer()
        with capturedLogs():
            pair.run(step=1.0)
        self.assertEqual(lost, {0, 5 * CHUNK})
        self.assertEqual(len(pair.installs), 1)
        self.assertNotIn((FOLLOWER, False), pair.reports)

    def test_file_refused_whole_again_and_again_is_given_up(self) -> None:
        """A leader file that fails the follower's checksum every time is
        sent 1 + max_restarts times, then the transfer fails; the follower
        keeps nothing."""
        pair = Pair(10_000, max_restarts=2)
        fs, path = pair.leader_fs, pair.info.path
        fd = fs.open_rw(path)
        fs.pwrite_all(fd, b"\x00" if fs.pread(fd, 1, 5000) != b"\x00" else b"\x01", 5000)
        fs.close(fd)
        pair.offer()
        with capturedLogs() as events:
            pair.run()
        self.assertEqual(pair.reports, [(FOLLOWER, False)])
        self.assertEqual(pair.installs, [])
        self.assertEqual(pair.follower_files(), [])
        self.assertEqual(sum("checksum mismatch" in formatEvent(e) for e in events), 3)
        self.assertTrue(any("refused the whole file 3 times" in formatEvent(e) for e in events))

    def test_missing_file_fails_at_once(self) -> None:
        """An offer of a snapshot the leader does not have fails with a warning."""
        pair = Pair()
        with capturedLogs() as events:
            pair.offer(index=77, snapshot_term=2)
        self.assertEqual(pair.reports, [(FOLLOWER, False)])
        self.assertEqual(pair.leader.protected(), frozenset())
        self.assertTrue(any("cannot open snapshot file" in formatEvent(e) for e in events))

    def test_unsendable_chunk_fails_at_once(self) -> None:
        """A link that cannot carry chunks (an older peer) fails the transfer at once."""
        pair = Pair()
        pair.offer()
        chunk = pair.network.queue[0]
        with capturedLogs():
            pair.leader.unsendable(chunk)
        self.assertEqual(pair.reports, [(FOLLOWER, False)])
        self.assertEqual(pair.leader.protected(), frozenset())

    def test_offers_after_failures_wait_longer_and_longer(self) -> None:
        """After failed transfers to a follower, the next one starts 1 s, then
        2 s, 4 s ... at most 30 s after the offer (the core offers at every
        heartbeat); the file is protected meanwhile; a success starts the
        count again."""
        pair = Pair(3_000)
        name = snapshot_name(50, 2)
        with capturedLogs():
            for failures, delay in [(0, 0.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0), (7, 30.0)]:
                self.assertEqual(pair.leader.failures.get(FOLLOWER, 0), failures)
                before = len(pair.network.chunks_sent())
                pair.offer()
                self.assertEqual(pair.leader.protected(), frozenset({name}))
                if delay:
                    pair.clock.advance(delay - 0.001)
                    self.assertEqual(len(pair.network.chunks_sent()), before, (failures, delay))
                    pair.clock.advance(0.001)
                self.assertEqual(len(pair.network.chunks_sent()), before + 4, (failures, delay))
                pair.leader.unsendable(pair.network.sent[-1])
                pair.network.queue.clear()
            self.assertEqual(pair.leader.failures[FOLLOWER], 8)
            pair.offer()
            pair.clock.advance(30)
            pair.deliver_all()
            pair.leader.receive(Message(FOLLOWER, LEADER, AppendEntriesResponse(TERM, True, 50)))
        self.assertEqual(pair.reports[-1], (FOLLOWER, True))
        self.assertEqual(pair.leader.failures, {})
        before = len(pair.network.chunks_sent())
        pair.offer(term=TERM + 1)
        self.assertEqual(len(pair.network.chunks_sent()), before + 4)

    def test_waiting_transfer_is_cancelled_cleanly(self) -> None:
        """A transfer waiting out its back-off that is stopped never starts."""
        pair = Pair(3_000)
        pair.offer()
        with capturedLogs():
            pair.leader.unsendable(pair.network.sent[-1])
            pair.offer()
            pair.leader.stop_sending()
            pair.clock.advance(10)
        self.assertEqual(len(pair.network.chunks_sent()), 4)
        self.assertEqual(pair.leader.protected(), frozenset())

    def test_follower_that_never_installs_is_given_up(self) -> None:
        """Once every byte is acknowledged, the sender waits at most the
        completion timeout for the follower to install the file (here its
        node never confirms the install)."""
        pair = Pair(3_000, completion_timeout=10.0, timeout=2.0, installed_result=Deferred)
        pair.offer()
        pair.deliver_all()
        with capturedLogs():
            for _ in range(4):
                pair.clock.advance(2.0)
                pair.deliver_all()
            self.assertEqual(pair.reports, [])
            pair.clock.advance(2.0)
        self.assertEqual(pair.reports, [(FOLLOWER, False)])


class RouterTests(SynchronousTestCase):
    """The router starts, replaces and stops senders, and tells the node once."""

    def test_offer_takes_only_install_snapshot(self) -> None:
        """offer() starts a transfer for the core's InstallSnapshot (True: not
        for the wire) and leaves every other message alone (False)."""
        pair = Pair(20_000)
        self.assertFalse(pair.leader.offer(Message(LEADER, FOLLOWER, AppendEntriesResponse(TERM, True, 1))))
        self.assertEqual(pair.leader.senders, {})
        self.assertTrue(pair.leader.offer(Message(LEADER, FOLLOWER, InstallSnapshot(TERM, 50, 2))))
        sender = pair.leader.senders[FOLLOWER]
        self.assertEqual((sender.follower, sender.term, sender.index, sender.snapshot_term), (FOLLOWER, TERM, 50, 2))
        self.assertEqual(len(pair.network.chunks_sent()), 4)

    def test_same_offer_again_keeps_the_transfer(self) -> None:
        """The core repeating its offer does not restart the transfer."""
        pair = Pair(20_000)
        pair.offer()
        sender = pair.leader.senders[FOLLOWER]
        pair.offer()
        self.assertIs(pair.leader.senders[FOLLOWER], sender)
        self.assertEqual(len(pair.network.chunks_sent()), 4)

    def test_newer_offer_replaces_without_a_report(self) -> None:
        """An offer of a newer term replaces the running sender, which ends
        without telling the node; the old sender's answers are ignored."""
        pair = Pair(20_000)
        pair.offer()
        old = pair.leader.senders[FOLLOWER]
        with capturedLogs():
            pair.offer(term=TERM + 1)
        self.assertTrue(old.finished)
        self.assertIsNone(old.ok)
        self.assertEqual(pair.reports, [])
        self.assertEqual(pair.leader.senders[FOLLOWER].term, TERM + 1)
        pair.clock.advance(1000)
        self.assertEqual([r for r in pair.reports if r[1]], [])

    def test_protected_while_sending_released_on_finish_and_stop(self) -> None:
        """The file being sent is protected from pruning until the transfer
        ends (done, failed, replaced or stopped)."""
        pair = Pair()
        pair.offer()
        self.assertEqual(pair.leader.protected(), frozenset({snapshot_name(50, 2)}))
        pruned = pair.leader_store.prune(keep=1, protect=pair.leader.protected())
        self.assertEqual(pruned, [])
        pair.deliver_all()
        pair.leader.receive(Message(FOLLOWER, LEADER, AppendEntriesResponse(TERM, True, 55)))
        self.assertEqual(pair.leader.protected(), frozenset())
        pair.offer(term=TERM + 1)
        self.assertEqual(len(pair.leader.protected()), 1)
        pair.leader.stop_sending()
        self.assertEqual(pair.leader.protected(), frozenset())
        self.assertEqual(pair.reports, [(FOLLOWER, True)])

    def test_protect_and_release_hooks_bracket_each_transfer(self) -> None:
        """The node's protect/release hooks are called once each per
        transfer: at its start, and when it ends, is replaced or stopped."""
        calls: list[tuple[str, str]] = []
        pair = Pair(protect=lambda n: calls.append(("protect", n)), release=lambda n: calls.append(("release", n)))
        name = snapshot_name(50, 2)
        pair.offer()
        self.assertEqual(calls, [("protect", name)])
        with capturedLogs():
            pair.offer(term=TERM + 1)
        self.assertEqual(calls, [("protect", name), ("release", name), ("protect", name)])
        pair.leader.stop_sending()
        self.assertEqual(calls[-1], ("release", name))
        pair.offer(term=TERM + 2)
        pair.network.lose = lambda m: True
        with capturedLogs():
            pair.clock.pump([2.0] * 10)
        self.assertEqual(pair.reports, [(FOLLOWER, False)])
        self.assertEqual([c[0] for c in calls], ["protect", "release"] * 3)

    def test_sender_of_a_node_that_no_longer_leads_ends_quietly(self) -> None:
        """When leading(term) turns false, the sender ends at its next timer
        or answer, without a report, and releases its file."""
        leading = [True]
        pair = Pair(leading=lambda term: leading[0])
        pair.offer()
        leading[0] = False
        with capturedLogs():
            pair.deliver_all()
        self.assertEqual(pair.leader.senders, {})
        self.assertEqual(pair.reports, [])
        self.assertEqual(pair.leader.protected(), frozenset())

    def test_chunk_messages_never_reach_the_core(self) -> None:
        """receive() takes chunks and answers (True) and lets every other message through (False)."""
        pair = Pair()
        self.assertTrue(pair.follower.receive(Message(LEADER, FOLLOWER, SnapshotChunk(TERM, 9, 1, 100, 0, b"x"))))
        self.assertTrue(pair.leader.receive(Message(FOLLOWER, LEADER, SnapshotChunkResponse(TERM, 9, 0, False))))
        self.assertFalse(pair.leader.receive(Message(FOLLOWER, LEADER, AppendEntriesResponse(TERM, True, 9))))

    def test_reader_closed_when_the_sender_ends(self) -> None:
        """A sender that ends releases its file handle (the reading generator is closed)."""
        pair = Pair(20_000)
        pair.offer()
        sender = pair.leader.senders[FOLLOWER]
        chunks = sender._chunks
        assert chunks is not None
        pair.leader.stop_sending()
        self.assertIsNone(sender._chunks)
        self.assertIsNone(chunks.gi_frame)  # type: ignore[attr-defined]  # a generator

    def test_sender_validates_its_options(self) -> None:
        """A window below 1 or chunks larger than a receiver accepts are refused at construction."""
        pair = Pair()
        for options in ({"window": 0}, {"chunk_bytes": 2 << 20}):
            with self.subTest(options=options):
                with self.assertRaises(ValueError):
                    SnapshotSender(
                        pair.leader_store, leader=LEADER, follower=FOLLOWER, term=TERM, index=50, snapshot_term=2,
                        send=lambda m: None, clock=pair.clock, **options,  # type: ignore[arg-type]
                    )

    def test_run_now_fails_its_deferred(self) -> None:
        """run_now fails its Deferred (not the caller) when the job raises."""
        from kvstore.node.snapshot_transfer import run_now

        def boom() -> None:
            raise OSError("disk")

        d = run_now(boom)
        failures: list[object] = []
        d.addErrback(failures.append)
        self.assertEqual(len(failures), 1)
        self.assertEqual(self.successResultOf(run_now(lambda: 5)), 5)
