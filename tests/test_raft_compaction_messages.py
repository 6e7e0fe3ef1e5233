# -*- test-case-name: tests.test_raft_compaction_messages -*-
"""
The L{InstallSnapshot} body (issue 12): its dictionary form round-trips and
is validated like every other body, and it is not a type a peer may send
(a node and its core exchange it; the snapshot itself travels in chunks).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.messages import (
    LOCAL_TYPES,
    MESSAGE_TYPES,
    InstallSnapshot,
    MalformedMessage,
    Message,
    from_dict,
    to_dict,
)


def _valid() -> dict[str, Any]:
    return to_dict(Message(1, 2, InstallSnapshot(5, 1000, 4)))


class InstallSnapshotMessageTests(SynchronousTestCase):
    """The InstallSnapshot body's dictionary form."""

    def test_round_trip_through_json(self) -> None:
        """An InstallSnapshot survives to_dict, JSON and from_dict unchanged."""
        message = Message(1, 2, InstallSnapshot(5, 1000, 4))
        self.assertEqual(from_dict(json.loads(json.dumps(to_dict(message)))), message)
        self.assertEqual(_valid()["type"], "install_snapshot")

    def test_malformed_fields_are_rejected(self) -> None:
        """A missing or ill-typed field, or a snapshot term above the sender's term, is rejected."""
        cases = {
            "no index": {"index": None},
            "bool index": {"index": True},
            "negative index": {"index": -1},
            "no snapshot term": {"snapshot_term": None},
            "string snapshot term": {"snapshot_term": "4"},
            "snapshot term above term": {"snapshot_term": 6},
        }
        for name, changes in cases.items():
            with self.subTest(name):
                raw = _valid()
                for field, value in changes.items():
                    if value is None:
                        del raw[field]
                    else:
                        raw[field] = value
                self.assertRaises(MalformedMessage, from_dict, raw)

    def test_not_a_peer_message_type(self) -> None:
        """The peer protocol's list of types a peer may send leaves InstallSnapshot out."""
        self.assertIn("install_snapshot", LOCAL_TYPES)
        self.assertNotIn("install_snapshot", MESSAGE_TYPES)
        self.assertIn("append", MESSAGE_TYPES)
