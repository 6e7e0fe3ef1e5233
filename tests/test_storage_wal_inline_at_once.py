# -*- test-case-name: tests.test_storage_wal_inline_at_once -*-
"""
Tests for an inline flush asked for at once (C{sync(at_once=True)}), which
hands its outcome straight to the log's bookkeeping without a Deferred
between (issue 16): failure and timing keep the rules of every other
flush; and for the node's batch around it: the leader's AppendEntries go
first, its acknowledgements after the fsync, and no further processing pass
is scheduled unless the core has something to do.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.node import Node
from kvstore.raft.core import Ready
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message
from kvstore.statemachine import KeyValueStateMachine
from kvstore.storage import StorageFailedError
from kvstore.storage.wal import INLINE_FLUSH_MAX_BYTES
from tests.test_storage_wal_inline_flush import _Peers, _Setup, entries


class AtOnceOutcomeTests(SynchronousTestCase):
    def test_failure_fails_the_waiter_now_and_the_log(self) -> None:
        """A failed at-once inline flush has failed its waiter with the error
        when sync() returns, and the log refuses every later write."""
        s = _Setup(self)
        s.fs.fail_fsync = True
        s.log.append(entries(1, 1))
        d = s.log.sync(at_once=True)
        self.assertIsInstance(self.failureResultOf(d, OSError).value, OSError)
        self.assertEqual(s.runner.jobs, [])
        self.assertRaises(StorageFailedError, s.log.append, entries(2, 2))
        self.failureResultOf(s.log.sync(at_once=True), StorageFailedError)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        s.fs.fail_fsync = False

    def test_a_slow_one_backs_the_policy_off(self) -> None:
        """An at-once inline flush is timed like any other: a slow one sends
        the next flush to the storage thread."""
        s = _Setup(self)
        s.flush_takes(1.0)
        s.log.append(entries(1, 1))
        self.assertEqual(self.successResultOf(s.log.sync(at_once=True)), 1)
        self.assertEqual((s.policy.inline_flushes, s.policy.slow_flushes), (1, 1))
        s.log.append(entries(2, 2))
        d = s.log.sync(at_once=True)
        self.assertNoResult(d)
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.assertEqual(self.successResultOf(d), 2)

    def test_a_failed_one_is_timed_too(self) -> None:
        """A failing at-once inline flush still counts as an inline flush."""
        s = _Setup(self)
        s.fs.fail_fsync = True
        s.log.append(entries(1, 1))
        self.failureResultOf(s.log.sync(at_once=True), OSError)
        self.assertEqual(s.policy.inline_flushes, 1)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        s.fs.fail_fsync = False


class _CoreWithWork:
    """Hands the node one prepared Ready; C{persisted} gives it more work
    (a leader whose own copy completed a majority) if C{work_after_persist}."""

    node_id = 0
    leader_id = 0
    term = 1
    role = None

    def __init__(self, ready: Ready, calls: list[str], work_after_persist: bool) -> None:
        self._ready: Ready | None = ready
        self._calls = calls
        self._work_after_persist = work_after_persist
        self.more = False

    def start(self) -> None:
        pass

    def set_wake(self, wake: Any) -> None:
        pass

    def persisted(self, index: int, term: int) -> None:
        self._calls.append("persisted")
        self.more = self._work_after_persist

    def has_ready(self) -> bool:
        return self._ready is not None or self.more

    def ready(self) -> Ready:
        if self._ready is None:
            self.more = False
            self._calls.append("second batch")
            return Ready()
        ready, self._ready = self._ready, None
        return ready


def _leader_batch() -> Ready:
    return Ready(
        entries=[(1, 1, b"x")],
        persist_through=(1, 1),
        messages=[Message(0, 1, AppendEntries(1, 0, 0, ((1, 1, b"x"),), 0))],
        messages_after_persist=[Message(0, 2, AppendEntriesResponse(1, True, 1))],
    )


class NodePassTests(SynchronousTestCase):
    def _node(self, s: _Setup, core: Any) -> Node:
        return Node(core, s.log, None, KeyValueStateMachine(), _Peers(s.calls), s.clock, member_addresses={})  # type: ignore[arg-type]

    def test_batch_is_sent_then_flushed_within_one_pass(self) -> None:
        """The leader's batch: AppendEntries sent, then the inline fsync, then
        the acknowledgement and the core told, all within the one pass."""
        s = _Setup(self)
        node = self._node(s, _CoreWithWork(_leader_batch(), s.calls, work_after_persist=False))
        node._process()  # type: ignore[attr-defined]
        self.assertEqual(s.calls, ["send AppendEntries", "fsync", "send AppendEntriesResponse", "persisted"])
        self.assertEqual(s.runner.jobs, [])

    def test_no_pass_is_scheduled_when_durability_gives_no_work(self) -> None:
        """Once the flush is reported and the core has nothing ready, no
        further processing pass is scheduled."""
        s = _Setup(self)
        node = self._node(s, _CoreWithWork(_leader_batch(), s.calls, work_after_persist=False))
        node._process()  # type: ignore[attr-defined]
        self.assertEqual(s.clock.getDelayedCalls(), [])

    def test_a_pass_handles_the_work_durability_gives(self) -> None:
        """When a flush that finished after the pass (on the storage thread)
        gives the core work, a processing pass is scheduled for it."""
        s = _Setup(self)
        payload = b"x" * INLINE_FLUSH_MAX_BYTES  # too large to flush inline
        ready = _leader_batch()
        ready.entries = [(1, 1, payload)]
        node = self._node(s, _CoreWithWork(ready, s.calls, work_after_persist=True))
        node._process()  # type: ignore[attr-defined]
        self.assertEqual(len(s.runner.jobs), 1)
        s.runner.release_all()
        self.assertEqual(s.calls[-1], "persisted")
        s.clock.advance(0)
        self.assertEqual(s.calls[-1], "second batch")
