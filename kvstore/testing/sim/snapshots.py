# -*- test-case-name: tests.test_sim_compaction_run -*-
"""
Snapshots, compaction and InstallSnapshot in a simulated run (issue 12).

Every node runs the production snapshot code (L{kvstore.node.snapshots},
L{kvstore.node.snapshot_transfer}, L{kvstore.node.recovery}) on its simulated disk,
with thresholds small enough that every seed takes snapshots, compacts its
log and sends snapshots to lagging followers over the faulty simulated
network.  L{SnapshotActivity} draws those thresholds per seed and watches
each step through L{ObservedSnapshotStore} (the production store with
hooks) and wrappers of the log's C{drop_prefix} and C{reset_after}:

  - it counts what happened (the soak's coverage line: snapshots taken and
    received, installs, compactions, prunes, crashes in the middle of them);
  - it hands every snapshot file installed under its final name to the
    safety monitor (L{SafetyMonitor.snapshot_written}), with its content;
  - during the fault phase it crashes the node, with a per-seed probability,
    a few milliseconds after a step starts, while its file work and fsyncs
    are in flight: while it takes a snapshot, compacts its log, prunes old
    snapshots, receives one, and installs one (replaces its state machine
    and resets its log).
"""

from __future__ import annotations

import os
import random
import re
from typing import TYPE_CHECKING, Any, Callable

from kvstore.statemachine import ContentDecoder
from kvstore.storage.fs import FileSystem
from kvstore.storage.snapshots import SnapshotInfo, SnapshotMeta, SnapshotStore, SnapshotWriter
from kvstore.storage.snapshots import LocalSnapshotWriter
from kvstore.node.log_compaction import DEFAULT_STEP_ENTRIES
from kvstore.node.snapshots import SnapshotPolicy
from kvstore.storage.wal import WriteAheadLog

if TYPE_CHECKING:
    from kvstore.node.node import Node
    from kvstore.testing.sim.world import Simulation

__all__ = ["ObservedSnapshotStore", "SnapshotActivity", "durable_snapshot_index", "snapshot_indexes"]

_NAME = re.compile(r"^snapshot-(\d{20})-(\d{20})\.snap$")

#: The steps a node may crash in the middle of, and how long after the
#: step starts the crash may come (simulated seconds): a snapshot's slices
#: and fsyncs take a few milliseconds, a transfer tens.
CRASH_WINDOWS = {
    "take": 0.02,
    "compact": 0.005,
    "prune": 0.005,
    "receive": 0.05,
    "install": 0.02,
    "reset": 0.005,
}

#: The soak's coverage counters this module maintains.
COVERAGE = ("snapshots_taken", "snapshots_received", "snapshot_installs", "compactions", "snapshot_prunes",
            "recoveries_from_snapshot", "snapshot_crashes")


def snapshot_indexes(names: list[str]) -> list[int]:
    """The indexes of the snapshot files among C{names}."""
    return [int(m.group(1)) for m in map(_NAME.match, names) if m]


def durable_snapshot_index(fs: Any, directory: str) -> int:
    """The index of the newest snapshot file that a crash of C{fs} (a
    L{SimulatedFileSystem}) now would keep; 0 if none.  A snapshot file is
    fsynced before it is renamed into place, so a durable name has its whole
    content."""
    return max(snapshot_indexes(fs.durable_listdir(directory)), default=0)


def _content(store: SnapshotStore, path: str) -> dict[str, str]:
    match = _NAME.match(os.path.basename(path))
    assert match is not None, path
    info = store.verify(SnapshotInfo(path, int(match.group(1)), int(match.group(2))))
    decoder = ContentDecoder()
    for chunk in store.read_content(info):
        decoder.feed(chunk)
    return decoder.finish()


class ObservedSnapshotStore(SnapshotStore):
    """
    The production L{SnapshotStore}, telling C{on_step(kind, index)} when a
    snapshot is begun ("take") or received ("receive") and when old ones are
    pruned ("prune"), and C{on_installed(path, index, term, items, how)}
    each time a file is renamed into place, with its content (read back
    from the file, as a restart would).  Set L{on_step} and
    L{on_installed} after L{open}.
    """

    on_step: Callable[[str, int], None] = staticmethod(lambda kind, index: None)
    on_installed: Callable[[str, int, int, "dict[str, str] | None", str], None] = staticmethod(
        lambda path, index, term, items, how: None
    )

    def __init__(self, directory: str, fs: FileSystem) -> None:
        super().__init__(directory, fs)
        self._received: set[str] = set()

    def begin(self, meta: SnapshotMeta) -> LocalSnapshotWriter:
        writer = super().begin(meta)
        self.on_step("take", meta.index)
        return writer

    def begin_receive(self, index: int, term: int, size: int) -> SnapshotWriter:
        writer = super().begin_receive(index, term, size)
        self._received.add(writer.path)
        self.on_step("receive", index)
        return writer

    def _install(self, file: Any) -> None:
        super()._install(file)
        path = file.tmp[: -len(".tmp")]
        how = "received" if path in self._received else "took"
        self._received.discard(path)
        match = _NAME.match(os.path.basename(path))
        assert match is not None, path
        try:
            items: dict[str, str] | None = _content(self, path)
        except Exception as e:  # a file the store just verified and installed must read back
            items = None
            how += f" (unreadable: {e!r})"
        self.on_installed(path, int(match.group(1)), int(match.group(2)), items, how)

    def prune(self, keep: int = 2, protect: frozenset[str] = frozenset()) -> list[str]:
        names = super().prune(keep, protect)
        if names:
            self.on_step("prune", max(snapshot_indexes(names), default=0))
        return names


