# -*- test-case-name: tests.test_sim_commit_ranges -*-
"""
The configurations leaders committed each log index under, kept as ranges.

A leader's commit index moves in jumps: one advance commits every entry
above the old commit index, most of them indirectly (Raft commits an older
entry by committing a later one).  Each of them was committed under the
configuration in force at that leader when it advanced, so the durable-quorum
check (C{committed-entry-lost}) may count holders among that configuration's
voters for every index the advance covered, not only the one it reached.

The simulator runs long histories with a commit advance every few steps, so
one record per index (or per advance) would grow with the run.  Advances
under the same configurations are adjacent and merge into one range; a
range splits only where the configurations differ (a membership change, or
a new leader re-committing entries its predecessor committed under another
configuration: both are kept).  The ranges grow with the number of such
changes, not with the length of the log.
"""

from __future__ import annotations

import bisect
from typing import Iterable

from kvstore.raft.membership import Configuration

__all__ = ["CommitConfigurations"]


def _canonical(configurations: Iterable[Configuration]) -> tuple[Configuration, ...]:
    """Distinct configurations in a fixed order (by text), so equal sets
    compare equal and reports do not depend on hashing order."""
    return tuple(sorted(set(configurations), key=lambda c: c.to_text()))


class CommitConfigurations:
    """
    Index ranges (disjoint, sorted) each with the configurations some
    leader committed every index in it under.
    """

    def __init__(self) -> None:
        self._lows: list[int] = []
        self._ranges: list[tuple[int, int, tuple[Configuration, ...]]] = []

    def record(self, low: int, high: int, configurations: Iterable[Configuration]) -> None:
        """Note that the indexes C{low..high} were committed under each of
        C{configurations} (added to whatever was recorded for them)."""
        adding = _canonical(configurations)
        if low > high or not adding:
            return
        # The ranges overlapping low..high or adjacent to it (to merge).
        first = bisect.bisect_left(self._lows, low)
        if first > 0 and self._ranges[first - 1][1] >= low - 1:
            first -= 1
        end = bisect.bisect_right(self._lows, high + 1)
        pieces: list[tuple[int, int, tuple[Configuration, ...]]] = []
        cursor = low  # the first index of low..high not yet placed
        for start, stop, held in self._ranges[first:end]:
            if start < low:
                pieces.append((start, min(stop, low - 1), held))
            covered_low, covered_high = max(start, low), min(stop, high)
            if cursor < covered_low:  # (start <= high + 1: the gap ends within low..high)
                pieces.append((cursor, covered_low - 1, adding))
                cursor = covered_low
            if covered_low <= covered_high:
                pieces.append((covered_low, covered_high, _canonical((*held, *adding))))
                cursor = covered_high + 1
            if stop > high:
                pieces.append((max(start, high + 1), stop, held))
        if cursor <= high:
            pieces.append((cursor, high, adding))
        merged: list[tuple[int, int, tuple[Configuration, ...]]] = []
        for piece in pieces:
            if merged and merged[-1][1] + 1 == piece[0] and merged[-1][2] == piece[2]:
                merged[-1] = (merged[-1][0], piece[1], piece[2])
            else:
                merged.append(piece)
        self._ranges[first:end] = merged
        self._lows[first:end] = [start for start, _, _ in merged]

    def at(self, index: int) -> tuple[Configuration, ...]:
        """The configurations C{index} was committed under (empty if no
        commit advance over it was recorded)."""
        position = bisect.bisect_right(self._lows, index) - 1
        if position >= 0 and self._ranges[position][1] >= index:
            return self._ranges[position][2]
        return ()

    def ranges(self) -> list[tuple[int, int, tuple[Configuration, ...]]]:
        """The recorded ranges, lowest first: (low, high, configurations)."""
        return list(self._ranges)
