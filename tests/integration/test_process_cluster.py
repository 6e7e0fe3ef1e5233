"""
Three real node processes on loopback: election, replication, follower
redirects, leader failure, catch-up and a whole-cluster crash.
"""

from __future__ import annotations

import threading
import time

import pytest

from kvstore.testing.processes import Client, NodeProcess, wait_until

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


def _put_many(node: NodeProcess, items: dict[str, str]) -> None:
    """PUT C{items} on C{node}, pipelined; every one must be acknowledged."""
    with node.client() as client:
        replies = client.pipeline([f"PUT {k} {v}" for k, v in items.items()])
    assert replies == [f"{k} added successfully." for k in items]


def _reads(node: NodeProcess, keys: list[str], stale: bool = False) -> list[str]:
    suffix = " STALE" if stale else ""
    with node.client() as client:
        return client.pipeline([f"GET {k}{suffix}" for k in keys])


def _expected_reads(expected: dict[str, str]) -> list[str]:
    return [f"value of {k}: {v}" for k, v in expected.items()]


def _wait_caught_up(node: NodeProcess, expected: dict[str, str], timeout: float = 15.0) -> None:
    """Wait until C{node}'s local state (GET STALE) shows C{expected}."""
    keys = list(expected)
    want = _expected_reads(expected)
    wait_until(lambda: _reads(node, keys, stale=True) == want, timeout,
               message=lambda: f"node {node.node_id} to catch up\n{node.describe()}")


def _send_ignoring_errors(client: Client, lines: list[str]) -> None:
    try:
        client.send_lines(lines)
    except OSError:
        pass  # the leader was killed


class ProcessClusterTests(ProcessTestCase):
    """
    A real three-node cluster: election, replication, redirects, and SIGKILL of one node or all.
    """

    def test_election_replication_and_follower_redirect(self) -> None:
        """
        Exactly one leader is elected; a write on it becomes visible on every
        node; followers refuse writes with the leader's id and address.
        """
        cluster = self.make_cluster().start()
        leader = cluster.wait_for_leader()
        statuses = cluster.statuses()
        assert [i for i, s in statuses.items() if s["role"] == "leader"] == [leader.node_id]
        assert all(s["role"] == "follower" for i, s in statuses.items() if i != leader.node_id)

        assert leader.request("PUT colour blue") == "colour added successfully."
        # Until a follower's own link to the leader is up, its linearizable
        # reads are lost and time out (a known node limitation); wait for it.
        cluster.wait_connected()
        for node in cluster.nodes:
            _wait_caught_up(node, {"colour": "blue"})
            # Linearizable reads work on every node (ReadIndex through the leader).
            assert node.request("GET colour") == "value of colour: blue", node.describe()

        redirect = f"Error: Not leader. Current leader is Node {leader.node_id} at 127.0.0.1:{leader.port}"
        for follower in cluster.followers(leader):
            with follower.client() as client:
                assert client.request("PUT colour red") == redirect
                assert client.request("DELETE colour") == redirect
                assert client.request("GET colour") == "value of colour: blue"
        assert leader.request("GET colour") == "value of colour: blue"

    def test_leader_kill9_failover_and_catch_up(self) -> None:
        """
        SIGKILL of the leader in the middle of a pipelined burst of writes: a new
        leader is elected within a few seconds and has every acknowledged write;
        the old leader, restarted, catches up with writes made without it.
        """
        cluster = self.make_cluster().start()
        old = cluster.wait_for_leader()
        expected = {f"before{i}": f"v{i}" for i in range(100)}
        _put_many(old, expected)

        # A burst of pipelined writes, with the leader killed part-way through
        # the acknowledgements.  Only the acknowledged ones must survive.
        burst = [f"burst{i}" for i in range(3000)]
        client = old.client()
        writer = threading.Thread(target=lambda: _send_ignoring_errors(client, [f"PUT {k} b-{k}" for k in burst]),
                                  daemon=True)
        writer.start()
        acked: list[str] = []
        try:
            for key in burst:
                reply = client.read_reply()
                if len(acked) == 300:
                    old.kill()
                    killed_at = time.monotonic()
                if reply != f"{key} added successfully.":
                    break
                acked.append(key)
            else:
                self.fail("the leader acknowledged every write although it was killed")
        except ConnectionError:
            pass
        finally:
            client.close()
            writer.join(10)
        assert len(acked) >= 300
        expected.update({k: f"b-{k}" for k in acked})

        new = cluster.wait_for_leader(timeout=10)
        failover = time.monotonic() - killed_at
        assert new is not old
        assert failover < 5.0, f"failover took {failover:.1f}s"
        assert _reads(new, list(expected)) == _expected_reads(expected)

        # Writes while the old leader is down, then its restart and catch-up.
        during = {f"during{i}": f"d{i}" for i in range(200)}
        _put_many(new, during)
        expected.update(during)
        old.start()
        old.wait_ready()
        _wait_caught_up(old, expected)
        leader = cluster.wait_for_leader()
        target = int(leader.status()["applied"])
        wait_until(lambda: int(old.status()["applied"]) >= target, 10,
                   message=lambda: f"node {old.node_id} to apply index {target}\n{old.describe()}")
        # Unacknowledged burst writes may or may not have committed; either way
        # the old leader now agrees with the new one on every key.
        everything = list(expected) + [k for k in burst if k not in expected]
        on_leader = _reads(leader, everything)
        assert on_leader[: len(expected)] == _expected_reads(expected)
        assert all(r in (f"value of {k}: b-{k}", f"Error: Key {k} not found")
                   for k, r in zip(everything[len(expected):], on_leader[len(expected):]))
        assert _reads(old, everything, stale=True) == on_leader
        assert old.status()["keys"] == leader.status()["keys"]
        cluster.wait_connected()
        assert _reads(old, list(expected)) == _expected_reads(expected)

    def test_whole_cluster_kill9_and_restart(self) -> None:
        """
        SIGKILL of all three nodes at once loses no acknowledged write: after a
        restart every node has every write, and deletes stay deleted.
        """
        cluster = self.make_cluster().start()
        leader = cluster.wait_for_leader()
        expected = {f"key{i}": f"value {i}" for i in range(1000)}
        _put_many(leader, expected)
        with leader.client() as client:
            assert client.pipeline(["DELETE key3", "PUT key4 changed"]) == [
                "key3 deleted successfully.",
                "key4 added successfully.",
            ]
        del expected["key3"]
        expected["key4"] = "changed"

        cluster.kill_all()
        cluster.start()
        leader = cluster.wait_for_leader()
        assert _reads(leader, list(expected) + ["key3"]) == _expected_reads(expected) + ["Error: Key key3 not found"]
        for node in cluster.nodes:
            _wait_caught_up(node, expected)
            assert node.status()["keys"] == str(len(expected))
