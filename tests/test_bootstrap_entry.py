# -*- test-case-name: tests.test_bootstrap_entry -*-
"""
The bootstrap configuration entry (issue 13: bootstrap "records the
cluster id, the node's own id and the initial membership in the node's
data directory and in the log"): a node that bootstraps a cluster on empty
storage starts its log with the initial configuration at index 1, term 1,
the same entry on every bootstrapping node, written with its first batch;
from then on the configuration comes from the log.  Storage that is not
empty (a restart, a data directory of an earlier release) and a node that
joins get no such entry.  Checked on the Raft core, on L{build_node} over
in-memory storage, on a whole in-memory cluster on a C{task.Clock}, and on
the service's start on a fresh data directory.
"""

from __future__ import annotations

import random
from pathlib import Path

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.node.build import build_node
from kvstore.node.membership import bootstrap_entry
from kvstore.daemon.options import Options
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import HardState, RaftCore, Role, SnapshotPoint
from kvstore.raft.membership import Configuration, encode_configuration_entry
from kvstore.daemon.service import build_service
from kvstore.storage import MemoryLog, MemoryMetadata
from kvstore.testing.memory_cluster import InMemoryCluster

MEMBERS = Configuration({0: "127.0.0.1:5000", 1: "127.0.0.1:5001", 2: "127.0.0.1:5002"})
ENTRY = (1, 1, encode_configuration_entry(MEMBERS))


def _core(node_id: int = 0, **options: object) -> RaftCore:
    config = RaftConfig(node_id=node_id, peers=tuple(sorted(MEMBERS.voter_ids - {node_id})))
    return RaftCore(config, Clock(), random.Random(0), configuration=MEMBERS, **options)  # type: ignore[arg-type]


class CoreBootstrapTests(SynchronousTestCase):
    """RaftCore's bootstrap entry."""

    def test_empty_storage_starts_with_the_configuration_entry_to_persist(self) -> None:
        """On empty storage the log starts with the entry, not yet durable: the first Ready writes it."""
        core = _core(bootstrap=ENTRY)
        self.assertEqual([tuple(e) for e in core.entries(1, 9)], [ENTRY])
        self.assertEqual((core.term, core.configuration_index, core.durable_index, core.commit_index), (0, 1, 0, 0))
        rd = core.ready()
        self.assertEqual(rd.entries, [ENTRY])
        self.assertEqual(rd.persist_through, (1, 1))

    def test_storage_that_is_not_empty_gets_no_entry(self) -> None:
        """A log with entries, a term above 0 or a snapshot means this is not a first start: nothing appended."""
        cases = {
            "entries": {"entries": [(1, 1, b""), (2, 1, b"Pk v")]},
            "term": {"hard_state": HardState(3, None)},
            "snapshot": {"snapshot": SnapshotPoint(5, 2), "entries": [], "commit_index": 5},
        }
        for name, options in cases.items():
            with self.subTest(case=name):
                core = _core(bootstrap=ENTRY, **options)
                self.assertNotIn(ENTRY, [tuple(e) for e in core.entries(1, core.last_index)])
                self.assertEqual(core.configuration_index, core.snapshot_index)

    def test_the_first_election_is_of_term_one_after_the_entry(self) -> None:
        """A one-node cluster bootstrapped this way elects itself in term 1 and commits the entry with its no-op."""
        config = RaftConfig(node_id=0, peers=())
        core = RaftCore(config, Clock(), random.Random(0), bootstrap=(1, 1, encode_configuration_entry(
            Configuration({0: "127.0.0.1:5000"}))))
        core.start()
        self.assertIs(core.role, Role.LEADER)
        rd = core.ready()
        self.assertEqual([(e[0], e[1]) for e in rd.entries], [(1, 1), (2, 1)])
        core.persisted(*rd.persist_through)
        self.assertEqual([e[0] for e in core.ready().committed], [1, 2])


