# -*- test-case-name: tests.test_raft_membership_churn -*-
"""
Membership churn against Raft's safety properties, at the core level: random
schedules of adds (new nodes joining empty), removals, automatic
promotions, leadership transfers, crash-restarts, partitions and message
loss, with proposals throughout.  After every step: no two nodes commit
different entries at one index (State Machine Safety, checked by
L{Cores}), at most one leader per term (Election Safety), and every leader
holds every entry committed anywhere (Leader Completeness).  At the end,
with the network healed, the cluster elects a leader and commits again.

The simulator will run membership changes against the whole node; this
checks the core's rules alone, quickly, with plants that must be caught.
"""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import NotLeaderError, RaftCore, Role, TransferRefused
from kvstore.raft.membership import AddLearner, ChangeRefused, Configuration, PromoteLearner, RemoveMember
from kvstore.raft.messages import Message

from tests.raft_membership_support import HEARTBEAT, TIMEOUT, Conflict, Cores, address, configuration
from tests.support import parametrize


class _Churn:
    """One random schedule; raises AssertionError (or L{Conflict}) on a violation."""

    def __init__(self, seed: int, plants: frozenset[str] = frozenset()) -> None:
        self.rng = random.Random(seed)
        self.cores = Cores(configuration([1, 2, 3]), plants=plants, pre_vote=self.rng.random() < 0.5)
        self.next_id = 4
        self.leader_of_term: dict[int, int] = {}
        self.partition: set[int] = set()
        self.loss = 0.0

    def leaders(self) -> list[RaftCore]:
        return [c for c in self.cores.cores.values() if c.role is Role.LEADER]

    def _drop(self, message: Message) -> bool:
        if (message.sender in self.partition) != (message.receiver in self.partition):
            return True
        return self.rng.random() < self.loss

    def check(self) -> None:
        committed = self.cores.committed
        for core in self.leaders():
            first = self.leader_of_term.setdefault(core.term, core.node_id)
            assert first == core.node_id, f"term {core.term} has two leaders: {first} and {core.node_id}"
            for index, (term, payload) in committed.items():
                if core.term <= self.cores.commit_terms[index]:
                    continue  # maybe elected before that commit (a stale leader, cut off)
                held = core.entries(index, index)
                assert held and tuple(held[0]) == (index, term, payload), (
                    f"leader {core.node_id} of term {core.term} lacks committed entry {index}"
                )

    def step(self) -> None:
        rng, cores = self.rng, self.cores
        action = rng.choices(
            ["tick", "propose", "change", "transfer", "restart", "partition", "heal"],
            weights=[40, 20, 8, 3, 4, 3, 3],
        )[0]
        node_id = rng.choice(sorted(cores.cores))
        if action == "tick":
            cores.clocks[node_id].advance(rng.choice([HEARTBEAT, HEARTBEAT, TIMEOUT[0] / 2, TIMEOUT[1] + 0.01]))
        elif action == "propose":
            for leader in self.leaders():
                try:
                    leader.propose(b"Pk%d v" % rng.randrange(1000))
                except NotLeaderError:
                    pass
        elif action == "change":
            self._change()
        elif action == "transfer":
            for leader in self.leaders():
                try:
                    leader.transfer_leadership(rng.choice(sorted(leader.configuration.member_ids)))
                except (TransferRefused, NotLeaderError):
                    pass
        elif action == "restart":
            cores.restart(node_id)
        elif action == "partition":
            self.partition = {i for i in cores.cores if rng.random() < 0.4}
            self.loss = rng.choice([0.0, 0.1, 0.3])
        else:
            self.partition, self.loss = set(), 0.0
        cores.pump(drop=self._drop)
        self.check()

    def _change(self) -> None:
        rng, cores = self.rng, self.cores
        for leader in self.leaders():
            members = leader.configuration
            kind = rng.choice(["add", "add", "remove", "promote"])
            try:
                if kind == "add" and len(members.member_ids) < 7:
                    new = self.next_id
                    if leader.propose_change(AddLearner(new, address(new))) is not None:
                        self.next_id += 1
                        cores.add(new, Configuration({}))
                elif kind == "remove":
                    leader.propose_change(RemoveMember(rng.choice(sorted(members.member_ids))))
                elif kind == "promote" and members.learner_ids:
                    leader.propose_change(PromoteLearner(rng.choice(sorted(members.learner_ids))))
            except (ChangeRefused, NotLeaderError):
                pass

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()
        # Healed: a leader is elected among the voters and commits again.
        self.partition, self.loss = set(), 0.0
        for _ in range(200):
            for node_id in sorted(self.cores.cores):
                self.cores.clocks[node_id].advance(HEARTBEAT)
                self.cores.pump()
            self.check()
            leaders = [c for c in self.leaders() if c.node_id in c.configuration.voter_ids]
            if leaders and leaders[0].transfer_target is None:
                try:
                    index, term = leaders[0].propose(b"Pfinal v")
                except NotLeaderError:
                    continue
                self.cores.pump()
                self.check()
                leader = leaders[0]
                assert leader.commit_index >= index and leader.term_at(index) == term, "the healed cluster commits nothing"
                return
        raise AssertionError("no leader after healing")


class ChurnTests(SynchronousTestCase):
    """Random membership churn with faults keeps Raft's safety properties."""

    @parametrize("seed", list(range(12)))
    def test_churn_is_safe_and_live(self, seed: int) -> None:
        """A random schedule of changes, transfers, restarts, partitions and loss violates no safety property, and
        the healed cluster commits again."""
        churn = _Churn(seed)
        churn.run(250)
        self.assertGreater(len(churn.cores.committed), 20)

    @parametrize("plant", ["two-changes-at-once", "learner-counted-in-quorum"])
    def test_planted_bugs_are_caught(self, plant: str) -> None:
        """Each planted membership bug breaks a safety property in one of a few schedules."""
        for seed in range(200):
            try:
                _Churn(seed, frozenset({plant})).run(250)
            except (AssertionError, Conflict):
                return
        self.fail(f"{plant} went unnoticed in 200 schedules")
