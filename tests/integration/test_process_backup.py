# -*- test-case-name: tests.integration.test_process_backup -*-
"""
Online backup and restore with real processes (issue 12): a snapshot saved
from a live 3-node cluster under write load holds every write acknowledged
before the backup began, and a new 3-node cluster restored from it serves
them (and takes new writes) under its own identity.
"""

from __future__ import annotations

import threading
import time

import pytest

from kvstore.testing.processes import ProcessCluster, wait_until
from kvstore.tools import snapshot as tool

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration

SMALL_SNAPSHOTS = ("--snapshot-entries", "200", "--snapshot-catchup-entries", "50")


class Writer:
    """Writes k<i> = v<i> one at a time, recording when each was acknowledged."""

    def __init__(self, cluster: ProcessCluster) -> None:
        self.client = cluster.client(timeout=10)
        self.acknowledged: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            try:
                self.client.put(f"k{i}", f"v{i}")
            except Exception:
                self.stop.wait(0.05)  # back off; not acknowledged: not counted
            else:
                self.acknowledged.append((time.monotonic(), i))
            i += 1

    def __enter__(self) -> "Writer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.client.close()


class BackupRestoreTests(ProcessTestCase):
    """Backup from a live cluster under load, restore into a new cluster."""

    def restore_into(self, path: str) -> ProcessCluster:
        new = self.make_cluster(3)
        for node in new.nodes:
            options = ["--node-id", str(node.node_id), "--host", node.host, "--port", str(node.port),
                       "--peers", ",".join(f"{node.host}:{p}" for p in node.peers)]
            self.assertEqual(tool.main(["restore", path, "--data-dir", str(node.data_dir), *options]), 0)
        return new

    def test_backup_under_load_and_restore(self) -> None:
        """Every write acknowledged before the backup began is in the restored cluster, which is a new cluster."""
        old = self.make_cluster(3)
        for node in old.nodes:
            node.extra_args += SMALL_SNAPSHOTS
        old.start()
        old.wait_for_leader()
        old.wait_connected()
        path = str(self.tmp_path / "backup.snap")
        with Writer(old) as writer:
            wait_until(lambda: len(writer.acknowledged) >= 300, 30, message="300 writes")
            began = time.monotonic()
            info = tool.save(old.addresses, path, timeout=30, log=lambda _: None)
            wait_until(lambda: writer.acknowledged[-1][0] > time.monotonic() - 0.5, 10, message="writes after")
        before = [i for t, i in writer.acknowledged if t < began]
        self.assertGreaterEqual(len(before), 300)
        self.assertGreater(len(writer.acknowledged), len(before), "the load went on during the backup")
        self.assertGreaterEqual(info.index, max(before))
        old_cluster = old.nodes[0].status()["cluster"]
        old.stop()

        new = self.restore_into(path)
        new.start()
        new.wait_for_leader(30)
        new.wait_connected()
        with new.client(timeout=10) as client:
            for i in before:
                self.assertEqual(client.get(f"k{i}"), f"v{i}")
            client.put("after-restore", "yes")
            self.assertEqual(client.get("after-restore"), "yes")
        statuses = new.statuses()
        self.assertEqual(len({s["cluster"] for s in statuses.values()}), 1)
        self.assertNotEqual(statuses[0]["cluster"], old_cluster)
        self.assertGreaterEqual(int(statuses[0]["keys"]), len(before))

    def test_save_refused_without_a_leader(self) -> None:
        """A lone surviving node cannot vouch for the data: save fails and leaves no file."""
        old = self.make_cluster(3)
        old.start()
        leader = old.wait_for_leader()
        for node in old.followers(leader):
            node.kill()
        path = self.tmp_path / "backup.snap"
        with self.assertRaises(tool.SaveError):
            tool.save([leader.address], str(path), timeout=30, log=lambda _: None)
        self.assertEqual(sorted(p.name for p in self.tmp_path.iterdir() if p.name.startswith("backup")), [])
