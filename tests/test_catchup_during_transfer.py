# -*- test-case-name: tests.test_catchup_during_transfer -*-
"""
A follower that needed a snapshot catches up with that one snapshot while
writes go on: the leader does not compact its log past the snapshot it is
sending (or past where a follower that just installed one is catching up
from), within a cap, so the follower does not need another snapshot as
soon as it has installed the first (issue 12's figure 4 livelock).
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.snapshots import SnapshotPolicy
from kvstore.raft.core import RaftCore
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, InstallSnapshot, Message
from kvstore.storage.snapshots import snapshot_name
from tests.node_snapshot_cluster import SnapshotCluster
from tests.snapshot_support import content_for, write_snapshot
from tests.test_node_snapshots import Harness, machine_with
from tests.snapshot_transfer_support import FOLLOWER, LEADER, TERM, Pair
from tests.test_raft_compaction import ack, leader_with_tail
from tests.test_raft_core import HEARTBEAT, bodies, drain, msg


def leader_sending_snapshot() -> tuple[Clock, RaftCore]:
    """
    Node 1 leads term 3 with a snapshot at 20 and the log 16..26; follower
    2 needs entry 6, so it is offered the snapshot at 20; follower 3 keeps
    up.  Then 30 more entries are written, committed and applied, and the
    leader snapshots at 56.
    """
    clock = Clock()
    leader = leader_with_tail(clock)
    drain(leader)
    leader.step(msg(2, 1, AppendEntriesResponse(3, False, 25, 5, 0)))
    (offer,) = bodies(drain(leader).messages, InstallSnapshot, to=2)
    assert offer.index == 20
    for i in range(30):
        leader.propose(b"w%d" % i)
    drain(leader)
    ack(leader, 3, leader.last_index)
    drain(leader)
    assert leader.applied == leader.last_index == 56
    leader.snapshot_taken(56, 3)
    return clock, leader


class CompactionPointTests(SynchronousTestCase):
    """RaftCore.compaction_point: how far the node may really compact."""

    def test_not_past_the_snapshot_being_sent(self) -> None:
        """While a follower is being sent the snapshot at 20, compaction stops at 20, not at the catch-up point."""
        _, leader = leader_sending_snapshot()
        self.assertEqual(leader.compaction_point(51, max_held=1000), 20)
        leader.compact(leader.compaction_point(51, max_held=1000))
        self.assertEqual(leader.first_index, 21)

    def test_the_cap_applies(self) -> None:
        """At most max_held entries before the catch-up point are held for the follower."""
        _, leader = leader_sending_snapshot()
        self.assertEqual(leader.compaction_point(51, max_held=10), 41)
        self.assertEqual(leader.compaction_point(51, max_held=0), 51)

    def test_holds_while_the_follower_catches_up_after_the_install(self) -> None:
        """After the install the log is held at the follower's match index until it has what was written meanwhile."""
        _, leader = leader_sending_snapshot()
        ack(leader, 2, 20)  # the install is acknowledged
        appends = bodies(drain(leader).messages, AppendEntries, to=2)
        self.assertEqual(appends[0].prev_log_index, 20)
        self.assertEqual(leader.compaction_point(51, max_held=1000), 20)
        ack(leader, 2, 40)
        self.assertEqual(leader.compaction_point(51, max_held=1000), 40)
        ack(leader, 2, 56)
        self.assertEqual(leader.compaction_point(51, max_held=1000), 51)
        # Caught up: a later lag no longer holds anything back.
        leader.propose(b"more")
        self.assertEqual(leader.compaction_point(51, max_held=1000), 51)

    def test_a_failed_transfer_holds_nothing(self) -> None:
        """A transfer given up leaves the follower probing: nothing is held for it (it is offered the newest snapshot next)."""
        clock, leader = leader_sending_snapshot()
        leader.report_snapshot(2, False)
        self.assertEqual(leader.compaction_point(51, max_held=1000), 51)

    def test_followers_only_matter_on_a_leader(self) -> None:
        """A follower's core compacts where asked."""
        _, leader = leader_sending_snapshot()
        leader.step(msg(2, 1, AppendEntries(4, 56, 3, (), 56, 0)))
        self.assertEqual(leader.compaction_point(51, max_held=1000), 51)


class HoldCapTests(SynchronousTestCase):
    """NodeSnapshots.max_held_for_followers: the cap on what a leader keeps for such a follower."""

    def test_entries_before_any_snapshot(self) -> None:
        """Before a snapshot measured the entries' size, four snapshots' worth of entries (or the catch-up window)."""
        self.assertEqual(Harness(SnapshotPolicy(entries=100, catchup_entries=5)).snapshots.max_held_for_followers(), 400)
        self.assertEqual(Harness(SnapshotPolicy(entries=100, catchup_entries=900)).snapshots.max_held_for_followers(), 900)

    def test_snapshot_bytes_of_log(self) -> None:
        """After a snapshot, as many entries as --snapshot-bytes of log holds at the interval's bytes per entry, if more."""
        harness = Harness(SnapshotPolicy(entries=100, bytes=96_000, catchup_entries=5))
        snapshots = harness.snapshots
        snapshots.note_applied(50 * (96 - 32), 50)  # 96 bytes of log per entry
        harness.take(machine_with(10))
        self.assertEqual(snapshots.max_held_for_followers(), 1000)
        snapshots.note_applied(10 * (9600 - 32), 10)  # big values: 9600 bytes per entry
        harness.take(machine_with(10))
        self.assertEqual(snapshots.max_held_for_followers(), 400)


