# -*- test-case-name: tests.test_sim_membership_checks -*-
"""
The safety checks that know the cluster's configuration (issue 13).

Once membership changes, "a quorum" no longer means a fixed number of a
fixed set of nodes: it means a majority of the I{voters} of the
configuration in force, learners never count, and a node removed from the
cluster holds nothing anybody relies on.  The checkers therefore work out
the configuration themselves, from the log entries, rather than asking the
code under test:

  - L{ConfigurationHistory}: the configuration in force at each index, from
    the I{committed} configuration entries (the monitor records every
    committed entry) on top of the bootstrap configuration;
  - L{LeaderConfigurations}: the configuration in force at a leader, the
    last configuration entry in its log (a configuration takes effect when
    appended), found by scanning the log incrementally;
  - the property C{commit-quorum}: whenever a leader's commit index
    advances, the entry at it is held by a majority of the voters of the
    configuration in force at that leader (learners and removed nodes do not
    count);
  - the property C{membership-change-rules}: a leader appends a
    configuration entry only when the previous one is committed (one change
    at a time), only once an entry of its own term is committed (the fix to
    the single-server change bug), and each change adds, promotes or removes
    one server;
  - the durable-quorum check (C{committed-entry-lost}) counts holders among
    the voters of the configurations that can still elect a leader: the
    latest committed one and any newer one some node holds (a live node's
    current one, a crashed node's last durable one: L{last_configuration};
    L{quorum_candidates}); it also accepts the one in force at the entry
    and the ones leaders committed it under, the latter only if the holders
    meet every quorum of those that can elect a leader (see
    C{SafetyMonitor.check_durable_quorum} for why that is sound).
"""

from __future__ import annotations

import bisect
from typing import Any, Callable, Iterable, Sequence

from kvstore.raft.core import CompactedIndex
from kvstore.raft.membership import (
    CONFIGURATION_PREFIX,
    Configuration,
    MalformedConfiguration,
    decode_configuration_entry,
)

__all__ = ["PROPERTIES", "ConfigurationHistory", "LeaderConfigurations", "change_problems", "configuration_of",
           "last_configuration", "meets_every_quorum", "quorum_candidates"]

PROPERTIES = {
    "commit-quorum": (
        "a leader's commit index advances only to an entry held by a majority of the voters of the configuration "
        "in force at that leader (learners and removed nodes never count)"
    ),
    "membership-change-rules": (
        "a leader appends a configuration entry only when the previous one is committed, once an entry of its "
        "own term is committed, and each changes one server"
    ),
}


def configuration_of(payload: bytes) -> Configuration | None:
    """The configuration a log entry's payload holds, or L{None} if it is
    not a configuration entry (or a malformed one: the code under test's
    own checks report that)."""
    if not payload.startswith(CONFIGURATION_PREFIX):
        return None
    try:
        return decode_configuration_entry(payload)
    except MalformedConfiguration:
        return None


class ConfigurationHistory:
    """
    The committed configurations by index, on top of the bootstrap one
    (index 0).  Entries are recorded as the monitor sees them committed, in
    any order.
    """

    def __init__(self, bootstrap: Configuration) -> None:
        self._indexes: list[int] = [0]
        self._configurations: list[Configuration] = [bootstrap]

    def record(self, index: int, payload: bytes) -> Configuration | None:
        """Note the committed entry C{index}; returns its configuration if
        it is a configuration entry seen for the first time."""
        configuration = configuration_of(payload)
        if configuration is None:
            return None
        at = bisect.bisect_left(self._indexes, index)
        if at < len(self._indexes) and self._indexes[at] == index:
            return None
        self._indexes.insert(at, index)
        self._configurations.insert(at, configuration)
        return configuration

    def at(self, index: int) -> Configuration:
        """The configuration in force at C{index}: the last committed one at or before it."""
        return self._configurations[bisect.bisect_right(self._indexes, index) - 1]

    def before(self, index: int) -> Configuration:
        """The configuration in force just before C{index}."""
        return self.at(index - 1)

    @property
    def latest(self) -> tuple[int, Configuration]:
        """The index and configuration of the newest committed configuration."""
        return self._indexes[-1], self._configurations[-1]

    def changes(self) -> list[tuple[Configuration, Configuration]]:
        """Each committed configuration with the one before it."""
        return list(zip(self._configurations, self._configurations[1:]))


