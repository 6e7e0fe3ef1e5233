# -*- test-case-name: tests.test_service -*-
"""
The composition root: turns validated options into a running node.

C{twistd kvstore} finds this module through the plugin in
C{twisted/plugins/kvstore_plugin.py} and calls L{makeService}.  Everything
that can fail because of the environment -- a data directory held by another
process, a corrupt log, a data directory of another cluster -- fails here,
before the reactor runs, with a clear message and a non-zero exit.

The data directory's layout is described in L{kvstore.datadir}.
"""

from __future__ import annotations

import gc
import os
import random
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.usage import UsageError

from kvstore.clock import install_monotonic_clock
from kvstore.datadir import DataDirectoryLock, make_directory_durably
from kvstore.node import FailedPart, FatalError, Node
from kvstore.options import NodeConfig, Options
from kvstore.peers import PeerLinks
from kvstore.protocols.client import ClientFactory
from kvstore.protocols.commands import Limits
from kvstore.protocols.dispatch import DispatchFactory
from kvstore.protocols.peer import MAX_ENTRIES_BYTES, Membership, PeerServerFactory, encoded_entry_bytes
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState as RaftHardState
from kvstore.raft.core import RaftCore
from kvstore.statemachine import KeyValueStateMachine
from kvstore.storage import (
    CorruptLogError,
    CorruptMetadataError,
    HardState,
    MetadataStore,
    WriteAheadLog,
)
from kvstore.storage.fs import FileSystem

__all__ = [
    "Options",
    "makeService",
    "KVStoreService",
    "EXIT_STORAGE_FAILURE",
    "EXIT_APPLY_FAILURE",
    "EXIT_INTERNAL_FAILURE",
    "exit_status_for",
]

#: Exit statuses of a node that stopped itself (fail-stop), one per
#: L{FailedPart}, so that systemd and monitoring see what failed.  All three
#: are in etc/kvstore@.service's RestartPreventExitStatus: each needs an
#: operator.  See docs/operations.md.
#:
#: A WAL or metadata write, truncate or fsync failed.  70 since the first
#: release (units and monitoring match on it), although sysexits calls 70
#: EX_SOFTWARE.
EXIT_STORAGE_FAILURE = 70
#: The state machine raised on a committed entry: EX_DATAERR (65).
EXIT_APPLY_FAILURE = 65
#: Any other error while handling the core's outputs (a bug):
#: EX_UNAVAILABLE (69), sysexits' catch-all for "something did not work".
EXIT_INTERNAL_FAILURE = 69

_EXIT_STATUSES = {
    FailedPart.STORAGE: EXIT_STORAGE_FAILURE,
    FailedPart.APPLY: EXIT_APPLY_FAILURE,
    FailedPart.INTERNAL: EXIT_INTERNAL_FAILURE,
}


def exit_status_for(failure: Failure) -> tuple[FailedPart, int]:
    """The failed part and exit status for a failure the node reported
    through C{on_fatal} (anything but a L{FatalError} counts as internal)."""
    error = failure.value
    part = error.part if isinstance(error, FatalError) else FailedPart.INTERNAL
    return part, _EXIT_STATUSES[part]


def stop_after_fatal(reactor: Any, failure: Failure) -> None:
    """
    Stop the process after the node stopped itself, exiting with the status
    of what failed.  twistd would exit 0 after C{reactor.stop()}; a distinct
    status lets systemd and monitoring see the failure (and not restart
    blindly: after a failed fsync the page cache may hold data the disk
    lacks; a failed apply fails again on the same entry).
    """
    part, status = exit_status_for(failure)
    article = "an" if part.value[0] in "aeiou" else "a"
    Logger().critical(
        "stopping the node after {article} {part} failure; exit status {status}",
        article=article,
        part=part.value,
        status=status,
    )
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, status)
    reactor.stop()


class _NoFsyncFileSystem(FileSystem):
    """For C{--unsafe-no-fsync} benchmarks only: writes reach the OS page
    cache but are never forced to disk, so a machine crash loses them."""

    def fsync(self, fd: int) -> None:
        pass

    def fsync_dir(self, path: str) -> None:
        pass


