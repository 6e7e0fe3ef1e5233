# -*- test-case-name: tests.test_limits_message_size -*-
"""
No write the client protocol accepts can produce a peer message over the
limit a follower enforces (issue 9, part 3): the options refuse limits that
would allow one, the wire measure the Raft core counts entries with is exact
for the real encoder, the leader packs AppendEntries by that measure and
never past the hard limit, and the largest allowed write of the worst-case
characters goes through the real encoder and the real receiving protocol.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import parse_config
from kvstore.protocols.commands import Limits, Put, parse_command
from kvstore.protocols.peer import (
    APPEND_HEADER_BYTES,
    MAX_ENTRIES_BYTES,
    MAX_MESSAGE_BYTES,
    Membership,
    PeerServerProtocol,
    encode_hello,
    encode_message,
    encoded_entry_bytes,
    largest_put_entry_bytes,
)
from kvstore.raft.config import RaftConfig
from kvstore.raft.core import EntryTooLarge, RaftCore, Role
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message, RequestVoteResponse
from kvstore.statemachine import encode_put

from tests.support import slow

_LARGEST = 2**63 - 1

#: Characters that each take the most wire bytes per UTF-8 byte among those
#: the client protocol accepts in a value ('"', backslash, TAB: two bytes
#: for one); keys cannot hold TAB.
_WORST_VALUE_CHARS = ('"', "\\", "\t")
_WORST_KEY_CHARS = ('"', "\\")


def _leader(entry_size=encoded_entry_bytes, **options: object) -> RaftCore:
    """A started three-node leader (id 0) on a fake clock, its election
    outputs drained."""
    clock = Clock()
    config = RaftConfig(0, peers=(1, 2), pre_vote=False, max_entries_bytes=MAX_ENTRIES_BYTES, **options)  # type: ignore[arg-type]
    core = RaftCore(config, clock, random.Random(0), entry_size=entry_size)
    core.start()
    clock.advance(config.election_timeout_max + 0.01)
    core.ready()
    for voter in (1, 2):
        core.step(Message(voter, 0, RequestVoteResponse(core.term, True, False)))
    assert core.role is Role.LEADER
    rd = core.ready()
    core.persisted(*rd.persist_through)
    # Both followers acknowledge the term's no-op, so they are replicating.
    for peer in (1, 2):
        core.step(Message(peer, 0, AppendEntriesResponse(core.term, True, core.last_index, 0, 0, 0)))
    rd = core.ready()
    core.persisted(*rd.persist_through)
    return core


def _appends(core: RaftCore) -> list[Message]:
    rd = core.ready()
    core.persisted(*rd.persist_through)
    return [m for m in rd.messages if isinstance(m.body, AppendEntries) and m.body.entries]


def _receive(payload: bytes) -> list[Message]:
    """Feed C{payload} through a real peer server protocol (after a hello)
    and return what it delivered; fail if it dropped the connection."""
    delivered: list[Message] = []
    protocol = PeerServerProtocol(Membership(1, "c", frozenset({0, 2})), delivered.append)
    transport = StringTransport()
    protocol.makeConnection(transport)
    for data in (encode_hello(0, "c"), payload):
        protocol.dataReceived(b"%d:%s," % (len(data), data))
    assert not transport.disconnecting, "the follower refused the message"
    return delivered


class EncodedEntrySizeTests(SynchronousTestCase):
    """The measure the core counts with is the real encoder's size."""

    @settings(max_examples=300, deadline=None)
    @given(st.text(max_size=64))
    def test_measure_is_exact_for_any_text(self, text: str) -> None:
        """For any text payload (control characters included), one entry at
        the largest index and term adds exactly the measured bytes to an
        AppendEntries (its separating comma aside)."""
        payload = text.encode("utf-8", "surrogatepass")
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            return  # lone surrogates are not UTF-8; no command holds one
        body = AppendEntries(_LARGEST, _LARGEST - 1, _LARGEST, ((_LARGEST, _LARGEST, payload),), _LARGEST, _LARGEST)
        encoded = encode_message(Message(_LARGEST, _LARGEST, body))
        self.assertEqual(len(encoded), APPEND_HEADER_BYTES + encoded_entry_bytes(payload) - 1)

    def test_client_characters_expand_at_most_twofold(self) -> None:
        """Every kind of character a PUT may carry (ASCII, escapes, TAB,
        multi-byte UTF-8, C1 controls, U+2028) costs at most two wire bytes
        per UTF-8 byte, which is what the options' bound assumes."""
        for char in ['a', '"', "\\", "\t", "\u00e9", "\u0085", "\u2028", "\u20ac", "\U0001f600"]:
            with self.subTest(char=char):
                payload = char.encode("utf-8") * 100
                self.assertLessEqual(encoded_entry_bytes(payload) - encoded_entry_bytes(b""), 2 * len(payload))


