# -*- test-case-name: tests.test_snapshot_transfer_faults -*-
"""
The snapshot transfer on a bad network: chunks and answers lost,
duplicated and delivered in any order.  Whatever happens, the follower
installs the leader's exact file at most once per transfer, keeps no
partial file at the end, and the leader ends up told it succeeded (the core
offering again after each failure, as it does).
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.messages import AppendEntriesResponse, Message
from kvstore.storage.snapshots import snapshot_name
from tests.snapshot_transfer_support import FOLLOWER, LEADER, TERM, Pair


def transfer_over_bad_network(seed: int, drop: float, duplicate: float, window: int) -> Pair:
    rng = random.Random(seed)
    pair = Pair(6_000, chunk_bytes=500, window=window, timeout=1.0, max_retries=4)
    network = pair.network

    def send(message: Message) -> None:
        network.sent.append(message)
        if rng.random() < drop:
            return
        network.queue.append(message)
        if rng.random() < duplicate:
            network.queue.append(message)

    pair.leader._send = send  # type: ignore[method-assign]
    pair.follower._send = send  # type: ignore[method-assign]
    pair.follower.receiver._send = send  # type: ignore[method-assign]

    def installed(leader: int, term: int, index: int, snapshot_term: int) -> None:
        pair.installs.append((leader, term, index, snapshot_term))
        # The follower's core acknowledges over the same bad network.
        send(Message(FOLLOWER, LEADER, AppendEntriesResponse(term, True, index)))

    pair.follower.receiver._installed = installed  # type: ignore[method-assign]
    offers = 0
    with capturedLogs():
        while offers < 20 and (not pair.reports or not pair.reports[-1][1]):
            if not pair.leader.senders:
                pair.offer()
                offers += 1
            for _ in range(5000):
                if not pair.leader.senders:
                    break
                for _ in range(rng.randrange(1, 4)):
                    if network.queue:
                        pair.deliver_one(rng.randrange(len(network.queue)))
                if not network.queue or rng.random() < 0.1:
                    pair.clock.advance(0.25)
        # Let any stray message and timer play out.
        for _ in range(400):
            while network.queue:
                pair.deliver_one(rng.randrange(len(network.queue)))
            pair.clock.advance(0.25)
    return pair


class BadNetworkTests(SynchronousTestCase):
    """Loss, duplication and reordering never corrupt or wedge a transfer."""

    @given(
        seed=st.integers(0, 2**32),
        drop=st.sampled_from([0.0, 0.05, 0.2, 0.4]),
        duplicate=st.sampled_from([0.0, 0.1, 0.3]),
        window=st.integers(1, 5),
    )
    @settings(max_examples=60, deadline=None)
    def test_exact_file_installed_and_leader_told(self, seed: int, drop: float, duplicate: float, window: int) -> None:
        """The follower ends with exactly the leader's file, no partial file,
        and the leader's last report is a success."""
        pair = transfer_over_bad_network(seed, drop, duplicate, window)
        self.assertEqual(pair.reports[-1], (FOLLOWER, True), pair.reports)
        self.assertGreaterEqual(len(pair.installs), 1)
        self.assertTrue(all(i == (LEADER, TERM, 50, 2) for i in pair.installs))
        self.assertEqual(pair.follower_files(), [snapshot_name(50, 2)])
        self.assertEqual(pair.follower_store.verify(pair.installed_files()[0]).digest, pair.info.digest)
        self.assertEqual(pair.leader.protected(), frozenset())
        self.assertIsNone(pair.follower.receiver.in_progress)
