# -*- test-case-name: tests.test_node_fatal_causes -*-
"""
A node that stops itself names what failed -- storage, apply or internal --
in its log line and its exit status (issue 9, part 5), and the systemd unit
and the documentation agree on the statuses.
"""

from __future__ import annotations

import configparser
import os
import random
from pathlib import Path
from typing import Any

from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node import node as node_module
from kvstore.node.build import build_node
from kvstore.errors import OutcomeUnknown
from kvstore.node.node import FailedPart, FatalError, Node
from kvstore.raft.config import RaftConfig
from kvstore.daemon.service import (
    EXIT_APPLY_FAILURE,
    EXIT_INTERNAL_FAILURE,
    EXIT_STORAGE_FAILURE,
    exit_status_for,
    stop_after_fatal,
)
from kvstore.statemachine import KeyValueStateMachine
from kvstore.storage import MemoryLog, MemoryMetadata

_ROOT = Path(__file__).resolve().parent.parent


class _NoPeers:
    def send(self, message: object) -> None:
        pass


class _ExplodingStateMachine(KeyValueStateMachine):
    """A state machine with a bug: it raises on any put."""

    def apply(self, index: int, data: bytes) -> Any:
        if data.startswith(b"P"):
            super().apply(index, b"")
            raise KeyError("a bug in apply")
        return super().apply(index, data)


