"""
A small cluster of production nodes with snapshots on simulated disks, for
the node-side snapshot tests: each member has a L{SimulatedFileSystem}
(which can crash), the production WAL, metadata store and snapshot store,
a L{SimulatedDisk} running their file work with fsync latency, and
L{TeleportTransfer}, a stand-in for the snapshot transfer that copies the
offered file straight into the follower's snapshot directory through
L{SnapshotStore.begin_receive} (the real chunked transfer is
L{kvstore.node.snapshot_transfer}'s business, not the node's).
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from kvstore.node.build import build_node
from kvstore.node.node import Node
from kvstore.node.snapshots import SnapshotPolicy
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import Role
from kvstore.raft.messages import InstallSnapshot, Message
from kvstore.node.snapshotting import snapshot_cooperator
from kvstore.storage import MetadataStore, WriteAheadLog
from kvstore.storage.snapshots import SnapshotInfo, SnapshotStore, snapshot_name
from kvstore.testing.sim.fs import SimulatedDisk, SimulatedFileSystem
from kvstore.testing.sim.network import SimulatedNetwork, Weather

DATA = "/data"


class Member:
    def __init__(self, node_id: int) -> None:
        self.node_id = node_id
        self.fs = SimulatedFileSystem()
        self.fs.makedirs_durable(DATA)
        self.disk: SimulatedDisk | None = None
        self.node: Node | None = None
        self.wal: WriteAheadLog | None = None


class TeleportTransfer:
    """Sends an offered snapshot by copying the leader's file into the
    follower's store after C{delay} (protected meanwhile), then steps it
    into the follower and reports the outcome to the leader."""

    def __init__(self, cluster: "SnapshotCluster", leader: int, delay: float = 0.01) -> None:
        self.cluster = cluster
        self.leader = leader
        self.delay = delay
        self.sent: list[tuple[int, int]] = []

    def offer(self, message: Message) -> None:
        body = message.body
        assert isinstance(body, InstallSnapshot)
        node = self.cluster.members[self.leader].node
        assert node is not None
        name = snapshot_name(body.index, body.snapshot_term)
        node.protect_snapshot(name)
        self.cluster.clock.callLater(self.delay, self._deliver, node, message, name)

    def _deliver(self, leader: Node, message: Message, name: str) -> None:
        body = message.body
        assert isinstance(body, InstallSnapshot)
        try:
            follower = self.cluster.members[message.receiver].node
            if follower is None or self.cluster.members[self.leader].node is not leader:
                leader.report_snapshot(message.receiver, False)
                return
            source = leader.snapshot_store
            target = follower.snapshot_store
            assert source is not None and target is not None
            info = SnapshotInfo(f"{source.directory}/{name}", body.index, body.snapshot_term)
            size = source.fs.file_size(source.fs.open_rw(info.path))
            writer = target.begin_receive(body.index, body.snapshot_term, size)
            for offset, chunk in source.read_chunks(info, chunk_size=4096):
                writer.write(offset, chunk)
            writer.finish()
            self.sent.append((message.receiver, body.index))
            follower.step_installed_snapshot(message.sender, body.term, body.index, body.snapshot_term)
            leader.report_snapshot(message.receiver, True)
        finally:
            leader.release_snapshot(name)


class SnapshotCluster:
    def __init__(
        self,
        size: int = 3,
        seed: int = 0,
        policy: SnapshotPolicy = SnapshotPolicy(entries=20, catchup_entries=5),
        segment_bytes: int = 600,
        commit_save_interval: float = 0.05,
    ) -> None:
        self.clock = Clock()
        self.rng = random.Random(seed)
        self.network = SimulatedNetwork(self.clock, self.rng, Weather(latency=(0.0005, 0.002)), in_order=True)
        self.ids = tuple(range(size))
        self.policy = policy
        self.segment_bytes = segment_bytes
        self.commit_save_interval = commit_save_interval
        self.members = {i: Member(i) for i in self.ids}
        self.transfers: dict[int, TeleportTransfer] = {}

    def start(self, node_id: int) -> Node:
        member = self.members[node_id]
        assert member.node is None
        member.disk = disk = SimulatedDisk(self.clock, random.Random(self.rng.random()), member.fs)
        metadata = MetadataStore.open(f"{DATA}/metadata.json", run_in_thread=disk, fs=member.fs)
        member.wal = wal = WriteAheadLog.open(
            f"{DATA}/wal", segment_bytes=self.segment_bytes, run_in_thread=disk, fs=member.fs
        )
        store = SnapshotStore.open(f"{DATA}/snapshots", fs=member.fs)
        config = RaftConfig(
            node_id=node_id, peers=tuple(i for i in self.ids if i != node_id), heartbeat_interval=0.05,
            election_timeout_min=0.3, election_timeout_max=0.6, max_append_entries=8,
        )
        node = build_node(
            config, clock=self.clock, rng=random.Random(self.rng.random()), log=wal, metadata=metadata,
            cluster_id="c", peers=self.network, member_addresses={i: f"n{i}:1" for i in self.ids},
            commit_save_interval=self.commit_save_interval, snapshots=store, snapshot_policy=self.policy,
            snapshot_runner=disk, cooperator=snapshot_cooperator(self.clock, max_steps=2),
            on_fatal=lambda f: self.fatal.append((node_id, f)),
        )
        transfer = self.transfers[node_id] = TeleportTransfer(self, node_id)
        node.set_snapshot_offers(transfer)
        member.node = node
        self.network.attach(node_id, node.receive)
        node.start()
        return node

    fatal: list[tuple[int, Any]] = []

    def start_all(self) -> None:
        self.fatal = []
        for i in self.ids:
            self.start(i)

    def crash(self, node_id: int, tear: bool = False) -> None:
        """Kill the process: nothing not yet durable survives."""
        member = self.members[node_id]
        assert member.node is not None and member.disk is not None
        self.network.detach(node_id)
        member.disk.kill()
        member.node.stop()
        member.node = None
        member.fs.crash(random.Random(self.rng.random()), tear=tear)

    def node(self, node_id: int) -> Node:
        node = self.members[node_id].node
        assert node is not None
        return node

    def leader(self) -> int | None:
        leaders = [i for i in self.ids if self.members[i].node is not None and self.node(i).core.role is Role.LEADER]
        return max(leaders, key=lambda i: self.node(i).core.term) if leaders else None

    def run(self, seconds: float, step: float = 0.001) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.clock.advance(min(step, end - self.clock.seconds()))

    def run_until(self, condition: Callable[[], bool], timeout: float = 20.0, step: float = 0.001) -> bool:
        end = self.clock.seconds() + timeout
        while not condition():
            if self.clock.seconds() >= end:
                return False
            self.clock.advance(step)
        return True

    def write(self, key: str, value: str, timeout: float = 10.0) -> Any:
        """Write through the current leader; the outcome (None or a Failure)."""
        if not self.run_until(lambda: self.leader() is not None, timeout):
            raise AssertionError("no leader")
        leader = self.leader()
        assert leader is not None
        box: list[Any] = []
        d: Deferred[None] = self.node(leader).put(key, value)
        d.addBoth(box.append)
        if not self.run_until(lambda: bool(box), timeout):
            raise AssertionError(f"write {key} did not finish")
        return box[0]

    def write_many(self, count: int, start: int = 0, keys: int = 7) -> dict[str, str]:
        """Write C{count} values over C{keys} keys until each succeeds; the expected map."""
        expected: dict[str, str] = {}
        for i in range(start, start + count):
            key, value = f"k{i % keys}", f"v{i}"
            for _ in range(20):
                if self.write(key, value) is None:
                    break
            else:
                raise AssertionError(f"write {key}={value} never succeeded")
            expected[key] = value
        return expected

    def converged(self, ids: tuple[int, ...] | None = None) -> bool:
        ids = self.ids if ids is None else ids
        leader = self.leader()
        if leader is None or any(self.members[i].node is None for i in ids):
            return False
        commit = self.node(leader).core.commit_index
        return all(self.node(i).state_machine.applied_index == commit for i in ids)

    def data(self, node_id: int) -> dict[str, str]:
        return self.node(node_id).state_machine.items()
