"""
Tests for L{kvstore.node.node.Node} as a single node over the real write-ahead
log: durability before acknowledgement, group commit, timeouts and storage
failure.  Time is a L{Clock}; file work runs through a runner the test
controls, so each fsync happens exactly when the test says.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.runners import ManualRunner
from kvstore.errors import KeyNotFound, NotLeader, OutcomeUnknown, Unavailable
from kvstore.node.build import build_node
from kvstore.raft.config import RaftConfig
from kvstore.raft.messages import Message
from kvstore.storage import MetadataStore, WriteAheadLog

T = TypeVar("T")


class NoPeers:
    def send(self, message: Message) -> None:
        raise AssertionError("a one-node cluster sends nothing")


class SingleNode:
    """A one-node cluster over real files in C{directory}."""

    def __init__(self, directory: Path, runner: ManualRunner | None = None, commit_timeout: float = 5.0) -> None:
        self.clock = Clock()
        self.runner = runner or ManualRunner()
        self.wal = WriteAheadLog.open(str(directory / "wal"), run_in_thread=self.runner)
        self.metadata = MetadataStore.open(str(directory / "metadata.json"), run_in_thread=self.runner)
        self.fatal: list[Failure] = []
        self.node = build_node(
            RaftConfig(0),
            clock=self.clock,
            rng=random.Random(0),
            log=self.wal,
            metadata=self.metadata,
            cluster_id="test",
            peers=NoPeers(),
            member_addresses={0: "127.0.0.1:5000"},
            commit_timeout=commit_timeout,
            on_fatal=self.fatal.append,
        )
        self.node.start()
        self.settle()

    def settle(self) -> None:
        """Run every due call and every file job until nothing is left."""
        for _ in range(100):
            self.clock.advance(0)
            if not self.runner.jobs:
                self.clock.advance(0)
                if not self.runner.jobs:
                    return
            self.runner.release_all()

    def close(self) -> None:
        self.node.stop()
        self.runner.immediate = True
        self.runner.release_all()
        self.wal.close()


def results(ds: list[Deferred[Any]]) -> list[Any]:
    box: list[Any] = []
    for d in ds:
        d.addBoth(box.append)
    return box


class SingleNodeTests(SynchronousTestCase):
    """
    L{Node} over the real WAL with a manual file runner and a L{Clock}, plus
    one follower over in-memory storage.
    """

    def setUp(self) -> None:
        self.tmp_path = Path(self.mktemp())
        self.tmp_path.mkdir()

    def test_write_is_acknowledged_only_after_fsync(self) -> None:
        """A PUT's Deferred does not fire until the WAL's fsync has run."""
        n = SingleNode(self.tmp_path)
        out = results([n.node.put("k", "v")])
        n.clock.advance(0)
        assert out == [] and n.runner.jobs, "the write must wait for the file job"
        n.settle()
        assert out == [None]
        assert n.wal.durable_index >= 2
        n.close()

    def test_group_commit_many_writes_few_fsyncs(self) -> None:
        """200 concurrent writes complete with a handful of fsyncs, counted by the
        storage layer, not one fsync each."""
        n = SingleNode(self.tmp_path)
        before = n.wal.fsync_count
        out = results([n.node.put(f"k{i}", str(i)) for i in range(200)])
        n.settle()
        assert out == [None] * 200
        fsyncs = n.wal.fsync_count - before
        assert 1 <= fsyncs <= 3, fsyncs
        n.close()

    def test_writes_arriving_during_a_flush_share_the_next_one(self) -> None:
        """Writes made while one fsync is in progress all go out in the next."""
        n = SingleNode(self.tmp_path)
        before = n.wal.fsync_count
        first = results([n.node.put("first", "1")])
        n.clock.advance(0)
        assert len(n.runner.jobs) == 1  # the first flush is running
        later = results([n.node.put(f"k{i}", "x") for i in range(50)])
        n.clock.advance(0)
        n.settle()
        assert first == [None] and later == [None] * 50
        assert n.wal.fsync_count - before == 2
        n.close()

    def test_get_delete_and_missing_keys(self) -> None:
        """GET sees acknowledged writes; DELETE of a missing key fails with KeyNotFound."""
        n = SingleNode(self.tmp_path)

        def run(d: Deferred[Any]) -> Any:
            box = results([d])
            n.settle()
            assert len(box) == 1
            return box[0]

        assert run(n.node.put("a", "1 2 3")) is None
        assert run(n.node.get("a")) == "1 2 3"
        assert run(n.node.get("a", stale=True)) == "1 2 3"
        assert run(n.node.delete("a")) is None
        assert run(n.node.delete("a")).check(KeyNotFound)
        assert run(n.node.get("a")).check(KeyNotFound)
        n.close()

    def test_restart_recovers_acknowledged_writes(self) -> None:
        """After a restart on the same files every acknowledged write is back."""
        n = SingleNode(self.tmp_path)
        out = results([n.node.put(f"k{i}", f"v{i}") for i in range(20)] + [n.node.delete("k3")])
        n.settle()
        assert out == [None] * 21
        n.close()
        again = SingleNode(self.tmp_path)
        reads = results([again.node.get(f"k{i}") for i in range(20)])
        again.settle()
        assert reads[3].check(KeyNotFound)
        assert [r for i, r in enumerate(reads) if i != 3] == [f"v{i}" for i in range(20) if i != 3]
        assert again.node.core.term == 2
        again.close()

    def test_commit_timeout_reports_outcome_unknown(self) -> None:
        """A write whose fsync never completes fails with OutcomeUnknown after the
        commit timeout, never with a claim that it failed."""
        n = SingleNode(self.tmp_path, commit_timeout=1.0)
        out = results([n.node.put("k", "v")])
        n.clock.advance(0)
        n.clock.advance(2.0)
        assert len(out) == 1 and out[0].check(OutcomeUnknown)
        n.close()

    def test_storage_failure_stops_the_node(self) -> None:
        """A failed fsync makes the node fail pending writes as unknown, refuse
        new ones, and report the failure so the service can stop."""
        n = SingleNode(self.tmp_path)
        out = results([n.node.put("k", "v")])
        n.clock.advance(0)
        f, d = n.runner.jobs.pop(0)
        d.errback(Failure(OSError(5, "Input/output error")))
        n.clock.advance(0)
        assert out[0].check(OutcomeUnknown)
        assert len(n.fatal) == 1
        later = results([n.node.put("x", "y"), n.node.get("x")])
        assert later[0].check(Unavailable) and later[1].check(Unavailable)
        # The node logs the storage failure; trial fails a test on logged errors it is not told of.
        self.flushLoggedErrors(OSError)

    def test_status_reports_role_and_indexes(self) -> None:
        """STATUS names node, role, term, leader, commit and applied indexes."""
        n = SingleNode(self.tmp_path)
        status = n.node.status()
        assert status["node"] == 0 and status["role"] == "leader" and status["leader"] == 0
        assert status["commit"] == status["applied"] == 1
        n.close()

    def test_follower_refuses_writes_with_leader_address(self) -> None:
        """A follower refuses writes before appending, naming the leader's address."""
        clock = Clock()
        from kvstore.storage import MemoryLog, MemoryMetadata

        node = build_node(
            RaftConfig(1, peers=(0, 2)),
            clock=clock,
            rng=random.Random(0),
            log=MemoryLog(),
            metadata=MemoryMetadata(),
            cluster_id="c",
            peers=NoPeers(),
            member_addresses={0: "127.0.0.1:5000", 1: "127.0.0.1:5001", 2: "127.0.0.1:5002"},
        )
        core = node.core
        out = results([node.put("k", "v")])
        assert out[0].check(NotLeader) and out[0].value.leader_id is None
        core.leader_id = 0
        out = results([node.delete("k")])
        assert out[0].value.leader_id == 0 and out[0].value.leader_address == "127.0.0.1:5000"
        assert core.last_index == 0

    def test_invalid_committed_entry_is_skipped_not_wedging(self) -> None:
        """A committed entry that is not a valid command is logged and skipped on
        apply; entries after it are applied and the node keeps serving."""
        n = SingleNode(self.tmp_path)
        n.node.core.propose(b"Xnot a command")
        out = results([n.node.put("a", "1")])
        n.settle()
        assert out == [None]
        box = results([n.node.get("a")])
        n.settle()
        assert box == ["1"]
        assert n.node.state_machine.applied_index == n.node.core.commit_index
        n.close()

    def test_exception_while_handling_a_batch_stops_the_node(self) -> None:
        """If storage rejects a batch (here: an append that raises), the node
        fail-stops instead of carrying on with core and log out of step."""
        n = SingleNode(self.tmp_path)

        def broken_append(entries: object) -> None:
            raise ValueError("refused")

        n.wal.append = broken_append  # type: ignore[method-assign]
        out = results([n.node.put("a", "1")])
        n.clock.advance(0)
        assert len(n.fatal) == 1
        assert out[0].check(OutcomeUnknown)
        assert results([n.node.put("b", "2")])[0].check(Unavailable)
        self.flushLoggedErrors(ValueError)

    def test_requests_after_stop_fail_at_once(self) -> None:
        """A request arriving after the node stopped gets an error instead of
        waiting forever."""
        n = SingleNode(self.tmp_path)
        n.close()
        assert results([n.node.put("a", "1")])[0].check(Unavailable)
        assert results([n.node.get("a")])[0].check(Unavailable)
