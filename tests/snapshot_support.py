"""
Helpers shared by the snapshot tests: a simulated file system that can also
C{pread} (the snapshot store reads files in chunks), and a small snapshot.
"""

from __future__ import annotations

from typing import Any

try:  # the simulator is moving to kvstore.testing.sim (the layout change)
    from kvstore.testing.sim.fs import SimulatedFileSystem  # type: ignore[import-not-found]
except ImportError:
    from kvstore.testing.sim.fs import SimulatedFileSystem

from kvstore.storage.snapshots import SnapshotInfo, SnapshotMeta, SnapshotStore

DIRECTORY = "/data/snapshots"


class ReadableSimulatedFileSystem(SimulatedFileSystem):
    """L{SimulatedFileSystem} with the two reading calls the snapshot store
    needs.  (They belong in the simulator's file system itself; they are here
    while that module is being moved.)"""

    def pread(self, fd: int, length: int, offset: int) -> bytes:
        return bytes(self._fd(fd).data[offset : offset + length])

    def file_size(self, fd: int) -> int:
        return len(self._fd(fd).data)


def simulated_store() -> tuple[ReadableSimulatedFileSystem, SnapshotStore]:
    fs = ReadableSimulatedFileSystem()
    fs.makedirs_durable("/data")
    return fs, SnapshotStore.open(DIRECTORY, fs)


def meta(index: int, term: int = 1, **kwargs: Any) -> SnapshotMeta:
    kwargs.setdefault("cluster_id", "c-1")
    kwargs.setdefault("membership", {"voters": [[1, "127.0.0.1:7001"], [2, "127.0.0.1:7002"]], "learners": []})
    return SnapshotMeta(index=index, term=term, **kwargs)


def content_for(index: int, size: int = 300) -> bytes:
    """Distinct, recognisable content for the snapshot at C{index}."""
    return bytes((index * 31 + i) % 251 for i in range(size))


def write_snapshot(store: SnapshotStore, index: int, term: int = 1, content: bytes | None = None,
                   chunk: int = 64) -> SnapshotInfo:
    """Write a snapshot through L{LocalSnapshotWriter} in C{chunk}-byte pieces."""
    content = content_for(index) if content is None else content
    writer = store.begin(meta(index, term))
    for start in range(0, len(content), chunk):
        writer.write(content[start : start + chunk])
    return writer.finish()


def read_content(store: SnapshotStore, info: SnapshotInfo) -> bytes:
    return b"".join(store.read_content(info))
