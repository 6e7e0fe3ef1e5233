# -*- test-case-name: tests.test_snapshot_transfer_receiver -*-
"""
Tests for the follower's side of the snapshot transfer
(L{kvstore.node.snapshot_transfer.SnapshotReceiver}): every chunk it cannot use
is refused with a log line and changes nothing; a newer transfer replaces
an older one; a bad checksum installs nothing; an interrupted transfer
restarts (the follower lost it) or resumes (the leader lost it) cleanly; an
abandoned one is cleaned up.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.messages import Message, SnapshotChunk, SnapshotChunkResponse
from kvstore.node.snapshot_transfer import MAX_QUEUED_CHUNKS, TransferRouter
from kvstore.storage.snapshots import SnapshotStore, snapshot_name
from kvstore.testing.runners import ManualRunner
from tests.snapshot_support import DIRECTORY, content_for, write_snapshot
from tests.snapshot_transfer_support import CHUNK, FOLLOWER, LEADER, TERM, Pair

TMP = snapshot_name(50, 2) + ".tmp"


class ReceiverCase(SynchronousTestCase):
    """A follower fed hand-made chunks of the leader's real file."""

    def setUp(self) -> None:
        self.pair = Pair(10_000)
        self.file = self.pair.leader_fs.read_file(self.pair.info.path)
        self.size = len(self.file)

    def chunk(self, offset: int, length: int = CHUNK, *, sender: int = LEADER, term: int = TERM, index: int = 50,
              snapshot_term: int = 2, size: int | None = None, data: bytes | None = None) -> Message:
        size = self.size if size is None else size
        body = SnapshotChunk(term, index, snapshot_term, size, offset,
                             self.file[offset : offset + length] if data is None else data)
        return Message(sender, FOLLOWER, body)

    def feed(self, *messages: Message) -> list[SnapshotChunkResponse]:
        """Give the follower these messages; return its answers."""
        before = len(self.pair.network.sent)
        for message in messages:
            self.pair.follower.receive(message)
        return [m.body for m in self.pair.network.sent[before:] if isinstance(m.body, SnapshotChunkResponse)]

    def state(self) -> tuple[Any, ...]:
        """Everything a refused chunk must leave alone."""
        fs = self.pair.follower_fs
        files = {name: fs.read_file(f"{DIRECTORY}/{name}") for name in fs.listdir(DIRECTORY)}
        return (self.pair.follower.receiver.in_progress, files, list(self.pair.installs))

    def assertRefused(self, message: Message, fragment: str, position: int | None, level: LogLevel) -> None:
        """C{message} is refused: one log line naming why, an answer
        (unless C{position} is None) carrying the follower's position, and
        no change at all."""
        before = self.state()
        with capturedLogs() as events:
            answers = self.feed(message)
        self.assertEqual(self.state(), before)
        lines = [formatEvent(e) for e in events if "refused a snapshot chunk" in formatEvent(e)]
        self.assertEqual(len(lines), 1, [formatEvent(e) for e in events])
        self.assertIn(fragment, lines[0])
        self.assertEqual([e["log_level"] for e in events if "refused a snapshot chunk" in formatEvent(e)], [level])
        if position is None:
            self.assertEqual(answers, [])
        else:
            self.assertEqual(answers, [SnapshotChunkResponse(message.body.term, message.body.index, position, False)])  # type: ignore[union-attr]

    def start_transfer(self, chunks: int = 2) -> None:
        """Accept the first C{chunks} chunks."""
        with capturedLogs():
            answers = self.feed(*(self.chunk(i * CHUNK) for i in range(chunks)))
        self.assertEqual([a.offset for a in answers], [(i + 1) * CHUNK for i in range(chunks)])
        self.assertTrue(all(a.accepted for a in answers))


