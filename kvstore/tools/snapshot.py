# -*- test-case-name: tests.test_tools_snapshot -*-
"""
C{kvstore-snapshot}: online backup and restore of a kvstore cluster, in the
manner of C{etcdctl snapshot save} and C{etcdctl snapshot restore}.

    kvstore-snapshot save [--cluster HOST:PORT,...] FILE
    kvstore-snapshot restore FILE --data-dir DIR --node-id N --port P --peers ... [--cluster-id ID]
    kvstore-snapshot verify FILE

C{save} asks a running node for a consistent, committed snapshot (the
C{SNAPSHOT} request, L{kvstore.protocols.backup}: the node passes a
linearizable read barrier first, so the file holds every write acknowledged
before the request), the leader first.  The bytes go to C{FILE.tmp} beside
C{FILE}; the file's structure and SHA-256 trailer are checked, and its
index and term must be the ones the node announced; then it is fsynced and
renamed to C{FILE}, so C{FILE} is either a whole, verified snapshot or not
there at all.

C{restore} makes the data directory of one member of a B{new} cluster from
such a file: the same snapshot content under new metadata (the new
cluster's id and members), a log that continues after the snapshot's index,
and a metadata file with the snapshot's term and commit index.  The node
options are the ones the new node will be started with (C{--node-id},
C{--host}, C{--port}, C{--peers}, C{--cluster-id} or C{--config}: anything
C{twistd kvstore} accepts); the cluster id is derived from the members
unless given, exactly as the node derives it.  Restore every member of the
new cluster from the same file before starting any: a member started
empty next to restored ones could take part in electing a leader with an
empty log.  C{DIR} must not exist or be empty.

C{verify} checks a backup file and prints what it holds.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
import time
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python import usage

from kvstore.client.blocking import parse_address
from kvstore.daemon.datadir import DataDirectoryLock, make_directory_durably
from kvstore.daemon.options import NodeConfig, Options
from kvstore.storage.errors import StorageError
from kvstore.storage.fs import FileSystem
from kvstore.storage.metadata import MetadataRecord, MetadataStore
from kvstore.storage.snapshots import CHUNK_SIZE, SnapshotInfo, SnapshotMeta, SnapshotStore
from kvstore.storage.wal import PREALLOCATE_BYTES, WriteAheadLog

__all__ = ["main", "save", "restore", "verify", "SaveError"]

#: The seed's local cluster (what C{kvstore} starts), as for C{kvstore-cli}.
DEFAULT_CLUSTER = "127.0.0.1:5000,127.0.0.1:5001,127.0.0.1:5002"
ENVIRONMENT_VARIABLE = "KVSTORE_CLUSTER"
#: The longest header line a node sends.
_MAX_HEADER = 200


class SaveError(Exception):
    """No node handed out a verified snapshot."""


class _ReadOnlyFileSystem(FileSystem):
    """Opens files read-only: a backup file may well be write-protected."""

    def open_rw(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))


def _run_now(function: Callable[[], Any]) -> "Deferred[Any]":
    """A thread runner that runs at once (the tool has no reactor)."""
    try:
        return succeed(function())
    except BaseException:
        return fail()


def _wait(d: "Deferred[Any]") -> Any:
    """The result of an already-fired Deferred (raising its failure)."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "a synchronous runner's Deferred fired at once"
    result = results[0]
    if hasattr(result, "raiseException"):
        result.raiseException()
    return result


def verify(path: str) -> SnapshotInfo:
    """Check C{path}'s structure and digest; its info, with metadata.

    @raise kvstore.storage.snapshots.CorruptSnapshotError: if it is damaged."""
    directory = os.path.dirname(os.path.abspath(path))
    return SnapshotStore(directory, _ReadOnlyFileSystem()).verify_file(os.path.abspath(path))


# ---------------------------------------------------------------------------
# save


def _status(address: str, timeout: float) -> dict[str, str]:
    host, port = parse_address(address)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"STATUS\n")
        data = b""
        while not data.endswith(b"\n"):
            more = sock.recv(4096)
            if not more:
                break
            data += more
    return dict(item.split("=", 1) for item in data.decode("utf-8", "replace").split() if "=" in item)


def _leader_first(nodes: Sequence[str], timeout: float) -> list[str]:
    """C{nodes}, the one that says it leads first (any order if none says so)."""
    for address in nodes:
        try:
            if _status(address, timeout).get("role") == "leader":
                return [address] + [n for n in nodes if n != address]
        except (OSError, ValueError):
            continue
    return list(nodes)


