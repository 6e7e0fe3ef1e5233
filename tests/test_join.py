# -*- test-case-name: tests.test_join -*-
"""
C{--join} (L{kvstore.daemon.join.join_cluster}) against a whole in-memory cluster
on a C{task.Clock}: each member's client port is the real
L{ClientProtocol} over a L{StringTransport}, reached through a fake
C{connect} that maps C{host:port} to a member (or refuses, as a machine
that is down does), and simulated time stands in for C{sleep} and the
clock.  Success, the idempotent re-join, the redirect to the leader, and
each refusal: id taken by another address, address taken by another id,
another cluster, no member answering; and the service's start-up turning a
refusal into its C{Error:} line (twistd exits with status 1 on it).
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon import service
from kvstore.daemon.join import Joined, JoinRefused, join_cluster
from kvstore.node.node import Node
from kvstore.daemon.options import parse_config
from kvstore.protocols.client import ClientProtocol
from kvstore.protocols.commands import DEFAULT_LIMITS
from kvstore.raft.core import Role
from kvstore.testing.memory_cluster import CLUSTER_ID, InMemoryCluster


def _address(node_id: int) -> str:
    return f"127.0.0.1:{5000 + node_id}"


class _MemberConnection:
    """A client connection to one member: each line goes through the real
    client protocol, and the cluster runs (simulated time) until the reply
    is back.  C{STATUS} carries the cluster id, as the service's does."""

    def __init__(self, cluster: InMemoryCluster, node: Node, log: list[str]) -> None:
        self.cluster = cluster
        self.transport = StringTransport()
        self.protocol = ClientProtocol(node, DEFAULT_LIMITS)
        self.protocol.makeConnection(self.transport)
        self.log = log
        self.node_id = node.core.node_id

    def ask(self, line: str) -> str:
        self.transport.clear()
        self.protocol.dataReceived(line.encode("utf-8") + b"\n")
        self.cluster.run_until(lambda: self.transport.value().endswith(b"\n"), 10.0)
        reply = self.transport.value().decode("utf-8").rstrip("\n")
        if line == "STATUS":
            reply += f" cluster={CLUSTER_ID}"
        self.log.append(f"{self.node_id}: {line} -> {reply}")
        return reply

    def close(self) -> None:
        self.protocol.connectionLost(None)  # type: ignore[arg-type]


class _Harness:
    """A running cluster, a C{connect} into it, and simulated time for
    C{join_cluster}'s C{sleep} and C{clock}."""

    def __init__(self, cluster: InMemoryCluster) -> None:
        self.cluster = cluster
        self.down: set[str] = set()
        self.log: list[str] = []
        self.connects: list[str] = []

    def connect(self, host: str, port: int, timeout: float) -> _MemberConnection:
        address = f"{host}:{port}"
        self.connects.append(address)
        for node_id in self.cluster.running():
            if _address(node_id) == address and address not in self.down:
                return _MemberConnection(self.cluster, self.cluster.node(node_id), self.log)
        raise ConnectionRefusedError(111, "Connection refused")

    def sleep(self, seconds: float) -> None:
        self.cluster.run(seconds)

    def clock(self) -> float:
        return self.cluster.clock.seconds()

    def join(self, through: list[int] | list[tuple[str, int]], node_id: int, address: str,
             cluster_id: str | None = None, **options: Any) -> Joined:
        members = [("127.0.0.1", 5000 + m) if isinstance(m, int) else m for m in through]
        return join_cluster(
            members, node_id, address, cluster_id,
            sleep=self.sleep, clock=self.clock, connect=self.connect, **options,
        )