class BuildNodeBootstrapTests(SynchronousTestCase):
    """build_node over in-memory storage."""

    def build(self, log: MemoryLog, metadata: MemoryMetadata, configuration: Configuration, *, bootstrap: bool,
              clock: Clock | None = None):  # type: ignore[no-untyped-def]
        config = RaftConfig(node_id=0, peers=(1, 2))

        class _NoPeers:
            def send(self, message: object) -> None:
                pass

        return build_node(
            config, clock=clock or Clock(), rng=random.Random(1), log=log, metadata=metadata, cluster_id="c",
            peers=_NoPeers(), member_addresses=dict(configuration.voters), configuration=configuration,
            bootstrap=bootstrap,
        )

    def test_the_configuration_comes_from_the_log_after_a_restart(self) -> None:
        """The bootstrap entry is written with the node's first batch; a restart takes the configuration from
        the log, whatever configuration it is given to start from."""
        log, metadata, clock = MemoryLog(), MemoryMetadata(), Clock()
        node = self.build(log, metadata, MEMBERS, bootstrap=True, clock=clock)
        node.start()
        clock.advance(0.01)
        self.assertEqual([tuple(e) for e in log.entries], [bootstrap_entry(MEMBERS)])
        node.stop()
        other = Configuration({0: "127.0.0.1:6000", 7: "127.0.0.1:6007"})
        restarted = self.build(MemoryLog(list(log.entries)), MemoryMetadata(metadata.durable_state), other, bootstrap=True)
        self.assertEqual(restarted.core.configuration, MEMBERS)
        self.assertEqual(restarted.core.configuration_index, 1)
        self.assertEqual(restarted.core.last_index, 1, "the entry was written twice")

    def test_a_data_directory_of_an_earlier_release_keeps_its_log_and_configuration(self) -> None:
        """Storage with entries but no bootstrap entry is left as it is; the given configuration is used."""
        log = MemoryLog([(1, 1, b""), (2, 1, b"Pk v")])  # type: ignore[list-item]
        node = self.build(log, MemoryMetadata(), MEMBERS, bootstrap=True)
        self.assertEqual(node.core.last_index, 2)
        self.assertEqual((node.core.configuration, node.core.configuration_index), (MEMBERS, 0))

    def test_a_joining_node_gets_no_entry(self) -> None:
        """A node that joins (bootstrap=False) starts with an empty log, to be filled by the leader."""
        node = self.build(MemoryLog(), MemoryMetadata(), Configuration({}), bootstrap=False)
        self.assertEqual(node.core.last_index, 0)


class ClusterBootstrapTests(SynchronousTestCase):
    """A whole in-memory cluster whose members bootstrap with the entry."""

    def test_every_member_holds_the_same_first_entry_and_the_cluster_serves(self) -> None:
        """Three members bootstrap with the same entry at index 1, elect a leader, commit writes, and keep
        the entry (and their configuration from it) across a crash and restart."""
        cluster = InMemoryCluster(3, seed=23, bootstrap=True)
        leader = cluster.node(cluster.wait_for_leader())
        cluster.resolve(leader.put("k", "v"))
        expected = Configuration({i: f"127.0.0.1:{5000 + i}" for i in cluster.ids})
        for node_id in cluster.ids:
            with self.subTest(node=node_id):
                self.assertEqual(tuple(cluster.log_of(node_id)[0]), bootstrap_entry(expected))
        follower = min(i for i in cluster.ids if i != leader.core.node_id)
        cluster.crash(follower)
        cluster.start(follower)
        cluster.run(2.0)
        restarted = cluster.node(follower).core
        self.assertEqual((restarted.configuration, restarted.configuration_index), (expected, 1))
        self.assertEqual(tuple(cluster.log_of(follower)[0]), bootstrap_entry(expected))
        self.assertEqual(cluster.data_of(follower), {"k": "v"})


class ServiceBootstrapTests(SynchronousTestCase):
    """The service on a fresh data directory."""

    def test_a_fresh_data_directory_starts_its_log_with_the_members(self) -> None:
        """The service's first start of a bootstrapping node puts the command line's members at index 1."""
        data = Path(self.mktemp()) / "data"
        options = Options()
        options.parseOptions(["--data-dir", str(data), "--port", "24997", "--peers", "24998,24999"])
        service = build_service(options.config, MemoryReactorClock())
        self.addCleanup(service._lock.release)  # type: ignore[attr-defined]
        expected = Configuration({0: "127.0.0.1:24997", 1: "127.0.0.1:24998", 2: "127.0.0.1:24999"})
        self.assertEqual([tuple(e) for e in service.node.core.entries(1, 9)], [bootstrap_entry(expected)])
        self.assertEqual(service.node.core.configuration_index, 1)
