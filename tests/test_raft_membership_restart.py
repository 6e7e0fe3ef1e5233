# -*- test-case-name: tests.test_raft_membership_restart -*-
"""
The configuration across restarts and snapshots (issue 13): a core starts
from the bootstrap configuration or the snapshot's, replays the
configuration entries of its log after it, records the configuration as of
each snapshot it is told of, offers it with the snapshot, and adopts the
one a leader's snapshot carries.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, RaftCore, Role, SnapshotPoint
from kvstore.raft.membership import AddLearner, Configuration, encode_configuration_entry
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, InstallSnapshot, Message, RequestVoteResponse

from tests.raft_membership_support import TIMEOUT, Cores, address, configuration, make_core

THREE = configuration([1, 2, 3])
WITH_LEARNER = configuration([1, 2, 3], [4])
PROMOTED = configuration([1, 2, 3, 4])


def log_with_configurations(first: int, last: int, term: int, changes: dict[int, Configuration]) -> list[tuple[int, int, bytes]]:
    """Entries C{first..last} of C{term}: configuration entries at the indexes of C{changes}, commands elsewhere."""
    return [
        (i, term, encode_configuration_entry(changes[i]) if i in changes else b"Pk%d v" % i)
        for i in range(first, last + 1)
    ]


def elect(core: RaftCore, clock: Clock, voters: list[int]) -> None:
    clock.advance(TIMEOUT[1] + 0.01)
    core.ready()
    for voter in voters:
        core.step(Message(voter, core.node_id, RequestVoteResponse(core.term, True)))
    assert core.role is Role.LEADER


class BootstrapTests(SynchronousTestCase):
    """A core with neither snapshot nor configuration entries."""

    def test_empty_core_starts_from_the_configuration_given(self) -> None:
        """With no snapshot and an empty log the configuration given is current, addresses included."""
        core = make_core(1, WITH_LEARNER)
        self.assertEqual(core.configuration, WITH_LEARNER)
        self.assertEqual((core.configuration_index, core.configuration_change_pending), (0, False))

    def test_default_is_todays_command_line(self) -> None:
        """Without a configuration the core takes RaftConfig's node and peers as voters with unknown addresses."""
        core = RaftCore(RaftConfig(node_id=0, peers=(1, 2)), Clock(), random.Random(0))
        self.assertEqual(core.configuration, Configuration({0: "", 1: "", 2: ""}))

    def test_log_configuration_entries_are_replayed(self) -> None:
        """Configuration entries in the log after the bootstrap one make the last of them current."""
        entries = log_with_configurations(1, 6, 1, {2: WITH_LEARNER, 4: PROMOTED})
        core = make_core(1, THREE, entries=entries, hard_state=HardState(1, None), commit_index=3)
        self.assertEqual(core.configuration, PROMOTED)
        self.assertEqual((core.configuration_index, core.configuration_change_pending), (4, True))
        self.assertEqual([core.configuration_at(i) for i in (0, 1, 2, 3, 4, 6)],
                         [THREE, THREE, WITH_LEARNER, WITH_LEARNER, PROMOTED, PROMOTED])


class SnapshotRestartTests(SynchronousTestCase):
    """A core restarted from a snapshot, its configuration, and the log around it."""

    def test_configuration_of_the_snapshot_then_later_entries(self) -> None:
        """The snapshot's configuration holds at the snapshot; entries after it are replayed, older held ones not."""
        entries = log_with_configurations(6, 15, 2, {8: configuration([1, 2]), 12: PROMOTED})
        core = make_core(
            1, WITH_LEARNER, entries=entries, hard_state=HardState(2, None), snapshot=SnapshotPoint(10, 2),
            commit_index=13,
        )
        self.assertEqual(core.configuration, PROMOTED)
        self.assertEqual(core.snapshot_configuration, WITH_LEARNER)
        self.assertEqual(core.configuration_at(10), WITH_LEARNER)
        self.assertEqual(core.configuration_at(11), WITH_LEARNER)
        self.assertEqual(core.configuration_at(12), PROMOTED)
        self.assertRaises(ValueError, core.configuration_at, 9)
        self.assertFalse(core.configuration_change_pending)

    def test_restarted_learner_does_not_campaign(self) -> None:
        """A learner restarted from a snapshot whose configuration lists it as learner never campaigns."""
        clock = Clock()
        core = make_core(4, WITH_LEARNER, clock, hard_state=HardState(2, None), snapshot=SnapshotPoint(10, 2),
                         commit_index=10)
        for _ in range(5):
            clock.advance(TIMEOUT[1] + 0.01)
        self.assertEqual((core.role, core.term), (Role.FOLLOWER, 2))

    def test_snapshot_taken_records_the_configuration_at_its_index(self) -> None:
        """snapshot_taken keeps the configuration in effect at the snapshot's index, not a later one."""
        entries = log_with_configurations(1, 8, 1, {3: WITH_LEARNER, 6: PROMOTED})
        core = make_core(1, THREE, entries=entries, hard_state=HardState(1, None), commit_index=8)
        core.ready()
        core.snapshot_taken(5, 1)
        self.assertEqual(core.snapshot_configuration, WITH_LEARNER)
        core.compact(5)
        self.assertEqual(core.configuration_at(5), WITH_LEARNER)
        self.assertEqual(core.configuration_at(7), PROMOTED)
        self.assertRaises(ValueError, core.configuration_at, 4)
        core.snapshot_taken(7, 1)
        self.assertEqual(core.snapshot_configuration, PROMOTED)


