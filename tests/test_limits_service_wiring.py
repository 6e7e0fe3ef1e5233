# -*- test-case-name: tests.test_limits_service_wiring -*-
"""
The production node counts entries as the peer protocol encodes them and
against the real per-message limit (issue 9, part 3; found in review): the
other tests of the limit build their Raft cores by hand, so a service that
built its core with the defaults (15 MiB, payload length) went unnoticed.
"""

from __future__ import annotations

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import parse_config
from kvstore.protocols.peer import MAX_ENTRIES_BYTES, MAX_MESSAGE_BYTES, encode_message, largest_put_entry_bytes
from kvstore.raft.core import Role
from kvstore.raft.messages import AppendEntries, Message
from kvstore.daemon.service import build_service
from kvstore.statemachine import encode_put


class ServiceWiringTests(SynchronousTestCase):
    """The service's Raft core enforces the peer message limit."""

    def test_largest_allowed_write_is_proposed_and_fits_a_message(self) -> None:
        """With the largest value limit the options allow, the production
        node's core accepts a PUT of the worst-case characters (it would
        refuse it as too large against a smaller limit) and would send it
        in an AppendEntries within the message limit; one byte over the
        encoded limit is refused."""
        room = MAX_ENTRIES_BYTES - largest_put_entry_bytes(1024, 0)
        config = parse_config(
            ["--data-dir", self.mktemp(), "--port", "20998", "--max-value-bytes", str(room // 2)]
        )
        service = build_service(config, MemoryReactorClock())
        self.addCleanup(service._lock.release)  # type: ignore[attr-defined]
        core = service.node.core
        core.start()  # a one-node cluster elects itself at once
        self.assertIs(core.role, Role.LEADER)
        payload = encode_put('"' * config.max_key_bytes, '"' * config.max_value_bytes)
        index, term = core.propose(payload)
        # What the leader would send a follower that needs this entry.
        body = AppendEntries(term, index - 1, core.term_at(index - 1), ((index, term, payload),), index, 0)
        self.assertLessEqual(len(encode_message(Message(0, 1, body))), MAX_MESSAGE_BYTES)
        with self.assertRaises(ValueError):
            core.propose(payload + b'"')
