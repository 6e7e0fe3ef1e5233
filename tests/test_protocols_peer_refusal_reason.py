# -*- test-case-name: tests.test_protocols_peer_refusal_reason -*-
"""
The reason in a refusal comes from the receiver and goes into the sending
node's log verbatim (L{kvstore.protocols.peer.decode_answer}): it must be
printable text, or whoever answers at a peer's address could write terminal
escapes into the operator's log, or a lone surrogate that the UTF-8 log file
cannot encode (the whole line is then silently lost).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer import SUPPORTED_VERSIONS, PeerRefusal, decode_answer


def _reason(answer: bytes) -> str:
    try:
        decode_answer(answer, SUPPORTED_VERSIONS)
    except PeerRefusal as e:
        return str(e)
    raise AssertionError("not a refusal")


class RefusalReasonTests(SynchronousTestCase):
    """A refusal's reason is cut to 200 printable characters."""

    def test_unprintable_characters_are_replaced(self) -> None:
        """Control characters (escape, newline) and a lone surrogate each become '?'."""
        reason = _reason(b'{"type":"refused","reason":"a\\u001b[31mb\\nc\\ud800d"}')
        self.assertEqual(reason, "a?[31mb?c?d")
        reason.encode("utf-8")  # what the log file does; must not raise

    def test_printable_text_is_kept_and_cut_to_200(self) -> None:
        """An ordinary reason, non-ASCII included, is kept as is, up to 200 characters."""
        self.assertEqual(_reason('{"type":"refused","reason":"no version: é 1 to 2"}'.encode()), "no version: é 1 to 2")
        self.assertEqual(_reason(b'{"type":"refused","reason":"' + b"x" * 300 + b'"}'), "x" * 200)
