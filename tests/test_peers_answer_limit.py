# -*- test-case-name: tests.test_peers_answer_limit -*-
"""
The sending end of a peer link reads at most one hello's worth (4 KiB) of
answer (L{kvstore.protocols.peer_links.PeerClientProtocol}): whoever listens at a peer's
address cannot make this node buffer more than that.
"""

from __future__ import annotations

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer_links import PeerClientProtocol, PeerLink
from kvstore.protocols.peer import MAX_HELLO_BYTES, encode_hello, encode_welcome


def _link_protocol() -> tuple[PeerLink, PeerClientProtocol, StringTransport]:
    link = PeerLink(2, "127.0.0.1:20002", encode_hello(1, "c1"))
    protocol = PeerClientProtocol(link)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return link, protocol, transport


class AnswerLimitTests(SynchronousTestCase):
    """The answer to the hello is limited to MAX_HELLO_BYTES, from its length prefix."""

    def test_answer_of_the_limit_is_read(self) -> None:
        """A welcome padded (with JSON whitespace) to exactly the limit is accepted."""
        link, protocol, transport = _link_protocol()
        welcome = encode_welcome(2)
        padded = welcome + b" " * (MAX_HELLO_BYTES - len(welcome))
        protocol.dataReceived(b"%d:%s," % (len(padded), padded))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(link.version, 2)

    def test_answer_one_byte_over_the_limit_closes_before_buffering(self) -> None:
        """A length prefix one byte over the limit closes the connection at
        once, before any payload has arrived."""
        _, protocol, transport = _link_protocol()
        protocol.dataReceived(b"%d:" % (MAX_HELLO_BYTES + 1))
        self.assertTrue(transport.disconnecting)