class JoinTests(SynchronousTestCase):
    """join_cluster against a three-node cluster."""

    def setUp(self) -> None:
        self.cluster = InMemoryCluster(3, seed=17)
        self.leader_id = self.cluster.wait_for_leader()
        self.follower_id = min(i for i in self.cluster.ids if i != self.leader_id)
        self.harness = _Harness(self.cluster)

    def leader_core(self) -> Any:
        return self.cluster.node(self.leader_id).core

    def test_join_adds_the_node_as_a_learner_and_returns_the_cluster_and_members(self) -> None:
        """Joining through the leader commits the node as a learner and returns the cluster id and the other
        members' addresses to link to."""
        joined = self.harness.join([self.leader_id], 3, _address(3))
        self.assertEqual(joined.cluster_id, CLUSTER_ID)
        self.assertEqual(joined.members, {i: _address(i) for i in self.cluster.ids})
        core = self.leader_core()
        self.assertEqual(core.configuration.learners, {3: _address(3)})
        self.assertFalse(core.configuration_change_pending)

    def test_join_through_a_follower_follows_not_leader_to_the_leader(self) -> None:
        """A follower's 'Not leader' reply names the leader, which join asks next."""
        joined = self.harness.join([self.follower_id], 3, _address(3))
        self.assertEqual(self.harness.connects, [_address(self.follower_id), _address(self.leader_id)])
        self.assertIn(3, self.leader_core().configuration.learner_ids)
        self.assertEqual(joined.cluster_id, CLUSTER_ID)

    def test_join_skips_a_member_that_does_not_answer(self) -> None:
        """A member that refuses the connection is skipped for the next one given."""
        self.harness.down.add(_address(self.follower_id))
        self.harness.join([self.follower_id, self.leader_id], 3, _address(3))
        self.assertIn(3, self.leader_core().configuration.learner_ids)

    def test_joining_again_with_the_same_id_and_address_is_a_no_op(self) -> None:
        """A second join with the same id and address succeeds and appends nothing."""
        self.harness.join([self.leader_id], 3, _address(3))
        core = self.leader_core()
        configuration, last_index = core.configuration, core.last_index
        joined = self.harness.join([self.leader_id], 3, _address(3))
        self.assertEqual(joined.cluster_id, CLUSTER_ID)
        self.assertEqual((core.configuration, core.last_index), (configuration, last_index))

    def test_an_id_taken_by_another_address_is_refused(self) -> None:
        """Joining with a member's id at another address is refused with the cluster's Error: line."""
        core = self.leader_core()
        before = (core.configuration, core.last_index)
        with self.assertRaises(JoinRefused) as caught:
            self.harness.join([self.leader_id], 1, "127.0.0.1:6001")
        self.assertEqual(
            str(caught.exception),
            f"Error: Node 1 is already a member with address {_address(1)} (from the cluster at {_address(self.leader_id)})",
        )
        self.assertEqual((core.configuration, core.last_index), before)

    def test_an_address_taken_by_another_id_is_refused(self) -> None:
        """Joining at a member's address under a new id is refused with the cluster's Error: line."""
        with self.assertRaises(JoinRefused) as caught:
            self.harness.join([self.leader_id], 7, _address(2))
        self.assertEqual(
            str(caught.exception),
            f"Error: Address {_address(2)} is already in use by Node 2 (from the cluster at {_address(self.leader_id)})",
        )
        self.assertNotIn(7, self.leader_core().configuration.member_ids)

    def test_a_different_cluster_is_refused_before_asking_anything(self) -> None:
        """With --cluster-id set, a cluster of another id is refused and never asked to add the node."""
        with self.assertRaises(JoinRefused) as caught:
            self.harness.join([self.leader_id], 3, _address(3), cluster_id="other")
        self.assertEqual(
            str(caught.exception),
            f"Error: the node at {_address(self.leader_id)} belongs to cluster {CLUSTER_ID!r}, not 'other'; refusing to join",
        )
        self.assertFalse(any("ADDNODE" in line for line in self.harness.log))
        self.assertNotIn(3, self.leader_core().configuration.member_ids)

    def test_no_member_answering_is_refused_at_the_deadline(self) -> None:
        """When no member accepts a connection, join retries until its deadline, then refuses naming them."""
        self.harness.down.update(_address(i) for i in self.cluster.ids)
        start = self.harness.clock()
        with self.assertRaises(JoinRefused) as caught:
            self.harness.join([0, 1], 3, _address(3), deadline=5.0)
        message = str(caught.exception)
        self.assertTrue(message.startswith(
            f"Error: no member of the cluster answered at {_address(0)}, {_address(1)} within 5 s"
        ), message)
        self.assertGreaterEqual(self.harness.clock() - start, 5.0)
        self.assertGreater(len(self.harness.connects), 2, "gave up without retrying")


class JoinAtStartTests(SynchronousTestCase):
    """The service's start-up (resolve_identity) with --join."""

    def test_a_refused_join_stops_the_start_with_its_error_line(self) -> None:
        """A join refused (no member answering) raises the UsageError twistd reports with exit status 1,
        whose text is the Error: line, and records no identity."""
        cluster = InMemoryCluster(3, seed=3)
        cluster.wait_for_leader()
        harness = _Harness(cluster)
        harness.down.update(_address(i) for i in cluster.ids)
        self.patch(service, "join_cluster", partial(
            join_cluster, sleep=harness.sleep, clock=harness.clock, connect=harness.connect, deadline=2.0,
        ))
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        config = parse_config(["--node-id", "3", "--port", "5003", "--join", "127.0.0.1:5000", "--data-dir", data_dir])
        with self.assertRaises(UsageError) as caught:
            service.resolve_identity(config)
        self.assertTrue(str(caught.exception).startswith("Error: no member of the cluster answered"))
        self.assertIsNone(service.load_identity(data_dir))

    def test_a_successful_join_records_the_cluster_and_seed(self) -> None:
        """A join that succeeds records the cluster's id and the members to link to in the data directory."""
        cluster = InMemoryCluster(3, seed=3)
        leader = cluster.wait_for_leader()
        harness = _Harness(cluster)
        self.patch(service, "join_cluster", partial(
            join_cluster, sleep=harness.sleep, clock=harness.clock, connect=harness.connect,
        ))
        data_dir = self.mktemp()
        os.makedirs(data_dir)
        config = parse_config(
            ["--node-id", "3", "--host", "127.0.0.1", "--port", "5003", "--join", _address(leader), "--data-dir", data_dir]
        )
        config, identity = service.resolve_identity(config)
        self.assertEqual((config.cluster_id, identity.cluster_id, identity.joined), (CLUSTER_ID, CLUSTER_ID, True))
        self.assertEqual(identity.seed, {i: _address(i) for i in cluster.ids})
        self.assertEqual(service.load_identity(data_dir), identity)
        self.assertIs(cluster.node(leader).core.role, Role.LEADER)
