# -*- test-case-name: tests.test_raft_cluster -*-
"""
Scenario tests of whole clusters of production L{Node}s on simulated time
(L{kvstore.testing.memory_cluster.InMemoryCluster}): elections, partitions,
crashes, restarts and linearizable reads, with Raft's safety properties
checked after every step of simulated time.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.errors import NotLeader, OutcomeUnknown, Unavailable
from kvstore.raft.core import Role
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message, RequestVote, RequestVoteResponse
from kvstore.testing.memory_cluster import InMemoryCluster
from kvstore.testing.sim.network import Weather

from tests.support import parametrize


class SafetyChecker:
    """
    Watches a cluster and asserts Raft's safety properties after every step:
    at most one leader per term (Election Safety), every node applies the
    same command at each index (State Machine Safety), applies in order,
    once, only committed entries, and its applied index never decreases.
    """

    def __init__(self, cluster: InMemoryCluster) -> None:
        self.cluster = cluster
        self.leader_of_term: dict[int, int] = {}
        self.applied: dict[int, tuple[int, bytes]] = {}  # index -> (term, data) applied anywhere
        self.last_applied: dict[int, tuple[Any, int]] = {}
        self.steps = 0
        self._wrapped: set[int] = set()

    def _wrap(self, node_id: int) -> None:
        node = self.cluster.node(node_id)
        if id(node) in self._wrapped:
            return
        self._wrapped.add(id(node))
        sm, core = node.state_machine, node.core
        original = sm.apply

        def apply(index: int, data: bytes) -> Any:
            assert index <= core.commit_index, f"node {node_id} applied {index} beyond commit {core.commit_index}"
            assert index == sm.applied_index + 1, f"node {node_id} applied {index} after {sm.applied_index}"
            term = core.term_at(index)
            seen = self.applied.setdefault(index, (term, data))
            assert seen == (term, data), f"node {node_id} applied {(term, data)} at {index}, another applied {seen}"
            return original(index, data)

        sm.apply = apply  # type: ignore[method-assign]

    def __call__(self) -> None:
        self.steps += 1
        for i in self.cluster.running():
            node = self.cluster.node(i)
            self._wrap(i)
            core = node.core
            if core.role is Role.LEADER:
                leader = self.leader_of_term.setdefault(core.term, i)
                assert leader == i, f"two leaders in term {core.term}: {leader} and {i}"
            applied = node.state_machine.applied_index
            assert applied <= core.commit_index <= core.last_index
            previous = self.last_applied.get(i)
            if previous is not None and previous[0] is node:
                assert applied >= previous[1], f"node {i} applied index went back"
            self.last_applied[i] = (node, applied)


def new_cluster(size: int = 3, seed: int = 0, **options: Any) -> tuple[InMemoryCluster, SafetyChecker]:
    cluster = InMemoryCluster(size, seed, **options)
    return cluster, SafetyChecker(cluster)


def put(cluster: InMemoryCluster, node: int, key: str, value: str, check: SafetyChecker, timeout: float = 10.0) -> Any:
    d = cluster.node(node).put(key, value)
    return resolve(cluster, d, check, timeout)


def resolve(cluster: InMemoryCluster, d: Any, check: SafetyChecker, timeout: float = 10.0) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    assert cluster.run_until(lambda: bool(box), timeout, check=check), "no result in time"
    return box[0]


def assert_converged(cluster: InMemoryCluster, check: SafetyChecker, timeout: float = 10.0) -> None:
    """Wait until every running node has the same log, all of it applied,
    and assert identical logs and state machines."""
    ids = cluster.running()

    def converged() -> bool:
        logs = [cluster.log_of(i) for i in ids]
        return all(log == logs[0] for log in logs) and all(
            cluster.node(i).state_machine.applied_index == len(logs[0]) for i in ids
        )

    assert cluster.run_until(converged, timeout, check=check), {i: cluster.node(i).status() for i in ids}
    datas = [cluster.data_of(i) for i in ids]
    assert all(d == datas[0] for d in datas)


def wait_leader(cluster: InMemoryCluster, check: SafetyChecker, among: Any = None, timeout: float = 10.0) -> int:
    allowed = set(among) if among is not None else set(cluster.ids)

    def ok() -> bool:
        leader = cluster.leader()
        if leader is None or leader not in allowed:
            return False
        core = cluster.node(leader).core
        return core.commit_index > 0 and core.term_at(core.commit_index) == core.term

    assert cluster.run_until(ok, timeout, check=check), "no leader"
    leader = cluster.leader()
    assert leader is not None
    return leader


class ClusterElectionTests(SynchronousTestCase):
    """Leader election under chaos, crashes and partitions."""

    @parametrize("seed", range(5))
    def test_single_leader_elected(self, seed):
        """A fresh cluster elects exactly one leader, every node agrees on it,
        and no term ever has two leaders at any step of the run."""
        cluster, check = new_cluster(5, seed)
        leader = wait_leader(cluster, check)
        cluster.run(2.0, check=check)
        assert cluster.leaders() == [leader]
        terms = {cluster.node(i).core.term for i in cluster.ids}
        assert len(terms) == 1
        assert all(cluster.node(i).core.leader_id == leader for i in cluster.ids)

    @parametrize("seed", range(8))
    def test_election_safety_under_chaos(self, seed):
        """Through random partitions, crashes and restarts with writes flowing,
        no term has two leaders, every node applies the same command at each
        index, in order and only once committed, and every acknowledged write is
        in the converged cluster's committed log."""
        cluster, check = new_cluster(5, seed)
        rng = random.Random(seed)
        results: list[Any] = []
        for round_number in range(30):
            action = rng.choice(["partition", "isolate", "crash", "heal", "heal"])
            running = cluster.running()
            if action == "partition":
                ids = list(cluster.ids)
                rng.shuffle(ids)
                cut = rng.randint(1, len(ids) - 1)
                cluster.network.partition(ids[:cut], ids[cut:])
            elif action == "isolate":
                cluster.network.isolate(rng.choice(cluster.ids), cluster.ids)
            elif action == "crash" and len(running) > 3:
                cluster.crash(rng.choice(running))
            else:
                cluster.network.heal()
                for i in cluster.ids:
                    if cluster.members[i].node is None:
                        cluster.start(i)
            for i in cluster.running():
                key, value = f"k{round_number % 4}", f"v{round_number}.{i}"
                d = cluster.node(i).put(key, value)
                d.addBoth(lambda r, k=key, v=value: results.append((k, v, r)))
            cluster.run(rng.uniform(0.2, 1.5), step=0.002, check=check)
        cluster.network.heal()
        for i in cluster.ids:
            if cluster.members[i].node is None:
                cluster.start(i)
        wait_leader(cluster, check)
        assert_converged(cluster, check)
        assert len(check.leader_of_term) >= 3  # the chaos really caused elections
        assert any(r is None for _, _, r in results)  # and some writes succeeded
        leader = cluster.node(cluster.leader())
        committed = {e.payload for e in leader.core.entries(1, leader.core.commit_index)}
        for key, value, result in results:
            if result is None:
                assert f"P{key} {value}".encode() in committed, (key, value)

    def test_reelection_after_leader_crash(self):
        """When the leader crashes the others elect a new leader in a higher
        term, which commits new writes."""
        cluster, check = new_cluster(3, seed=1)
        old = wait_leader(cluster, check)
        old_term = cluster.node(old).core.term
        assert put(cluster, old, "a", "1", check) is None
        cluster.crash(old)
        new = wait_leader(cluster, check)
        assert new != old and cluster.node(new).core.term > old_term
        assert put(cluster, new, "b", "2", check) is None
        cluster.start(old)
        assert_converged(cluster, check)
        assert cluster.data_of(old) == {"a": "1", "b": "2"}

    def test_isolated_leader_steps_down_and_cannot_commit(self):
        """An isolated leader steps down by check-quorum, its pending write
        fails with OutcomeUnknown and is never applied, and the rest elect a
        new leader; after healing the write is gone everywhere."""
        cluster, check = new_cluster(3, seed=2)
        old = wait_leader(cluster, check)
        cluster.network.isolate(old, cluster.ids)
        d = cluster.node(old).put("lost", "x")
        result = resolve(cluster, d, check, timeout=3.0)
        assert isinstance(result, Failure) and result.check(OutcomeUnknown)
        assert cluster.node(old).core.role is Role.FOLLOWER
        new = wait_leader(cluster, check, among=set(cluster.ids) - {old})
        assert put(cluster, new, "kept", "y", check) is None
        cluster.run(2.0, check=check)
        assert cluster.node(old).core.role is not Role.LEADER
        cluster.network.heal()
        assert_converged(cluster, check)
        for i in cluster.ids:
            assert cluster.data_of(i) == {"kept": "y"}
        assert all(e.payload != b"Plost x" for e in cluster.log_of(old))

    def test_partitioned_minority_cannot_commit_and_logs_converge_after_heal(self):
        """A leader cut off with a minority cannot commit (its write ends in
        OutcomeUnknown and is never applied) while the majority elects a leader
        and commits; after healing the old leader follows and all logs and
        state machines are identical."""
        cluster, check = new_cluster(5, seed=3, commit_timeout=1.0)
        old = wait_leader(cluster, check)
        assert put(cluster, old, "k", "before", check) is None
        minority = [old, (old + 1) % 5]
        majority = [i for i in cluster.ids if i not in minority]
        cluster.network.partition(minority, majority)
        writes = [cluster.node(old).put("k", f"minority{i}") for i in range(3)]
        new = wait_leader(cluster, check, among=majority)
        assert cluster.node(new).core.term > cluster.node(old).core.term or cluster.node(old).core.role is not Role.LEADER
        assert put(cluster, new, "k", "majority", check) is None
        for d in writes:
            result = resolve(cluster, d, check)
            assert isinstance(result, Failure) and result.check(OutcomeUnknown), result
        minority_applied = {cluster.node(i).state_machine.get("k") for i in minority}
        assert minority_applied == {"before"}
        cluster.network.heal()
        assert_converged(cluster, check)
        assert cluster.leader() == new and cluster.node(old).core.leader_id == new
        for i in cluster.ids:
            assert cluster.data_of(i) == {"k": "majority"}
            assert not any(e.payload.startswith(b"Pk minority") for e in cluster.log_of(i))

    def test_prevote_rejoining_node_does_not_disrupt_leader(self):
        """A follower isolated for many election timeouts rejoins without
        raising the term or deposing the leader (Pre-Vote)."""
        cluster, check = new_cluster(3, seed=4)
        leader = wait_leader(cluster, check)
        term = cluster.node(leader).core.term
        follower = next(i for i in cluster.ids if i != leader)
        cluster.network.isolate(follower, cluster.ids)
        cluster.run(5.0, check=check)
        assert cluster.node(follower).core.term == term
        cluster.network.heal()
        cluster.run(3.0, check=check)
        assert cluster.leader() == leader
        assert {cluster.node(i).core.term for i in cluster.ids} == {term}
        assert put(cluster, leader, "a", "1", check) is None


