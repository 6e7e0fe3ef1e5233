# -*- test-case-name: tests.integration.test_process_snapshots -*-
"""
Real node processes with snapshots (issue 12): a follower restarted alone,
with every other node down, serves stale reads of everything it had
applied (from its newest snapshot and its log through the saved commit
index); and a node killed with SIGKILL while it writes a snapshot restarts
cleanly with every acknowledged write.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from kvstore.storage.fs import FileSystem
from kvstore.storage.snapshots import SnapshotStore
from kvstore.testing.processes import NodeProcess, Timeout, wait_until

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration

SMALL_SNAPSHOTS = ("--snapshot-entries", "100", "--snapshot-catchup-entries", "20")


def saved_commit_index(data_dir: Path) -> int:
    """The commit index in a node's metadata file (replaced atomically, so safe to read while it runs)."""
    try:
        body = (data_dir / "metadata.json").read_bytes().partition(b"\n")[2]
    except FileNotFoundError:
        return 0
    return int(json.loads(body).get("commit_index", 0))


def wait_leader(node: NodeProcess, timeout: float = 15.0) -> None:
    node.wait_ready(timeout)
    wait_until(lambda: node.status()["role"] == "leader", timeout, message=lambda: "leadership\n" + node.describe())


class RestartedAloneTests(ProcessTestCase):
    """A restarted node that cannot reach a leader still serves what it holds."""

    def test_stale_reads_after_restart_alone(self) -> None:
        """After a whole-cluster SIGKILL, one follower started alone answers GET k STALE for every acknowledged write."""
        cluster = self.make_cluster(3)
        for node in cluster.nodes:
            node.extra_args += SMALL_SNAPSHOTS
        cluster.start()
        leader = cluster.wait_for_leader()
        cluster.wait_connected()
        expected = {f"k{i % 150}": f"v{i}" for i in range(450)}
        with leader.client() as client:
            replies = client.pipeline([f"PUT k{i % 150} v{i}" for i in range(450)])
            self.assertEqual(replies, [f"k{i % 150} added successfully." for i in range(450)])
            # One at a time: fewer than a snapshot's worth after the last
            # snapshot, so that only the log (applied through the saved
            # commit index) holds them.
            for i in range(40):
                self.assertEqual(client.request(f"PUT k{i} late{i}"), f"k{i} added successfully.")
                expected[f"k{i}"] = f"late{i}"
        commit = int(leader.status()["commit"])
        follower = cluster.followers(leader)[0]
        wait_until(lambda: int(follower.status()["applied"]) >= commit, 15, message=follower.describe)
        # The follower saves its commit index about once a second.
        wait_until(lambda: saved_commit_index(follower.data_dir) >= commit, 15, message=follower.describe)
        cluster.kill_all()

        follower.start()
        follower.wait_ready()
        status = follower.status()
        self.assertEqual(status["leader"], "none")
        self.assertGreaterEqual(int(status["applied"]), commit)
        with follower.client() as client:
            keys = sorted(expected)
            replies = client.pipeline([f"GET {k} STALE" for k in keys])
        self.assertEqual(replies, [f"value of {k}: {expected[k]}" for k in keys])
        snapshots = os.listdir(follower.data_dir / "snapshots")
        self.assertTrue(snapshots, "no snapshot was taken")
        self.assertIn("recovered 150 keys from snapshot at index", follower.log())


class KillDuringSnapshotTests(ProcessTestCase):
    """SIGKILL while a snapshot file is being written."""

    def test_kill_while_writing_a_snapshot(self) -> None:
        """Killed while a snapshot's temporary file exists, the node restarts, removes it, and has every acknowledged write."""
        node = self.make_node()
        node.extra_args += ("--snapshot-entries", "60", "--snapshot-catchup-entries", "10", "--segment-bytes", "1MiB")
        node.start()
        wait_leader(node)
        snapshots = node.data_dir / "snapshots"
        value = "x" * 60_000
        expected: dict[str, str] = {}
        caught = False
        for round_ in range(12):
            with node.client(timeout=30) as client:
                lines = [f"PUT r{round_}k{i} {value}{round_}" for i in range(60)]
                replies = client.pipeline(lines)
            self.assertEqual(replies, [f"r{round_}k{i} added successfully." for i in range(60)])
            expected.update({f"r{round_}k{i}": f"{value}{round_}" for i in range(60)})
            try:
                wait_until(
                    lambda: any(n.endswith(".tmp") for n in os.listdir(snapshots)), 2.0, interval=0.001
                )
            except Timeout:
                continue  # this round's snapshot was over before it was seen: a larger one next round
            self.assertEqual(node.kill(), -signal.SIGKILL)
            caught = True
            break
        self.assertTrue(caught, "never saw a snapshot being written")
        left = {n for n in os.listdir(snapshots) if n.endswith(".tmp")}

        node.start()
        wait_leader(node)
        # The killed process's temporary file is gone (the restarted node,
        # in a new term, may be writing one of its own by now).  Rarely the
        # snapshot was renamed between the look and the kill: then nothing
        # was left, and the kill landed in the steps right after it.
        self.assertEqual(left & set(os.listdir(snapshots)), set())
        with node.client(timeout=30) as client:
            keys = sorted(expected)
            replies = client.pipeline([f"GET {k}" for k in keys])
        self.assertEqual(replies, [f"value of {k}: {expected[k]}" for k in keys])
        self.assertIn("recovered", node.log())
        node.stop()
        store = SnapshotStore(str(snapshots), FileSystem())
        self.assertEqual([error for _, error in store.scan()], [None] * len(store.list()))
