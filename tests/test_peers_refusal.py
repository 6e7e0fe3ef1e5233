# -*- test-case-name: tests.test_peers_refusal -*-
"""
A sending end whose hello the receiver refuses (no peer protocol version in
common, L{kvstore.protocols.peer_links}): it says why once, and it does not hammer the
receiver, on in-memory transports and a L{MemoryReactorClock}.

A refusal lasts until an operator upgrades one of the two nodes, and every
attempt costs the receiver a warning in its log, so a refused link must
back off rather than reconnect about twice a second as it does after an
ordinary lost connection (whose successful TCP connect resets
L{twisted.application.internet.ClientService}'s attempt counter).
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer_links import REFUSED_MAX_DELAY, PeerClientProtocol, PeerLink, PeerLinks
from kvstore.protocols.peer import VersionRange, encode_hello, encode_refusal, encode_welcome

PORT = 20002
REFUSAL = encode_refusal(VersionRange(7, 8), "no peer protocol version in common: node 1 speaks versions 1 to 2")


def netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class RefusalLogTests(SynchronousTestCase):
    """A refusal is logged as a refusal, once, and never as a broken answer."""

    def test_refusal_is_not_reported_as_an_invalid_answer(self) -> None:
        """A well-formed refusal gives the refusal warning and no "invalid
        answer" warning, at the first attempt and at every later one."""
        link = PeerLink(2, f"127.0.0.1:{PORT}", encode_hello(1, "c1"))
        with capturedLogs() as events:
            for _ in range(3):
                protocol = PeerClientProtocol(link)
                transport = StringTransport()
                protocol.makeConnection(transport)
                protocol.dataReceived(netstring(REFUSAL))
                self.assertTrue(transport.disconnecting)
                protocol.connectionLost(Failure(ConnectionDone()))
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("refused this node's connection", warnings[0])

    def test_data_behind_a_refusal_is_not_read(self) -> None:
        """Netstrings that arrive behind the refusal, in the same chunk, are
        ignored: no second-answer warning, one refusal counted."""
        link = PeerLink(2, f"127.0.0.1:{PORT}", encode_hello(1, "c1"))
        protocol = PeerClientProtocol(link)
        protocol.makeConnection(StringTransport())
        with capturedLogs() as events:
            protocol.dataReceived(netstring(REFUSAL) + netstring(REFUSAL) + netstring(encode_welcome(2)))
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1, warnings)
        self.assertEqual(link.refusals, 1)


class RefusalBackoffTests(SynchronousTestCase):
    """A refused link waits longer and longer between attempts; anything else resets it."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.links = PeerLinks(self.reactor, 1, "c1", {2: ("127.0.0.1", PORT)}, clock=self.reactor)
        self.links.startService()
        self.addCleanup(self.links.stopService)

    def attempts(self) -> int:
        return sum(1 for c in self.reactor.tcpClients if c[1] == PORT)

    def answer_last_attempt(self, answer: bytes | None) -> None:
        """Connect the last attempt, let the receiver write C{answer} (if
        any), then close the connection as the receiver does."""
        factory = self.reactor.tcpClients[-1][2]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        if answer is not None:
            protocol.dataReceived(netstring(answer))
        protocol.connectionLost(Failure(ConnectionDone()))

    def wait_for_attempt(self, limit: float, step: float = 0.01) -> float:
        """Advance the clock until a new attempt; return how long it took."""
        count = self.attempts()
        start = self.reactor.seconds()
        while self.attempts() == count:
            self.assertLess(self.reactor.seconds() - start, limit, "no reconnection attempt")
            self.reactor.advance(step)
        return self.reactor.seconds() - start

    def test_consecutive_refusals_back_off_up_to_the_cap(self) -> None:
        """Each refusal doubles the wait before the next attempt, from 1 s up
        to REFUSED_MAX_DELAY (plus at most 1 s of jitter), so a refused link
        costs the receiver a few log lines a minute, not two a second."""
        delays = []
        for _ in range(8):
            self.answer_last_attempt(REFUSAL)
            delays.append(self.wait_for_attempt(limit=REFUSED_MAX_DELAY + 1.1))
        for refusal, delay in enumerate(delays, start=1):
            base = min(2.0 ** (refusal - 1), REFUSED_MAX_DELAY)
            self.assertGreaterEqual(delay, base - 0.01, f"after refusal {refusal}: {delays}")
            self.assertLessEqual(delay, base + 1.0 + 0.01, f"after refusal {refusal}: {delays}")

    def test_refusals_in_a_minute_are_few(self) -> None:
        """Refused at every attempt for a simulated minute, a link connects a
        handful of times (before the back-off: about a hundred)."""
        answered = 0
        while self.reactor.seconds() < 60:
            while answered < self.attempts():
                self.answer_last_attempt(REFUSAL)
                answered += 1
            self.reactor.advance(0.05)
        self.assertLessEqual(answered, 12)

    def test_a_welcome_restores_the_quick_retry(self) -> None:
        """After refusals, a connection that is welcomed (the peer was
        upgraded) and then lost is retried within the ordinary delay."""
        for _ in range(4):
            self.answer_last_attempt(REFUSAL)
            self.wait_for_attempt(limit=REFUSED_MAX_DELAY + 1.1)
        self.answer_last_attempt(encode_welcome(2))
        self.assertLessEqual(self.wait_for_attempt(limit=REFUSED_MAX_DELAY + 1.1), 1.1 + 0.01)

    def test_a_connection_without_an_answer_restores_the_quick_retry(self) -> None:
        """After refusals, a connection that gets no answer (a release 1
        receiver) and is then lost is retried within the ordinary delay."""
        for _ in range(4):
            self.answer_last_attempt(REFUSAL)
            self.wait_for_attempt(limit=REFUSED_MAX_DELAY + 1.1)
        self.answer_last_attempt(None)
        self.assertLessEqual(self.wait_for_attempt(limit=REFUSED_MAX_DELAY + 1.1), 1.1 + 0.01)


class RefusalDocumentationTests(SynchronousTestCase):
    """docs/protocol.md states the refused link's back-off as the code has it."""

    def test_documented_cap_is_the_code_cap(self) -> None:
        """The document gives REFUSED_MAX_DELAY as the refused link's longest wait."""
        from pathlib import Path

        text = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()
        self.assertIn(f"doubling up to {REFUSED_MAX_DELAY:g} s", text)
