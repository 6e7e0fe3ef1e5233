# -*- test-case-name: tests.test_testing_workload -*-
"""
The fault suite's load on the client library: L{settle} reads each result
or exception of the library into the outcome the checkers need, and the
L{Workload} against scripted fake nodes records every call with its
invoke and complete times, leaves writes whose connection was lost
unknown, and yields a history the linearizability checker accepts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client.errors import (
    ClientError,
    ConnectionFailed,
    KeyNotFound,
    NoLeader,
    OutcomeUnknown,
    ProtocolError,
    Unavailable,
)
from kvstore.testing.history import FAILED, OK_STATUS, UNEXPECTED, UNKNOWN, History, Record, settle
from kvstore.testing.sim.linearizability import check_history
from kvstore.testing.workload import Workload
from tests.client_fakes import CLOSE, FakeNode, store_script


class SettleTests(SynchronousTestCase):
    """What each library outcome means for the history."""

    def settled(self, kind: str, result: str | None = None, error: BaseException | None = None) -> Record:
        record = Record("c", kind, "k", "v" if kind == "put" else None, 1.0, 0)
        settle(record, 2.0, result, error)
        return record

    def test_successes(self) -> None:
        """A returned call is known and complete when it returned; a get keeps its value."""
        for kind, result, expected in [("put", None, "ok"), ("delete", None, "ok"), ("get", "v", "v")]:
            record = self.settled(kind, result)
            self.assertEqual((record.status, record.result, record.complete), (OK_STATUS, expected, 2.0))

    def test_key_not_found_is_known(self) -> None:
        """KeyNotFound is an answer: a get of nothing, a delete that found nothing."""
        get = self.settled("get", error=KeyNotFound("k"))
        self.assertEqual((get.status, get.result, get.complete), (OK_STATUS, None, 2.0))
        delete = self.settled("delete", error=KeyNotFound("k"))
        self.assertEqual((delete.status, delete.result), (OK_STATUS, "not-found"))

    def test_unknown_and_failed(self) -> None:
        """A write whose outcome the library cannot know stays unknown, with no completion; what was
        certainly not applied, and any failed read, is failed."""
        for kind, error, status in [
            ("put", OutcomeUnknown("lost"), UNKNOWN),
            ("delete", OutcomeUnknown("lost"), UNKNOWN),
            ("put", ClientError("the client is closed"), UNKNOWN),
            ("put", NoLeader("none"), FAILED),
            ("delete", ConnectionFailed("down"), FAILED),
            ("get", Unavailable("slow"), FAILED),
            ("get", OutcomeUnknown("?"), FAILED),
            ("get", ProtocolError("PONG to a GET"), UNEXPECTED),
            ("put", ProtocolError("crossed"), UNEXPECTED),
        ]:
            with self.subTest(kind=kind, error=error):
                record = self.settled(kind, error=error)
                self.assertEqual((record.status, record.complete), (status, None))
                self.assertIn(type(error).__name__, record.reply or "")


@dataclass
class _FakeProcess:
    node_id: int
    address: str
    running: bool = True

    def describe(self) -> str:
        return f"fake node {self.node_id} at {self.address}"


class _FakeCluster:
    def __init__(self, nodes: list[FakeNode]) -> None:
        self.nodes = [_FakeProcess(i, node.address) for i, node in enumerate(nodes)]

    @property
    def running(self) -> list[_FakeProcess]:
        return [n for n in self.nodes if n.running]


class WorkloadTests(SynchronousTestCase):
    """The Workload over the library, against one scripted node that stores."""

    def test_history_of_a_node_that_drops_some_writes(self) -> None:
        """
        Every call is recorded with invoke before complete; a put whose
        connection the node closes instead of replying stays unknown (no
        completion), never failed or ok; the history checks as linearizable.
        """
        data: dict[str, str] = {}
        store = store_script(data)
        lock = threading.Lock()
        dropped: list[str] = []

        def script(line: str) -> object:
            with lock:
                if line.startswith("PUT k0 ") and len(dropped) < 5:
                    dropped.append(line)
                    return CLOSE
                return store(line)

        node = FakeNode(self, script)
        history = History()
        workload = Workload(_FakeCluster([node]), history, clients=3, pipeline=2, keys=2, timeout=5.0)  # type: ignore[arg-type]
        workload.start()
        self.addCleanup(workload.stop)
        workload.wait_progress(workload.started, writes=60, timeout=30)
        workload.stop()
        records = history.snapshot()
        self.assertTrue(all(r.complete is None or r.complete >= r.invoke for r in records))
        unknown = [r for r in records if r.status == UNKNOWN]
        self.assertEqual(len(dropped), 5)
        self.assertTrue(unknown)
        self.assertTrue(all(r.kind != "get" and r.complete is None for r in unknown))
        # Each dropped put is in the history as unknown (others in flight on the closed connection may be too).
        self.assertLessEqual(set(dropped), {f"PUT {r.key} {r.value}" for r in unknown if r.kind == "put"})
        self.assertEqual([r for r in records if r.status == UNEXPECTED], [])
        result = check_history(history.operations())
        self.assertTrue(result.ok, result.details)
