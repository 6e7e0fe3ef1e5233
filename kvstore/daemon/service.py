# -*- test-case-name: tests.test_service -*-
"""
The composition root: turns validated options into a running node.

C{twistd kvstore} finds this module through the plugin in
C{twisted/plugins/kvstore_plugin.py}, parses the command line with its
L{Options} and calls L{makeService}.  Everything that can fail because of
the environment -- a data directory held by another process, a corrupt log,
a data directory of another cluster, a port already in use -- fails here,
before the reactor runs, with a one-line message and exit status 1.

By default a node writes its pid to C{<data-dir>/twistd.pid} rather than
twistd's C{twistd.pid} in the working directory, so that the three nodes of
a cluster can be started from one directory (see L{Options}).

The data directory's layout is described in L{kvstore.daemon.datadir}.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import random
import signal
import time
from typing import Any, Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.endpoints import UNIXServerEndpoint, serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.usage import UsageError

from kvstore import allocator
from kvstore.daemon import log_format, sd_notify, socket_activation
from kvstore.admin.wiring import Instruments, NoInstruments
from kvstore.node.build import build_node
from kvstore.daemon.clock import install_monotonic_clock
from kvstore.daemon.datadir import DataDirectoryLock, make_directory_durably
from kvstore.node.node import FailedPart, FatalError, Node
from kvstore.daemon.options import NodeConfig, format_address
from kvstore.daemon.options import Options as NodeOptions
from kvstore.node.forwarding import PeerLinksChannel, attach_forwarding
from kvstore.protocols.client import ClientFactory
from kvstore.protocols.peer_links import PeerLinks
from kvstore.protocols.commands import Limits
from kvstore.protocols.backup import SnapshotOrClientFactory
from kvstore.protocols.dispatch import DispatchFactory
from kvstore.protocols.peer import Membership, PeerServerFactory
from kvstore.daemon.identity import Identity, IdentityError, load_identity, save_identity
from kvstore.daemon.join import JoinRefused, join_cluster
from kvstore.node.peer_membership import FollowConfiguration
from kvstore.raft.membership import Configuration
from kvstore.daemon.reload import RELOADABLE, Reloader, RunningConfig, parse_arguments
from kvstore.node.snapshots import SnapshotPolicy
from kvstore.node.recovery import RecoveryError
from kvstore.storage import CorruptLogError, CorruptMetadataError, MetadataStore, WriteAheadLog
from kvstore.storage.fs import FileSystem
from kvstore.storage.snapshots import CorruptSnapshotError, SnapshotStore
from kvstore.storage.wal import PREALLOCATE_BYTES, InlineFlushPolicy, StorageThread, ThreadRunner, run_inline

__all__ = [
    "Options",
    "makeService",
    "KVStoreService",
    "EXIT_STORAGE_FAILURE",
    "EXIT_APPLY_FAILURE",
    "EXIT_INTERNAL_FAILURE",
    "exit_status_for",
    "PIDFILE_NAME",
    "LOGFILE_NAME",
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

#: The pid file's name inside the data directory, when twistd's C{--pidfile}
#: is left at its default.
PIDFILE_NAME = "twistd.pid"
#: The log file's name inside the data directory, for a daemonized node whose
#: C{--logfile} is left at twistd's default.
LOGFILE_NAME = "twistd.log"


class Options(NodeOptions):
    """
    C{twistd kvstore}'s options: L{kvstore.daemon.options.Options}, plus where the
    pid file goes.

    twistd's default pid file is C{twistd.pid} in the working directory, so
    the second node started from the same directory (the design card's three
    command lines, one per terminal) finds the first one's and refuses to
    start.  When C{--pidfile} is left at twistd's default, this clears it
    (twistd then neither checks nor writes one) and the node writes its pid
    to C{<data-dir>/twistd.pid} itself once it holds the data directory's
    lock (L{KVStoreService}).  That file is never checked: the lock is what
    keeps two nodes off one data directory, so a file left by a crash, even
    naming a pid reused since, cannot stop a node from starting.  Any other
    C{--pidfile} (C{--pidfile=} for none) is left to twistd.  twistd records
    values, not which options were given, so an explicit C{--pidfile
    twistd.pid} is taken for the default; write C{--pidfile ./twistd.pid}.
    Likewise a daemonized node (no C{-n}) without C{--logfile}, C{--syslog}
    or C{--logger} logs to C{<data-dir>/twistd.log}, not C{./twistd.log}.

    @ivar pidfile: the absolute path this node writes its pid to, or L{None}
        when twistd handles the pid file (or there is no twistd parent).
    """

    pidfile: str | None = None

    def postOptions(self) -> None:
        super().postOptions()
        log_format.check_twistd_options(self.log_format, getattr(self, "parent", None), self.log_level)
        # Set by usage.Options when parsed as twistd's subcommand; twistd's
        # own postOptions (which makes its pidfile absolute) runs after this.
        parent = getattr(self, "parent", None)
        if parent is None or "pidfile" not in getattr(parent, "defaults", {}):
            return  # not under twistd, or a twistd without pid files (Windows)
        if parent["pidfile"] == parent.defaults["pidfile"]:
            parent["pidfile"] = ""
            # Absolute now: twistd may chdir (--rundir) before the node starts.
            self.pidfile = os.path.abspath(os.path.join(self.config.data_dir, PIDFILE_NAME))
        if _daemon_logs_to_default_file(parent):
            # Daemonized nodes started from one directory would otherwise
            # share twistd's ./twistd.log, which each opens at its own offset
            # (not O_APPEND): they overwrite each other's lines.  The pid
            # file's check used to refuse the second node; it no longer does.
            parent["logfile"] = os.path.abspath(os.path.join(self.config.data_dir, LOGFILE_NAME))


def _daemon_logs_to_default_file(parent: Any) -> bool:
    """Whether twistd will daemonize and log to its default C{twistd.log}
    (no C{--logfile}, C{--syslog} or C{--logger})."""
    daemonizes = not (parent.get("nodaemon") or parent.get("debug"))
    return daemonizes and not parent.get("logfile") and not parent.get("syslog") and not parent.get("logger")


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

    #: The service that listens for clients and peers (set by build_service).
    listener: "_EarlyListener"
    #: The admin HTTP endpoint's listener (--admin-listen), or None.
    admin_listener: "_EarlyListener | None" = None
    #: What systemd is told (kvstore.daemon.sd_notify), set when the service starts.
    systemd: sd_notify.NodeNotifier | None = None
    #: The reactor of the systemd notifier's timers and log rotation; None:
    #: the global reactor.
    clock: Any = None
    #: The log observer twistd uses once this service joins its application
    #: (see kvstore.daemon.log_format): the --log-level filter in front of the
    #: --log-format observer; None: twistd's own (--syslog, --logger).
    log_observer: Any = None
    #: That filter, whose level a reload changes; None: twistd's own observer.
    log_filter: log_format.LevelFilter | None = None
    #: Reloads the configuration (kvstore.daemon.reload); set by makeService.
    reloader: Reloader | None = None
    #: Whether SIGHUP reloads while the service runs (twistd's node only).
    reload_on_sighup = False
    #: The client protocol's factory, whose limits a reload changes.
    client_factory: ClientFactory
    #: The thread snapshot files are written on (set by build_service).
    snapshot_thread: StorageThread | None = None

    def setServiceParent(self, parent: Any) -> None:
        super().setServiceParent(parent)
        if self.log_observer is not None:
            log_format.install(parent, self.log_observer)

    def __init__(
        self,
        config: NodeConfig,
        node: Node,
        wal: WriteAheadLog,
        lock: DataDirectoryLock,
        peer_links: PeerLinks,
        pidfile: str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.node = node
        self.wal = wal
        self.peer_links = peer_links
        self.pidfile = pidfile
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
        # Here, not in makeService: twistd has daemonized by now (if it
        # does), so this is the pid of the process that serves.
        if self.pidfile is not None:
            with open(self.pidfile, "w") as f:
                f.write(f"{os.getpid()}\n")
        super().startService()
        self.node.start()
        # READY=1 once listening, STATUS= and WATCHDOG=1; a no-op without $NOTIFY_SOCKET.
        self.systemd = sd_notify.NodeNotifier.from_environment(os.environ, self.node.core, self._reactor)
        self.systemd.start(getattr(getattr(self, "listener", None), "_waitingForPort", None))
        if self.reload_on_sighup and self.reloader is not None:
            self.install_sighup()

    _previous_sighup: Any = None
    _sighup_installed = False

    def install_sighup(self) -> None:
        """
        Reload on SIGHUP from now on.  L{attach_log_and_reload} calls this
        under twistd, before recovery and long before L{startService}: a
        SIGHUP meanwhile (C{kill -HUP} while the log is replayed) would
        otherwise take its default action and kill the node.  Its reload
        waits for the reactor, so it is carried out once the node runs.
        """
        if not self._sighup_installed:
            self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
            self._sighup_installed = True

    def _sighup(self, signum: int, frame: Any) -> None:
        """The SIGHUP handler: runs between two bytecodes of whatever the
        main thread was doing, so it only asks the reactor to reload."""
        self._reactor().callFromThread(self.reload)

    def reload(self) -> None:
        """Reload the configuration (SIGHUP; see kvstore.daemon.reload)."""
        if self.reloader is not None and self.running:
            self.reloader.reload()

    def apply_config(self, new: RunningConfig) -> None:
        """
        Apply a reloaded configuration's run-time settings
        (L{kvstore.daemon.reload.RELOADABLE}): everything is computed before
        anything changes, so a value that fails leaves all as it was.
        """
        config = new.config
        limits = Limits(
            max_key_bytes=config.max_key_bytes,
            max_value_bytes=config.max_value_bytes,
            max_line_bytes=config.max_line_bytes,
        )
        level = log_format.parse_level(new.log_level)
        self.node.set_timeouts(config.commit_timeout, config.read_timeout)
        self.client_factory.limits = limits
        if self.log_filter is not None:
            self.log_filter.level = level
        self.config = config

    def _reactor(self) -> Any:
        """C{clock} if set (tests), else the global reactor."""
        if self.clock is not None:
            return self.clock
        from twisted.internet import reactor

        return reactor

    async def _stop(self) -> None:
        if self._sighup_installed:
            signal.signal(signal.SIGHUP, self._previous_sighup if self._previous_sighup is not None else signal.SIG_DFL)
            self._previous_sighup, self._sighup_installed = None, False
        if self.systemd is not None:
            self.systemd.stopping()  # STOPPING=1 first: systemd shows the node as deactivating
        # A leader hands leadership over first (issue 13), so a planned
        # restart costs the cluster a transfer, not an election timeout.
        try:
            successor = await self.node.hand_over_leadership(self.config.raft.election_timeout_min)
        except Exception:
            self.log.failure("handing leadership over at shutdown failed")
        else:
            if successor is not None:
                self.log.info("leadership handed to node {node} before stopping", node=successor)
        self.node.stop()
        try:
            # A node restarted alone then applies everything it had applied.
            await self.node.save_commit_index()
        except Exception:
            self.log.failure("saving the commit index at shutdown failed")
        await super().stopService()
        if self.snapshot_thread is not None:
            self.snapshot_thread.stop()
        try:
            await self.wal.close()
        finally:
            if self.pidfile is not None:
                try:
                    os.unlink(self.pidfile)
                except FileNotFoundError:
                    pass
            self._lock.release()

    def stopService(self) -> Any:
        from twisted.internet.defer import Deferred

        return Deferred.fromCoroutine(self._stop())


def _has_data(data_dir: str) -> bool:
    """Whether C{data_dir} holds a node's state (a metadata file, log
    segments or snapshots): a joining node needs an empty one."""
    if os.path.exists(os.path.join(data_dir, "metadata.json")):
        return True
    return any(
        os.path.isdir(os.path.join(data_dir, sub)) and os.listdir(os.path.join(data_dir, sub))
        for sub in ("wal", "snapshots")
    )


def resolve_identity(config: NodeConfig) -> tuple[NodeConfig, Identity]:
    """
    The data directory's identity (L{kvstore.daemon.identity}), recorded now if
    this is its first start: bootstrapped from the command line, or, with
    C{--join}, by joining the cluster (L{kvstore.daemon.join}).  Returns C{config}
    with the recorded cluster id when none was given.  Call it holding the
    data directory's lock if it can (see L{build_service}).

    @raises UsageError: the identity is unreadable or of another node or
        cluster, or joining was refused (the text is the C{Error:} line).
    """
    log = Logger()
    data_dir = config.data_dir
    try:
        identity = load_identity(data_dir)
    except IdentityError as e:
        raise UsageError(f"refusing to start: {e}") from None
    given = Configuration.bootstrap(config.node_id, config.raft.peers, {m.node_id: m.address for m in config.members})
    if identity is not None:
        if identity.node_id != config.node_id:
            raise UsageError(f"data directory {data_dir} belongs to node {identity.node_id}, not --node-id {config.node_id}")
        if config.cluster_id_derived:
            config = dataclasses.replace(config, cluster_id=identity.cluster_id)
        elif identity.cluster_id != config.cluster_id:
            raise UsageError(
                f"data directory {data_dir} belongs to cluster {identity.cluster_id!r}, "
                f"not {config.cluster_id!r}; refusing to mix clusters"
            )
        if not identity.joined and given != identity.configuration() and not config.join:
            log.warn(
                "--peers ({given}) differs from the membership this data directory was bootstrapped with"
                " ({recorded}); membership comes from the log and snapshots, the command line is ignored",
                given=given.members_text(), recorded=identity.configuration().members_text(),
            )
        return config, identity
    if config.join:
        if _has_data(data_dir):
            raise UsageError(f"Error: --join needs an empty data directory, and {data_dir} holds a node's data")
        try:
            joined = join_cluster(
                config.join, config.node_id, config.address, None if config.cluster_id_derived else config.cluster_id
            )
        except JoinRefused as e:
            raise UsageError(str(e)) from None
        config = dataclasses.replace(config, cluster_id=joined.cluster_id)
        identity = Identity(joined.cluster_id, config.node_id, "", joined.members)
    else:
        identity = Identity(config.cluster_id, config.node_id, given.to_text())
    save_identity(data_dir, identity, fsync=config.fsync)
    return config, identity


def _open_storage(
    config: NodeConfig, wal_file_system: Callable[[FileSystem], FileSystem] = lambda fs: fs
) -> tuple[DataDirectoryLock, WriteAheadLog, MetadataStore, SnapshotStore]:
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
        wal = WriteAheadLog.open(
            os.path.join(config.data_dir, "wal"), segment_bytes=config.segment_bytes, fs=wal_file_system(fs),
            preallocate_bytes=PREALLOCATE_BYTES,  # fsyncs that skip the journal (issue 16)
            run_in_thread=None if config.fsync else run_inline,  # no fsync: no thread hand-off either
            # Small flushes sync on the reactor while the disk is fast (issue 16).
            inline_flush=InlineFlushPolicy() if config.fsync else None,
        )
        snapshots = SnapshotStore.open(os.path.join(config.data_dir, "snapshots"), fs=fs)
    except (CorruptLogError, CorruptMetadataError) as e:
        lock.release()
        raise UsageError(f"refusing to start: {e}") from None
    except BaseException:
        lock.release()
        raise
    return lock, wal, metadata, snapshots


def snapshot_runner_for(wal: WriteAheadLog, snapshot_thread: ThreadRunner) -> ThreadRunner:
    """
    The runner for the snapshots' file work: C{snapshot_thread}, and while
    one of its jobs runs the log flushes on its own thread, not the reactor
    (L{InlineFlushPolicy.sharing_the_disk}: a small fsync waits behind a
    snapshot's, tens of milliseconds).
    """
    policy = wal.inline_flush
    return snapshot_thread if policy is None else policy.sharing_the_disk(snapshot_thread)


class _EarlyListener(StreamServerEndpointService):
    """
    A L{StreamServerEndpointService} that can be made to listen before the
    service starts (L{makeService} does, so that a port in use is refused
    like the other start-up problems) and then does not listen again.
    """

    def listen_now(self) -> None:
        """
        Listen on the endpoint at once.

        @raise Exception: whatever the endpoint's C{listen} fails with,
            C{CannotListenError} for a port in use.
        """
        self._raiseSynchronously = True
        super().privilegedStartService()

    def privilegedStartService(self) -> None:
        if self._waitingForPort is None:
            super().privilegedStartService()
        else:
            # Already listening: only mark the service started-privileged.
            Service.privilegedStartService(self)


def build_service(config: NodeConfig, reactor: Any = None, pidfile: str | None = None) -> KVStoreService:
    """
    Open storage and wire a node for C{config}; its listener (the
    C{listener} attribute) listens when the service starts, or at once with
    C{listener.listen_now()}.  C{pidfile}, if given, is written with this
    process's pid while the service runs.

    @raises UsageError: if the data directory is locked, corrupt, or belongs
        to another cluster.
    """
    # The production node (the global reactor) times Raft on a monotonic
    # clock; see kvstore.daemon.clock.  Installed once the node is built, before
    # anything is scheduled, and only if building succeeded.
    monotonic = reactor is None
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    # Parsed before storage is opened: a systemd endpoint with no socket
    # passed by systemd, or any other endpoint twisted cannot make, is a
    # one-line refusal, not a traceback.
    try:
        if socket_activation.is_systemd_description(config.listen):
            passed = socket_activation.listen_environment(os.environ)
            endpoint = socket_activation.server_endpoint(reactor, config.listen, passed, os.getpid())
        else:
            endpoint = serverFromString(reactor, config.listen)
    except Exception as e:
        raise UsageError(f"cannot listen on {config.listen!r}: {_endpoint_error(config.listen, e)}") from None
    started = time.monotonic()
    # A bad admin endpoint is refused before anything touches the disk.
    instruments, admin = _instruments(config, reactor)
    # Before the storage is opened: the recorded (or joined) cluster id is
    # the one the metadata store is checked against.  A second process on
    # the same fresh directory is then refused by the lock; at worst it has
    # asked the cluster to add a node that is already added (idempotent).
    make_directory_durably(config.data_dir)
    config, identity = resolve_identity(config)
    if admin is None:
        lock, wal, metadata, snapshots = _open_storage(config)
    else:  # the WAL's fsyncs are timed
        lock, wal, metadata, snapshots = _open_storage(config, instruments.file_system)
    instruments.watch_log(wal)
    peer_links = PeerLinks(
        reactor,
        config.node_id,
        config.cluster_id,
        {p.node_id: (p.host, p.port) for p in config.peers},
        address=config.address,
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

    # Snapshot files are written and fsynced on a thread of their own, so
    # that a large snapshot's fsync never holds up the log's group commits.
    snapshot_thread = StorageThread(reactor, name="kvstore-snapshots")
    try:
        node = build_node(
            config.raft,
            clock=reactor,
            rng=random.Random(),
            log=wal,
            metadata=metadata,
            cluster_id=config.cluster_id,
            peers=instruments.peers(peer_links),
            member_addresses={m.node_id: m.address for m in config.members},
            commit_timeout=config.commit_timeout,
            read_timeout=config.read_timeout,
            on_fatal=fatal,
            extra_status=link_status,
            snapshots=snapshots,
            snapshot_policy=SnapshotPolicy(
                entries=config.snapshot_entries,
                bytes=config.snapshot_bytes,
                catchup_entries=config.snapshot_catchup_entries,
            ),
            snapshot_runner=snapshot_runner_for(wal, snapshot_thread),
            recovery_started=started,
            metrics=instruments.metrics,
            configuration=identity.configuration(),
            bootstrap=not identity.joined,
        )
    except (RecoveryError, CorruptSnapshotError) as e:
        lock.release()
        raise UsageError(f"refusing to start: {e}") from None
    except BaseException:
        lock.release()
        raise

    limits = Limits(
        max_key_bytes=config.max_key_bytes,
        max_value_bytes=config.max_value_bytes,
        max_line_bytes=config.max_line_bytes,
    )
    membership = Membership(config.node_id, config.cluster_id, frozenset(config.raft.peers))
    client_factory = instruments.client_factory(node, limits)
    peer_server = PeerServerFactory(membership, instruments.receive(node.receive))
    # A peer that connects to this node (a restarted follower) gets this
    # node's link back at once, not after the link's back-off.
    peer_server.on_hello = peer_links.reconnect_now
    factory = DispatchFactory(client_factory, peer_server, SnapshotOrClientFactory(node, client_factory))
    # Peer links and the peer server's membership check follow the core's
    # configuration from now on (issue 13), starting with the one recovered.
    follow = FollowConfiguration(
        config.node_id, config.cluster_id, peer_links, peer_server,
        {p.node_id: p.address for p in config.peers}, seed=identity.seed,
    )
    follow(node.core.configuration)
    node.configuration_observers.append(follow)
    node.departing_observers.append(follow.departing_changed)
    node.committed_configuration_observers.append(follow.committed_changed)
    # A non-member that connects (a leader this node does not know yet) is
    # linked back to, so this node can answer it and catch up.
    peer_server.on_stranger = follow.stranger
    node.peer_connected = lambda peer: peer_links.connected(peer)
    # Write forwarding (issue 14): this node always runs what its followers
    # forward; with --forward-writes it forwards what it refuses itself.
    attach_forwarding(
        node, client_factory, peer_links, reactor, forward_writes=config.forward_writes,
        channel=PeerLinksChannel(peer_links),
    )
    service = KVStoreService(config, node, wal, lock, peer_links, pidfile)
    service.client_factory = client_factory
    service.snapshot_thread = snapshot_thread
    listener = _EarlyListener(endpoint, factory)
    # A port that cannot be bound must stop twistd, not leave a node that
    # nobody can reach.
    listener._raiseSynchronously = True
    listener.setServiceParent(service)
    service.listener = listener
    peer_links.setServiceParent(service)
    if admin is not None:
        _add_admin_endpoint(service, admin, config)
    if monotonic:
        install_monotonic_clock(reactor)
    return service


def _instruments(config: NodeConfig, reactor: Any) -> tuple[Instruments, tuple[Any, Any] | None]:
    """
    The node's instruments: none without C{--admin-listen}; with it, the
    admin endpoint's (L{kvstore.admin.endpoint.AdminInstruments}, imported
    only then), and its server endpoint, made now so that a bad description
    is refused before storage is opened.

    @return: the instruments, and (the same instruments, the endpoint) if
        the admin endpoint is on.
    """
    if config.admin_listen is None:
        return NoInstruments(), None
    try:
        if socket_activation.is_systemd_description(config.admin_listen):  # kvstore's own, as --listen's
            passed = socket_activation.listen_environment(os.environ)
            endpoint = socket_activation.server_endpoint(reactor, config.admin_listen, passed, os.getpid())
        else:
            endpoint = serverFromString(reactor, config.admin_listen)
    except Exception as e:
        raise UsageError(
            f"cannot listen on --admin-listen {config.admin_listen!r}: {_endpoint_error(config.admin_listen, e)}"
        ) from None
    from kvstore.admin.endpoint import AdminInstruments

    admin = AdminInstruments(reactor, [p.node_id for p in config.peers])
    return admin, (admin, endpoint)


def _add_admin_endpoint(service: "KVStoreService", admin_and_endpoint: tuple[Any, Any], config: NodeConfig) -> None:
    """Serve the admin instruments' site on their endpoint, under C{service}."""
    from kvstore.admin.view import NodeView

    admin, endpoint = admin_and_endpoint
    view = NodeView(
        service.node, config.cluster_id, {m.node_id: m.address for m in config.members}, service.peer_links.links
    )
    listener = _EarlyListener(endpoint, admin.site(view))
    listener._raiseSynchronously = True
    listener.setServiceParent(service)
    admin.service().setServiceParent(service)
    service.admin_listener = listener


