# -*- test-case-name: tests.test_raft_step_validated -*-
"""
A message that passed the peer protocol's validation never makes
L{RaftCore.step} raise, since the node now fail-stops on any exception from
it: a peer must not be able to stop a node by sending a well-formed message
(issue 9 part 5, review).  The one case found: an acknowledgement naming an
index beyond the leader's log raised IndexError.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.core import HardState, Role
from kvstore.raft.messages import AppendEntriesResponse, MalformedMessage, RequestVoteResponse, from_dict, to_dict
from tests.test_raft_core import HEARTBEAT, TIMEOUT, drain, elect, make_core, msg


class AcknowledgementBeyondLogTests(SynchronousTestCase):
    """An acknowledgement of entries the leader does not have is ignored."""

    def _leader(self):
        clock = Clock()
        core = make_core(1, (2, 3), clock, entries=[(1, 1), (2, 1)])
        elect(core, clock, [2])
        drain(core)
        return core

    def test_success_beyond_last_index_is_ignored(self) -> None:
        """A validated success response with an index past the leader's last index neither raises nor moves the match index."""
        core = self._leader()
        for success in (True, False):
            with self.subTest(success=success):
                message = from_dict(to_dict(msg(2, 1, AppendEntriesResponse(core.term, success, core.last_index + 5, 10**6, 0, 0))))
                core.step(message)
                drain(core)
                self.assertIs(core.role, Role.LEADER)
                self.assertEqual(core.commit_index, 0)
                self.assertEqual(core._progress[2].match_index, 0)


def _raw_message(draw, sender: int, receiver: int, term: int) -> dict:
    """A message as a peer could send it, built from small numbers so that it
    lands near the receiver's log, mostly in its term (validation decides if
    it is well formed)."""
    small = st.integers(0, 8)
    kind = draw(st.sampled_from(["append", "append_resp", "append_resp", "vote", "vote_resp", "read", "read_resp"]))
    term = draw(st.sampled_from([max(term - 1, 0), term, term, term, term + 1]))
    d: dict = {"type": kind, "from": sender, "to": receiver, "term": term}
    if kind == "append":
        prev = draw(small)
        d.update(prev_index=prev, prev_term=draw(small), commit=draw(small), round=draw(small))
        terms = draw(st.lists(small, max_size=4))
        d["entries"] = [[prev + 1 + i, t, "p"] for i, t in enumerate(sorted(terms))]
    elif kind == "append_resp":
        d.update(success=draw(st.booleans()), index=draw(small), conflict_index=draw(small),
                 conflict_term=draw(small), round=draw(small))
    elif kind == "vote":
        d.update(last_index=draw(small), last_term=draw(small), pre_vote=draw(st.booleans()))
    elif kind == "vote_resp":
        d.update(granted=draw(st.booleans()), pre_vote=draw(st.booleans()))
    elif kind == "read":
        d.update(id=draw(small))
    else:
        d.update(id=draw(small), index=draw(st.one_of(st.none(), small)))
    return d


class ValidatedMessagesNeverRaiseTests(SynchronousTestCase):
    """No sequence of validated messages makes a core raise (but see the module docstring)."""

    def _feed_messages(self, role: str, data: st.DataObject) -> None:
        """Bring a core with a log into C{role}, then feed it validated
        messages, timers and Readys drawn from C{data}."""
        clock = Clock()
        core = make_core(1, (2, 3), clock, HardState(2, None), entries=[(1, 1), (2, 1), (3, 2)])
        if role != "follower":
            clock.advance(TIMEOUT[1] + 0.01)
        if role == "leader":
            core.step(msg(2, 1, RequestVoteResponse(core.term, True, False)))
        drain(core)
        for _ in range(data.draw(st.integers(1, 12))):
            raw = _raw_message(data.draw, data.draw(st.sampled_from([2, 3])), 1, core.term)
            try:
                message = from_dict(raw)
            except MalformedMessage:
                continue
            try:
                core.step(message)
            except AssertionError as e:
                # The one deliberate raise: a message telling this node to
                # drop an entry it knows is committed.  No correct leader
                # sends it; continuing would break safety, so fail-stop is
                # right (see the module docstring).
                self.assertIn("refusing to truncate committed entry", str(e))
                return
            drain(core)
            if data.draw(st.booleans()):
                clock.advance(data.draw(st.sampled_from([0.0, HEARTBEAT, TIMEOUT[1] + 0.01])))
                drain(core)

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_leader_never_raises(self, data: st.DataObject) -> None:
        """A leader with a log survives any validated messages, timers and Readys."""
        self._feed_messages("leader", data)

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_candidate_never_raises(self, data: st.DataObject) -> None:
        """A candidate with a log survives any validated messages, timers and Readys."""
        self._feed_messages("candidate", data)

    @settings(max_examples=200, deadline=None)
    @given(st.data())
    def test_follower_never_raises(self, data: st.DataObject) -> None:
        """A follower with a log survives any validated messages, timers and Readys."""
        self._feed_messages("follower", data)
