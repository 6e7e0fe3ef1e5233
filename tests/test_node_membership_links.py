# -*- test-case-name: tests.test_node_membership_links -*-
"""
The peer network follows the core's configuration (L{FollowConfiguration}),
and a data directory's identity (L{kvstore.daemon.identity}, L{resolve_identity})
decides the membership a node starts from (issue 13).
"""

from __future__ import annotations

import dataclasses

from twisted.logger import capturedLogs
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.identity import Identity, load_identity, save_identity
from kvstore.daemon.options import parse_config
from kvstore.node.peer_membership import FollowConfiguration
from kvstore.protocols.peer import Membership
from kvstore.raft.membership import Configuration
from kvstore.daemon.service import resolve_identity


class RecordingLinks:
    """Stands in for PeerLinks: records each add and remove (shared by the membership link tests)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def add(self, peer_id: int, host: str, port: int) -> None:
        self.calls.append(("add", peer_id))

    def remove(self, peer_id: int) -> None:
        self.calls.append(("remove", peer_id))


class _Server:
    membership = Membership(0, "c", frozenset({1, 2}))


class FollowConfigurationTests(SynchronousTestCase):
    def test_links_and_accepted_peers_follow_the_configuration(self) -> None:
        """A new member gets a link and is accepted; a removed one loses both; nothing else changes."""
        links, server = RecordingLinks(), _Server()
        follow = FollowConfiguration(0, "c", links, server, {1: "h:1", 2: "h:2"})
        follow(Configuration({0: "h:10", 1: "h:1", 2: "h:2"}))
        self.assertEqual(links.calls, [])
        follow(Configuration({0: "h:10", 1: "h:1", 2: "h:2"}, {3: "h:3"}))
        self.assertEqual(links.calls, [("add", 3)])
        self.assertEqual(server.membership.peer_ids, {1, 2, 3})
        follow(Configuration({0: "h:10", 1: "h:1", 3: "h:3"}, removed=[2]))
        self.assertEqual(links.calls, [("add", 3), ("remove", 2)])
        self.assertEqual(server.membership.peer_ids, {1, 3})

    def test_a_joining_node_links_to_its_seed_until_it_has_a_configuration(self) -> None:
        """An empty configuration means: the members joined through."""
        links, server = RecordingLinks(), _Server()
        follow = FollowConfiguration(5, "c", links, server, {}, seed={0: "h:10", 1: "h:1"})
        follow(Configuration({}))
        self.assertEqual(links.calls, [("add", 0), ("add", 1)])
        self.assertEqual(server.membership.peer_ids, {0, 1})
        follow(Configuration({0: "h:10", 1: "h:1", 2: "h:2"}, {5: "h:5"}))
        self.assertEqual(links.calls, [("add", 0), ("add", 1), ("add", 2)])
        self.assertEqual(server.membership.peer_ids, {0, 1, 2})

    def test_a_moved_member_is_linked_at_its_new_address(self) -> None:
        """A member whose address changed gets its link replaced."""
        links, server = RecordingLinks(), _Server()
        follow = FollowConfiguration(0, "c", links, server, {1: "h:1"})
        follow(Configuration({0: "h:10", 1: "h:9"}))
        self.assertEqual(links.calls, [("remove", 1), ("add", 1)])


class IdentityTests(SynchronousTestCase):
    def config(self, *args: str):  # type: ignore[no-untyped-def]
        return parse_config(["--data-dir", self.data_dir, *args])

    def setUp(self) -> None:
        self.data_dir = self.mktemp()
        import os

        os.makedirs(self.data_dir)

    def test_first_start_records_the_bootstrap_membership_with_addresses(self) -> None:
        """The seed's command line is recorded, addresses and all, with the derived cluster id."""
        config = self.config("--node-id", "0", "--port", "5000", "--peers", "5001,5002")
        resolved, identity = resolve_identity(config)
        self.assertEqual(resolved.cluster_id, config.cluster_id)
        self.assertEqual(
            identity.configuration().members_text(),
            "0@127.0.0.1:5000/voter 1@127.0.0.1:5001/voter 2@127.0.0.1:5002/voter",
        )
        self.assertEqual(load_identity(self.data_dir), identity)

    def test_later_start_with_other_peers_warns_and_keeps_the_recorded_membership(self) -> None:
        """A different --peers logs a warning; the recorded membership and cluster id win."""
        first, _ = resolve_identity(self.config("--node-id", "0", "--port", "5000", "--peers", "5001,5002"))
        with capturedLogs() as events:
            resolved, identity = resolve_identity(
                self.config("--node-id", "0", "--port", "5000", "--peers", "5001,5002,5003")
            )
        self.assertEqual(resolved.cluster_id, first.cluster_id)
        self.assertEqual(identity.configuration().voter_ids, {0, 1, 2})
        self.assertTrue(any("differs from the membership" in str(e.get("log_format")) for e in events))

    def test_another_node_or_cluster_is_refused(self) -> None:
        """A data directory of another node id or explicit cluster id refuses to start."""
        save_identity(self.data_dir, Identity("one", 0, "0@h:1/voter"), fsync=False)
        with self.assertRaises(UsageError):
            resolve_identity(self.config("--node-id", "1", "--cluster-id", "one", "--peers", "0@h:1"))
        with self.assertRaises(UsageError):
            resolve_identity(self.config("--cluster-id", "two"))

    def test_a_joined_node_starts_from_an_empty_configuration(self) -> None:
        """A joined identity gives an empty initial configuration and its seed."""
        identity = Identity("c", 3, "", {0: "h:10"})
        save_identity(self.data_dir, identity, fsync=False)
        resolved, loaded = resolve_identity(dataclasses.replace(self.config("--node-id", "3"), join=(("h", 1),)))
        self.assertEqual(resolved.cluster_id, "c")
        self.assertEqual(loaded.configuration(), Configuration({}))
        self.assertEqual(loaded.seed, {0: "h:10"})
