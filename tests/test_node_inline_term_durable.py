# -*- test-case-name: tests.test_node_inline_term_durable -*-
"""
The node with a real Raft core, a real write-ahead log whose small flushes
run on the reactor at once (issue 16: the batch's AppendEntries are sent
first, then its entries appended and fsynced within the same pass) and a
metadata file whose saves the test holds back: the log being durable at
once must not let anything in a new term out, nor the leader count its own
copy, before that term is durable too (commit ad372da, kvstore-sim seed
1375).
"""

from __future__ import annotations

import os
import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import Role
from kvstore.raft.membership import Configuration
from kvstore.raft.messages import AppendEntries, Message
from kvstore.storage import MetadataStore, WriteAheadLog
from kvstore.storage.wal import InlineFlushPolicy
from kvstore.testing.runners import ManualRunner

ADDRESSES = {0: "127.0.0.1:5000", 1: "127.0.0.1:5001"}


class _Recorder:
    """The peer links: notes every message sent."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)


class _FixedTimer:
    """A monotonic clock that never moves: every inline flush is fast."""

    def __call__(self) -> float:
        return 100.0


class LoneVoterInlineFlushTests(SynchronousTestCase):
    """A lone voter with a learner, its log flushed inline at once."""

    def _node(self) -> tuple[object, ManualRunner, ManualRunner, _Recorder, Clock, InlineFlushPolicy]:
        directory = self.mktemp()
        os.makedirs(directory)
        clock = Clock()
        wal_runner = ManualRunner()
        metadata_runner = ManualRunner()
        policy = InlineFlushPolicy(clock, timer=_FixedTimer())
        wal = WriteAheadLog.open(
            os.path.join(directory, "wal"),
            run_in_thread=wal_runner,
            inline_flush=policy,
            preallocate_bytes=64 * 1024,
        )
        self.addCleanup(wal_runner.release_all)
        metadata = MetadataStore.open(os.path.join(directory, "metadata.json"), run_in_thread=metadata_runner)
        peers = _Recorder()
        node = build_node(
            RaftConfig(0, peers=(), pre_vote=False),
            clock=clock,
            rng=random.Random(0),
            log=wal,
            metadata=metadata,
            cluster_id="c1",
            peers=peers,
            member_addresses=ADDRESSES,
            configuration=Configuration({0: ADDRESSES[0]}, {1: ADDRESSES[1]}),
            bootstrap=True,
            commit_save_interval=0,
        )
        self.addCleanup(node.stop)
        return node, wal_runner, metadata_runner, peers, clock, policy

    def test_nothing_in_the_new_term_leaves_before_the_term_is_durable(self) -> None:
        """The lone voter wins in the batch that raised its term and its log
        is fsynced inline at once, yet no AppendEntries reaches the learner
        and nothing commits until the metadata save of the term is durable;
        then both happen."""
        node, wal_runner, metadata_runner, peers, clock, policy = self._node()
        node.start()  # type: ignore[attr-defined]
        for _ in range(5):
            clock.advance(0)
        core = node.core  # type: ignore[attr-defined]
        self.assertIs(core.role, Role.LEADER)
        term = core.term
        # The log's flush ran inline at once, with nothing on the thread.
        self.assertGreaterEqual(policy.inline_flushes, 1)
        self.assertEqual(wal_runner.jobs, [])
        self.assertEqual(core.durable_index, 0)
        self.assertTrue(metadata_runner.jobs)
        self.assertEqual([m for m in peers.sent if isinstance(m.body, AppendEntries)], [])
        self.assertEqual(core.commit_index, 0)

        metadata_runner.release_all()
        for _ in range(5):
            clock.advance(0)
        appends = [m for m in peers.sent if isinstance(m.body, AppendEntries)]
        self.assertTrue(appends)
        self.assertTrue(all(m.receiver == 1 and m.body.term == term for m in appends))
        self.assertEqual(core.durable_index, core.last_index)
        self.assertEqual(core.commit_index, core.last_index)