class SnapshotTransferTests(SynchronousTestCase):
    """A snapshot offer carries the configuration, and installing one adopts it."""

    def test_leader_offers_the_configuration_of_its_snapshot(self) -> None:
        """The InstallSnapshot a leader emits for a follower behind its compacted log names the snapshot's configuration."""
        clock = Clock()
        entries = log_with_configurations(21, 25, 2, {23: PROMOTED})
        leader = make_core(1, WITH_LEARNER, clock, entries=entries, hard_state=HardState(2, None),
                           snapshot=SnapshotPoint(20, 2), commit_index=25)
        leader.ready()
        elect(leader, clock, [2, 3])
        leader.ready()
        leader.step(Message(2, 1, AppendEntriesResponse(3, False, 25, 5, 0)))
        offers = [m.body for m in leader.ready().messages if isinstance(m.body, InstallSnapshot)]
        self.assertEqual(offers, [InstallSnapshot(3, 20, 2, WITH_LEARNER)])

    def test_follower_adopts_the_snapshots_configuration(self) -> None:
        """A follower that installs a snapshot takes its configuration, and its own later entries are gone."""
        entries = log_with_configurations(1, 3, 1, {2: configuration([1, 2, 3], [9])})
        follower = make_core(4, THREE, entries=entries, hard_state=HardState(2, None), commit_index=1)
        follower.step(Message(1, 4, InstallSnapshot(3, 40, 3, WITH_LEARNER)))
        rd = follower.ready()
        self.assertEqual(rd.install_snapshot, SnapshotPoint(40, 3))
        self.assertEqual(follower.configuration, WITH_LEARNER)
        self.assertEqual(follower.snapshot_configuration, WITH_LEARNER)
        self.assertEqual(follower.configuration_index, 40)
        self.assertFalse(follower.configuration_change_pending)

    def test_install_without_a_configuration_keeps_the_followers(self) -> None:
        """An InstallSnapshot from a node that does not send one leaves the follower's configuration in force."""
        follower = make_core(4, WITH_LEARNER, hard_state=HardState(2, None))
        follower.step(Message(1, 4, InstallSnapshot(3, 40, 3)))
        follower.ready()
        self.assertEqual((follower.configuration, follower.configuration_index), (WITH_LEARNER, 40))

    def test_new_member_catches_up_through_a_snapshot_with_the_configuration(self) -> None:
        """A learner added to a compacted cluster is offered the snapshot, whose configuration it adopts, then the log."""
        cores = Cores(THREE)
        leader = cores.elect(1)
        for _ in range(5):
            leader.propose(b"Pk v")
        cores.pump()
        leader.snapshot_taken(leader.applied, leader.term)
        leader.compact(leader.applied)
        leader.propose_change(AddLearner(4, address(4)))
        cores.pump()
        learner = cores.add(4, Configuration({}))
        offers = []
        cores.heartbeat(1, drop=lambda m: isinstance(m.body, InstallSnapshot) and not offers.append(m.body))  # type: ignore[func-returns-value]
        self.assertEqual([(o.index, o.configuration) for o in offers], [(leader.snapshot_index, THREE)])
        # The node would now transfer the file; the follower's node steps the offer once it is on disk.
        learner.step(Message(1, 4, offers[0]))
        cores.pump()
        leader.report_snapshot(4, True)
        cores.pump()
        self.assertEqual(learner.last_index, leader.last_index)
        self.assertEqual(learner.configuration, WITH_LEARNER)