class _SingleNode:
    """A one-node cluster on a fake clock with in-memory storage, its log
    events and fatal reports captured."""

    def __init__(self, test: SynchronousTestCase, state_machine: KeyValueStateMachine | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        test.patch(Node, "log", Logger(namespace="kvstore.node.node", observer=self.events.append))
        self.clock = Clock()
        self.wal = MemoryLog()
        self.metadata = MemoryMetadata()
        self.fatal: list[Failure] = []
        self.node = build_node(
            RaftConfig(0),
            clock=self.clock,
            rng=random.Random(0),
            log=self.wal,
            metadata=self.metadata,
            cluster_id="c",
            peers=_NoPeers(),
            member_addresses={0: "127.0.0.1:5000"},
            state_machine=state_machine,
            on_fatal=self.fatal.append,
        )
        self.core = self.node.core
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

    def fatal_log_lines(self) -> list[str]:
        return [e["log_format"] for e in self.events if e.get("log_failure") is not None]


class FatalCauseTests(SynchronousTestCase):
    """Each cause is named in the log line and mapped to its own status."""

    def _check(self, n: _SingleNode, part: FailedPart, line_start: str, status: int) -> FatalError:
        error = n.reported()
        self.assertIs(error.part, part)
        [line] = n.fatal_log_lines()
        self.assertTrue(line.startswith(line_start), line)
        self.assertEqual(exit_status_for(Failure(error)), (part, status))
        return error

    def test_storage_append_failure(self) -> None:
        """A WAL append that raises is a storage failure: exit 70."""
        n = _SingleNode(self)

        def broken_append(entries: object) -> None:
            raise OSError(28, "No space left on device")

        n.wal.append = broken_append  # type: ignore[method-assign]
        out = n.put()
        error = self._check(n, FailedPart.STORAGE, "storage failed;", EXIT_STORAGE_FAILURE)
        self.assertIsInstance(error.failure.value, OSError)
        self.assertIsInstance(out[0].value, OutcomeUnknown)  # type: ignore[attr-defined]

    def test_storage_fsync_failure(self) -> None:
        """A failed fsync (reported later, through the Deferred) is a storage
        failure: exit 70."""
        n = _SingleNode(self)
        n.wal.sync = lambda at_once=False: fail(OSError(5, "Input/output error"))  # type: ignore[method-assign]
        n.put()
        self._check(n, FailedPart.STORAGE, "storage failed;", EXIT_STORAGE_FAILURE)

    def test_apply_failure(self) -> None:
        """An exception from the state machine while applying a committed
        entry is an apply failure, naming the entry: exit 65."""
        n = _SingleNode(self, _ExplodingStateMachine())
        n.put()
        error = self._check(n, FailedPart.APPLY, "apply failed:", EXIT_APPLY_FAILURE)
        self.assertIsInstance(error.failure.value, KeyError)
        [line] = n.fatal_log_lines()
        self.assertIn("({where})", line)
        [event] = [e for e in n.events if e.get("log_failure") is not None]
        self.assertEqual(event["where"], f"log entry {n.core.last_index}")

    def test_internal_failure(self) -> None:
        """Any other exception while handling the core's outputs (here: the
        core itself raising) is internal: exit 69."""
        n = _SingleNode(self)

        def broken_ready() -> object:
            raise AssertionError("a bug in the core")

        n.core.ready = broken_ready  # type: ignore[method-assign]
        n.put()
        error = self._check(n, FailedPart.INTERNAL, "internal error", EXIT_INTERNAL_FAILURE)
        self.assertIsInstance(error.failure.value, AssertionError)

    def test_statuses_are_distinct(self) -> None:
        """The three statuses differ from each other and from 0 and 1."""
        statuses = {EXIT_STORAGE_FAILURE, EXIT_APPLY_FAILURE, EXIT_INTERNAL_FAILURE}
        self.assertEqual(len(statuses), 3)
        self.assertFalse(statuses & {0, 1})


class _RecordingReactor:
    def __init__(self) -> None:
        self.triggers: list[tuple[Any, ...]] = []
        self.stopped = False

    def addSystemEventTrigger(self, phase: str, event: str, f: Any, *args: Any) -> None:
        self.triggers.append((phase, event, f, *args))

    def stop(self) -> None:
        self.stopped = True


class ExitPathTests(SynchronousTestCase):
    """The service stops the reactor and exits with the part's status."""

    def test_each_part_exits_with_its_status(self) -> None:
        """stop_after_fatal arranges os._exit(status) after shutdown and
        stops the reactor, for each part."""
        for part, status in [
            (FailedPart.STORAGE, 70),
            (FailedPart.APPLY, 65),
            (FailedPart.INTERNAL, 69),
        ]:
            with self.subTest(part=part):
                reactor = _RecordingReactor()
                stop_after_fatal(reactor, Failure(FatalError(part, Failure(RuntimeError("x")))))
                self.assertTrue(reactor.stopped)
                self.assertEqual(reactor.triggers, [("after", "shutdown", os._exit, status)])

    def test_unknown_failure_counts_as_internal(self) -> None:
        """A failure that is not a FatalError is treated as internal."""
        self.assertEqual(exit_status_for(Failure(RuntimeError("x"))), (FailedPart.INTERNAL, 69))


class UnitAndDocsTests(SynchronousTestCase):
    """The systemd unit and docs/operations.md list the same statuses."""

    def test_unit_prevents_restart_for_every_fatal_status(self) -> None:
        """RestartPreventExitStatus lists exactly the three statuses."""
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment, method-assign]
        parser.read(_ROOT / "etc" / "kvstore@.service")
        listed = {int(s) for s in parser["Service"]["RestartPreventExitStatus"].split()}
        self.assertEqual(listed, {EXIT_STORAGE_FAILURE, EXIT_APPLY_FAILURE, EXIT_INTERNAL_FAILURE})

    def test_operations_doc_lists_each_status_and_line(self) -> None:
        """docs/operations.md has a row per status with its log line."""
        text = (_ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
        for part, status in [(FailedPart.STORAGE, 70), (FailedPart.APPLY, 65), (FailedPart.INTERNAL, 69)]:
            with self.subTest(part=part):
                rows = [line for line in text.splitlines() if line.startswith(f"| {status}")]
                self.assertEqual(len(rows), 1)
                self.assertIn(node_module._FATAL_LOG_LINES[part], rows[0])
