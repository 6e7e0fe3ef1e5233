# -*- test-case-name: tests.integration.test_process_membership -*-
"""
Dynamic membership with real processes under load (issue 13): replacing a
node whose machine is gone, growing 3 -> 5 and shrinking back, a rolling
restart with SIGTERM (leadership handed over first), and TRANSFER back and
forth.  Each runs the fault suite's L{Workload} through the client library
and checks its whole history: every acknowledged write found afterwards
(L{check_no_lost_writes}) and linearizability (L{check_history}).  The
figures are printed with a C{[membership]} prefix (run with C{-s}).
"""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Sequence

import pytest

from kvstore.client import Client
from kvstore.client.errors import ClientError
from kvstore.testing.checks import check_no_lost_writes, check_replies, longest_write_gap
from kvstore.testing.history import OK_STATUS, History, Record, classify
from kvstore.testing.processes import FAST_ELECTIONS, NodeProcess, ProcessCluster, allocate_port, wait_until
from kvstore.testing.sim.linearizability import check_history
from kvstore.testing.workload import Workload
from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration

_MAX_STATES = 600_000


def _members(node: NodeProcess) -> str:
    return node.request("MEMBERS", timeout=5)


def _voters(reply: str) -> set[int]:
    return {int(t.split("@")[0]) for t in reply.split() if t.endswith("/voter")}


class _Loaded:
    """The workload and its checks around one scenario."""

    def __init__(self, case: ProcessTestCase, cluster: ProcessCluster) -> None:
        self.case = case
        self.cluster = cluster
        self.history = History()
        self.workload = Workload(cluster, self.history, clients=4, pipeline=2, keys=32)

    def start(self) -> "_Loaded":
        self.workload.leader_guess = self.cluster.wait_for_leader().node_id
        self.workload.start()
        self.workload.wait_progress(self.workload.started)
        self.started = time.monotonic()
        self.case.addCleanup(self.workload.stop)
        return self

    def acknowledged(self) -> int:
        """How many of the workload's operations have completed successfully so far."""
        return sum(1 for record in self.history.snapshot() if record.status == OK_STATUS)

    def wait_for_progress(self, operations: int = 20, timeout: float = 20) -> None:
        """Wait until the workload has completed C{operations} more operations."""
        target = self.acknowledged() + operations
        wait_until(lambda: self.acknowledged() >= target, timeout, message=f"{operations} more operations of the load")

    def finish(self, name: str, leader: NodeProcess, extra: dict[str, object] | None = None) -> dict[str, object]:
        end = time.monotonic()
        self.workload.stop()
        records = self.history.snapshot()
        keys = sorted({r.key for r in records} | set(self.workload.keys))
        final = self._final_reads(leader, keys)
        records = self.history.snapshot()
        figures: dict[str, object] = {
            "scenario": name,
            "ops": len(records),
            "writes_ok": sum(1 for r in records if r.kind != "get" and r.status == OK_STATUS),
            "longest_no_write_s": round(longest_write_gap([r for r in records if r.client != "final"], self.started, end), 3),
        }
        figures.update(extra or {})
        lost = check_no_lost_writes(records, final)
        unexpected = check_replies(records)
        result = check_history(self.history.operations(), max_states=_MAX_STATES)
        figures.update(lost_writes=len(lost), linearizable=result.ok, inconclusive_keys=len(result.inconclusive))
        print(f"\n[membership] {json.dumps(figures)}")
        assert not unexpected, unexpected[:10]
        assert not lost, "acknowledged writes lost:\n" + "\n".join(lost[:20])
        assert result.ok, f"not linearizable: key {result.key}\n{result.details}"
        return figures

    def _final_reads(self, leader: NodeProcess, keys: Sequence[str]) -> dict[str, str | None]:
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