class SnapshotActivity:
    """
    A run's snapshot side (module docstring): the per-seed policy and
    transfer tuning, the hooks on each node's store and log, and the crashes
    in the middle of each step.
    """

    def __init__(self, sim: "Simulation", rng: random.Random, crashes: bool = True) -> None:
        self.sim = sim
        self.rng = rng
        # Every seed snapshots: after 3 to 40 applied entries, mostly few
        # (a run commits from half a dozen entries to a few hundred; 44 %
        # of seeds snapshot every 3 to 5), keeping 0 to 10 entries for
        # lagging followers.
        entries = int(3 * (41 / 3) ** (rng.random() ** 2))
        self.policy = SnapshotPolicy(entries=entries, catchup_entries=rng.randint(0, 10))
        # Chunks of a few bytes to a few KiB (a snapshot of the simulator's
        # three keys is about 200 bytes), so transfers take several chunks,
        # windows and retransmissions; timeouts in proportion to a run.
        self.transfer_options: dict[str, Any] = dict(
            chunk_bytes=rng.choice((16, 64, 256, 4096)),
            window=rng.choice((1, 2, 4)),
            timeout=rng.choice((0.05, 0.2, 0.5)),
            max_retries=rng.choice((2, 5)),
            completion_timeout=rng.choice((0.5, 2.0)),
            idle_timeout=rng.choice((0.5, 2.0)),
        )
        # Per step kind: the probability of a crash in its middle (none
        # without C{crashes}: the reads profile keeps a quiet background,
        # or its cut-off leaders rarely line up).
        common = rng.choice((0.0, 0.02, 0.05, 0.1))
        rare = rng.choice((0.05, 0.2, 0.4))
        if not crashes:
            common = rare = 0.0
        self.crash_probability = {"take": common, "compact": common, "prune": common,
                                  "receive": rare, "install": rare, "reset": rare}
        # Log compaction in steps of 1 to 3 entries in most seeds (the
        # production 4,096 would always finish in one step here), so that
        # crashes, installs and new snapshots land between two steps.  Drawn
        # from a generator of its own, seeded from this one's state, so
        # that every other choice of a seed stays as it was.
        self.compaction_step = random.Random(hash(rng.getstate()[1])).choice((1, 1, 2, 3, DEFAULT_STEP_ENTRIES))

    def describe(self) -> str:
        options = " ".join(f"{k}={v}" for k, v in self.transfer_options.items())
        return (f"snapshot-entries={self.policy.entries} catchup={self.policy.catchup_entries} {options} "
                f"crash={self.crash_probability['take']}/{self.crash_probability['install']} "
                f"compaction-step={self.compaction_step}")

    # -- per node ----------------------------------------------------------

    def open_store(self, node_id: int, fs: FileSystem, directory: str) -> ObservedSnapshotStore:
        store = ObservedSnapshotStore.open(directory, fs=fs)
        assert isinstance(store, ObservedSnapshotStore)
        store.on_step = lambda kind, index: self._step(node_id, kind, index)
        store.on_installed = lambda path, index, term, items, how: self._installed(node_id, path, index, term,
                                                                                    items, how)
        return store

    def watch(self, node_id: int, node: "Node", wal: WriteAheadLog) -> None:
        """Hook the log of C{node}'s incarnation (its compactions and its
        resets after an install) and count a start from a snapshot."""
        if node.core.snapshot_index > 0:
            self.sim.stats["recoveries_from_snapshot"] += 1
        node.compaction.step_entries = self.compaction_step
        drop_prefix, reset_after = wal.drop_prefix, wal.reset_after

        def dropping(upto_index: int) -> None:
            drop_prefix(upto_index)
            self._step(node_id, "compact", upto_index)

        def resetting(index: int, term: int) -> None:
            reset_after(index, term)
            self._step(node_id, "reset", index)

        wal.drop_prefix = dropping  # type: ignore[method-assign]  # the simulator watches this log's compactions
        wal.reset_after = resetting  # type: ignore[method-assign]  # ... and its resets after an install

    # -- events ------------------------------------------------------------

    _COUNTERS = {"take": None, "receive": None, "compact": "compactions", "prune": "snapshot_prunes",
                 "reset": "snapshot_installs"}

    def _step(self, node_id: int, kind: str, index: int) -> None:
        counter = self._COUNTERS[kind]
        if counter is not None:
            self.sim.stats[counter] += 1
        self._maybe_crash(node_id, kind, index)

    def _installed(self, node_id: int, path: str, index: int, term: int, items: "dict[str, str] | None",
                   how: str) -> None:
        self.sim.stats["snapshots_received" if how.startswith("received") else "snapshots_taken"] += 1
        self.sim.monitor.snapshot_written(node_id, path, index, term, items, how)
        if how.startswith("received"):
            self._maybe_crash(node_id, "install", index)

    def _maybe_crash(self, node_id: int, kind: str, index: int) -> None:
        sim = self.sim
        if sim._healed:
            return
        p = self.crash_probability[kind]
        if not p or self.rng.random() >= p:
            return
        node = sim.members[node_id].node
        delay = self.rng.uniform(0, CRASH_WINDOWS[kind])
        sim.clock.callLater(delay, self._crash, node_id, node, kind, index)

    def _crash(self, node_id: int, node: "Node | None", kind: str, index: int) -> None:
        sim = self.sim
        if sim._healed or node is None or sim.members[node_id].node is not node:
            return  # that incarnation is gone already
        if sim.crash(node_id, f"during snapshot {kind} at {index}"):
            sim.stats["snapshot_crashes"] += 1
            sim.clock.callLater(self.rng.uniform(0.005, 0.05), sim._restart_if_faulting, node_id)