class ClusterRestartTests(SynchronousTestCase):
    """Nodes and whole clusters restarting from their persisted state."""

    def test_restarted_follower_recovers_state_and_catches_up(self):
        """A crashed follower restarts with its term, vote and log from storage
        and catches up on the writes it missed."""
        cluster, check = new_cluster(3, seed=5)
        leader = wait_leader(cluster, check)
        for i in range(5):
            assert put(cluster, leader, f"k{i}", "old", check) is None
        follower = next(i for i in cluster.ids if i != leader)
        before = cluster.node(follower).core
        term, vote, log = before.term, before.voted_for, cluster.log_of(follower)
        cluster.crash(follower)
        for i in range(5):
            assert put(cluster, leader, f"k{i}", "new", check) is None
        node = cluster.start(follower)
        assert (node.core.term, node.core.voted_for) == (term, vote)
        assert node.core.entries(1, node.core.last_index) == log
        assert_converged(cluster, check)
        assert cluster.data_of(follower) == {f"k{i}": "new" for i in range(5)}
        assert cluster.leader() == leader

    def test_vote_survives_crash_and_is_not_given_twice(self):
        """A vote persisted in MemoryMetadata survives a crash: the restarted
        node keeps its term and vote and refuses another candidate that term."""
        cluster, check = new_cluster(3, seed=6)
        leader = wait_leader(cluster, check)
        term = cluster.node(leader).core.term
        voter = next(i for i in cluster.ids if i != leader and cluster.node(i).core.voted_for == leader)
        other = next(i for i in cluster.ids if i not in (leader, voter))
        assert cluster.members[voter].metadata.durable_state.voted_for == leader
        cluster.crash(voter)
        node = cluster.start(voter)
        assert (node.core.term, node.core.voted_for) == (term, leader)
        core = node.core
        core.step(Message(other, voter, RequestVote(term, 1000, term, pre_vote=False)))
        rd = core.ready()
        answers = [m.body for m in rd.messages + rd.messages_after_persist if isinstance(m.body, RequestVoteResponse)]
        assert answers == [RequestVoteResponse(term, False, False)]

    def test_whole_cluster_crash_keeps_every_acknowledged_write(self):
        """All members crash at once and restart from storage; every write
        acknowledged before the crash is still there."""
        cluster, check = new_cluster(3, seed=7)
        leader = wait_leader(cluster, check)
        acknowledged = {}
        pending = []
        for i in range(30):
            d = cluster.node(leader).put(f"k{i}", f"v{i}")
            pending.append((f"k{i}", f"v{i}", d))
            if i % 3 == 0:
                cluster.run(0.003, check=check)
        for key, value, d in pending:
            d.addBoth(lambda r, k=key, v=value: acknowledged.__setitem__(k, v) if r is None else None)
        cluster.run(0.004, check=check)  # crash in the middle of replication
        assert acknowledged, "nothing acknowledged before the crash"
        for i in cluster.ids:
            cluster.crash(i)
        for i in cluster.ids:
            cluster.start(i)
        new = wait_leader(cluster, check)
        assert_converged(cluster, check)
        for i in cluster.ids:
            data = cluster.data_of(i)
            for key, value in acknowledged.items():
                assert data.get(key) == value
        assert put(cluster, new, "after", "restart", check) is None


