# -*- test-case-name: tests.test_sim_run -*-
"""
Raft's safety properties, checked continuously against a running
simulation.

L{SafetyMonitor} watches every incarnation of every node.  After each step
of simulated time it checks the cheap properties (one leader per term, every
newly committed entry agrees with what was committed before, a new leader
holds every committed entry); every few dozen steps, at every crash and at
the end it checks the expensive ones (log matching between all live logs,
every committed entry durable on a quorum).  Applied entries are checked as
they are applied.  Violations are collected, never raised inside Twisted
callbacks, and named by the property they break (see L{PROPERTIES}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from kvstore.node.node import Node
from kvstore.raft.core import CompactedIndex, Role
from kvstore.raft.messages import AppendEntriesResponse, Message, RequestVoteResponse
from kvstore.statemachine import KeyValueStateMachine
from kvstore.testing.sim.commit_configurations import CommitConfigurations
from kvstore.testing.sim.compaction_checks import PROPERTIES as _COMPACTION_PROPERTIES
from kvstore.testing.sim.compaction_checks import CommittedReplay, snapshot_uncommitted, state_machines_disagree
from kvstore.raft.membership import Configuration
from kvstore.testing.sim.membership_checks import PROPERTIES as _MEMBERSHIP_PROPERTIES
from kvstore.testing.sim.membership_checks import (
    ConfigurationHistory,
    LeaderConfigurations,
    change_problems,
    configuration_of,
    describe,
    holds,
    last_configuration,
    meets_every_quorum,
    quorum_candidates,
    voters_holding,
)

PROPERTIES = {
    "election-safety": "at most one leader per term",
    "double-vote": "a node granted its vote to two candidates in one term",
    "log-matching": "two logs with an entry of the same index and term agree on everything up to it",
    "leader-completeness": "every committed entry is in the log of every leader of a later term",
    "state-machine-safety": "every node applies the same entry at each index (a prefix of one sequence)",
    "committed-entry-lost": (
        "every committed entry stays durable on a majority of the voters of the latest committed configuration, "
        "of a newer one some node holds, of the one in force at the entry, or of one a leader committed it under "
        "(in force at that leader when its commit index passed the entry) if it also meets every quorum of the "
        "latest committed configuration and of each newer one"
    ),
    "terms-and-votes-durable": "terms and votes never go backwards across crashes",
    "linearizability": "the client history is linearizable per key",
    "session-write-applied-twice": "a copy of a session write (same session, same or lower sequence number) changes nothing",
    "stale-read-value": "a stale read returns a value that was written at some point",
    "liveness": "after faults stop, a leader is elected and every request completes",
    "leader-steps-down": "a leader that has not heard from a majority for two election timeouts steps down (check-quorum)",
    "storage-recovery": "a crashed node's storage recovers without error",
    "unexpected-error": "no exception escapes the code under test",
    **_COMPACTION_PROPERTIES,
    **_MEMBERSHIP_PROPERTIES,
}


@dataclass(frozen=True)
class Violation:
    property: str
    time: float
    detail: str

    def __str__(self) -> str:
        return f"{self.property} at t={self.time:.6f}: {self.detail}"


@dataclass(frozen=True)
class DurableLog:
    """
    What one node would recover after a crash now: the index of its newest
    durable snapshot (0 if none) and the durable log entries it holds
    (contiguous, each with C{index} and C{term}; they may start anywhere at
    or below C{snapshot_index + 1}).  An entry at or below C{snapshot_index}
    counts as held: the snapshot holds its effect.
    """

    snapshot_index: int = 0
    entries: Sequence[Any] = field(default_factory=list)

    def holds(self, index: int, term: int) -> bool:
        """Whether the entry C{index} of C{term} survives a crash here."""
        if index <= self.snapshot_index:
            return True
        entries = self.entries
        if not entries:
            return False
        position = index - entries[0].index
        return 0 <= position < len(entries) and entries[position].term == term


def _as_durable_log(view: "DurableLog | Sequence[Any]") -> DurableLog:
    """A plain list of entries starting at 1 (no snapshot) is a L{DurableLog} too."""
    return view if isinstance(view, DurableLog) else DurableLog(0, view)


class SafetyMonitor:
    """
    @param now: the simulated clock's C{seconds}.
    @param members: the bootstrap members, all voters (the configuration
        before any configuration entry).
    @param quorum: how many members make a majority (of the bootstrap
        configuration; later ones are checked by their own majorities).
    @param durable_log: C{durable_log(node_id)} gives what that node would
        recover after a crash now (its durable snapshot and its WAL's
        durable entries, or what a crashed node recovered): a L{DurableLog},
        or a plain list of entries from index 1.
    @param step_down_within: how long a leader may go on leading without
        acknowledgements from a majority (check-quorum); None: not checked.
    """

    def __init__(
        self,
        now: Callable[[], float],
        members: Sequence[int],
        quorum: int,
        durable_log: Callable[[int], "DurableLog | Sequence[Any]"],
        step_down_within: float | None = None,
        state_machine_factory: Callable[[], KeyValueStateMachine] = KeyValueStateMachine,
        all_nodes: Callable[[], Sequence[int]] | None = None,
    ) -> None:
        self._now = now
        self._members = tuple(members)
        # Every node that ever ran (joined ones too): whose durable logs count.
        self._all_nodes = all_nodes if all_nodes is not None else (lambda: self._members)
        self._quorum = quorum
        # The configuration in force at each index (issue 13), from the
        # committed configuration entries.
        self.configurations = ConfigurationHistory(Configuration.bootstrap(self._members[0], self._members[1:])
                                                   if self._members else Configuration({}))
        self._leader_configurations = LeaderConfigurations(self.configurations)
        # (leader, term) -> (commit index, last index) at the previous step
        self._leader_progress: dict[tuple[int, int], tuple[int, int]] = {}
        # (leader, term) -> (index of its configuration, when first seen in force)
        self._configuration_since: dict[tuple[int, int], tuple[int, float]] = {}
        self.membership_stats: dict[str, int] = {"membership_changes": 0, "learners_promoted": 0,
                                                 "members_added": 0, "members_removed": 0}
        self._durable_log = durable_log
        self.violations: list[Violation] = []
        self.nodes: dict[int, Node] = {}
        self.leader_of_term: dict[int, int] = {}
        self.votes: dict[tuple[int, int], int] = {}
        # index -> (term, payload, term in which some node saw it committed)
        self.committed: dict[int, tuple[int, bytes, int]] = {}
        # The configurations in force at the leaders that committed each
        # entry, for every index a commit advance covered (_check_commit_quorum):
        # one a leader had only appended is lost if it crashes before syncing
        # it, yet the entry was committed on a majority of it (seed 1397:
        # promoted learner 5 made {0, 3, 5} a majority; after the crash
        # {0, 3} is half of voters {0, 1, 3, 4}).
        self.commit_configurations = CommitConfigurations()
        self.applied: dict[int, tuple[int | None, bytes]] = {}
        self._commit_seen: dict[int, int] = {}
        self._leaders_checked: set[tuple[int, int]] = set()
        self.elections = 0
        self.steps = 0
        self.step_down_within = step_down_within
        # (leader, follower) -> (term, when) of the last AppendEntriesResponse delivered
        self._acks: dict[tuple[int, int], tuple[int, float]] = {}
        self._leader_since: dict[tuple[int, int], float] = {}
        # The state after applying the committed entries 1..i, for each i.
        self.replay = CommittedReplay(self.committed, state_machine_factory)
        # applied index -> (node, its state machine's items) first seen there
        self._states_at: dict[int, tuple[int, Mapping[str, str]]] = {}
        # (node, path, index, term, items, how) of snapshot files to check
        self._snapshots_to_check: list[tuple[int, str, int, int, Mapping[str, str] | None, str]] = []
        self.snapshots_checked = 0

    def violate(self, prop: str, detail: str) -> None:
        assert prop in PROPERTIES, prop
        self.violations.append(Violation(prop, self._now(), detail))

    # -- node lifecycle ------------------------------------------------

    def watch(self, node_id: int, node: Node) -> None:
        """Start watching a new incarnation of C{node_id}."""
        self.nodes[node_id] = node
        self._commit_seen[node_id] = 0
        sm, core = node.state_machine, node.core
        original = sm.apply

        def apply(index: int, data: bytes) -> Any:
            if index > core.commit_index:
                self.violate("state-machine-safety", f"node {node_id} applied {index} beyond its commit index {core.commit_index}")
            try:
                term: int | None = core.term_at(index)
            except CompactedIndex:
                term = None  # compacted before it was applied: only its payload can be compared
            record = (term, data)
            seen = self.applied.setdefault(index, record)
            if term is None or seen[0] is None:
                differs = seen[1] != data
                if seen[0] is None and term is not None:
                    self.applied[index] = record
            else:
                differs = seen != record
            if differs:
                self.violate(
                    "state-machine-safety",
                    f"node {node_id} applied (term {record[0]}, {record[1]!r}) at index {index}; "
                    f"another node applied (term {seen[0]}, {seen[1]!r})",
                )
            if term is not None and index not in self.committed:
                # Applied, so committed: recorded even if the node commits,
                # applies and compacts it within one step (before step()).
                self._record_committed(index, term, data, core.term)
            return original(index, data)

        sm.apply = apply  # type: ignore[method-assign]  # the checker wraps this state machine's apply on purpose
        self._watch_changes(node_id, core)

    def _watch_changes(self, node_id: int, core: Any) -> None:
        """Check each configuration change this core's leader appends
        against the single-server rules (C{membership-change-rules}): the
        node's admin commands and the core's own promotions both go through
        C{propose_change}."""
        original = getattr(core, "propose_change", None)
        if original is None:
            return

        def propose_change(change: Any) -> Any:
            known = self._leader_configurations.of(node_id, core) if core.role is Role.LEADER else []
            commit = core.commit_index
            try:
                own_term = commit > 0 and core.term_at(commit) == core.term
            except CompactedIndex:
                own_term = core.snapshot_term == core.term
            result = original(change)
            if result is None or not known:
                return result
            index, term = result
            previous_index, previous = known[-1]
            problems = []
            if previous_index > commit:
                problems.append(f"the configuration entry at {previous_index} was not committed (commit index {commit})")
            if not own_term:
                problems.append(f"no entry of its term {term} was committed (commit index {commit})")
            try:
                appended = configuration_of(core.entries(index, index)[0].payload)
            except IndexError:
                appended = None
            if appended is not None:
                problems += change_problems(previous, appended)
            if problems:
                self.violate("membership-change-rules",
                             f"leader {node_id} appended {change} at {index} in term {term}: " + "; ".join(problems))
            return result

        core.propose_change = propose_change

    def _record_committed(self, index: int, term: int, payload: bytes, seen_in: int) -> None:
        self.committed[index] = (term, payload, seen_in)
        if payload[:1] == b"\x00":
            before = self.configurations.before(index)
            after = self.configurations.record(index, payload)
            if after is not None:
                stats = self.membership_stats
                stats["membership_changes"] += 1
                stats["learners_promoted"] += len(after.voter_ids & before.learner_ids)
                stats["members_added"] += len(after.member_ids - before.member_ids)
                stats["members_removed"] += len(after.removed - before.removed)

    def unwatch(self, node_id: int) -> None:
        self.nodes.pop(node_id, None)

    def on_send(self, message: Message) -> None:
        body = message.body
        if isinstance(body, RequestVoteResponse) and body.granted and not body.pre_vote:
            key = (message.sender, body.term)
            previous = self.votes.setdefault(key, message.receiver)
            if previous != message.receiver:
                self.violate(
                    "double-vote",
                    f"node {message.sender} voted for {previous} and then for {message.receiver} in term {body.term}",
                )

    def on_deliver(self, message: Message) -> None:
        """Note acknowledgements reaching a node, for the check-quorum check."""
        if isinstance(message.body, AppendEntriesResponse):
            self._acks[(message.receiver, message.sender)] = (message.body.term, self._now())

    # -- checks ----------------------------------------------------------

    def step(self) -> None:
        """The cheap checks, after every step of simulated time."""
        self.steps += 1
        committed = self.committed
        for node_id, node in self.nodes.items():
            core = node.core
            if core.role is Role.LEADER:
                term = core.term
                leader = self.leader_of_term.setdefault(term, node_id)
                if leader != node_id:
                    self.violate("election-safety", f"nodes {leader} and {node_id} both lead term {term}")
                if (node_id, term) not in self._leaders_checked:
                    self._leaders_checked.add((node_id, term))
                    self._leader_since[(node_id, term)] = self._now()
                    self.elections += 1
                    self._check_leader(node_id)
                if self.step_down_within is not None:
                    self._check_leader_heard(node_id, term)
                previous = self._leader_progress.get((node_id, term))
                if previous is not None and core.commit_index > previous[0]:
                    self._check_commit_quorum(node_id, core, *previous)
                self._leader_progress[(node_id, term)] = (core.commit_index, core.last_index)
            commit = core.commit_index
            seen = self._commit_seen[node_id]
            if commit > seen:
                for entry in core.entries(seen + 1, commit):
                    prior = committed.get(entry.index)
                    if prior is None:
                        self._record_committed(entry.index, entry.term, entry.payload, core.term)
                    elif prior[0] != entry.term or prior[1] != entry.payload:
                        self.violate(
                            "state-machine-safety",
                            f"node {node_id} committed (term {entry.term}, {entry.payload!r}) at index "
                            f"{entry.index}; (term {prior[0]}, {prior[1]!r}) was committed there before",
                        )
                self._commit_seen[node_id] = commit
        if self._snapshots_to_check:
            self.check_snapshots()
        if self.steps % 64 == 0:
            self.full_check()

    def _holder(self, index: int, term: int) -> Callable[[int], bool]:
        """Whether a node holds entry C{index} of C{term}: in its log if it
        runs (a follower acknowledges only what it holds), in what it would
        recover if it is down."""
        def held(node_id: int) -> bool:
            node = self.nodes.get(node_id)
            if node is not None:
                return holds(node.core, index, term)
            return _as_durable_log(self._durable_log(node_id)).holds(index, term)
        return held

    def _check_commit_quorum(self, node_id: int, core: Any, commit_before: int, last_before: int) -> None:
        """
        The leader C{node_id} just advanced its commit index from
        C{commit_before}: the entry there must be held by a majority of the
        voters of the configuration in force at this leader (the last in its
        log; the one before it too if that last one was appended in this
        very step, after the commit).  Each of these whose majority holds it
        is recorded as one every entry the advance covered was committed
        under: by log matching, whoever holds the new commit index holds
        them all.  (An advance in a leader's first observed step, or to an
        index it compacted within the step, is not recorded: those entries
        are judged by the other configurations, at worst a false alarm.)
        """
        commit = core.commit_index
        try:
            term = core.term_at(commit)
        except CompactedIndex:
            return
        known = self._leader_configurations.of(node_id, core)
        candidates = [known[-1][1]]
        if known[-1][0] > last_before and len(known) > 1:
            candidates.append(known[-2][1])
        held = self._holder(commit, term)
        committed_under = [c for c in candidates if voters_holding(c, held) >= c.quorum]
        if committed_under:
            self.commit_configurations.record(commit_before + 1, commit, committed_under)
            return
        self.violate(
            "commit-quorum",
            f"leader {node_id} of term {core.term} committed entry {commit} (term {term}), held by "
            f"{sorted(i for i in candidates[0].member_ids if held(i))} only; configuration in force: "
            + describe(candidates),
        )

    def _check_leader_heard(self, node_id: int, term: int) -> None:
        """
        A leader must step down once a majority has not acknowledged it for
        C{step_down_within}: the time since which fewer than C{quorum - 1}
        followers acknowledged it (in its term) bounds how long it leads.
        """
        # The voters of the configuration in force at the leader (learners'
        # acknowledgements do not count, a removed leader needs a full majority).
        # The bound runs from when that configuration took effect here: the
        # leader's check counts the acknowledgements again under it.
        configuration_index, configuration = self._leader_configurations.of(node_id, self.nodes[node_id].core)[-1]
        in_force = self._configuration_since.get((node_id, term))
        if in_force is None or in_force[0] != configuration_index:
            in_force = self._configuration_since[(node_id, term)] = (configuration_index, self._now())
        needed = configuration.quorum - (node_id in configuration.voter_ids)
        if needed < 1:
            return
        since = max(self._leader_since[(node_id, term)], in_force[1])
        heard = sorted(
            (when for (leader, follower), (t, when) in self._acks.items()
             if leader == node_id and t == term and follower in configuration.voter_ids), reverse=True
        )
        if len(heard) >= needed:
            since = max(since, heard[needed - 1])
        assert self.step_down_within is not None
        if self._now() - since > self.step_down_within:
            self.violate(
                "leader-steps-down",
                f"node {node_id} still leads term {term} {self._now() - since:.3f}s after a majority last "
                f"acknowledged it (bound {self.step_down_within:.3f}s)",
            )

    def _check_leader(self, node_id: int) -> None:
        core = self.nodes[node_id].core
        last = core.last_index
        for index, (term, payload, seen_in) in self.committed.items():
            if seen_in > core.term:
                continue
            try:
                held = index <= last and core.term_at(index) == term
            except CompactedIndex:
                # Compacted away: the leader must hold it in its snapshot
                # (whose content was checked when its file was written).
                held = index <= core.snapshot_index
            if not held:
                self.violate(
                    "leader-completeness",
                    f"leader {node_id} of term {core.term} lacks committed entry {index} (term {term}); "
                    f"its log holds {core.first_index}..{last} (term {core.last_term}) after a snapshot at "
                    f"{core.snapshot_index}",
                )
                return

    def full_check(self) -> None:
        """The expensive checks: log matching, committed entries durable on
        a quorum, completeness of the current leaders, and the state
        machines."""
        logs = {i: (n.core.first_index, n.core.entries(n.core.first_index, n.core.last_index))
                for i, n in self.nodes.items()}
        ids = sorted(logs)
        for x, a in enumerate(ids):
            for b in ids[x + 1 :]:
                self._check_log_matching(a, b, *logs[a], *logs[b])
        for i, node in self.nodes.items():
            if node.core.role is Role.LEADER:
                self._check_leader(i)
        self.check_durable_quorum()
        self.check_state_machines()
        if self._snapshots_to_check:
            self.check_snapshots()

    def _check_log_matching(self, a: int, b: int, fa: int, la: Sequence[Any], fb: int, lb: Sequence[Any]) -> None:
        """Where the logs of C{a} (from C{fa}) and C{b} (from C{fb}) both
        hold the same index and term, every entry both hold before it is
        the same."""
        low, high = max(fa, fb), min(fa + len(la), fb + len(lb)) - 1
        k = high
        while k >= low and la[k - fa].term != lb[k - fb].term:
            k -= 1
        if k < low:
            return
        for index in range(low, k + 1):
            ea, eb = la[index - fa], lb[index - fb]
            if ea != eb:
                self.violate(
                    "log-matching",
                    f"nodes {a} and {b} agree on entry {k} (term {la[k - fa].term}) "
                    f"but differ at {index}: {ea} vs {eb}",
                )
                return

    def check_durable_quorum(self) -> None:
        """
        C{committed-entry-lost}: each committed entry, lowest first, must be
        durable (in what its node would recover now) on a majority of the
        voters of one of: the latest committed configuration; a newer one
        some node holds (a live node's current one, a crashed node's last
        durable one), under which it may campaign; the committed one in force
        at the entry; or a configuration a leader committed it under (in
        force at that leader when its commit index passed the entry, also
        for entries committed indirectly: L{CommitConfigurations}), the
        last only if the holders also meet every quorum of each of the first
        two kinds (L{meets_every_quorum}).  The first entry that fails is
        reported.

        Accepting the last two is sound.  By log matching, a durable holder
        of a committed entry holds every committed entry before it, so if
        any committed entry is really lost, so is the newest.  For the newest,
        the one in force at it is the latest committed configuration.  A
        majority of one it was committed under is not enough by itself: that
        configuration is at most one change from the latest committed one,
        so its majority meets every majority of that, but a newer
        configuration some node holds may be a stale uncommitted change
        from an earlier term whose quorum misses it (tests/test_sim_commit_review:
        a crashed node's stale removal, elected by a node that lost the
        entry unsynced); so the holders must also meet every quorum of
        every configuration that can elect a leader now.  For older entries
        the two only spare false alarms: a promotion that was only in a
        crashed leader's unsynced log leaves the entries committed under it
        on half of the voters left, which still meets every quorum of them
        (seed 1397, 5 nodes).
        """
        if not self.committed:
            return
        views = {i: _as_durable_log(self._durable_log(i)) for i in self._all_nodes()}
        # The configurations that can elect a leader: the latest committed,
        # and any newer one a node holds (effective once appended).
        newer = [(n.core.configuration_index, n.core.configuration) for n in self.nodes.values()
                 if hasattr(n.core, "configuration")]
        # A crashed node holds, and on restart uses, the newest configuration
        # in its durable log: a leader that committed under a configuration
        # it had just appended (a promotion) and then crashed still holds it.
        newer += [found for i, view in views.items() if i not in self.nodes
                  for found in [last_configuration(view.entries)] if found is not None]
        candidates = quorum_candidates(self.configurations, newer)
        for index in sorted(self.committed):
            term = self.committed[index][0]
            holders = {i for i, view in views.items() if view.holds(index, term)}
            configurations = [*candidates, self.configurations.at(index)]
            if any(len(holders & c.voter_ids) >= c.quorum for c in configurations):
                continue
            committed_under = self.commit_configurations.at(index)
            configurations += committed_under
            if (any(len(holders & c.voter_ids) >= c.quorum for c in committed_under)
                    and all(meets_every_quorum(c, holders) for c in candidates)):
                continue
            self.violate(
                "committed-entry-lost",
                f"committed entry {index} (term {term}) is durable on only {len(holders)} node(s) "
                f"{sorted(holders)}; configurations: " + describe(configurations),
            )
            return

    # -- compaction (issue 12) -------------------------------------------

    def snapshot_written(self, node_id: int, path: str, index: int, term: int,
                         items: Mapping[str, str] | None, how: str) -> None:
        """
        A snapshot file was installed under its final name on C{node_id}
        (C{how}: "taken" or "received"), holding C{items}.  It is checked
        against the committed entries at the end of this step (once the
        entries committed in it are recorded): its last entry must be the
        committed one at its index, its content what applying the committed
        entries through it gives.
        """
        self._snapshots_to_check.append((node_id, path, index, term, items, how))

    def check_snapshots(self) -> None:
        pending, self._snapshots_to_check = self._snapshots_to_check, []
        for node_id, path, index, term, items, how in pending:
            self.snapshots_checked += 1
            problem = snapshot_uncommitted(index, term, items, self.committed, replay=self.replay)
            if problem is not None:
                self.violate("snapshot-committed", f"node {node_id} {how} {path}: {problem}")
                return

    def check_state_machines(self) -> None:
        """
        Nodes that have applied the same index (now, or any node earlier in
        the run) hold identical state machines, equal to applying the
        committed entries through that index.
        """
        current = [(node_id, node.state_machine.applied_index, node.state_machine.items())
                   for node_id, node in sorted(self.nodes.items())]
        # The reference at each index: the committed entries replayed (node
        # -1), or the first state seen there if the replay cannot reach it.
        states: list[tuple[int, int, Mapping[str, str]]] = []
        for applied in sorted({a for _, a, _ in current}):
            expected = self.replay.state_at(applied)
            if expected is not None:
                states.append((-1, applied, expected))
            elif applied in self._states_at:
                states.append((self._states_at[applied][0], applied, self._states_at[applied][1]))
        for node_id, applied, items in current:
            self._states_at.setdefault(applied, (node_id, items))
            states.append((node_id, applied, items))
        for problem in state_machines_disagree(states):
            self.violate("state-machines-agree", problem.replace("nodes -1 and ", "the committed entries replayed and node "))
            return
