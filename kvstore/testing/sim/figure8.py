# -*- test-case-name: tests.test_sim_run -*-
"""
The C{figure8} fault profile: a schedule biased toward the history of
Raft's Figure 8, in which committing an entry of an older term by counting
its replicas loses it.

The history needs three things in order: (1) a leader replicates entries of
an older term to a majority before its own term's entry (the no-op)
reaches a majority; (2) it is cut off or dies just then; (3) a node
holding a conflicting suffix of a I{newer} term (a leader that was cut off
right after its election, with its no-op and some client writes only in its
own log) comes back and wins the next election, overwriting those entries.
The uniform random schedule almost never lines these up, so this profile
drives the cluster through them on purpose:

- I{rotation}: the profile cuts off one leader at a time, isolating it
  (its clients keep appending to its log, so it grows an uncommitted
  suffix of its term) or crashing it and keeping it down.  Cutting off a
  leader first brings back every node the profile cut off before, so the
  node holding the newest divergent suffix rejoins exactly when another
  leader disappears.  A cut-off node also comes back on its own after a
  while (0.4 to 1.5 s), and whoever leads is also cut off now and
  then (every C{rotation_gap} seconds on average).
- a leader is cut off I{just after its election} (before its no-op
  replicates) with a per-run probability (a quarter of it when the leader
  holds older entries it does not know to be committed, which it should
  rather start catching the others up with); this produces the divergent
  suffixes of successive terms;
- a leader is cut off I{just after an entry of an older term} that is not
  the end of its log I{reached a quorum} (the leader and the followers'
  acknowledgements to it in this term) while no entry of its own term has,
  with another per-run probability: this is the moment of step (2).
- small append batches (C{max_append_entries} 1 or 2, few messages in
  flight), so catching a follower up takes several round trips.

Which seeds use it: L{profile_for_seed}.  The correct code must pass these
seeds like any other (the leader never commits an older term's entry by
counting replicas, so nothing committed is overwritten); with the
C{commit-old-term} plant they fail.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from kvstore.raft.core import CompactedIndex, Role

if TYPE_CHECKING:
    from kvstore.testing.sim.world import Simulation

PROFILES = ("mixed", "figure8", "reads")


def profile_for_seed(seed: int) -> str:
    """The profile a seed runs with unless one is chosen explicitly: two
    seeds in eight (0 and 4 modulo 8) run C{figure8}, three (2, 3 and 6)
    run C{reads} (L{kvstore.testing.sim.reads}), the other three (1, 5 and 7) the
    uniform C{mixed} schedule."""
    return {0: "figure8", 4: "figure8", 2: "reads", 3: "reads", 6: "reads"}.get(seed % 8, "mixed")


class Figure8Faults:
    """The rotation of the C{figure8} profile, driven by the simulation
    loop (L{after_step}) and by deliveries (L{on_delivered})."""

    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        self.elected_cut_probability = rng.choice((0.5, 0.7, 0.9))
        self.catch_up_cut_probability = rng.choice((0.6, 0.9, 1.0))
        self.crash_share = rng.choice((0.0, 0.25, 0.5))
        self.client_share = rng.choice((0.25, 0.5, 1.0))
        self.rotation_gap = rng.choice((0.15, 0.3, 0.6))
        self.cut_off: dict[int, str] = {}  # node -> "isolated" | "crashed"
        self._generation = 0
        self._leaders_seen: set[tuple[int, int]] = set()
        self._pending: tuple[int, int, str] | None = None  # (leader, term, why)
        self._acks: dict[tuple[int, int], dict[int, int]] = {}  # (leader, term) -> follower -> acknowledged index
        self._quorum_seen: dict[tuple[int, int], int] = {}

    def describe(self) -> str:
        return (f"figure8(elected={self.elected_cut_probability} catch-up={self.catch_up_cut_probability} "
                f"crash={self.crash_share} clients={self.client_share} gap={self.rotation_gap})")

    def schedule(self, fault_time: float) -> None:
        """Also cut off whichever node leads, every C{rotation_gap} seconds
        on average, so that no leader settles in for the whole run."""
        t = self.rng.expovariate(1 / self.rotation_gap)
        while t < fault_time:
            self.sim.clock.callLater(t, self._periodic)
            t += self.rng.expovariate(1 / self.rotation_gap)

    def _periodic(self) -> None:
        leader = self.sim.leader()
        if leader is not None and not self.sim._healed:
            self.rotate(leader, "periodic")

    # -- triggers ----------------------------------------------------------

    def on_delivered(self, message: Any) -> None:
        """After a leader processed a successful acknowledgement: if an
        entry of an older term that is not the end of the leader's log is
        now stored on a quorum (counting the leader and what followers
        acknowledged to it in this term) while no entry of the leader's own
        term is, the leader is at step (1): the moment a leader that counts
        replicas of old entries would commit, and a correct one must not."""
        if self.sim._healed or self._pending is not None:
            return
        body = message.body
        if type(body).__name__ != "AppendEntriesResponse" or not body.success:
            return
        node = self.sim.members[message.receiver].node
        if node is None:
            return
        core = node.core
        if core.role is not Role.LEADER or body.term != core.term:
            return
        acked = self._acks.setdefault((message.receiver, core.term), {})
        acked[message.sender] = max(acked.get(message.sender, 0), body.index)
        try:
            if core.term_at(core.commit_index) == core.term:
                return  # an entry of this term is already on a quorum
            matches = sorted([core.last_index, *acked.values()], reverse=True)
            if len(matches) < self.sim.quorum:
                return
            index = matches[self.sim.quorum - 1]
            if index < 1 or index >= core.last_index or core.term_at(index) >= core.term:
                return
        except CompactedIndex:
            return  # compacted into the leader's snapshot: committed long ago
        if self._quorum_seen.get((message.receiver, core.term), 0) >= index:
            return
        self._quorum_seen[(message.receiver, core.term)] = index
        old_term = core.term_at(index)
        self.sim.stats["old_term_quorums"] += 1
        if self.rng.random() < self.catch_up_cut_probability:
            self._pending = (
                message.receiver,
                core.term,
                f"just after entry {index} of term {old_term} reached a quorum in term {core.term}",
            )

    def after_step(self) -> None:
        """Called by the loop after the monitor looked at this step (so what
        a leader committed is recorded before it can crash)."""
        if self.sim._healed:
            return
        pending, self._pending = self._pending, None
        if pending is not None:
            leader, term, why = pending
            node = self.sim.members[leader].node
            if node is not None and node.core.role is Role.LEADER and node.core.term == term:
                self.rotate(leader, why, may_crash=True)
                return
        leader = self.sim.leader()  # type: ignore[assignment]  # the name held an int above; None is handled next
        if leader is None:
            return
        key = (leader, self.sim.members[leader].node.core.term)  # type: ignore[union-attr]  # leader() names a running member, whose node is up
        if key in self._leaders_seen:
            return
        self._leaders_seen.add(key)
        core = self.sim.members[leader].node.core  # type: ignore[union-attr]  # leader() names a running member, whose node is up
        if core.commit_index < core.last_index - 1:
            # It holds entries of older terms that it does not know to be
            # committed: mostly let it start catching the others up (and
            # perhaps be cut off then, by on_delivered).
            p = self.elected_cut_probability / 4
        else:
            p = self.elected_cut_probability
        if self.rng.random() < p:
            self.rotate(leader, f"just elected in term {key[1]}")

    # -- actions -----------------------------------------------------------

    def rotate(self, target: int, why: str, may_crash: bool = False) -> None:
        """Bring back every node cut off before, then cut off C{target}:
        isolate it, or (if C{may_crash}) sometimes crash it.  A leader
        isolated just after its election keeps its no-op and the writes of
        the clients on its side of the partition; crashing it then would
        mostly lose them (not yet durable)."""
        if target in self.cut_off:
            return
        self.bring_back()
        sim = self.sim
        sim._partition_generation += 1  # the uniform schedule's pending "partition ends" must not undo this
        self._generation += 1
        sim.stats["figure8_cutoffs"] += 1
        if may_crash and self.rng.random() < self.crash_share:
            sim.fault(f"fig8-crash {target} ({why})")
            if sim.crash(target, "fig8"):
                self.cut_off[target] = "crashed"
            else:
                return
        else:
            sim.network.cut([target], [i for i in sim.ids if i != target])
            sim.fault(f"fig8-isolate {target} ({why})")
            sim.stats["partitions"] += 1
            self.cut_off[target] = "isolated"
            # Some clients are on the isolated leader's side: they keep
            # writing to it, growing its divergent suffix.
            for client in sim.clients:
                if self.rng.random() < self.client_share:
                    client.leader_hint = target
        sim.clock.callLater(self.rng.uniform(0.4, 1.5), self._release, self._generation)

    def bring_back(self) -> None:
        if not self.cut_off:
            return
        sim = self.sim
        back, self.cut_off = sorted(self.cut_off.items()), {}
        sim.fault("fig8-rejoin " + " ".join(f"{i}({how})" for i, how in back))
        if any(how == "isolated" for _, how in back):
            sim.network.heal()
            sim._partition_generation += 1
        for i, how in back:
            if how == "crashed":
                sim.restart(i)

    def _release(self, generation: int) -> None:
        if generation == self._generation and not self.sim._healed:
            self.bring_back()
