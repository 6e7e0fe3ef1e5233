# -*- test-case-name: tests.test_raft_quorum -*-
"""
Quorum sizes for clusters of 1 to 7 members, odd and even, and every
rejection of L{RaftConfig.validate}.

Even sizes matter: a quorum formula that is wrong only for even sizes
(C{len(peers) // 2 + 1}) passes every test that runs 3 or 5 nodes, yet lets
a 4-node cluster elect two leaders in one term.  So each quorum-counting
rule of the core (votes, commit, the read-index round, check-quorum) is
driven here at every size from 1 to 7, at the boundary: one acknowledgement
short of a majority must not do, a majority must.
"""

from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import RaftCore, Ready, Role
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message, RequestVoteResponse

HEARTBEAT = 0.05
TIMEOUT = (0.3, 0.6)

#: Members -> how many make a majority, written out rather than computed.
EXPECTED_QUORUM = {1: 1, 2: 2, 3: 2, 4: 3, 5: 3, 6: 4, 7: 4}


def make_core(size: int, clock: Clock, **options: object) -> RaftCore:
    """A started core for node 1 of a C{size}-member cluster (ids 1..size)."""
    options.setdefault("pre_vote", False)
    config = RaftConfig(
        node_id=1,
        peers=tuple(range(2, size + 1)),
        heartbeat_interval=HEARTBEAT,
        election_timeout_min=TIMEOUT[0],
        election_timeout_max=TIMEOUT[1],
        **options,  # type: ignore[arg-type]
    )
    core = RaftCore(config, clock, random.Random(size))
    core.start()
    return core


def drain(core: RaftCore) -> Ready:
    """Take a Ready and report it durable at once."""
    rd = core.ready()
    if rd.needs_persist():
        core.persisted(*rd.persist_through)
    return rd


def become_candidate(core: RaftCore, clock: Clock) -> None:
    clock.advance(TIMEOUT[1] + 0.01)
    drain(core)


def elect(core: RaftCore, clock: Clock) -> None:
    """Make node 1 leader with the votes of every peer."""
    if core.role is not Role.LEADER:
        become_candidate(core, clock)
        for peer in core.config.peers:
            core.step(Message(peer, 1, RequestVoteResponse(core.term, True, False)))
    assert core.role is Role.LEADER
    drain(core)


class QuorumSizeTests(SynchronousTestCase):
    """The majority size itself."""

    def test_quorum_for_sizes_one_to_seven(self) -> None:
        """A cluster of n members needs floor(n/2) + 1 of them, for n = 1..7."""
        for size, expected in EXPECTED_QUORUM.items():
            with self.subTest(size=size):
                config = RaftConfig(node_id=1, peers=tuple(range(2, size + 1)))
                self.assertEqual(config.quorum, expected)
                self.assertEqual(len(config.members), size)

    def test_two_disjoint_halves_never_both_have_a_quorum(self) -> None:
        """For every size, no two disjoint groups of members both reach the
        quorum (the property that rules out two leaders in one term)."""
        for size in EXPECTED_QUORUM:
            with self.subTest(size=size):
                quorum = RaftConfig(node_id=1, peers=tuple(range(2, size + 1))).quorum
                self.assertGreater(2 * quorum, size)
                self.assertLessEqual(quorum, size)


