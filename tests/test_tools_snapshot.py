# -*- test-case-name: tests.test_tools_snapshot -*-
"""
C{kvstore-snapshot}: C{save} keeps only a whole, verified snapshot under the
file's name, and C{restore} makes a data directory that a new cluster's
node recovers from, with the new cluster's identity.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Callable

from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.recovery import recover
from kvstore.statemachine import KeyValueStateMachine, encode_put
from kvstore.storage.errors import StorageError
from kvstore.storage.metadata import MetadataStore
from kvstore.storage.snapshots import CorruptSnapshotError, SnapshotInfo, SnapshotMeta, SnapshotStore
from kvstore.storage.wal import WriteAheadLog
from kvstore.tools import snapshot as tool
from kvstore.tools.ports import allocate_port

NEW_NODE = ["--node-id", "1", "--host", "127.0.0.1", "--port", "7001", "--peers", "7000,7002"]


def make_backup(directory: Path, keys: int = 50, cluster: str = "old-cluster") -> tuple[SnapshotInfo, dict[str, str]]:
    """A snapshot file as a backup: index 60, term 3, C{keys} keys."""
    machine = KeyValueStateMachine()
    for i in range(1, 61):
        machine.apply(i, encode_put(f"k{i % keys}", f"v{i}"))
    store = SnapshotStore.open(str(directory))
    writer = store.begin(SnapshotMeta(60, 3, cluster_id=cluster, membership={"voters": [[0, "127.0.0.1:6000"]]}))
    writer.write(machine.snapshot())
    return writer.finish(), machine.items()


class RestoreTests(SynchronousTestCase):
    """restore makes a new member's data directory from a backup."""

    def test_recoverable_with_new_identity(self) -> None:
        """The restored directory recovers the backup's state, under the new cluster's id and members."""
        backup, items = make_backup(Path(self.mktemp()))
        data_dir = self.mktemp()
        config = tool.node_config(NEW_NODE, data_dir)
        written = tool.restore(backup.path, config, log=lambda _: None)
        self.assertEqual((written.index, written.term), (60, 3))
        wal = WriteAheadLog.open(os.path.join(data_dir, "wal"), run_in_thread=tool._run_now)
        self.assertEqual((wal.first_index, wal.last_index), (61, 60))
        metadata = MetadataStore.open(os.path.join(data_dir, "metadata.json"), run_in_thread=tool._run_now)
        self.assertEqual(
            (metadata.state.term, metadata.state.voted_for, metadata.state.cluster_id, metadata.state.commit_index),
            (3, None, config.cluster_id, 60),
        )
        self.assertNotEqual(config.cluster_id, "old-cluster")
        store = SnapshotStore.open(os.path.join(data_dir, "snapshots"))
        [info] = store.list()
        meta = store.verify(info).meta
        assert meta is not None
        self.assertEqual(meta.cluster_id, config.cluster_id)
        self.assertEqual(
            meta.membership,
            {"voters": [[0, "127.0.0.1:7000"], [1, "127.0.0.1:7001"], [2, "127.0.0.1:7002"]], "learners": []},
        )
        machine = KeyValueStateMachine()
        recovered = recover(wal, store, machine, commit_index=metadata.state.commit_index, cluster_id=config.cluster_id)
        self.assertEqual((recovered.index, recovered.commit_index, recovered.log_reset), (60, 60, False))
        self.assertEqual(machine.items(), items)

    def test_explicit_cluster_id(self) -> None:
        """--cluster-id is the new cluster's id, as for the node."""
        backup, _ = make_backup(Path(self.mktemp()))
        data_dir = self.mktemp()
        tool.main(["restore", backup.path, "--data-dir", data_dir, *NEW_NODE, "--cluster-id", "restored-1"])
        metadata = MetadataStore.open(os.path.join(data_dir, "metadata.json"), run_in_thread=tool._run_now)
        self.assertEqual(metadata.state.cluster_id, "restored-1")

    def test_refuses_a_used_directory(self) -> None:
        """A data directory that holds anything is refused and left alone."""
        backup, _ = make_backup(Path(self.mktemp()))
        data_dir = Path(self.mktemp())
        data_dir.mkdir()
        (data_dir / "metadata.json").write_text("{}")
        with self.assertRaises(ValueError):
            tool.restore(backup.path, tool.node_config(NEW_NODE, str(data_dir)), log=lambda _: None)
        self.assertEqual(os.listdir(data_dir), ["metadata.json"])
        self.assertEqual(
            tool.main(["restore", backup.path, "--data-dir", str(data_dir), *NEW_NODE]), 1
        )

    def test_refuses_a_damaged_backup(self) -> None:
        """A damaged backup is refused before any directory is made."""
        backup, _ = make_backup(Path(self.mktemp()))
        data = bytearray(Path(backup.path).read_bytes())
        data[len(data) // 2] ^= 1
        Path(backup.path).write_bytes(bytes(data))
        data_dir = self.mktemp()
        with self.assertRaises(CorruptSnapshotError):
            tool.restore(backup.path, tool.node_config(NEW_NODE, data_dir), log=lambda _: None)
        self.assertFalse(os.path.exists(data_dir))

    def test_data_dir_required(self) -> None:
        """restore without --data-dir is a usage error."""
        with self.assertRaises(SystemExit):
            tool.parse_args(["restore", "backup.snap", *NEW_NODE], {})


class FakeNode:
    """A socket server answering SNAPSHOT with what C{answer} gives."""

    def __init__(self, test: SynchronousTestCase, answer: Callable[[bytes], bytes]) -> None:
        self.port = allocate_port()
        self.server = socket.create_server(("127.0.0.1", self.port))
        self.server.settimeout(0.05)
        self.stopped = threading.Event()
        self.answer = answer
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()
        test.addCleanup(self.close)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            connection.settimeout(10)
            with connection:
                request = b""
                while not request.endswith(b"\n"):
                    more = connection.recv(100)
                    if not more:
                        break
                    request += more
                self.requests.append(request)
                if request == b"STATUS\n":
                    connection.sendall(b"node=0 role=follower\n")
                else:
                    connection.sendall(self.answer(request))

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.server.close()


class SaveTests(SynchronousTestCase):
    """save keeps a snapshot only when it is whole and verified."""

    def setUp(self) -> None:
        self.backup, _ = make_backup(Path(self.mktemp()))
        self.content = Path(self.backup.path).read_bytes()
        self.target = Path(self.mktemp())
        self.target.mkdir()

    def serving(self, body: bytes, index: int = 60, term: int = 3, size: int | None = None) -> FakeNode:
        header = f"snapshot {index} {term} {len(body) if size is None else size}\n".encode()
        return FakeNode(self, lambda request: header + body if request == b"SNAPSHOT\n" else b"Error: what?\n")

    def test_saved(self) -> None:
        """A good answer is saved under the name, verified, with nothing left beside it."""
        node = self.serving(self.content)
        path = self.target / "backup.snap"
        info = tool.save([node.address], str(path), timeout=10, log=lambda _: None)
        self.assertEqual(path.read_bytes(), self.content)
        self.assertEqual((info.index, info.term, info.digest), (60, 3, self.backup.digest))
        self.assertEqual(os.listdir(self.target), ["backup.snap"])

    def test_damaged_bytes(self) -> None:
        """Bytes that do not match the trailer's checksum leave no file."""
        damaged = bytearray(self.content)
        damaged[len(damaged) // 2] ^= 1
        node = self.serving(bytes(damaged))
        with self.assertRaises(tool.SaveError) as caught:
            tool.save([node.address], str(self.target / "backup.snap"), timeout=10, log=lambda _: None)
        self.assertIn("checksum", str(caught.exception))
        self.assertEqual(os.listdir(self.target), [])

    def test_short(self) -> None:
        """A connection that ends early leaves no file."""
        node = self.serving(self.content[:300], size=len(self.content))
        with self.assertRaises(tool.SaveError):
            tool.save([node.address], str(self.target / "backup.snap"), timeout=10, log=lambda _: None)
        self.assertEqual(os.listdir(self.target), [])

    def test_announced_index_differs(self) -> None:
        """A file whose index is not the announced one is refused."""
        node = self.serving(self.content, index=61)
        with self.assertRaises(tool.SaveError):
            tool.save([node.address], str(self.target / "backup.snap"), timeout=10, log=lambda _: None)
        self.assertEqual(os.listdir(self.target), [])

    def test_next_node_after_an_error(self) -> None:
        """A node that answers with an error is skipped for the next one."""
        refusing = FakeNode(self, lambda request: b"Error: Unavailable: no leader\n")
        good = self.serving(self.content)
        path = self.target / "backup.snap"
        tool.save([refusing.address, good.address], str(path), timeout=10, log=lambda _: None)
        self.assertEqual(path.read_bytes(), self.content)
        self.assertIn(b"SNAPSHOT\n", refusing.requests)

    def test_every_node_fails(self) -> None:
        """With no good answer the error names each node's reason, and the exit status is 1."""
        refusing = FakeNode(self, lambda request: b"Error: Unavailable: no leader\n")
        with self.assertRaises(tool.SaveError) as caught:
            tool.save([refusing.address], str(self.target / "backup.snap"), timeout=10, log=lambda _: None)
        self.assertIn("no leader", str(caught.exception))
        self.assertEqual(tool.main(["save", "--cluster", refusing.address, str(self.target / "b.snap")]), 1)


class VerifyTests(SynchronousTestCase):
    """verify reads a backup without writing to it."""

    def test_read_only_file(self) -> None:
        """A write-protected backup verifies (it is opened read-only)."""
        backup, _ = make_backup(Path(self.mktemp()))
        os.chmod(backup.path, 0o444)
        self.assertEqual(tool.verify(backup.path).digest, backup.digest)

    def test_damaged(self) -> None:
        """A damaged backup fails verification with a storage error."""
        backup, _ = make_backup(Path(self.mktemp()))
        with open(backup.path, "r+b") as f:
            f.truncate(os.path.getsize(backup.path) - 1)
        with self.assertRaises(StorageError):
            tool.verify(backup.path)
