# -*- test-case-name: tests.test_node_snapshots_failures -*-
"""
A snapshot that cannot be taken: an I/O error stops the node (fail-stop,
as for any storage failure); the snapshot store refusing a name that is
being received skips that snapshot only.
"""

from __future__ import annotations

import random
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.node.node import FailedPart, Node
from kvstore.node.snapshots import SnapshotPolicy
from kvstore.raft.config import RaftConfig
from kvstore.raft.messages import Message
from kvstore.node.snapshotting import snapshot_cooperator
from kvstore.storage import MemoryLog, MemoryMetadata
from kvstore.storage.snapshots import SnapshotStore
from kvstore.testing.runners import run_now

from tests.snapshot_support import DIRECTORY, ReadableSimulatedFileSystem


class FailingWrites(ReadableSimulatedFileSystem):
    """Snapshot file writes fail while C{failing} is set."""

    failing = False

    def pwrite_all(self, fd: int, data: bytes, offset: int) -> None:
        if self.failing:
            raise OSError(28, "No space left on device (simulated)")
        super().pwrite_all(fd, data, offset)


class NoPeers:
    def send(self, message: Message) -> None:
        pass


def single(fs: ReadableSimulatedFileSystem, fatal: list[Any]) -> tuple[Node, Clock, SnapshotStore]:
    clock = Clock()
    fs.makedirs_durable("/data")
    store = SnapshotStore.open(DIRECTORY, fs)
    node = build_node(
        RaftConfig(0), clock=clock, rng=random.Random(0), log=MemoryLog(), metadata=MemoryMetadata(),
        cluster_id="c", peers=NoPeers(), member_addresses={0: "a:1"}, snapshots=store,
        snapshot_policy=SnapshotPolicy(entries=5, catchup_entries=1), snapshot_runner=run_now,
        cooperator=snapshot_cooperator(clock, max_steps=1), on_fatal=fatal.append,
    )
    node.start()
    return node, clock, store


def write(node: Node, clock: Clock, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        node.put(f"k{i}", "v").addErrback(lambda f: None)
        for _ in range(30):
            clock.advance(0)


class SnapshotFailureTests(SynchronousTestCase):
    """What a failed snapshot does to the node."""

    def test_io_error_stops_the_node(self) -> None:
        """An I/O error writing the snapshot is a storage failure: the node stops, nothing is compacted."""
        fs = FailingWrites()
        fatal: list[Any] = []
        node, clock, store = single(fs, fatal)
        fs.failing = True
        with capturedLogs():
            write(node, clock, 6)
        self.flushLoggedErrors(OSError)
        self.assertEqual(len(fatal), 1)
        self.assertIs(fatal[0].value.part, FailedPart.STORAGE)
        self.assertEqual((store.list(), node.core.first_index), ([], 1))

    def test_name_being_received_skips_one(self) -> None:
        """A snapshot whose name is being received is skipped with a warning; a later one is taken."""
        fs = ReadableSimulatedFileSystem()
        fatal: list[Any] = []
        node, clock, store = single(fs, fatal)
        term = node.core.term
        receiving = [store.begin_receive(i, term, 1000) for i in range(1, 12)]
        with capturedLogs() as events:
            write(node, clock, 6)
        self.assertEqual(fatal, [])
        self.assertTrue(any("snapshot skipped" in e.get("log_format", "") for e in events))
        self.assertEqual(store.list(), [])
        for writer in receiving:
            writer.abort()
        with capturedLogs():
            write(node, clock, 6, start=100)
        self.assertEqual(fatal, [])
        self.assertTrue(store.list())
        self.assertGreater(node.core.snapshot_index, 0)