class OptionLimitTests(SynchronousTestCase):
    """Start-up refuses limits that would accept an unreplicable write."""

    def _largest_value(self, max_key: int) -> int:
        room = MAX_ENTRIES_BYTES - largest_put_entry_bytes(max_key, 0)
        return room // 2

    def test_value_limit_over_the_message_limit_is_refused(self) -> None:
        """One byte over the largest safe value limit is refused with a
        one-line message naming both options and the safe value."""
        largest = self._largest_value(1024)
        config = parse_config(["--max-value-bytes", str(largest)])
        self.assertEqual(config.max_value_bytes, largest)
        with self.assertRaises(usage.UsageError) as raised:
            parse_config(["--max-value-bytes", str(largest + 1)])
        message = str(raised.exception)
        self.assertNotIn("\n", message)
        self.assertIn("--max-value-bytes", message)
        self.assertIn(f"use --max-value-bytes {largest} or less", message)

    def test_huge_value_limit_is_refused(self) -> None:
        """A limit far over 16 MiB (the defect's trigger) is refused."""
        self.assertRaises(usage.UsageError, parse_config, ["--max-value-bytes", "64M"])

    def test_key_limit_counts_too(self) -> None:
        """The key limit shares the message with the value."""
        self.assertRaises(usage.UsageError, parse_config, ["--max-key-bytes", "9M", "--max-value-bytes", "1"])


class LeaderBatchingTests(SynchronousTestCase):
    """The leader packs AppendEntries by encoded size."""

    def test_batch_counts_escaped_bytes(self) -> None:
        """With a soft budget near the hard limit, two entries of 5 MiB of
        '"' (10 MiB each once escaped) go in separate messages, each under
        the message limit."""
        core = _leader(max_append_bytes=MAX_ENTRIES_BYTES)
        payload = encode_put("k", '"' * (5 * 1024 * 1024))
        core.propose(payload)
        core.propose(payload)
        messages = _appends(core)
        self.assertTrue(messages)
        for message in messages:
            self.assertEqual(len(message.body.entries), 1)
            self.assertLessEqual(len(encode_message(message)), MAX_MESSAGE_BYTES)

    def test_oversized_proposal_is_refused(self) -> None:
        """An entry that could not fit in any message is refused, not
        appended."""
        core = _leader()
        last = core.last_index
        with self.assertRaises(EntryTooLarge):
            core.propose(b'"' * (MAX_ENTRIES_BYTES // 2))
        self.assertEqual(core.last_index, last)

    def test_oversized_entry_in_the_log_is_never_sent(self) -> None:
        """An entry too large for any message (from a log written before the
        limit) is held back rather than sent to be refused."""
        core = _leader()
        # Plant the entry as an older version could have: behind propose's back.
        core._log.append((core.last_index + 1, core.term, b'"' * (MAX_ENTRIES_BYTES // 2)))
        core._needs_broadcast = True
        for message in core.ready().messages:
            if isinstance(message.body, AppendEntries):
                self.assertEqual(message.body.entries, ())

    def test_config_refuses_budget_over_hard_limit(self) -> None:
        """The soft budget may not exceed the hard per-message limit."""
        with self.assertRaises(ValueError):
            RaftConfig(0, max_append_bytes=2048, max_entries_bytes=1024).validate()


@slow
class LargestWriteEndToEndTests(SynchronousTestCase):
    """The largest allowed write of the worst-case characters, through the
    client parser, the leader, the encoder and the receiving protocol."""

    def test_largest_worst_case_write_is_delivered(self) -> None:
        """With the largest value limit the options allow for the default
        key limit, a PUT whose key and value are all worst-case characters
        parses, is proposed, fits one AppendEntries within the message
        limit, and the follower's protocol accepts and decodes it intact."""
        room = MAX_ENTRIES_BYTES - largest_put_entry_bytes(1024, 0)
        config = parse_config(["--max-value-bytes", str(room // 2)])
        limits = Limits(config.max_key_bytes, config.max_value_bytes, config.max_line_bytes)
        for key_char in _WORST_KEY_CHARS:
            for value_char in _WORST_VALUE_CHARS:
                with self.subTest(key=key_char, value=value_char):
                    key = key_char * config.max_key_bytes
                    value = value_char * config.max_value_bytes
                    command = parse_command(f"PUT {key} {value}".encode("utf-8"), limits)
                    self.assertIsInstance(command, Put)
                    core = _leader()
                    core.propose(encode_put(command.key, command.value))
                    messages = _appends(core)
                    self.assertEqual(len(messages), 2)  # one per follower
                    payload = encode_message(messages[0])
                    self.assertLessEqual(len(payload), MAX_MESSAGE_BYTES)
                    self.assertGreater(len(payload), MAX_MESSAGE_BYTES - 4096)  # truly at the edge
                    [received] = _receive(payload)
                    self.assertEqual(received.body.entries[-1][2], encode_put(key, value))
                    del payload, messages, core

    def test_over_limit_message_is_refused_by_the_follower(self) -> None:
        """The receiving side does enforce the limit (so the sending side
        must never exceed it)."""
        body = AppendEntries(1, 0, 0, ((1, 1, b'"' * (MAX_MESSAGE_BYTES // 2)),), 0, 0)
        payload = encode_message(Message(0, 1, body))
        self.assertGreater(len(payload), MAX_MESSAGE_BYTES)
        with self.assertRaises(AssertionError):
            _receive(payload)


class DocumentationTests(SynchronousTestCase):
    """docs/operations.md states the real bound."""

    def test_operations_doc_gives_the_largest_value(self) -> None:
        """The largest --max-value-bytes for the default key limit, as the
        options compute it, is the figure in docs/operations.md."""
        from pathlib import Path

        text = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text(encoding="utf-8")
        largest = (MAX_ENTRIES_BYTES - largest_put_entry_bytes(1024, 0)) // 2
        parse_config(["--max-value-bytes", str(largest)])
        self.assertIn(f"at most `{largest}` bytes", text)