class RenewedOfferTests(SynchronousTestCase):
    """RaftCore.snapshot_offer_renewed: the transfer sends a newer snapshot than the one offered."""

    def test_transfer_state_follows_the_newer_snapshot(self) -> None:
        """Heartbeats are anchored at the newer snapshot, an acknowledgement of the older one does not end the transfer state, and compaction holds only after the newer one."""
        clock, leader = leader_sending_snapshot()
        leader.snapshot_offer_renewed(2, 56, 3)
        self.assertEqual(leader.compaction_point(51, max_held=1000), 51)
        ack(leader, 2, 20)  # a heartbeat anchored at the old snapshot, answered after the install
        clock.advance(HEARTBEAT)
        rd = drain(leader)
        self.assertEqual(bodies(rd.messages, InstallSnapshot), [])
        self.assertEqual([(h.prev_log_index, h.prev_log_term) for h in bodies(rd.messages, AppendEntries, to=2)], [(56, 3)])
        ack(leader, 2, 56)
        self.assertEqual(bodies(drain(leader).messages, InstallSnapshot), [])
        self.assertEqual(leader.compaction_point(51, max_held=1000), 51)

    def test_older_unknown_or_wrong_renewals_are_ignored(self) -> None:
        """A renewal naming an older snapshot, one past the leader's, or the wrong term changes nothing."""
        clock, leader = leader_sending_snapshot()
        for index, term in [(10, 2), (57, 3), (56, 2), (40, 2)]:
            leader.snapshot_offer_renewed(2, index, term)
            self.assertEqual(leader.compaction_point(51, max_held=1000), 20, (index, term))


class CatchUpDuringSlowTransferTests(SynchronousTestCase):
    """A node cluster (tests.node_snapshot_cluster) whose snapshot transfer is slow."""

    def test_one_install_suffices_while_writes_go_on(self) -> None:
        """A follower cut off past the catch-up window catches up with a single install although writes during the transfer span several snapshots."""
        cluster = SnapshotCluster(policy=SnapshotPolicy(entries=20, catchup_entries=5))
        cluster.start_all()
        with capturedLogs():
            cluster.write_many(10)
            self.assertTrue(cluster.run_until(cluster.converged))
            leader = cluster.leader()
            assert leader is not None
            follower = next(i for i in cluster.ids if i != leader)
            cluster.crash(follower)
            cluster.write_many(100, start=10)
            transfer = cluster.transfers[leader]
            transfer.delay = 5.0  # a big snapshot on a slow link
            # The quick offers to the down follower fail; the next one is
            # slow (and is made before the follower is back: it delivers
            # the snapshot of that moment).
            cluster.run(0.2)
            self.assertEqual(transfer.sent, [])
            cluster.start(follower)
            # About 50 writes (2.5 snapshots' worth, 10 catch-up windows)
            # arrive while the snapshot travels.
            expected = cluster.write_many(50, start=110)
            self.assertTrue(cluster.run_until(cluster.converged, timeout=30.0))
            cluster.run(0.5)
        self.assertEqual(cluster.leader(), leader)
        self.assertEqual([s for s in transfer.sent if s[0] == follower][1:], [])
        self.assertEqual(len(transfer.sent), 1)
        self.assertEqual(cluster.data(follower), cluster.data(leader))
        for key, value in expected.items():
            self.assertEqual(cluster.data(follower)[key], value)
        self.assertEqual(cluster.fatal, [])


class RetriedOfferTests(SynchronousTestCase):
    """The snapshot transfer's retry after a failed transfer (kvstore.node.snapshot_transfer)."""

    def test_retry_after_back_off_sends_the_newest_snapshot(self) -> None:
        """A retried offer that waited out its back-off sends the snapshot taken meanwhile, not the one offered before it."""
        newest: list[tuple[int, int] | None] = [None]
        renewed: list[tuple[int, int, int]] = []
        pair = Pair(3_000, newest=lambda: newest[0], renewed=lambda *a: renewed.append(a))
        with capturedLogs():
            pair.offer()
            pair.leader.unsendable(pair.network.sent[-1])
            pair.network.queue.clear()
            self.assertEqual(pair.reports, [(FOLLOWER, False)])
            pair.offer()  # the core offers its snapshot at 50 again: it waits 1 s
            write_snapshot(pair.leader_store, 80, 2, content_for(80, 3_000))
            newest[0] = (80, 2)
            pair.clock.advance(1.0)
            self.assertEqual({c.index for c in pair.network.chunks_sent()[4:]}, {80})
            self.assertEqual(renewed, [(FOLLOWER, 80, 2)])
            self.assertEqual(pair.leader.protected(), frozenset({snapshot_name(80, 2)}))
            pair.deliver_all()
            pair.leader.receive(Message(FOLLOWER, LEADER, AppendEntriesResponse(TERM, True, 80)))
        self.assertEqual([i[2:] for i in pair.installs], [(80, 2)])
        self.assertEqual(pair.reports, [(FOLLOWER, False), (FOLLOWER, True)])
        self.assertEqual(pair.leader.protected(), frozenset())

    def test_retry_without_a_newer_snapshot_sends_the_offered_one(self) -> None:
        """With no newer snapshot the retried offer sends the one offered."""
        pair = Pair(3_000, newest=lambda: (50, 2))
        with capturedLogs():
            pair.offer()
            pair.leader.unsendable(pair.network.sent[-1])
            pair.network.queue.clear()
            pair.offer()
            pair.clock.advance(1.0)
            self.assertEqual({c.index for c in pair.network.chunks_sent()[4:]}, {50})
            pair.deliver_all()
        self.assertEqual([i[2:] for i in pair.installs], [(50, 2)])