def _endpoint_error(description: str, error: Exception) -> str:
    """Why no server endpoint could be made from C{description}."""
    return str(error) or type(error).__name__


def _cannot_listen(config: NodeConfig, error: Exception, description: str | None = None) -> str:
    """The one-line reason a node could not listen (on C{description},
    by default its C{--listen})."""
    if isinstance(error, CannotListenError):
        where = format_address(error.interface or "0.0.0.0", error.port)
        reason = getattr(error.socketError, "strerror", None) or str(error.socketError)
        hint = f"is another node or program using port {error.port}?"
        passed = socket_activation.listen_environment(os.environ)
        if passed.get("LISTEN_PID") == str(os.getpid()):
            hint = f"systemd passed this node {passed.get('LISTEN_FDS')} socket(s): adopt one with --listen systemd"
        return f"cannot listen on {where}: {reason} ({hint})"
    return f"cannot listen on {(description or config.listen)!r}: {error}"


def listens_early(options: NodeOptions, listener: StreamServerEndpointService) -> bool:
    """
    Whether L{makeService} may listen at once rather than leave it to
    twistd's C{privilegedStartService}.

    Not for a UNIX socket when twistd will then daemonize, C{--chroot} or
    C{--rundir} elsewhere: its lock file (on by default) would name the pid
    of the process that forks and exits, so the daemon could not release it
    and another server would take the path over as stale; and a relative
    path would be bound in one directory and unlinked in another at stop.
    TCP, SSL and systemd endpoints depend on none of these.
    """
    parent = getattr(options, "parent", None)
    if parent is None or not isinstance(listener.endpoint, UNIXServerEndpoint):
        return True
    daemonizes = not (parent.get("nodaemon") or parent.get("debug"))
    rundir = parent.get("rundir") or "."
    moves = parent.get("chroot") is not None or os.path.realpath(rundir) != os.path.realpath(".")
    return not (daemonizes or moves)


