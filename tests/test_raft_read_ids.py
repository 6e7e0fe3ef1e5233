# -*- test-case-name: tests.test_raft_read_ids -*-
"""
A follower's forwarded reads are named by ids that no later incarnation of
the node reuses, so a leader's late answer to a read of a crashed node is
never taken for a read of the restarted one (issue 9, defect 1).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.node import Node
from kvstore.raft.core import RaftCore
from kvstore.raft.messages import AppendEntries, Message, ReadIndexResponse
from kvstore.testing.memory_cluster import InMemoryCluster


class _NoStorage:
    def append(self, entries: Any) -> None: ...

    def truncate_suffix(self, from_index: int) -> None: ...

    def sync(self, at_once: bool = False) -> Any: ...

    def save(self, state: Any) -> Any: ...

    def send(self, message: Message) -> None: ...


def _node(rng: random.Random | None, plants: frozenset[str] = frozenset()) -> Node:
    from twisted.internet.task import Clock

    from kvstore.raft.config import RaftConfig
    from kvstore.statemachine import KeyValueStateMachine

    clock = Clock()
    core = RaftCore(RaftConfig(node_id=0, peers=(1, 2)), clock, random.Random(0))
    storage = _NoStorage()
    return Node(core, storage, storage, KeyValueStateMachine(), storage, clock, member_addresses={},
                rng=rng, plants=plants)


class ReadIdTests(SynchronousTestCase):
    def test_restarted_follower_ignores_the_answer_to_its_previous_incarnations_read(self) -> None:
        """A leader's answer to a read that a follower forwarded before it
        crashed, delivered after it restarted, does not answer the restarted
        follower's read with the old read index: the read sees the write
        acknowledged before it began."""
        # Apply one entry per pass, as a restarted node replays its log in
        # batches: the follower's state machine passes the old read index
        # before it reaches the new write.
        cluster = InMemoryCluster(3, seed=11, max_apply_batch=1)
        leader = cluster.wait_for_leader()
        follower, other = (i for i in cluster.ids if i != leader)
        self.assertIsNone(cluster.resolve(cluster.node(leader).put("k", "old")))
        cluster.run(0.2)

        # The leader's answer to the follower's first read is held back in the
        # network (a slow confirmation, a delayed message).
        held: list[Message] = []

        def hold_answers(message: Message) -> bool:
            if isinstance(message.body, ReadIndexResponse) and message.receiver == follower:
                held.append(message)
                return True
            return False

        cluster.network.filters.append(hold_answers)
        first = cluster.node(follower).get("k")
        self.assertTrue(cluster.run_until(lambda: bool(held), timeout=1.0))
        cluster.network.filters.remove(hold_answers)
        old_answer = held[0]

        # The follower crashes; a write is acknowledged while it is down.
        cluster.crash(follower)
        self.assertIsInstance(cluster.resolve(first), Failure)
        self.assertIsNone(cluster.resolve(cluster.node(leader).put("k", "new")))

        # It restarts, lagging: it receives heartbeats (so it knows the commit
        # index up to what it holds) but not the new entry.
        send = cluster.network.send

        def without_entries(message: Message) -> None:
            body = message.body
            if message.receiver == follower and isinstance(body, AppendEntries) and body.entries:
                message = replace(message, body=replace(body, entries=()))
            send(message)

        self.patch(cluster.network, "send", without_entries)
        cluster.start(follower)
        cluster.run(0.2)
        self.assertLess(cluster.node(follower).state_machine.applied_index, cluster.node(leader).core.commit_index)

        # A client that saw the write acknowledged reads on the follower; the
        # old answer arrives first.
        read = cluster.node(follower).get("k")
        box: list[Any] = []
        read.addBoth(lambda result: (box.append(result), result)[1])
        cluster.run(0.0001)
        send(old_answer)
        cluster.run(0.05)
        self.assertNotEqual(box, ["old"])
        self.patch(cluster.network, "send", send)
        self.assertEqual(cluster.resolve(read), "new")

    def test_read_ids_start_at_a_random_point_of_a_wide_space(self) -> None:
        """Each boot's read ids start where the injected generator says, within
        the peer protocol's integer bound; two boots start far apart."""
        starts = [_node(random.Random(seed))._next_read_id for seed in range(2)]
        self.assertNotEqual(starts[0], starts[1])
        for start in starts:
            self.assertTrue(1 <= start <= 2**62)
        self.assertEqual(_node(random.Random(0))._next_read_id, starts[0])
        self.assertEqual(_node(random.Random(0), frozenset({"reuse-read-ids"}))._next_read_id, 1)