class ClusterClientTests(SynchronousTestCase):
    """What clients are told: not leader, and outcome unknown."""

    def test_put_on_follower_fails_with_not_leader_naming_leader(self):
        """A write sent to a follower is refused with NotLeader carrying the
        leader's id and client address, and is never appended."""
        cluster, check = new_cluster(3, seed=8)
        leader = wait_leader(cluster, check)
        cluster.run(0.2, check=check)
        follower = next(i for i in cluster.ids if i != leader)
        last = cluster.node(follower).core.last_index
        result = resolve(cluster, cluster.node(follower).put("a", "1"), check)
        assert isinstance(result, Failure) and result.check(NotLeader)
        assert (result.value.leader_id, result.value.leader_address) == (leader, f"127.0.0.1:{5000 + leader}")
        cluster.run(0.5, check=check)
        assert cluster.node(leader).state_machine.get("a") is None
        assert cluster.node(follower).core.last_index == last

    def test_pending_write_fails_outcome_unknown_when_leader_deposed(self):
        """A write pending on a leader that is deposed by a higher term fails
        with OutcomeUnknown, not NotLeader (it was appended and may commit)."""
        cluster, check = new_cluster(3, seed=9, election_timeout=(0.3, 0.6))
        old = wait_leader(cluster, check)
        others = [i for i in cluster.ids if i != old]
        # Only the leader's outgoing messages are lost, so it never learns it
        # is cut off until a higher term reaches it.
        for i in others:
            cluster.network.blocked.add((old, i))
        d = cluster.node(old).put("a", "1")
        result = resolve(cluster, d, check)
        assert isinstance(result, Failure) and result.check(OutcomeUnknown), result
        assert not result.check(NotLeader)


