# -*- test-case-name: tests.test_protocols_peer_encoding -*-
"""
Tests that the templated encoding of the messages on a write's path
(AppendEntries and its response) gives exactly the generic JSON encoding.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.peer import _encoder, encode_message
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message, to_dict

_fields = st.integers(min_value=0, max_value=2**63 - 1)
_entries = st.lists(
    st.tuples(_fields, _fields, st.text().map(lambda text: text.encode("utf-8"))), max_size=4
).map(tuple)
_append = st.builds(AppendEntries, _fields, _fields, _fields, _entries, _fields, _fields)
_response = st.builds(AppendEntriesResponse, _fields, st.booleans(), _fields, _fields, _fields, _fields)


def _generic(message: Message) -> bytes:
    return _encoder.encode(to_dict(message)).encode("utf-8")


class TemplateEncodingTests(SynchronousTestCase):
    @given(body=st.one_of(_append, _response), sender=st.integers(0, 1000), receiver=st.integers(0, 1000))
    def test_same_bytes_as_the_generic_encoder(self, body: object, sender: int, receiver: int) -> None:
        """AppendEntries and responses encode to the very bytes of the generic
        JSON encoding of their dictionaries."""
        message = Message(sender, receiver, body)  # type: ignore[arg-type]
        self.assertEqual(encode_message(message), _generic(message))