def makeService(options: NodeOptions) -> KVStoreService:
    """
    The twistd entry point (see C{twisted/plugins/kvstore_plugin.py}).

    A node that must not start (its data directory is in use, corrupt, or of
    another cluster; its port is in use) exits with a one-line message on
    standard error and status 1 rather than a traceback: the message is
    what an operator needs.  That is why it listens here, while twistd has
    not yet sent standard error to its log, rather than when the service
    starts (except a UNIX socket that twistd's later set-up would break: see
    L{listens_early}).
    """
    config = options.config
    # Before recovery and the first snapshot chunks (see kvstore.allocator).
    allocator.tune_allocator()
    # Recovery (build_service) can take minutes: a SIGHUP meanwhile must not
    # take its default action and kill the node, but be a reload once it runs.
    sighups_while_recovering: list[int] = []
    if getattr(options, "parent", None) is not None:
        signal.signal(signal.SIGHUP, lambda signum, frame: sighups_while_recovering.append(signum))
    try:
        service = build_service(config, pidfile=getattr(options, "pidfile", None))
    except UsageError as e:
        raise SystemExit(f"twistd kvstore: {e}") from None
    attach_log_and_reload(service, options)
    if sighups_while_recovering:
        service._sighup(signal.SIGHUP, None)
    if not listens_early(options, service.listener):
        return service
    try:
        service.listener.listen_now()
    except Exception as e:
        service._lock.release()
        raise SystemExit(f"twistd kvstore: {_cannot_listen(config, e)}") from None
    admin = service.admin_listener
    if admin is not None and listens_early(options, admin):
        try:
            admin.listen_now()
        except Exception as e:
            service.listener.stopService()  # close the port the node listens on
            service._lock.release()
            raise SystemExit(f"twistd kvstore: --admin-listen: {_cannot_listen(config, e, config.admin_listen)}") from None
    return service