def _fetch(address: str, target: str, timeout: float) -> tuple[int, int, int]:
    """Ask C{address} for a snapshot and write its bytes to C{target};
    return the announced index, term and size."""
    host, port = parse_address(address)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(b"SNAPSHOT\n")
        reader = sock.makefile("rb")
        line = reader.readline(_MAX_HEADER)
        if not line.endswith(b"\n"):
            raise SaveError(f"{address}: no answer" if not line else f"{address}: unexpected answer {line[:80]!r}")
        text = line.decode("utf-8", "replace").strip()
        if text.startswith("Error: "):
            raise SaveError(f"{address}: {text}")
        words = text.split()
        if len(words) != 4 or words[0] != "snapshot" or not all(w.isdigit() for w in words[1:]):
            raise SaveError(f"{address}: unexpected answer {text[:80]!r}")
        index, term, size = (int(w) for w in words[1:])
        remaining = size
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            while remaining:
                chunk = reader.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise SaveError(f"{address}: the connection ended after {size - remaining} of {size} bytes")
                os.write(fd, chunk)
                remaining -= len(chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
    return index, term, size


def _fsync_directory(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(nodes: Sequence[str], path: str, timeout: float = 60.0, log: Callable[[str], None] = print) -> SnapshotInfo:
    """
    Save a verified snapshot of the cluster at C{nodes} to C{path} (see the
    module docstring); try the nodes in turn, the leader first.

    @raise SaveError: if no node gave one.
    """
    path = os.path.abspath(path)
    target = path + ".tmp"
    errors = []
    for address in _leader_first(nodes, min(timeout, 5.0)):
        try:
            started = time.monotonic()
            index, term, size = _fetch(address, target, timeout)
            info = verify(target)
            if (info.index, info.term, info.size) != (index, term, size):
                raise SaveError(
                    f"{address}: announced index {index} term {term} ({size} bytes), "
                    f"but the file holds index {info.index} term {info.term} ({info.size} bytes)"
                )
            os.replace(target, path)
            _fsync_directory(os.path.dirname(path))
            log(
                f"saved the snapshot at index {index} term {term} from {address} to {path} "
                f"({size} bytes, sha256 {info.digest}) in {time.monotonic() - started:.1f} s"
            )
            return SnapshotInfo(path, info.index, info.term, info.meta, info.size, info.digest,
                                info.content_offset, info.content_length)
        except (OSError, SaveError, StorageError) as e:
            errors.append(str(e) if isinstance(e, (SaveError, StorageError)) else f"{address}: {e}")
            try:
                os.unlink(target)
            except FileNotFoundError:
                pass
    raise SaveError("no node gave a snapshot: " + "; ".join(errors))


# ---------------------------------------------------------------------------
# restore


def node_config(options: Sequence[str], data_dir: str) -> NodeConfig:
    """The new node's configuration, parsed and validated as C{twistd kvstore}
    does (so the cluster id is derived the same way).

    @raise usage.UsageError: if the options are not valid."""
    parser = Options()
    parser.parseOptions([*options, "--data-dir", data_dir])
    config: NodeConfig = parser.config
    return config


def membership(config: NodeConfig) -> dict[str, object]:
    """The membership a node records in its snapshots (L{kvstore.node.node.Node})."""
    return {"voters": [[m.node_id, m.address] for m in config.members], "learners": []}


def restore(path: str, config: NodeConfig, log: Callable[[str], None] = print) -> SnapshotInfo:
    """
    Create C{config.data_dir} for a member of a new cluster from the backup
    at C{path} (see the module docstring).  Returns the snapshot written
    there.

    @raise ValueError: if the data directory is not empty.
    @raise kvstore.storage.snapshots.CorruptSnapshotError: if the backup is damaged.
    """
    backup = verify(path)
    meta = backup.meta
    assert meta is not None
    data_dir = os.path.abspath(config.data_dir)
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise ValueError(f"{data_dir} exists and is not an empty directory: restore makes a new one")
    make_directory_durably(data_dir)
    lock = DataDirectoryLock(data_dir)
    lock.acquire()
    try:
        store = SnapshotStore.open(os.path.join(data_dir, "snapshots"))
        writer = store.begin(
            SnapshotMeta(
                meta.index, meta.term, cluster_id=config.cluster_id, membership=membership(config),
                content_format=meta.content_format,
            )
        )
        try:
            for chunk in SnapshotStore(os.path.dirname(backup.path), _ReadOnlyFileSystem()).read_content(backup):
                writer.write(chunk)
            written = writer.finish()
        except BaseException:
            writer.abort()
            raise
        # The content must be the backup's, byte for byte.
        check = hashlib.sha256()
        for chunk in store.read_content(written):
            check.update(chunk)
        original = hashlib.sha256()
        for chunk in SnapshotStore(os.path.dirname(backup.path), _ReadOnlyFileSystem()).read_content(backup):
            original.update(chunk)
        if check.digest() != original.digest():
            raise StorageError(f"{written.path}: the restored content differs from {path}")
        wal = WriteAheadLog.open(
            os.path.join(data_dir, "wal"), segment_bytes=config.segment_bytes, run_in_thread=_run_now,
            preallocate_bytes=PREALLOCATE_BYTES,  # segments as the node writes them
        )
        wal.reset_after(meta.index, meta.term)
        _wait(wal.sync())
        _wait(wal.close())
        metadata = MetadataStore.open(os.path.join(data_dir, "metadata.json"), run_in_thread=_run_now)
        _wait(metadata.save(MetadataRecord(meta.term, None, config.cluster_id, meta.index)))
    finally:
        lock.release()
    log(
        f"restored node {config.node_id} of cluster {config.cluster_id} in {data_dir} from {path}: snapshot at "
        f"index {meta.index} term {meta.term} (from cluster {meta.cluster_id}), members "
        + ",".join(str(m) for m in config.members)
    )
    return written


# ---------------------------------------------------------------------------
# command line


def parse_args(argv: Sequence[str] | None, environ: dict[str, str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="kvstore-snapshot",
        description="Online backup (save) and restore of a kvstore cluster, like etcdctl snapshot save/restore.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_save = commands.add_parser("save", help="save a consistent snapshot of a running cluster to FILE")
    p_save.add_argument("--cluster", "-C", default=environ.get(ENVIRONMENT_VARIABLE) or DEFAULT_CLUSTER,
                        help=f"comma-separated host:port of some or all nodes (default: ${ENVIRONMENT_VARIABLE}, "
                             f"else {DEFAULT_CLUSTER})")
    p_save.add_argument("--timeout", type=float, default=60.0,
                        help="seconds a node may take to answer and between two reads (default 60)")
    p_save.add_argument("file", metavar="FILE")
    p_restore = commands.add_parser(
        "restore",
        help="make a new cluster member's data directory from FILE",
        description="Make the data directory of one member of a new cluster from FILE. Every option after FILE "
                    "is a node option, as given to 'twistd kvstore' when the node is started (--data-dir is "
                    "required; --node-id, --host, --port, --peers, --cluster-id, --config ...).",
    )
    p_restore.add_argument("file", metavar="FILE")
    p_verify = commands.add_parser("verify", help="check a backup file and print what it holds")
    p_verify.add_argument("file", metavar="FILE")
    args, rest = parser.parse_known_args(argv)
    if args.command != "restore" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "save":
        args.nodes = [a.strip() for a in args.cluster.split(",") if a.strip()]
        try:
            if not args.nodes:
                raise ValueError("no node address")
            for address in args.nodes:
                parse_address(address)
        except ValueError as e:
            p_save.error(f"--cluster: {e}")
    if args.command == "restore" and not any(o == "--data-dir" or o.startswith("--data-dir=") for o in rest):
        p_restore.error("--data-dir is required")
    return args, rest


def _data_dir(options: Sequence[str]) -> tuple[str, list[str]]:
    """C{--data-dir}'s value and the other options."""
    rest: list[str] = []
    data_dir = ""
    items = list(options)
    while items:
        item = items.pop(0)
        if item == "--data-dir" and items:
            data_dir = items.pop(0)
        elif item.startswith("--data-dir="):
            data_dir = item.split("=", 1)[1]
        else:
            rest.append(item)
    return data_dir, rest


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = parse_args(argv, dict(os.environ))
    try:
        if args.command == "save":
            save(args.nodes, args.file, args.timeout)
        elif args.command == "verify":
            info = verify(args.file)
            assert info.meta is not None
            print(
                f"{args.file}: snapshot at index {info.index} term {info.term}, {info.size} bytes, sha256 "
                f"{info.digest}, cluster {info.meta.cluster_id}, content {info.meta.content_format}, "
                f"members {info.meta.membership}"
            )
        else:
            data_dir, options = _data_dir(rest)
            restore(args.file, node_config(options, data_dir))
    except usage.UsageError as e:
        sys.stderr.write(f"kvstore-snapshot: {e}\n")
        return 2
    except (SaveError, StorageError, ValueError, OSError) as e:
        sys.stderr.write(f"kvstore-snapshot: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