class QuorumRulesAtEverySizeTests(SynchronousTestCase):
    """Each rule of the core that counts a majority, at every size 1..7."""

    def test_election_needs_exactly_a_majority_of_votes(self) -> None:
        """A candidate with one vote short of a majority (its own included)
        stays a candidate; the vote that completes the majority makes it
        leader."""
        for size, quorum in EXPECTED_QUORUM.items():
            with self.subTest(size=size):
                clock = Clock()
                core = make_core(size, clock)
                if size == 1:
                    self.assertIs(core.role, Role.LEADER)  # its own vote is a majority
                    continue
                become_candidate(core, clock)
                self.assertIs(core.role, Role.CANDIDATE)
                voters = list(core.config.peers)[: quorum - 1]
                for voter in voters[:-1]:
                    core.step(Message(voter, 1, RequestVoteResponse(core.term, True, False)))
                self.assertIs(core.role, Role.CANDIDATE, f"leader with {quorum - 1} of {size} votes")
                core.step(Message(voters[-1], 1, RequestVoteResponse(core.term, True, False)))
                self.assertIs(core.role, Role.LEADER)

    def test_pre_vote_needs_exactly_a_majority(self) -> None:
        """A pre-candidate starts a real election only once a majority
        (itself included) granted its pre-vote."""
        for size, quorum in EXPECTED_QUORUM.items():
            if size == 1:
                continue
            with self.subTest(size=size):
                clock = Clock()
                core = make_core(size, clock, pre_vote=True)
                become_candidate(core, clock)
                self.assertIs(core.role, Role.PRE_CANDIDATE)
                asked = core.term + 1
                voters = list(core.config.peers)[: quorum - 1]
                for voter in voters[:-1]:
                    core.step(Message(voter, 1, RequestVoteResponse(asked, True, True)))
                self.assertIs(core.role, Role.PRE_CANDIDATE)
                core.step(Message(voters[-1], 1, RequestVoteResponse(asked, True, True)))
                self.assertIn(core.role, (Role.CANDIDATE, Role.LEADER))
                self.assertEqual(core.term, asked)

    def test_commit_needs_exactly_a_majority_of_replicas(self) -> None:
        """The leader commits an entry once it is durable on a majority (its
        own copy included), not one replica earlier."""
        for size, quorum in EXPECTED_QUORUM.items():
            with self.subTest(size=size):
                clock = Clock()
                core = make_core(size, clock)
                elect(core, clock)
                index, _ = core.propose(b"write")
                drain(core)  # the leader's own copy is durable
                if size == 1:
                    self.assertEqual(core.commit_index, index)
                    continue
                acks = list(core.config.peers)[: quorum - 1]
                for peer in acks[:-1]:
                    core.step(Message(peer, 1, AppendEntriesResponse(core.term, True, index)))
                self.assertLess(core.commit_index, index, f"committed on {quorum - 1} of {size} replicas")
                core.step(Message(acks[-1], 1, AppendEntriesResponse(core.term, True, index)))
                self.assertEqual(core.commit_index, index)

    def test_read_index_needs_exactly_a_majority_of_round_acks(self) -> None:
        """A read on the leader is answered only after a majority (the leader
        included) acknowledged a heartbeat round sent after the read came."""
        for size, quorum in EXPECTED_QUORUM.items():
            with self.subTest(size=size):
                clock = Clock()
                core = make_core(size, clock)
                elect(core, clock)
                for peer in core.config.peers:  # commit this term's no-op
                    core.step(Message(peer, 1, AppendEntriesResponse(core.term, True, core.last_index)))
                drain(core)
                core.request_read(7)
                rd = drain(core)
                if size == 1:
                    self.assertEqual([r.request_id for r in rd.reads], [7])
                    continue
                self.assertEqual(rd.reads, [])
                # The heartbeat round started for this read.
                read_round = max(m.body.round for m in rd.messages if isinstance(m.body, AppendEntries))
                acks = list(core.config.peers)[: quorum - 1]
                for peer in acks[:-1]:
                    core.step(Message(peer, 1, AppendEntriesResponse(core.term, True, core.last_index, round=read_round)))
                self.assertEqual(drain(core).reads, [], f"read confirmed by {quorum - 1} of {size}")
                core.step(Message(acks[-1], 1, AppendEntriesResponse(core.term, True, core.last_index, round=read_round)))
                self.assertEqual([r.request_id for r in drain(core).reads], [7])

    def test_check_quorum_needs_a_majority_heard_from(self) -> None:
        """A leader that heard from one member short of a majority during an
        election timeout steps down; one that heard from a majority stays."""
        for size, quorum in EXPECTED_QUORUM.items():
            if size == 1:
                continue
            for heard in (quorum - 2, quorum - 1):
                with self.subTest(size=size, heard=heard):
                    clock = Clock()
                    core = make_core(size, clock)
                    elect(core, clock)
                    deadline = clock.seconds() + TIMEOUT[1] * 3
                    while clock.seconds() < deadline and core.role is Role.LEADER:
                        for peer in list(core.config.peers)[:heard]:
                            core.step(Message(peer, 1, AppendEntriesResponse(core.term, True, core.last_index)))
                        drain(core)
                        clock.advance(HEARTBEAT)
                    if heard + 1 >= quorum:
                        self.assertIs(core.role, Role.LEADER)
                    else:
                        self.assertIsNot(core.role, Role.LEADER, f"still leads hearing {heard + 1} of {size}")