class ClusterReadTests(SynchronousTestCase):
    """Reads see every write acknowledged before them, across leader changes."""

    def test_reads_on_follower_see_writes_acknowledged_before_the_read(self):
        """A linearizable read on a follower started right after a write was
        acknowledged returns that write, even though the follower's own state
        machine has not applied it yet."""
        cluster, check = new_cluster(3, seed=10)
        leader = wait_leader(cluster, check)
        follower = next(i for i in cluster.ids if i != leader)
        assert put(cluster, leader, "x", "old", check) is None
        cluster.run(0.5, check=check)
        for n in range(5):
            assert put(cluster, leader, "x", f"new{n}", check) is None
            # The follower lags: a stale read would return the previous value.
            stale = cluster.node(follower).state_machine.get("x")
            assert stale != f"new{n}"
            assert resolve(cluster, cluster.node(follower).get("x"), check) == f"new{n}"

    def test_read_index_never_stale_across_leader_change(self):
        """After a new leader commits a write, a read on the deposed (isolated)
        leader or on a follower still pointing at it never returns the old
        value: it fails with Unavailable."""
        cluster, check = new_cluster(5, seed=11, read_timeout=1.0)
        old = wait_leader(cluster, check)
        assert put(cluster, old, "x", "old", check) is None
        cluster.run(0.3, check=check)
        buddy = (old + 1) % 5
        minority = [old, buddy]
        majority = [i for i in cluster.ids if i not in minority]
        cluster.network.partition(minority, majority)
        new = wait_leader(cluster, check, among=majority)
        assert put(cluster, new, "x", "new", check) is None
        # The premise: the old leader still believes it leads, and its follower
        # still points at it.
        assert cluster.node(old).core.role is Role.LEADER
        assert cluster.node(buddy).core.leader_id == old
        reads = [cluster.node(old).get("x"), cluster.node(buddy).get("x")]
        for d in reads:
            result = resolve(cluster, d, check)
            assert isinstance(result, Failure) and result.check(Unavailable), result
        cluster.network.heal()
        assert_converged(cluster, check)
        assert resolve(cluster, cluster.node(old).get("x"), check) == "new"

    def test_read_on_new_leader_waits_for_its_first_commit(self):
        """A read served by a just-elected leader reflects writes committed by
        the previous leader."""
        cluster, check = new_cluster(3, seed=12)
        old = wait_leader(cluster, check)
        assert put(cluster, old, "x", "1", check) is None
        cluster.crash(old)
        reads = []

        def leader_elected() -> bool:
            leader = cluster.leader()
            if leader is not None and not reads:
                reads.append(cluster.node(leader).get("x"))
            return bool(reads)

        assert cluster.run_until(leader_elected, 10.0, check=check)
        assert resolve(cluster, reads[0], check) == "1"