def attach_log_and_reload(service: KVStoreService, options: NodeOptions) -> None:
    """
    Give C{service} its log observer (C{--log-format} behind the
    C{--log-level} filter) and its L{Reloader}; under twistd (C{options}
    has a C{parent}), SIGHUP reloads while it runs.  With twistd's
    C{--syslog} or C{--logger}, twistd's own observer stays, and a reload
    cannot change the log level (it is then reported as needing a restart).
    """
    parent = getattr(options, "parent", None)
    log_level = getattr(options, "log_level", None) or "info"
    reloadable = RELOADABLE
    if parent is not None and log_format.kvstore_observes(parent):
        observer = log_format.twistd_observer(parent, service._reactor, getattr(options, "log_format", "text"))
        service.log_filter = log_format.LevelFilter(observer, log_format.parse_level(log_level))
        service.log_observer = service.log_filter
    else:
        reloadable = RELOADABLE - {"log-level"}  # twistd's own observer: nothing to filter with
    arguments = list(getattr(options, "arguments", []))
    service.reloader = Reloader(
        RunningConfig(service.config, getattr(options, "log_format", "text"), log_level),
        parse=lambda: parse_arguments(arguments),
        apply=service.apply_config,
        source=_reload_source(options),
        reloadable=reloadable,
    )
    service.reload_on_sighup = parent is not None
    if service.reload_on_sighup:
        service.install_sighup()  # now: recovery comes before startService


def _reload_source(options: NodeOptions) -> str:
    """What a reload reads, for its log line: the --config file's absolute
    path, or the command line alone."""
    path = getattr(getattr(options, "config_file", None), "path", None)
    return os.path.abspath(path) if path else "the command line (no --config file)"