class LeaderConfigurations:
    """
    The configuration in force at each leader, from its own log: the last
    configuration entry in it, else the committed history's configuration
    before its log starts.  A leader's log only grows within its term, so
    the scan of each (leader, term) resumes where it stopped.
    """

    def __init__(self, history: ConfigurationHistory) -> None:
        self._history = history
        # (node, term) -> (scanned through, [(index, configuration)] found, oldest first)
        self._scans: dict[tuple[int, int], tuple[int, list[tuple[int, Configuration]]]] = {}

    def of(self, node_id: int, core: Any) -> list[tuple[int, Configuration]]:
        """The configuration entries in C{core}'s log (a leader's), oldest
        first, after the committed configuration in force where its log
        starts (given index C{first_index - 1})."""
        key = (node_id, core.term)
        scanned, found = self._scans.get(key, (0, []))
        if not found:
            base = max(core.first_index - 1, 0)
            found = [(base, self._history.at(base))]
            scanned = base
        last = core.last_index
        low = max(scanned + 1, core.first_index)
        if last >= low:
            for entry in core.entries(low, last):
                configuration = configuration_of(entry.payload)
                if configuration is not None:
                    found.append((entry.index, configuration))
        self._scans[key] = (max(scanned, last), found)
        return found

    def forget(self, node_id: int, term: int) -> None:
        self._scans.pop((node_id, term), None)


def holds(core: Any, index: int, term: int) -> bool:
    """Whether a live node's log (or snapshot) holds the entry C{index} of C{term}."""
    if index <= core.snapshot_index:
        return True
    if index > core.last_index:
        return False
    try:
        return bool(core.term_at(index) == term)
    except CompactedIndex:
        return True


def change_problems(before: Configuration, after: Configuration) -> list[str]:
    """Why C{after} is not one single-server change from C{before}."""
    problems = []
    voters = before.voter_ids ^ after.voter_ids
    members = before.member_ids ^ after.member_ids
    if len(voters) > 1 or len(members) > 1:
        problems.append(f"changes more than one server: {before.to_text()!r} -> {after.to_text()!r}")
    if before.removed - after.removed:
        problems.append(f"brings back removed ids {sorted(before.removed - after.removed)}")
    return problems


def last_configuration(entries: Sequence[Any]) -> tuple[int, Configuration] | None:
    """The index and configuration of the last configuration entry among
    C{entries} (log entries, oldest first), if any."""
    for entry in reversed(entries):
        configuration = configuration_of(entry.payload)
        if configuration is not None:
            return entry.index, configuration
    return None


def quorum_candidates(history: ConfigurationHistory, newer: Iterable[tuple[int, Configuration]]) -> list[Configuration]:
    """
    The configurations that can elect a leader now, for the durable-quorum
    check (C{committed-entry-lost}): the latest committed one and every
    newer one in C{newer} (index, configuration: what some node holds; a
    configuration takes effect once appended, so a node campaigns under it).
    A committed entry durable on a majority of the voters of one of them is
    in every quorum of it.  The check accepts two more for each entry: the
    committed one in force at the entry and the ones leaders committed it
    under (those only if the holders meet every quorum of each of these:
    L{meets_every_quorum}); by log matching an older entry is lost only if
    the newest is (see C{SafetyMonitor.check_durable_quorum}).
    """
    latest_index, latest = history.latest
    candidates = [latest]
    for index, configuration in newer:
        if index > latest_index and configuration not in candidates:
            candidates.append(configuration)
    return candidates


def voters_holding(configuration: Configuration, holders: Callable[[int], bool]) -> int:
    return sum(1 for voter in configuration.voter_ids if holders(voter))


def meets_every_quorum(configuration: Configuration, holders: Iterable[int]) -> bool:
    """Whether every quorum of C{configuration}'s voters includes one of
    C{holders}: too few voters lack it to elect a leader on their own."""
    return len(configuration.voter_ids - set(holders)) < configuration.quorum


def describe(configurations: Sequence[Configuration]) -> str:
    return "; ".join(f"voters {sorted(c.voter_ids)} (quorum {c.quorum})" for c in configurations)
