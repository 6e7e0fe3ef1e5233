# -*- test-case-name: tests.test_node_fatal_attribution -*-
"""
Fail-stop attribution at the edges (found in review of issue 9, part 5):
an error raised after the WAL is durable (in a Deferred callback, where no
caller sees it) still stops the node as internal; a storage API refusing a
call that breaks its contract is a bug (internal), not a disk failure; and
clients that arrive after the node stopped are told what failed.
"""

from __future__ import annotations

from typing import Any

import random

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.errors import Unavailable
from kvstore.node.node import FailedPart, FatalError, Node
from kvstore.node.build import build_node
from kvstore.raft.config import RaftConfig
from kvstore.statemachine import KeyValueStateMachine
from kvstore.storage import MemoryLog, MemoryMetadata, StorageFailedError


class _NoPeers:
    def send(self, message: object) -> None:
        pass


class _ExplodingStateMachine(KeyValueStateMachine):
    """A state machine with a bug: it raises on any put."""

    def apply(self, index: int, data: bytes) -> Any:
        if data.startswith(b"P"):
            raise KeyError("a bug in apply")
        return super().apply(index, data)


class _SingleNode:
    """A started one-node cluster on a fake clock with in-memory storage,
    its fatal reports captured."""

    def __init__(self, test: SynchronousTestCase, state_machine: KeyValueStateMachine | None = None) -> None:
        self.clock = Clock()
        self.wal = MemoryLog()
        self.fatal: list[Failure] = []
        self.node = build_node(
            RaftConfig(0),
            clock=self.clock,
            rng=random.Random(0),
            log=self.wal,
            metadata=MemoryMetadata(),
            cluster_id="c",
            peers=_NoPeers(),
            member_addresses={0: "127.0.0.1:5000"},
            state_machine=state_machine,
            on_fatal=self.fatal.append,
        )
        self.core = self.node.core
        # The node logs the failure it stops for; these tests expect that.
        test.patch(Node, "log", _SilentLogger())
        self.node.start()
        self.clock.advance(0)
        self.clock.advance(0)

    def put(self) -> list[object]:
        out: list[object] = []
        self.node.put("k", "v").addBoth(out.append)
        for _ in range(5):
            self.clock.advance(0)
        return out

    def reported(self) -> FatalError:
        """The one fatal report, unwrapped."""
        [failure] = self.fatal
        error = failure.value
        assert isinstance(error, FatalError), error
        return error


class _SilentLogger:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


class AfterDurableTests(SynchronousTestCase):
    """Errors in the callback that runs once the WAL is durable."""

    def test_error_after_fsync_stops_the_node_as_internal(self) -> None:
        """An exception while telling the core that a batch is durable (here
        the core raising) stops the node as an internal failure, instead of
        vanishing into the fsync's Deferred and leaving every later write to
        time out."""
        n = _SingleNode(self)
        synced: Deferred[int] = Deferred()
        n.wal.sync = lambda at_once=False: synced  # type: ignore[method-assign]

        def broken_persisted(*args: Any) -> None:
            raise AssertionError("a bug in the core")

        n.core.persisted = broken_persisted  # type: ignore[method-assign]
        n.put()
        self.assertEqual(n.fatal, [])
        synced.callback(0)
        error = n.reported()
        self.assertIs(error.part, FailedPart.INTERNAL)
        self.assertIsInstance(error.failure.value, AssertionError)


class StorageContractTests(SynchronousTestCase):
    """Only I/O failures count as storage failures."""

    def test_contract_violation_is_internal(self) -> None:
        """The log refusing an append that does not continue it (a bug in
        the caller, the disk is fine) is internal, not storage."""
        n = _SingleNode(self)

        def refusing_append(entries: object) -> None:
            raise ValueError("non-contiguous append: got index 7, expected 3")

        n.wal.append = refusing_append  # type: ignore[method-assign]
        n.put()
        self.assertIs(n.reported().part, FailedPart.INTERNAL)

    def test_io_errors_are_storage(self) -> None:
        """An OSError, or the log refusing writes after an earlier failure,
        is a storage failure."""
        for error in (OSError(5, "Input/output error"), StorageFailedError("failed earlier")):
            with self.subTest(error=error):
                n = _SingleNode(self)

                def failing_append(entries: object, error: Exception = error) -> None:
                    raise error

                n.wal.append = failing_append  # type: ignore[method-assign]
                n.put()
                self.assertIs(n.reported().part, FailedPart.STORAGE)


class LaterClientsTests(SynchronousTestCase):
    """What clients arriving after the node stopped are told."""

    def test_later_requests_name_the_failed_part(self) -> None:
        """After an apply failure, later writes and reads are refused with a
        reason naming the apply failure, not a storage failure."""
        n = _SingleNode(self, _ExplodingStateMachine())
        n.put()
        self.assertIs(n.reported().part, FailedPart.APPLY)
        out: list[Any] = []
        n.node.put("k2", "v").addBoth(out.append)
        n.node.delete("k2").addBoth(out.append)
        n.node.get("k2").addBoth(out.append)
        self.assertEqual(len(out), 3)
        for result in out:
            self.assertIsInstance(result.value, Unavailable)
            self.assertIn("apply failure", str(result.value))
            self.assertNotIn("storage", str(result.value))