class ValidationTests(SynchronousTestCase):
    """Each way L{RaftConfig.validate} refuses a configuration, and that the
    core refuses to start with one."""

    def assertRejected(self, message: str, **fields: object) -> None:
        fields.setdefault("node_id", 1)
        config = RaftConfig(**fields)  # type: ignore[arg-type]
        error = self.assertRaises(ValueError, config.validate)
        self.assertIn(message, str(error))
        error = self.assertRaises(ValueError, RaftCore, config, Clock(), random.Random(0))
        self.assertIn(message, str(error))

    def test_defaults_are_valid(self) -> None:
        """The defaults, for every cluster size, pass validation."""
        for size in EXPECTED_QUORUM:
            RaftConfig(node_id=1, peers=tuple(range(2, size + 1))).validate()

    def test_own_id_among_peers(self) -> None:
        """A node listed among its own peers is refused."""
        self.assertRejected("cannot be its own peer", peers=(1, 2))

    def test_duplicate_peers(self) -> None:
        """A peer listed twice is refused (it would be counted twice)."""
        self.assertRejected("duplicate peer ids", peers=(2, 3, 2))

    def test_heartbeat_not_positive(self) -> None:
        """A zero or negative heartbeat interval is refused."""
        for interval in (0.0, -0.1):
            with self.subTest(interval=interval):
                self.assertRejected("heartbeat_interval must be positive", heartbeat_interval=interval)

    def test_election_timeout_below_three_heartbeats(self) -> None:
        """An election timeout of three heartbeats or less is refused (the
        one rule, which twistd kvstore's options apply too); just above three
        is accepted."""
        self.assertRejected(
            "must be more than 3 x heartbeat_interval",
            heartbeat_interval=0.1,
            election_timeout_min=0.29,
            election_timeout_max=1.0,
        )
        self.assertRejected(
            "must be more than 3 x heartbeat_interval",
            heartbeat_interval=0.125,
            election_timeout_min=0.375,
            election_timeout_max=1.0,
        )
        RaftConfig(node_id=1, heartbeat_interval=0.125, election_timeout_min=0.376, election_timeout_max=1.0).validate()

    def test_election_timeout_range_empty(self) -> None:
        """A maximum election timeout equal to or below the minimum is
        refused (randomization needs a range)."""
        for maximum in (1.0, 0.9):
            with self.subTest(maximum=maximum):
                self.assertRejected(
                    "must be more than its minimum", election_timeout_min=1.0, election_timeout_max=maximum
                )

    def test_limits_below_one(self) -> None:
        """Each batching and pipelining limit must be at least 1; 1 is
        accepted."""
        for name in ("max_append_bytes", "max_append_entries", "max_inflight", "max_apply_batch"):
            for value in (0, -1):
                with self.subTest(name=name, value=value):
                    self.assertRejected(f"{name} must be at least 1", **{name: value})
            RaftConfig(node_id=1, **{name: 1}).validate()  # type: ignore[arg-type]
