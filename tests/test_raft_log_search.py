"""
The Raft core finds term boundaries in its log by binary search (terms never
decrease along a log); these properties compare it with a plain scan.
"""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.config import RaftConfig
from kvstore.raft.core import RaftCore
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message

term_steps = st.lists(st.integers(0, 2), min_size=1, max_size=60)


def core_with_terms(steps: list[int]) -> tuple[RaftCore, list[int]]:
    terms, term = [], 1
    for step in steps:
        term += step
        terms.append(term)
    entries = [(i + 1, t, b"") for i, t in enumerate(terms)]
    core = RaftCore(RaftConfig(0, peers=(1, 2)), Clock(), random.Random(0), entries=entries)
    return core, terms


class RaftLogSearchTests(SynchronousTestCase):
    """The core's term searches over its log, checked against a plain scan with hypothesis."""

    @given(term_steps, st.integers(0, 70), st.integers(0, 70))
    def test_last_index_of_term_matches_a_scan(self, steps: list[int], term: int, at_or_below: int) -> None:
        """The last index holding a term, at or below a bound, is what a backward
        scan finds (0 when the term is absent there)."""
        core, terms = core_with_terms(steps)
        expected = 0
        for index in range(min(at_or_below, len(terms)), 0, -1):
            if terms[index - 1] == term:
                expected = index
                break
            if terms[index - 1] < term:
                break
        assert core._last_index_of_term(term, at_or_below) == expected

    @given(term_steps, st.data())
    def test_conflict_hint_is_first_index_of_the_conflicting_term(self, steps: list[int], data: st.DataObject) -> None:
        """A follower rejecting AppendEntries names the first index of the term it
        holds at prev_log_index, as a scan back over that term would."""
        core, terms = core_with_terms(steps)
        prev = data.draw(st.integers(1, len(terms)))
        leader_term = terms[-1] + 1
        core.step(Message(1, 0, AppendEntries(leader_term, prev, terms[prev - 1] + 100, (), 0)))
        reply = [m.body for m in core.ready().messages_after_persist if isinstance(m.body, AppendEntriesResponse)][0]
        first = prev
        while first > 1 and terms[first - 2] == terms[prev - 1]:
            first -= 1
        assert not reply.success
        assert (reply.conflict_index, reply.conflict_term) == (first, terms[prev - 1])