class _WriteProbe:
    """One client writing in a loop (the library following the leader,
    backing off 5 to 50 ms), recording when each write is acknowledged:
    the longest interval without one is the cluster's write unavailability,
    not the workload's (whose lanes may wait on a stopped node's reads)."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.acknowledged: list[float] = []
        self._client = Client(list(addresses), timeout=5.0, backoff=(0.005, 0.05))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-probe", daemon=True)

    def start(self) -> "_WriteProbe":
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            try:
                self._client.put(f"probe{n % 16}", str(n))
            except ClientError:
                continue
            self.acknowledged.append(time.monotonic())

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._client.close()

    def longest_gap(self, start: float, end: float) -> float:
        points = [start, *[t for t in self.acknowledged if start <= t <= end], end]
        return max(b - a for a, b in zip(points, points[1:]))


class MembershipProcessTests(ProcessTestCase):
    def joiner(self, cluster: ProcessCluster, node_id: int, through: Sequence[NodeProcess]) -> NodeProcess:
        """A new node, not started, that joins through C{through}."""
        node = NodeProcess(
            node_id, allocate_port(), cluster.root / f"node-{node_id}", cluster.root / "logs",
            extra_args=(*FAST_ELECTIONS, "--join", ",".join(n.address for n in through)),
        )
        self.started_nodes.append(node)
        return node

    def leader_of(self, nodes: Sequence[NodeProcess]) -> NodeProcess:
        def find() -> NodeProcess | None:
            for node in nodes:
                if node.running:
                    try:
                        if node.status(timeout=1)["role"] == "leader":
                            return node
                    except (OSError, ValueError):
                        pass
            return None

        return wait_until(find, 20, message="a leader")

    def wait_voter(self, nodes: Sequence[NodeProcess], node_id: int, timeout: float = 30) -> None:
        wait_until(lambda: node_id in _voters(_members(self.leader_of(nodes))), timeout,
                   message=lambda: f"node {node_id} to become a voter")

    def remove_retrying(self, nodes: Sequence[NodeProcess], node_id: int, timeout: float = 20) -> None:
        """REMOVENODE C{node_id}, retried while the leader legitimately
        refuses it because the previous change (the promotion MEMBERS
        already shows) has not committed yet, or leadership moved."""
        replies: list[str] = []

        def attempt() -> bool:
            reply = self.leader_of(nodes).request(f"REMOVENODE {node_id}")
            replies.append(reply)
            if reply == f"Node {node_id} removed successfully.":
                return True
            if reply == "Error: Membership change in progress" or reply.startswith("Error: Not leader"):
                return False
            if node_id not in {int(t.split("@")[0]) for t in _members(self.leader_of(nodes)).split()}:
                return True  # an earlier attempt whose reply was lost did it
            self.fail(f"REMOVENODE {node_id} answered {reply!r}")

        wait_until(attempt, timeout, message=lambda: f"the removal of node {node_id} (replies: {replies[-3:]})")

    def test_replace_a_node_whose_machine_is_gone(self) -> None:
        """kill -9 and wipe node 2; node 3 joins with --join and is promoted; REMOVENODE 2; nothing is lost."""
        cluster = self.make_cluster(3).start()
        load = _Loaded(self, cluster).start()
        load.wait_for_progress()
        cluster[2].kill()
        shutil.rmtree(cluster[2].data_dir)
        new = self.joiner(cluster, 3, cluster.nodes[:2]).start()
        started = time.monotonic()
        nodes = [cluster[0], cluster[1], new]
        self.wait_voter(nodes, 3)
        joined_to_voter = time.monotonic() - started
        self.remove_retrying(nodes, 2)
        members = _members(self.leader_of(nodes))
        self.assertEqual(_voters(members), {0, 1, 3})
        self.assertNotIn("2@", members)
        self.assertEqual(new.status()["member_role"], "voter")
        load.wait_for_progress()
        load.finish("replace", self.leader_of(nodes), {"join_to_voter_s": round(joined_to_voter, 2)})

    def test_grow_to_five_and_shrink_back_to_three(self) -> None:
        """Two nodes join (3 -> 5 voters), then both are removed (5 -> 3), under load."""
        cluster = self.make_cluster(3).start()
        load = _Loaded(self, cluster).start()
        joiners = [self.joiner(cluster, i, cluster.nodes).start() for i in (3, 4)]
        nodes = [*cluster.nodes, *joiners]
        for node in joiners:
            self.wait_voter(nodes, node.node_id)
        self.assertEqual(_voters(_members(self.leader_of(nodes))), {0, 1, 2, 3, 4})
        for node in joiners:
            wait_until(lambda: self.leader_of(nodes).request(f"REMOVENODE {node.node_id}")
                       == f"Node {node.node_id} removed successfully.", 20, message="the removal")
        self.assertEqual(_voters(_members(self.leader_of(nodes))), {0, 1, 2})
        for node in joiners:
            node.stop()
        load.finish("grow-shrink", self.leader_of(cluster.nodes))

    def test_rolling_restart_with_sigterm_hands_leadership_over(self) -> None:
        """SIGTERM and restart every node in turn: the leader hands over first, and writes never stop for long."""
        cluster = self.make_cluster(3).start()
        load = _Loaded(self, cluster).start()
        probe = _WriteProbe(cluster.addresses).start()
        self.addCleanup(probe.stop)
        gaps = {}
        for node in sorted(cluster.nodes, key=lambda n: n.status()["role"] == "leader"):
            was_leader = node.status()["role"] == "leader"
            before = time.monotonic()
            # twistd re-raises the signal once it has shut down cleanly.
            self.assertIn(node.kill(signal.SIGTERM, timeout=20), (0, -signal.SIGTERM))
            if was_leader:
                self.assertIn("leadership handed to node", node.log())
            stopped = time.monotonic()
            node.start()
            node.wait_ready()
            cluster.wait_for_leader(timeout=20)
            cluster.wait_connected(timeout=20)
            # The probe has written through the restarted cluster again.
            restarted = time.monotonic()
            wait_until(lambda: any(t > restarted for t in probe.acknowledged), 20, message="a probe write after the restart")
            label = f"{'leader' if was_leader else 'follower'}-{node.node_id}"
            gaps[label] = {
                "around_sigterm_s": round(probe.longest_gap(before, stopped + 0.5), 3),
                "whole_restart_s": round(probe.longest_gap(before, time.monotonic()), 3),
            }
        probe.stop()
        figures = load.finish("rolling-restart", cluster.wait_for_leader(), {"probe_gaps": gaps})
        leader_gap = next(v["around_sigterm_s"] for k, v in gaps.items() if k.startswith("leader"))
        # Without the hand-over this is an election timeout (300-600 ms here) plus detection.
        self.assertLess(leader_gap, 0.3, figures)

    def test_transfer_back_and_forth_twenty_times(self) -> None:
        """TRANSFER alternates leadership between two nodes 20 times under load; each completes."""
        cluster = self.make_cluster(3).start()
        load = _Loaded(self, cluster).start()
        cluster.wait_connected()
        first = cluster.wait_for_leader()
        second = next(n for n in cluster.nodes if n is not first)
        times = []
        current, target = first, second
        for _ in range(20):
            began = time.monotonic()
            reply = current.request(f"TRANSFER {target.node_id}")
            times.append(time.monotonic() - began)
            self.assertEqual(reply, f"Leadership transferred to Node {target.node_id}.")
            current, target = target, current
        times.sort()
        load.finish("transfer-20", current, {
            "transfer_median_ms": round(times[len(times) // 2] * 1000, 1),
            "transfer_max_ms": round(times[-1] * 1000, 1),
        })


class JoinRefusalTests(ProcessTestCase):
    def test_join_refuses_an_id_taken_by_another_address(self) -> None:
        """--join with a member's id at another address exits 1 with an Error: line."""
        cluster = self.make_cluster(3).start()
        cluster.wait_for_leader()
        node = NodeProcess(1, allocate_port(), self.tmp_path / "dup", self.tmp_path / "logs",
                           extra_args=(*FAST_ELECTIONS, "--join", cluster[0].address))
        self.started_nodes.append(node)
        node.start()
        self.assertEqual(node.process.wait(40), 1)  # type: ignore[union-attr]
        self.assertIn(f"Error: Node 1 is already a member with address {cluster[1].address}", node.output())

    def test_join_refuses_when_no_member_answers(self) -> None:
        """--join toward addresses where nobody listens exits 1 with an Error: line."""
        node = NodeProcess(5, allocate_port(), self.tmp_path / "lonely", self.tmp_path / "logs",
                           extra_args=(*FAST_ELECTIONS, "--join", f"127.0.0.1:{allocate_port()}"))
        self.started_nodes.append(node)
        node.start()
        self.assertEqual(node.process.wait(60), 1)  # type: ignore[union-attr]
        self.assertIn("Error: no member of the cluster answered", node.output())

    def test_join_refuses_another_cluster(self) -> None:
        """--join with a --cluster-id unlike the cluster's exits 1 with an Error: line."""
        cluster = self.make_cluster(3).start()
        cluster.wait_for_leader()
        node = NodeProcess(7, allocate_port(), self.tmp_path / "other", self.tmp_path / "logs",
                           extra_args=(*FAST_ELECTIONS, "--cluster-id", "other", "--join", cluster[0].address))
        self.started_nodes.append(node)
        node.start()
        self.assertEqual(node.process.wait(40), 1)  # type: ignore[union-attr]
        self.assertIn("belongs to cluster", node.output())
        self.assertIn("Error:", node.output())