class ClusterFlowControlTests(SynchronousTestCase):
    """Bounded in-flight appends, batching and fast catch-up."""

    def test_max_inflight_limits_unacknowledged_appends_per_follower(self):
        """With max_inflight=4 the leader never has more than 4 unacknowledged
        AppendEntries carrying entries to any one follower."""
        cluster, check = new_cluster(3, seed=13, max_inflight=4, max_append_entries=5)
        leader = wait_leader(cluster, check)
        outstanding: dict[int, list[int]] = defaultdict(list)
        peak: dict[int, int] = defaultdict(int)

        def observe(event: str, message: Message) -> None:
            body = message.body
            if event == "sent" and message.sender == leader and isinstance(body, AppendEntries) and body.entries:
                outstanding[message.receiver].append(body.entries[-1][0])
                peak[message.receiver] = max(peak[message.receiver], len(outstanding[message.receiver]))
            elif event == "delivered" and message.receiver == leader and isinstance(body, AppendEntriesResponse):
                assert body.success
                outstanding[message.sender] = [i for i in outstanding[message.sender] if i > body.index]

        cluster.network.on_send.append(lambda message: observe("sent", message))
        cluster.network.on_deliver.append(lambda message: observe("delivered", message))
        # Slow links: each message takes 20-40 ms, so the window fills up.
        cluster.network.weather = Weather(latency=(0.02, 0.04))
        deferreds = []
        for turn in range(40):
            deferreds += [cluster.node(leader).put(f"k{turn}.{j}", "v") for j in range(7)]
            cluster.run(0.002, check=check)
        for d in deferreds:
            assert resolve(cluster, d, check) is None
        assert max(peak.values()) == 4, dict(peak)

    def test_burst_of_proposals_is_batched_into_few_appends(self):
        """1000 proposals in one reactor turn are replicated with a handful of
        AppendEntries per follower, not one per proposal."""
        cluster, check = new_cluster(3, seed=14)
        leader = wait_leader(cluster, check)
        cluster.run(0.2, check=check)
        counts: dict[int, int] = defaultdict(int)

        def observe(event: str, message: Message) -> None:
            if event == "sent" and isinstance(message.body, AppendEntries) and message.body.entries:
                counts[message.receiver] += 1

        cluster.network.on_send.append(lambda message: observe("sent", message))
        cluster.network.on_deliver.append(lambda message: observe("delivered", message))
        deferreds = [cluster.node(leader).put(f"k{i}", str(i)) for i in range(1000)]
        for d in deferreds:
            assert resolve(cluster, d, check) is None
        followers = [i for i in cluster.ids if i != leader]
        assert all(1 <= counts[i] <= 3 for i in followers), dict(counts)
        assert cluster.members[leader].log.fsync_count < 10

    def test_follower_missing_many_entries_catches_up_in_few_round_trips(self):
        """A follower that missed 1000 committed entries is caught up with a
        few rejected AppendEntries, not one per missing entry."""
        cluster, check = new_cluster(3, seed=15)
        leader = wait_leader(cluster, check)
        follower = next(i for i in cluster.ids if i != leader)
        cluster.network.isolate(follower, cluster.ids)
        deferreds = [cluster.node(leader).put(f"k{i}", str(i)) for i in range(1000)]
        for d in deferreds:
            assert resolve(cluster, d, check) is None
        rejections = []
        cluster.network.on_deliver.append(
            lambda m: rejections.append(m)
            if isinstance(m.body, AppendEntriesResponse) and not m.body.success
            else None
        )
        cluster.network.heal()
        assert_converged(cluster, check)
        assert len(rejections) <= 3, [m.body for m in rejections]


class ClusterHarnessTests(SynchronousTestCase):
    """The simulated cluster's own tools."""

    def test_message_filter_drops_only_matching_messages(self):
        """A network filter that drops every vote request prevents elections
        while other traffic still flows; removing it lets a leader emerge."""
        cluster, check = new_cluster(3, seed=16)
        drop_votes = lambda m: isinstance(m.body, RequestVote)  # noqa: E731
        cluster.network.filters.append(drop_votes)
        cluster.run(3.0, check=check)
        assert cluster.leaders() == []
        assert cluster.network.stats["filtered"] > 0
        cluster.network.filters.remove(drop_votes)
        wait_leader(cluster, check)