def tune_garbage_collector() -> None:
    """
    Make Python's cyclic garbage collector cheap for a server like this one.

    Every request allocates a few short-lived container objects (Deferreds,
    reply slots), so with the default thresholds (700, 10, 10) the collector
    ran a full collection several times a second under load, each walking
    the whole in-memory log: measured at about 60 ms each with 500,000
    entries, which is most of the p99 latency.  Larger thresholds collect
    the young generation every 10,000 allocations (still cheap) and make
    full collections rare; freezing what start-up allocated (modules,
    classes, the recovered log) keeps it out of every later collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 100)


class KVStoreService(MultiService):
    """
    A node as a twistd service: the node itself, its listening port and its
    outbound peer links.  Stopping it stops the node, then flushes and
    closes the log.
    """

    log = Logger()

    def __init__(
        self,
        config: NodeConfig,
        node: Node,
        wal: WriteAheadLog,
        lock: DataDirectoryLock,
        peer_links: PeerLinks,
    ) -> None:
        super().__init__()
        self.config = config
        self.node = node
        self.wal = wal
        self.peer_links = peer_links
        self._lock = lock

    def startService(self) -> None:
        config = self.config
        self.log.info(
            "kvstore node {node} (cluster {cluster}) serving {address}, data in {data_dir}, "
            "{entries} log entries recovered, term {term}",
            node=config.node_id,
            cluster=config.cluster_id,
            address=config.address,
            data_dir=os.path.abspath(config.data_dir),
            entries=self.wal.last_index,
            term=self.node.core.term,
        )
        if not config.fsync:
            self.log.warn("fsync is DISABLED (--unsafe-no-fsync): acknowledged writes can be lost on a crash")
        tune_garbage_collector()
        super().startService()
        self.node.start()

    async def _stop(self) -> None:
        self.node.stop()
        await super().stopService()
        try:
            await self.wal.close()
        finally:
            self._lock.release()

    def stopService(self) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self._stop())


def _open_storage(config: NodeConfig) -> tuple[DataDirectoryLock, WriteAheadLog, MetadataStore]:
    make_directory_durably(config.data_dir)
    lock = DataDirectoryLock(config.data_dir)
    lock.acquire()
    try:
        fs = FileSystem() if config.fsync else _NoFsyncFileSystem()
        metadata = MetadataStore.open(os.path.join(config.data_dir, "metadata.json"), fs=fs)
        stored_cluster = metadata.state.cluster_id
        if stored_cluster is not None and stored_cluster != config.cluster_id:
            raise UsageError(
                f"data directory {config.data_dir} belongs to cluster {stored_cluster!r}, "
                f"not {config.cluster_id!r}; refusing to mix clusters"
            )
        wal = WriteAheadLog.open(os.path.join(config.data_dir, "wal"), segment_bytes=config.segment_bytes, fs=fs)
    except (CorruptLogError, CorruptMetadataError) as e:
        lock.release()
        raise UsageError(f"refusing to start: {e}") from None
    except BaseException:
        lock.release()
        raise
    return lock, wal, metadata


def build_service(config: NodeConfig, reactor: Any = None) -> KVStoreService:
    """
    Open storage and wire a node for C{config}.

    @raises UsageError: if the data directory is locked, corrupt, or belongs
        to another cluster.
    """
    # The production node (the global reactor) times Raft on a monotonic
    # clock; see kvstore.clock.  Installed once the node is built, before
    # anything is scheduled, and only if building succeeded.
    monotonic = reactor is None
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    lock, wal, metadata = _open_storage(config)
    peer_ids = tuple(p.node_id for p in config.peers)
    raft_config = RaftConfig(
        node_id=config.node_id,
        peers=peer_ids,
        heartbeat_interval=config.heartbeat_interval,
        election_timeout_min=config.election_timeout_min,
        election_timeout_max=config.election_timeout_max,
        max_entries_bytes=MAX_ENTRIES_BYTES,
    )
    stored = metadata.state
    node_ref: list[Node] = []
    core = RaftCore(
        raft_config,
        reactor,
        random.Random(),
        hard_state=RaftHardState(stored.term, stored.voted_for),
        # The core and the log share one list's plain tuples rather than
        # holding every entry twice.
        entries=wal.entry_tuples(),
        wake=lambda: node_ref[0].wake() if node_ref else None,
        # Count entries as the peer protocol encodes them, so that no
        # AppendEntries exceeds the message limit a follower enforces.
        entry_size=encoded_entry_bytes,
    )
    peer_links = PeerLinks(
        reactor,
        config.node_id,
        config.cluster_id,
        {p.node_id: (p.host, p.port) for p in config.peers},
    )

    def fatal(failure: Failure) -> None:
        stop_after_fatal(reactor, failure)

    def link_status() -> dict[str, object]:
        connected = [str(i) for i, link in sorted(peer_links.links.items()) if link.protocol is not None]
        return {
            "connected": ",".join(connected) or "none",
            "cluster": config.cluster_id,
            "fsyncs": wal.fsync_count,
        }

    cluster_id = config.cluster_id
    node = Node(
        core,
        wal,
        metadata,
        KeyValueStateMachine(),
        peer_links,
        reactor,
        member_addresses={m.node_id: m.address for m in config.members},
        make_hard_state=lambda hs: HardState(hs.term, hs.voted_for, cluster_id),
        commit_timeout=config.commit_timeout,
        read_timeout=config.read_timeout,
        on_fatal=fatal,
        extra_status=link_status,
    )
    node_ref.append(node)

    limits = Limits(
        max_key_bytes=config.max_key_bytes,
        max_value_bytes=config.max_value_bytes,
        max_line_bytes=config.max_line_bytes,
    )
    membership = Membership(config.node_id, config.cluster_id, frozenset(peer_ids))
    factory = DispatchFactory(ClientFactory(node, limits), PeerServerFactory(membership, node.receive))
    service = KVStoreService(config, node, wal, lock, peer_links)
    listener = StreamServerEndpointService(serverFromString(reactor, config.listen), factory)
    # A port that cannot be bound must stop twistd, not leave a node that
    # nobody can reach.
    listener._raiseSynchronously = True
    listener.setServiceParent(service)
    peer_links.setServiceParent(service)
    if monotonic:
        install_monotonic_clock(reactor)
    return service


def makeService(options: Options) -> KVStoreService:
    """
    The twistd entry point (see C{twisted/plugins/kvstore_plugin.py}).

    A node that must not start (its data directory is in use, corrupt, or of
    another cluster) exits with a one-line message and status 1 rather than
    a traceback: the message is what an operator needs.
    """
    try:
        return build_service(options.config)
    except UsageError as e:
        raise SystemExit(f"twistd kvstore: {e}") from None
