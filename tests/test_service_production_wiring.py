# -*- test-case-name: tests.test_service_production_wiring -*-
"""
The production node (L{kvstore.daemon.service.build_service}) is wired through
L{kvstore.node.build.build_node} with what only production must have: no planted
bugs, read ids from the operating system's randomness on every boot, entries
measured as the peer protocol encodes them, the peer message limit, the
cluster id saved with every term and vote, the fail-stop exit and the
STATUS fields, and the Raft timers' error hook.  The builder has defaults
for all of these (the simulator and tests pass other values), so a caller
that forgets one still runs: these tests pin the production choices.
"""

from __future__ import annotations

import random

from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

import kvstore.daemon.service
from kvstore.node.build import HardStateStore
from kvstore.node.node import FailedPart, FatalError
from kvstore.daemon.options import parse_config
from kvstore.protocols.peer import MAX_ENTRIES_BYTES, encoded_entry_bytes


class ProductionWiringTests(SynchronousTestCase):
    """What C{build_service} hands the builder."""

    def _build(self, *arguments: str) -> kvstore.daemon.service.KVStoreService:
        config = parse_config(["--data-dir", self.mktemp(), "--port", "20999", *arguments])
        service = kvstore.daemon.service.build_service(config, MemoryReactorClock())
        self.addCleanup(service._lock.release)
        return service

    def test_no_plants_reach_production(self) -> None:
        """Neither the node nor its core carries a planted bug."""
        service = self._build()
        self.assertEqual(service.node._plants, frozenset())
        self.assertEqual(service.node.core._plants, frozenset())

    def test_read_ids_come_from_the_operating_system_on_every_boot(self) -> None:
        """Read ids start from the system's randomness, never a seeded generator,
        so two boots start at different points."""
        first = self._build().node
        second = self._build().node
        self.assertIsInstance(first._rng, random.SystemRandom)
        self.assertIsInstance(second._rng, random.SystemRandom)
        self.assertNotEqual(first._next_read_id, second._next_read_id)

    def test_entries_are_measured_as_the_peer_protocol_encodes_them(self) -> None:
        """The core sizes AppendEntries by encoded entry bytes, within the
        peer message limit."""
        core = self._build().node.core
        self.assertIs(core._entry_size, encoded_entry_bytes)
        self.assertEqual(core.config.max_entries_bytes, MAX_ENTRIES_BYTES)

    def test_term_and_vote_are_saved_with_the_cluster_id(self) -> None:
        """The node saves its hard state through the store that adds the cluster id."""
        node = self._build("--cluster-id", "prod-1").node
        self.assertIsInstance(node._metadata, HardStateStore)
        self.assertEqual(node._metadata._cluster_id, "prod-1")

    def test_fatal_stops_the_reactor_with_the_failed_parts_status(self) -> None:
        """The node's fail-stop hook stops the process with the status of what failed."""
        stopped: list[tuple[object, int]] = []
        self.patch(
            kvstore.daemon.service,
            "stop_after_fatal",
            lambda reactor, failure: stopped.append((reactor, kvstore.daemon.service.exit_status_for(failure)[1])),
        )
        service = self._build()
        service.node._on_fatal(Failure(FatalError(FailedPart.APPLY, Failure(ValueError("x")))))
        self.assertEqual(len(stopped), 1)
        self.assertIsInstance(stopped[0][0], MemoryReactorClock)
        self.assertEqual(stopped[0][1], kvstore.daemon.service.EXIT_APPLY_FAILURE)

    def test_status_carries_the_links_cluster_and_fsyncs(self) -> None:
        """STATUS gains connected, cluster and fsyncs from the service."""
        status = self._build("--cluster-id", "prod-1").node._extra_status()
        self.assertEqual(status["cluster"], "prod-1")
        self.assertEqual(status["connected"], "none")
        self.assertIn("fsyncs", status)

    def test_raft_timer_errors_stop_the_node(self) -> None:
        """Starting the node gives the core its timer-error hook."""
        node = self._build().node
        node.start()
        self.addCleanup(node.stop)
        self.assertIsNotNone(node.core._on_timer_error)