class RejectionTests(ReceiverCase):
    """Each kind of unusable chunk."""

    def test_chunk_from_another_node(self) -> None:
        """A chunk from a node that is not the current leader is refused."""
        self.start_transfer()
        self.assertRefused(self.chunk(2 * CHUNK, sender=3), "not this node's leader", 0, LogLevel.warn)

    def test_chunk_before_a_leader_is_known(self) -> None:
        """With no leader known for the current term, every chunk is refused."""
        self.pair.leader_view = (None, TERM)
        self.assertRefused(self.chunk(0), "not this node's leader", 0, LogLevel.warn)

    def test_chunk_of_an_older_term(self) -> None:
        """A chunk of a term before the follower's current one is stale."""
        self.start_transfer()
        self.pair.leader_view = (LEADER, TERM + 1)
        self.assertRefused(self.chunk(2 * CHUNK), "stale chunk of term 3", 0, LogLevel.info)

    def test_chunk_of_a_term_not_yet_known(self) -> None:
        """A chunk claiming a term the follower has not reached is refused."""
        self.assertRefused(self.chunk(0, term=TERM + 1), "not this node's leader", 0, LogLevel.warn)

    def test_out_of_order_chunk(self) -> None:
        """A chunk past the next expected offset is refused with the expected one."""
        self.start_transfer()
        self.assertRefused(self.chunk(3 * CHUNK), "out-of-order chunk at offset 3000, expected 2000", 2 * CHUNK,
                           LogLevel.info)

    def test_repeated_chunk(self) -> None:
        """A chunk already written is refused with the expected offset."""
        self.start_transfer()
        self.assertRefused(self.chunk(0), "repeated chunk at offset 0, expected 2000", 2 * CHUNK, LogLevel.info)

    def test_chunk_beyond_the_announced_size(self) -> None:
        """Data running past the announced size is refused (unanswered: it is malformed)."""
        self.start_transfer()
        self.assertRefused(self.chunk(2 * CHUNK, data=b"x" * (self.size - 2 * CHUNK + 1)),
                           "runs past the snapshot size", None, LogLevel.warn)

    def test_chunk_disagreeing_with_the_transfer(self) -> None:
        """Same term and index but another size or snapshot term is refused."""
        self.start_transfer()
        self.assertRefused(self.chunk(2 * CHUNK, size=self.size + 1), "disagrees with the transfer", 2 * CHUNK,
                           LogLevel.warn)
        self.assertRefused(self.chunk(2 * CHUNK, snapshot_term=1), "disagrees with the transfer", 2 * CHUNK,
                           LogLevel.warn)

    def test_chunk_of_an_older_transfer(self) -> None:
        """While a transfer of index 50 runs, a chunk of index 40 (same term) is stale."""
        self.start_transfer()
        self.assertRefused(self.chunk(0, index=40), "older transfer", 0, LogLevel.info)

    def test_malformed_chunk(self) -> None:
        """A chunk breaking the message checks (snapshot term above term) is refused unanswered."""
        self.start_transfer()
        self.assertRefused(self.chunk(2 * CHUNK, snapshot_term=TERM + 1, index=50), "malformed chunk", None,
                           LogLevel.warn)

    def test_first_chunk_of_a_transfer_must_start_at_zero(self) -> None:
        """A transfer the follower does not have cannot start in the middle: the answer says 0."""
        self.assertRefused(self.chunk(CHUNK), "not started here", 0, LogLevel.info)

    def test_bad_checksum_installs_nothing(self) -> None:
        """A file whose bytes were damaged on the way is refused at the end:
        a warning, no file, no temporary file, no install, and an answer
        telling the leader to start over."""
        damaged = bytearray(self.file)
        damaged[self.size // 2] ^= 0x40
        self.file = bytes(damaged)
        with capturedLogs() as events:
            answers = self.feed(*(self.chunk(o) for o in range(0, self.size, CHUNK)))
        self.assertEqual(self.pair.follower_files(), [])
        self.assertEqual(self.pair.installs, [])
        self.assertIsNone(self.pair.follower.receiver.in_progress)
        self.assertEqual(answers[-1], SnapshotChunkResponse(TERM, 50, 0, False))
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("checksum mismatch", warnings[0])

    def test_queue_of_unwritten_chunks_is_bounded(self) -> None:
        """With writes held back (a slow disk), at most MAX_QUEUED_CHUNKS
        chunks are accepted ahead of them; the next is refused."""
        runner = ManualRunner()
        self.pair = Pair(40_000, chunk_bytes=100, run_in_thread=runner)
        self.file = self.pair.leader_fs.read_file(self.pair.info.path)
        self.size = len(self.file)
        with capturedLogs():
            for i in range(MAX_QUEUED_CHUNKS):
                self.feed(self.chunk(i * 100, 100))
        self.assertRefused(self.chunk(MAX_QUEUED_CHUNKS * 100, 100), "waiting to be written", MAX_QUEUED_CHUNKS * 100,
                           LogLevel.info)
        runner.release_all()
        self.assertEqual(self.pair.follower.receiver.in_progress, (TERM, 50, 2, MAX_QUEUED_CHUNKS * 100))


class ReplacementTests(ReceiverCase):
    """A newer transfer replaces the one in progress."""

    def setUp(self) -> None:
        super().setUp()
        newer = write_snapshot(self.pair.leader_store, 60, 3, content_for(60, 5_000))
        self.newer_file = self.pair.leader_fs.read_file(newer.path)

    def newer_chunks(self, term: int = TERM) -> list[Message]:
        size = len(self.newer_file)
        return [
            Message(LEADER, FOLLOWER, SnapshotChunk(term, 60, 3, size, o, self.newer_file[o : o + CHUNK]))
            for o in range(0, size, CHUNK)
        ]

    def test_higher_index_replaces(self) -> None:
        """A transfer of a higher index in the same term removes the partial
        file of the older one, installs only the newer, and chunks of the
        older are refused afterwards."""
        self.start_transfer(3)
        self.assertEqual(self.pair.follower_files(), [TMP])
        with capturedLogs() as events:
            self.feed(*self.newer_chunks())
        self.assertTrue(any("replaces the transfer of" in formatEvent(e) for e in events))
        self.assertEqual(self.pair.installs, [(LEADER, TERM, 60, 3)])
        self.assertEqual(self.pair.follower_files(), [snapshot_name(60, 3)])
        self.assertRefused(self.chunk(3 * CHUNK), "older transfer", 0, LogLevel.info)

    def test_higher_term_replaces(self) -> None:
        """A new leader's transfer (next term) replaces the old leader's."""
        self.start_transfer(3)
        self.pair.leader_view = (LEADER, TERM + 1)
        with capturedLogs():
            self.feed(*self.newer_chunks(TERM + 1))
        self.assertEqual(self.pair.installs, [(LEADER, TERM + 1, 60, 3)])
        self.assertEqual(self.pair.follower_files(), [snapshot_name(60, 3)])

    def test_newer_transfer_starting_mid_way_still_drops_the_old(self) -> None:
        """A newer transfer's chunk not at 0 drops the older transfer and is answered with 0."""
        self.start_transfer(3)
        with capturedLogs():
            answers = self.feed(self.newer_chunks()[1])
        self.assertEqual(answers, [SnapshotChunkResponse(TERM, 60, 0, False)])
        self.assertEqual(self.pair.follower_files(), [])
        self.assertIsNone(self.pair.follower.receiver.in_progress)

    def test_replacement_while_a_write_is_held(self) -> None:
        """With the old transfer's write still in the runner, replacing it
        removes its file only after that write, and the newer one installs."""
        runner = ManualRunner()
        self.pair = Pair(10_000, run_in_thread=runner)
        write_snapshot(self.pair.leader_store, 60, 3, content_for(60, 5_000))
        with capturedLogs():
            self.feed(self.chunk(0))
            self.feed(*self.newer_chunks())
            runner.release_all()
        self.assertEqual(self.pair.installs, [(LEADER, TERM, 60, 3)])
        self.assertEqual(self.pair.follower_files(), [snapshot_name(60, 3)])


class InterruptionTests(SynchronousTestCase):
    """Interrupted transfers restart or resume cleanly."""

    def test_follower_restart_makes_the_leader_start_over(self) -> None:
        """A follower that crashes mid-transfer keeps no partial file; its
        answer to the leader's next chunk (offset 0) makes the leader start
        from the beginning, and the file installs intact."""
        pair = Pair(10_000)
        pair.offer()
        for _ in range(6):
            pair.deliver_one()
        pair.follower.receiver._cancel_idle()  # the crashed process's timers die with it
        pair.follower_fs.crash()
        pair.follower_store = SnapshotStore.open(DIRECTORY, pair.follower_fs)
        self.assertEqual(pair.follower_fs.listdir(DIRECTORY), [])
        installs = pair.installs
        pair.follower = TransferRouter(
            pair.follower_store, node_id=FOLLOWER, send=pair.network.send, clock=pair.clock,
            current_leader=lambda: (LEADER, TERM),
            installed=lambda *a: installs.append(a) and None, report=lambda f, ok: None, chunk_bytes=CHUNK,
        )
        pair.routers[FOLLOWER] = pair.follower
        with capturedLogs() as events:
            pair.run()
        self.assertTrue(any("starting over" in formatEvent(e) for e in events))
        self.assertEqual(pair.installs, [(LEADER, TERM, 50, 2)])
        self.assertEqual(pair.follower_store.verify(pair.installed_files()[0]).digest, pair.info.digest)

    def test_new_sender_resumes_where_the_follower_is(self) -> None:
        """When the leader's sender is lost mid-way and the core offers the
        same snapshot again, the new sender learns the follower's position
        from its first answer and sends only the rest."""
        pair = Pair(20_000)
        pair.offer()
        for _ in range(10):
            pair.deliver_one()
        position = pair.follower.receiver.in_progress[3]  # type: ignore[index]
        self.assertGreater(position, 0)
        pair.leader.stop_sending()
        pair.network.queue.clear()
        sent_before = len(pair.network.chunks_sent())
        pair.offer()
        with capturedLogs() as events:
            pair.deliver_all()
        self.assertTrue(any("resuming there" in formatEvent(e) for e in events))
        later = pair.network.chunks_sent()[sent_before + 4 :]  # after the new sender's first window
        self.assertTrue(later and all(c.offset >= position for c in later))
        self.assertEqual(pair.installs, [(LEADER, TERM, 50, 2)])
        self.assertEqual(pair.follower_store.verify(pair.installed_files()[0]).digest, pair.info.digest)

    def test_abandoned_transfer_is_cleaned_up(self) -> None:
        """A transfer with no chunk for idle_timeout seconds is dropped, its partial file removed."""
        pair = Pair(10_000, idle_timeout=30.0)
        pair.offer()
        for _ in range(4):
            pair.deliver_one()
        pair.leader.stop_sending()
        pair.network.queue.clear()
        self.assertEqual(pair.follower_files(), [TMP])
        pair.clock.advance(29)
        self.assertEqual(pair.follower_files(), [TMP])
        with capturedLogs() as events:
            pair.clock.advance(1)
        self.assertEqual(pair.follower_files(), [])
        self.assertIsNone(pair.follower.receiver.in_progress)
        self.assertTrue(any("abandoned the transfer" in formatEvent(e) for e in events))

    def test_stop_removes_the_partial_file(self) -> None:
        """Stopping the router drops the transfer in progress and sends nothing more."""
        pair = Pair(10_000)
        pair.offer()
        for _ in range(4):
            pair.deliver_one()
        pair.follower.stop()
        self.assertEqual(pair.follower_files(), [])
        pair.network.queue.clear()
        before = len(pair.network.sent)
        pair.follower.receive(Message(LEADER, FOLLOWER, SnapshotChunk(TERM, 50, 2, 100, 0, b"x")))
        self.assertEqual(len(pair.network.sent), before)

    def test_repeat_of_an_installed_transfer(self) -> None:
        """A chunk of a transfer already installed is answered done, unless
        the node's confirmation is still pending: then it is answered at the
        end of the file, not done, until the confirmation fires."""
        pair = Pair(3_000)
        pair.offer()
        pair.deliver_all()
        size = pair.info.size
        assert size is not None
        pair.follower.receive(Message(LEADER, FOLLOWER, pair.network.chunks_sent()[0]))
        self.assertEqual(pair.network.responses_sent()[-1], SnapshotChunkResponse(TERM, 50, size, True, True))
        confirmation: Deferred[None] = Deferred()
        pending = Pair(3_000, installed_result=lambda: confirmation)
        pending.offer()
        pending.deliver_all()
        repeat = Message(LEADER, FOLLOWER, pending.network.chunks_sent()[0])
        pending.follower.receive(repeat)
        self.assertEqual(pending.network.responses_sent()[-1], SnapshotChunkResponse(TERM, 50, size, False, False))
        confirmation.callback(None)
        self.assertEqual(pending.network.responses_sent()[-1], SnapshotChunkResponse(TERM, 50, size, True, True))
        pending.follower.receive(repeat)
        self.assertEqual(pending.network.responses_sent()[-1], SnapshotChunkResponse(TERM, 50, size, True, True))
        self.assertEqual(len(pending.installs), 1)
