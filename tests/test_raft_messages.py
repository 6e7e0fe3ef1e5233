# -*- test-case-name: tests.test_raft_messages -*-
"""
Tests of L{kvstore.raft.messages}: every message survives the round trip
through its dictionary form and JSON, and L{from_dict} rejects every kind of
malformed input with L{MalformedMessage} and nothing else.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    MalformedMessage,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    from_dict,
    to_dict,
)

from tests.support import parametrize, slow

EXAMPLES = [
    RequestVote(3, 10, 2),
    RequestVote(4, 0, 0, pre_vote=True),
    RequestVoteResponse(3, True),
    RequestVoteResponse(4, False, pre_vote=True),
    AppendEntries(5, 0, 0, (), 0),
    AppendEntries(5, 7, 4, (Entry(8, 5, b""), Entry(9, 5, b"Pk v w"), Entry(10, 5, "Dkéy ☃".encode())), 6, round=3),
    AppendEntriesResponse(5, True, 10, round=2),
    AppendEntriesResponse(5, False, 9, conflict_index=4, conflict_term=2, round=1),
    ReadIndexRequest(6, 17),
    ReadIndexResponse(6, 17, 42),
    ReadIndexResponse(6, 18, None),
]


def valid(kind: type = AppendEntries) -> dict[str, Any]:
    body = next(b for b in EXAMPLES if type(b) is kind)
    return to_dict(Message(1, 2, body))


def mutated(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    d = dict(base)
    for name, value in changes.items():
        if value is _MISSING:
            d.pop(name, None)
        else:
            d[name] = value
    return d


_MISSING = object()


_INT_FIELDS = {
    RequestVote: ["from", "to", "term", "last_index", "last_term"],
    RequestVoteResponse: ["from", "to", "term"],
    AppendEntries: ["from", "to", "term", "prev_index", "prev_term", "commit", "round"],
    AppendEntriesResponse: ["from", "to", "term", "index", "conflict_index", "conflict_term", "round"],
    ReadIndexRequest: ["from", "to", "term", "id"],
    ReadIndexResponse: ["from", "to", "term", "id", "index"],
}


_BOOL_FIELDS = {
    RequestVote: ["pre_vote"],
    RequestVoteResponse: ["granted", "pre_vote"],
    AppendEntriesResponse: ["success"],
}


def _cases() -> list[tuple[str, dict[str, Any]]]:
    cases = []
    for kind, names in _INT_FIELDS.items():
        for name in names:
            for label, bad in [("-1", -1), ("bool", True), ("float", 1.0), ("str", "1"), ("list", [1])]:
                cases.append((f"{kind.__name__}.{name}={label}", mutated(valid(kind), **{name: bad})))
            if not (kind is ReadIndexResponse and name == "index"):  # index may be null there
                cases.append((f"{kind.__name__}.{name} missing", mutated(valid(kind), **{name: _MISSING})))
    for kind, names in _BOOL_FIELDS.items():
        for name in names:
            for label, bad in [("int", 1), ("str", "true"), ("null", None)]:
                cases.append((f"{kind.__name__}.{name}={label}", mutated(valid(kind), **{name: bad})))
            cases.append((f"{kind.__name__}.{name} missing", mutated(valid(kind), **{name: _MISSING})))
    base = valid(AppendEntries)
    entry_cases = {
        "entries missing": _MISSING,
        "entries not list": {"0": [8, 5, ""]},
        "entry not list": ["x"],
        "entry too short": [[8, 5]],
        "entry too long": [[8, 5, "", 1]],
        "entry index str": [["8", 5, ""]],
        "entry index bool": [[True, 5, ""]],
        "entry term float": [[8, 5.0, ""]],
        "entry data bytes-like list": [[8, 5, [1, 2]]],
        "entry out of sequence": [[8, 5, ""], [10, 5, ""]],
        "entry not after prev": [[7, 5, ""]],
        "entry negative term": [[8, -1, ""]],
    }
    for label, value in entry_cases.items():
        cases.append((label, mutated(base, entries=value)))
    cases += [
        ("unknown type", mutated(base, type="snapshot")),
        ("type missing", mutated(base, type=_MISSING)),
        ("type not str", mutated(base, type=3)),
    ]
    return cases


json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(
    st.characters(exclude_categories=()), max_size=8
)


json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=6),
    max_leaves=20,
)


field_names = st.sampled_from(
    ["type", "from", "to", "term", "prev_index", "prev_term", "commit", "round", "entries", "success", "index",
     "conflict_index", "conflict_term", "last_index", "last_term", "pre_vote", "granted", "id"]
)


class RaftMessageTests(SynchronousTestCase):
    """
    Peer message validation: round trips, and L{MalformedMessage} (and nothing else) for every
    malformed input.
    """

    @parametrize("body", EXAMPLES, ids=lambda b: type(b).__name__)
    def test_round_trip_through_json(self, body):
        """to_dict then JSON then from_dict gives back an equal message."""
        message = Message(1, 2, body)
        assert from_dict(json.loads(json.dumps(to_dict(message)))) == message

    @parametrize("raw", [c[1] for c in _cases()], ids=[c[0] for c in _cases()])
    def test_every_malformed_field_is_rejected(self, raw):
        """A missing field, a wrong type (bools are not integers), a negative
        number, a bad entry list or an unknown type raises MalformedMessage."""
        with self.assertRaises(MalformedMessage):
            from_dict(raw)

    @parametrize("raw", [None, 1, "append", [], [("type", "append")], 1.5, True])
    def test_non_object_is_rejected(self, raw):
        """Anything but a JSON object is not a message."""
        with self.assertRaises(MalformedMessage):
            from_dict(raw)

    def test_entry_data_with_lone_surrogate_is_rejected(self):
        """JSON can carry a lone UTF-16 surrogate in a string, which is not
        encodable UTF-8 entry data: it is a malformed message, not a crash."""
        raw = json.loads('{"type": "append", "from": 1, "to": 2, "term": 1, "prev_index": 0, "prev_term": 0,'
                         ' "commit": 0, "round": 0, "entries": [[1, 1, "\\ud800"]]}')
        with self.assertRaises(MalformedMessage):
            from_dict(raw)

    @slow
    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(json_values)
    def test_arbitrary_json_raises_only_malformed_message(self, value):
        """from_dict on any JSON-like value returns a Message or raises
        MalformedMessage, never another exception."""
        try:
            result = from_dict(value)
        except MalformedMessage:
            return
        assert isinstance(result, Message)

    @slow
    @settings(max_examples=500, deadline=None)
    @given(st.sampled_from(EXAMPLES), st.dictionaries(field_names, json_values | st.lists(st.lists(json_scalars, max_size=4), max_size=3), max_size=3))
    def test_valid_message_with_arbitrary_fields_raises_only_malformed_message(self, body, replacements):
        """Replacing fields of a valid message with arbitrary JSON values gives
        either a valid Message or MalformedMessage, never another exception,
        and a returned message round-trips."""
        raw = to_dict(Message(1, 2, body))
        raw.update(replacements)
        try:
            result = from_dict(raw)
        except MalformedMessage:
            return
        assert from_dict(json.loads(json.dumps(to_dict(result)))) == result
