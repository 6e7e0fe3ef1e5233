"""
A leader and a follower joined by an in-memory network, for the snapshot
transfer tests (L{kvstore.node.snapshot_transfer}): each has a snapshot store on
its own simulated disk and a L{TransferRouter}; the network queues every
message until the test delivers it, and can drop, duplicate or reorder.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kvstore.raft.messages import Message, SnapshotChunk, SnapshotChunkResponse
from kvstore.node.snapshot_transfer import TransferRouter
from kvstore.storage.snapshots import SnapshotInfo, SnapshotStore
from kvstore.storage.wal import ThreadRunner
from kvstore.node.snapshot_transfer import run_now
from tests.snapshot_support import DIRECTORY, ReadableSimulatedFileSystem, content_for, write_snapshot

LEADER, FOLLOWER = 1, 2
TERM = 3
CHUNK = 1000


@dataclass
class Network:
    """Queues messages; the test decides what is delivered, lost or repeated."""

    queue: list[Message] = field(default_factory=list)
    sent: list[Message] = field(default_factory=list)
    lose: Callable[[Message], bool] = lambda message: False

    def send(self, message: Message) -> None:
        self.sent.append(message)
        if not self.lose(message):
            self.queue.append(message)

    def chunks_sent(self) -> list[SnapshotChunk]:
        return [m.body for m in self.sent if isinstance(m.body, SnapshotChunk)]

    def responses_sent(self) -> list[SnapshotChunkResponse]:
        return [m.body for m in self.sent if isinstance(m.body, SnapshotChunkResponse)]


class Pair:
    """
    A leader holding a snapshot and a follower without it, each with a
    router; C{reports} and C{installs} record what the routers told their
    nodes.
    """

    def __init__(
        self,
        size: int = 10_000,
        *,
        index: int = 50,
        snapshot_term: int = 2,
        run_in_thread: ThreadRunner = run_now,
        leader_of_follower: Callable[[], tuple[int | None, int]] | None = None,
        installed_result: Callable[[], "Deferred[Any] | None"] = lambda: None,
        **options: Any,
    ) -> None:
        self.clock = Clock()
        self.network = Network()
        self.leader_fs = ReadableSimulatedFileSystem()
        self.leader_fs.makedirs_durable("/data")
        self.leader_store = SnapshotStore.open(DIRECTORY, self.leader_fs)
        self.content = content_for(index, size)
        self.info = write_snapshot(self.leader_store, index, snapshot_term, self.content)
        self.follower_fs = ReadableSimulatedFileSystem()
        self.follower_fs.makedirs_durable("/data")
        self.follower_store = SnapshotStore.open(DIRECTORY, self.follower_fs)
        self.reports: list[tuple[int, bool]] = []
        self.installs: list[tuple[int, int, int, int]] = []
        self.leader_view: tuple[int | None, int] = (LEADER, TERM)
        options.setdefault("chunk_bytes", CHUNK)

        def installed(leader: int, term: int, index: int, snapshot_term: int) -> "Deferred[Any] | None":
            self.installs.append((leader, term, index, snapshot_term))
            return installed_result()

        self.leader = TransferRouter(
            self.leader_store, node_id=LEADER, send=self.network.send, clock=self.clock,
            current_leader=lambda: (LEADER, TERM), installed=lambda *a: None,
            report=lambda follower, ok: self.reports.append((follower, ok)), run_in_thread=run_in_thread,
            **options,
        )
        self.follower = TransferRouter(
            self.follower_store, node_id=FOLLOWER, send=self.network.send, clock=self.clock,
            current_leader=leader_of_follower or (lambda: self.leader_view), installed=installed,
            report=lambda follower, ok: None, run_in_thread=run_in_thread, **options,
        )
        self.routers = {LEADER: self.leader, FOLLOWER: self.follower}

    def offer(self, term: int = TERM, index: int | None = None, snapshot_term: int | None = None) -> None:
        self.leader.send_snapshot(
            FOLLOWER, term, self.info.index if index is None else index,
            self.info.term if snapshot_term is None else snapshot_term,
        )

    def deliver_one(self, position: int = 0) -> Message:
        message = self.network.queue.pop(position)
        self.routers[message.receiver].receive(message)
        return message

    def deliver_all(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.network.queue:
                return
            self.deliver_one()
        raise AssertionError("the network never went quiet")

    def run(self, seconds: float = 600.0, step: float = 0.1, rng: random.Random | None = None) -> None:
        """Deliver everything (in a random order with C{rng}) and advance
        the clock until nothing is left to do or C{seconds} have passed."""
        waited, budget = 0.0, 100_000
        while waited < seconds:
            while self.network.queue:
                budget -= 1
                if budget < 0:
                    raise AssertionError("the network never went quiet")
                self.deliver_one(rng.randrange(len(self.network.queue)) if rng else 0)
            if not self.leader.senders and self.follower.receiver.in_progress is None and not self.network.queue:
                return
            self.clock.advance(step)
            waited += step

    def installed_files(self) -> list[SnapshotInfo]:
        return self.follower_store.list()

    def follower_files(self) -> list[str]:
        return sorted(self.follower_fs.listdir(DIRECTORY))
