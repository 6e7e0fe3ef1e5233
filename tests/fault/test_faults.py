"""
Fault scenarios against real node processes: kill -9 (of the leader, of a
random node, of every node), SIGSTOP of the leader, and network partitions
made with a fault-injecting TCP proxy between every pair of peers
(L{kvstore.testing.proxy.PeerProxy}).

During each scenario 24 clients of the client library (each with 4 calls
in flight, L{kvstore.testing.workload.Workload}) send PUT, GET and DELETE
requests on 64 shared keys and record every operation.  Afterwards
the faults are healed, every key is read linearizably, and the history
(final reads included) is checked for linearizability with
L{kvstore.testing.sim.linearizability.check_history}, separately for lost
acknowledged writes, and for replies that answer another request.  A check
that cannot decide (a key whose linearizability search hit its bound) or a
scenario that never ran its checks fails the test: nothing passes unchecked.  Each scenario prints one line of figures (run with
``-s``): operations ok/failed/unknown, elections, and the longest window
with no acknowledged write.

C{KVSTORE_FAULT_SECONDS} (default 6) is roughly how long each scenario keeps
injecting faults; raise it for a soak, e.g. C{KVSTORE_FAULT_SECONDS=120}.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path
from typing import Sequence

import pytest
from twisted.trial.unittest import SynchronousTestCase

from kvstore.client.lines import LineConnection
from kvstore.testing.checks import check_no_lost_writes, check_replies, summarize
from kvstore.testing.history import OK_STATUS, History, Record, classify
from kvstore.testing.processes import FAST_ELECTIONS, NodeProcess, wait_until
from kvstore.testing.proxy import ProxiedCluster
from kvstore.testing.sim.linearizability import check_history
from kvstore.testing.workload import TermMonitor, Workload

from tests.fault.support import raise_fd_limit
from tests.support import parametrize

#: The linearizability search bound per key, above the checker's default:
#: a full-cluster kill -9 leaves hundreds of unknown outcomes, which widen the
#: search.
FAULT_MAX_STATES = 600_000
#: How many keys of one scenario may end undecided by that bound: none, as
#: in kvstore-sim (MAX_INCONCLUSIVE_SHARE).  A search that hits the bound may
#: hide a violation: a violating history must be searched to exhaustion, so
#: a stale read on a key with 20 unknown writes is "inconclusive", not a
#: failure (tests/test_testing_fault_inconclusive.py).  One undecided key was
#: seen once, on the kill -9 all scenario, before the checker tried the
#: earliest-invoked operation first (which cut the states clean histories
#: need by 100-1000x).
INCONCLUSIVE_KEYS_ALLOWED = 0

pytestmark = pytest.mark.integration

FAULT_SECONDS = float(os.environ.get("KVSTORE_FAULT_SECONDS", "6"))
NODE_ARGS = (*FAST_ELECTIONS, "--commit-timeout", "2", "--read-timeout", "2")
#: Longer than the longest election timeout (600 ms), with room to spare.
PAUSE_SECONDS = 1.5


class ClusterTestCase(SynchronousTestCase):
    """A test with a fresh proxied three-node cluster, C{self.cluster}, closed after it."""

    def setUp(self) -> None:
        raise_fd_limit()
        c = ProxiedCluster(Path(self.mktemp()).resolve(), 3, NODE_ARGS)
        self.addCleanup(c.close)
        c.start()
        c.wait_for_leader(timeout=20)
        c.wait_connected()
        self.cluster = c


class Scenario:
    """Runs the workload and the term monitor around a scenario's faults,
    then heals, reads back and checks everything."""

    def __init__(self, name: str, cluster: ProxiedCluster, seed: int = 0) -> None:
        self.name = name
        self.cluster = cluster
        self.history = History()
        self.workload = Workload(cluster, self.history, seed=seed)
        self.monitor = TermMonitor(cluster)
        self.rng = random.Random(seed)
        self.notes: list[str] = []
        self.finished = False

    def __enter__(self) -> "Scenario":
        self.workload.leader_guess = self.cluster.wait_for_leader().node_id
        self.monitor.start()
        self.workload.start()
        self.workload.wait_progress(self.workload.started)
        self.started = time.monotonic()
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is not None:
            self.workload.stop()
            self.monitor.stop()
        elif not self.finished:
            # A scenario that never checked its history must not pass.
            self.workload.stop()
            self.monitor.stop()
            raise AssertionError(f"scenario {self.name!r} ended without finish(): nothing was checked")

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def finish(self) -> dict:
        """Heal, restart, read back, check and print the figures."""
        workload, cluster = self.workload, self.cluster
        end = time.monotonic()
        workload.stop()
        cluster.proxy.heal()
        for node in cluster.nodes:
            if node.running:
                node.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            else:
                node.start()
        leader = cluster.wait_for_leader(timeout=30)
        cluster.wait_connected(timeout=30)
        self.monitor.stop()
        records = self.history.snapshot()
        # Every key the history touched (the probes' too), not only the
        # workload's: a key without a final read is a key not checked.
        keys = sorted({r.key for r in records} | set(workload.keys))
        final = self._final_reads(leader, keys)
        records = self.history.snapshot()
        figures = summarize(self.name, [r for r in records if r.client != "final"], self.monitor, self.started, end)
        lost = check_no_lost_writes(records, final)
        figures["lost_writes"] = len(lost)
        unexpected = check_replies(records)
        figures["unexpected_replies"] = len(unexpected)
        result = check_history(self.history.operations(), max_states=FAULT_MAX_STATES)
        figures["linearizable"] = result.ok
        figures["inconclusive_keys"] = len(result.inconclusive)
        self.finished = True
        print(f"\n[fault] {json.dumps(figures)}" + "".join(f"\n[fault]   {n}" for n in self.notes))
        assert not unexpected, "replies that answer another request:\n" + "\n".join(unexpected[:20])
        assert not lost, "acknowledged writes lost:\n" + "\n".join(lost[:20])
        assert result.ok, f"not linearizable: key {result.key}\n{result.details}"
        # A key whose search hit the bound was not checked.  It is reported
        # (in the figures above) and counted; more than a small bound of
        # them fails the scenario.
        assert len(result.inconclusive) <= INCONCLUSIVE_KEYS_ALLOWED, (
            f"linearizability not decided for keys {result.inconclusive} ({result.details}); "
            f"at most {INCONCLUSIVE_KEYS_ALLOWED} may be left undecided")
        # Every replica ends up with the same data.
        target = int(leader.status()["applied"])
        for node in cluster.nodes:
            wait_until(lambda: int(node.status()["applied"]) >= target, 20,
                       message=lambda: f"node {node.node_id} to catch up\n{node.describe()}")
        keys = {n.node_id: n.status()["keys"] for n in cluster.nodes}
        assert len(set(keys.values())) == 1, keys
        return figures

    def _final_reads(self, leader: NodeProcess, keys: Sequence[str]) -> dict[str, str | None]:
        """Read every key linearizably on the leader, into the history."""
        final: dict[str, str | None] = {}

        def read_all() -> bool:
            with leader.client(timeout=10) as client:
                invoke = time.monotonic()
                replies = client.pipeline([f"GET {k}" for k in keys])
                complete = time.monotonic()
            records = []
            for key, reply in zip(keys, replies):
                r = Record("final", "get", key, None, invoke, leader.node_id)
                classify(r, reply, complete)
                if r.status != OK_STATUS:
                    return False
                records.append(r)
            for r in records:
                self.history.add(r)
                final[r.key] = r.result
            return True

        wait_until(read_all, 20, message="the final reads to succeed")
        return final

    # -- fault helpers ----------------------------------------------------

    def wait_new_leader(self, among: Sequence[NodeProcess], above_term: int, timeout: float = 15.0) -> NodeProcess:
        """Wait until a majority of C{among} agree on a leader in a term above
        C{above_term}; return it."""
        majority = len(self.cluster.nodes) // 2 + 1

        def agreed() -> NodeProcess | None:
            statuses = {}
            for node in among:
                try:
                    statuses[node.node_id] = node.status(timeout=1.0)
                except (OSError, ValueError):
                    pass
            for node_id, s in statuses.items():
                if s["role"] == "leader" and int(s["term"]) > above_term:
                    agreeing = [t for t in statuses.values() if t["leader"] == str(node_id) and t["term"] == s["term"]]
                    if len(agreeing) >= majority:
                        return self.cluster.nodes[node_id]
            return None

        return wait_until(agreed, timeout, message=lambda: "a new leader\n"
                          + "\n".join(n.describe() for n in self.cluster.nodes))


def _term(node: NodeProcess) -> int:
    return int(node.status()["term"])


def _record(client: str, kind: str, key: str, value: str | None, result: str | None, invoke: float,
            complete: float) -> Record:
    return Record(client, kind, key, value, invoke, -1, OK_STATUS, result, complete)


class FaultScenarioTests(ClusterTestCase):
    """
    Each fault scenario, under a concurrent workload, keeps the history
    linearizable and loses no acknowledged write.
    """

    # ---------------------------------------------------------------------------
    # Crashes

    def test_kill9_leader_repeatedly(self) -> None:
        """SIGKILL of the leader, again and again, each time restarting it once
        a new leader has taken over and writes go through again."""
        cluster = self.cluster
        with Scenario("kill -9 leader, repeatedly", cluster, seed=1) as s:
            rounds = 0
            while rounds < 3 or s.elapsed() < FAULT_SECONDS:
                leader = cluster.wait_for_leader(timeout=20)
                term = _term(leader)
                leader.kill()
                killed = time.monotonic()
                new = s.wait_new_leader(cluster.running, term)
                took = s.workload.wait_progress(killed)
                s.notes.append(f"round {rounds}: killed node {leader.node_id} (term {term}); node {new.node_id} leads, "
                               f"writes resumed after {took:.2f}s")
                leader.start()
                leader.wait_ready()
                rounds += 1
            s.finish()

    def test_kill9_random_node(self) -> None:
        """SIGKILL of a random node (leader or follower), restarted each time."""
        cluster = self.cluster
        with Scenario("kill -9 random node", cluster, seed=2) as s:
            rounds = 0
            while rounds < 4 or s.elapsed() < FAULT_SECONDS:
                cluster.wait_for_leader(timeout=20)
                victim = s.rng.choice(cluster.nodes)
                victim.kill()
                killed = time.monotonic()
                took = s.workload.wait_progress(killed)
                s.notes.append(f"round {rounds}: killed node {victim.node_id}; writes after {took:.2f}s")
                victim.start()
                victim.wait_ready()
                rounds += 1
            s.finish()

    def test_kill9_all_nodes_then_restart(self) -> None:
        """SIGKILL of every node at once, then a full restart, repeatedly: no
        acknowledged write may be lost."""
        cluster = self.cluster
        with Scenario("kill -9 all nodes, full restart", cluster, seed=3) as s:
            rounds = 0
            while rounds < 2 or s.elapsed() < FAULT_SECONDS:
                cluster.wait_for_leader(timeout=20)
                s.workload.wait_progress(time.monotonic(), writes=50)
                cluster.kill_all()
                killed = time.monotonic()
                cluster.start()
                took = s.workload.wait_progress(killed)
                s.notes.append(f"round {rounds}: writes resumed {took:.2f}s after the kill")
                rounds += 1
            s.finish()

    # ---------------------------------------------------------------------------
    # A paused leader

    def test_sigstop_leader(self) -> None:
        """
        SIGSTOP of the leader for longer than the election timeout, then
        SIGCONT.  Requests that reached the paused old leader's socket (a
        linearizable read of a key the new leader has since changed, and a
        write) must not be answered from its stale state: the read returns the
        new value or an error, and the write is acknowledged only if it really
        committed.
        """
        cluster = self.cluster
        with Scenario("SIGSTOP leader", cluster, seed=4) as s:
            rounds = 0
            while rounds < 2 or s.elapsed() < FAULT_SECONDS:
                leader = cluster.wait_for_leader(timeout=20)
                cluster.wait_connected()
                term = _term(leader)
                key = f"probe{rounds}"
                probe = LineConnection(leader.address, timeout=10)
                assert probe.request(f"PUT {key} old") == f"{key} added successfully."
                s.history.add(_record("probe", "put", key, "old", "ok", 0.0, time.monotonic()))
                leader.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
                stopped = time.monotonic()
                others = [n for n in cluster.nodes if n is not leader]
                new = s.wait_new_leader(others, term)
                # Make the old leader's state stale, then queue requests for it.
                with new.client() as client:
                    invoke = time.monotonic()
                    assert client.request(f"PUT {key} new") == f"{key} added successfully."
                    s.history.add(_record("probe", "put", key, "new", "ok", invoke, time.monotonic()))
                s.workload.wait_progress(stopped)
                invoke = time.monotonic()
                probe.send_lines([f"GET {key}", f"PUT {key} from-paused-leader", f"GET {key}"])
                wait_until(lambda: time.monotonic() - stopped >= PAUSE_SECONDS, PAUSE_SECONDS + 1)
                leader.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
                replies = []
                try:
                    for _ in range(3):
                        replies.append(probe.read_reply())
                except OSError:
                    pass
                probe.close()
                complete = time.monotonic()
                kinds = [("get", None), ("put", "from-paused-leader"), ("get", None)]
                for (kind, value), reply in zip(kinds, replies + [None] * (3 - len(replies))):
                    r = Record("probe-paused", kind, key, value, invoke, leader.node_id)
                    if reply is not None:
                        classify(r, reply, complete)
                    s.history.add(r)
                assert f"value of {key}: old" not in replies, f"the resumed old leader served a stale read: {replies}"
                s.notes.append(f"round {rounds}: paused node {leader.node_id} {time.monotonic() - stopped:.1f}s; "
                               f"node {new.node_id} led; its replies after resuming: {replies}")
                rounds += 1
            s.finish()

    # ---------------------------------------------------------------------------
    # Partitions

    @parametrize("mode", ["drop", "stall"])
    def test_partition_isolate_leader(self, mode: str) -> None:
        """
        The leader is cut off from both followers (connections reset, or
        silently stalled): the majority elects a new leader and serves writes;
        the old leader acknowledges nothing it cannot commit and serves no stale
        reads; after healing, everyone agrees.
        """
        cluster = self.cluster
        with Scenario(f"partition: isolate leader ({mode})", cluster, seed=5) as s:
            rounds = 0
            while rounds < 1 or s.elapsed() < FAULT_SECONDS:
                leader = cluster.wait_for_leader(timeout=20)
                cluster.wait_connected()
                term = _term(leader)
                cluster.proxy.isolate(leader.node_id, mode)
                cut = time.monotonic()
                new = s.wait_new_leader([n for n in cluster.nodes if n is not leader], term)
                took = s.workload.wait_progress(cut)
                wait_until(lambda: time.monotonic() - cut >= max(FAULT_SECONDS / 2, 3.0), FAULT_SECONDS + 5)
                old_role = leader.status()["role"]
                cluster.proxy.heal()
                s.notes.append(f"round {rounds}: isolated node {leader.node_id}; node {new.node_id} led, writes after "
                               f"{took:.2f}s; old leader's role before healing: {old_role}")
                rounds += 1
            s.finish()

    def test_partition_isolate_follower(self) -> None:
        """A follower cut off from the others: writes continue throughout, and
        the follower catches up after healing without disrupting the leader."""
        cluster = self.cluster
        with Scenario("partition: isolate follower", cluster, seed=6) as s:
            rounds = 0
            while rounds < 1 or s.elapsed() < FAULT_SECONDS:
                leader = cluster.wait_for_leader(timeout=20)
                cluster.wait_connected()
                follower = s.rng.choice(cluster.followers(leader))
                cluster.proxy.isolate(follower.node_id, "stall" if rounds % 2 else "drop")
                cut = time.monotonic()
                took = s.workload.wait_progress(cut)
                wait_until(lambda: time.monotonic() - cut >= 3.0, 10)
                cluster.proxy.heal()
                s.notes.append(f"round {rounds}: isolated follower {follower.node_id}; writes after {took:.2f}s")
                rounds += 1
            figures = s.finish()
        assert figures["longest_no_write_s"] < 5.0

    def test_partition_no_majority(self) -> None:
        """
        Every node cut off from every other: no write invoked after the cut is
        acknowledged and no linearizable read succeeds until the partition
        heals; then the cluster recovers.
        """
        cluster = self.cluster
        with Scenario("partition: no majority", cluster, seed=7) as s:
            rounds = 0
            while rounds < 1 or s.elapsed() < FAULT_SECONDS:
                cluster.wait_for_leader(timeout=20)
                cluster.wait_connected()
                cluster.proxy.split([[n.node_id] for n in cluster.nodes], "drop" if rounds % 2 == 0 else "stall")
                cut = time.monotonic()
                wait_until(lambda: time.monotonic() - cut >= max(FAULT_SECONDS / 2, 3.0), FAULT_SECONDS + 5)
                healed = time.monotonic()
                cluster.proxy.heal()
                during = [r for r in s.history.snapshot()
                          if r.status == OK_STATUS and r.invoke > cut and r.complete is not None
                          and r.complete < healed]
                assert not during, f"operations succeeded without a majority: {during[:5]}"
                took = s.workload.wait_progress(healed)
                s.notes.append(f"round {rounds}: split for {healed - cut:.1f}s, 0 operations succeeded; "
                               f"writes {took:.2f}s after healing")
                rounds += 1
            s.finish()
