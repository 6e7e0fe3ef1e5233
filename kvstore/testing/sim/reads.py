# -*- test-case-name: tests.test_sim_run -*-
"""
The C{reads} fault profile: schedules aimed at linearizable reads, whose
bugs the uniform schedule reaches only by luck.

A read is wrong when it is answered from a state that misses a write
acknowledged before the read began.  Two histories make that possible, and
this profile drives the cluster through both on purpose:

- I{A deposed leader still answering reads.}  The profile cuts the leader
  off with a minority (alone in a cluster of 3, with one follower in a
  cluster of 5), long enough for the majority to elect a new leader and
  acknowledge writes, and long enough for check-quorum to depose the old
  one (more than two election timeouts).  Some clients are pinned to the old
  leader and read there the whole time, while the others write on the
  majority side.  A leader that answers without confirming its leadership
  with a quorum (C{read-without-leadership-check},
  C{read-index-one-ack-short}) serves stale values; a leader that never
  steps down (C{no-check-quorum}) is named by the C{leader-steps-down}
  check.
- I{A follower restarted while its forwarded reads are in flight} (issue
  9, defect 1).  Just after a follower forwards one of the first reads of
  its incarnation, the profile slows the leader's answers to it (a slow
  confirmation, a delayed message) for longer than the follower then stays
  down, crashes it and restarts it.  Clients pinned to it read there after
  the restart, while it catches up in small batches (small
  C{max_append_entries} and C{max_apply_batch}).  If read ids are reused
  across restarts, the late answer to the dead incarnation's read is taken
  for a new read at the old index (C{reuse-read-ids}).

Clients that are not pinned keep writing, so the state moves between a read
index and the reads that could be answered with it.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from kvstore.raft.core import Role

if TYPE_CHECKING:
    from kvstore.testing.sim.world import Simulation


class ReadFaults:
    """The schedules of the C{reads} profile, driven by the simulation's
    clock (L{schedule}) and by the messages nodes send (L{on_send})."""

    def __init__(self, sim: Simulation, rng: random.Random) -> None:
        self.sim = sim
        self.rng = rng
        # A run without cut-offs keeps a leader, so clients write often and
        # the state moves fast under a restarted follower's reads.
        self.cutoff_gap = rng.choice((0.6, 1.0, 1.5, math.inf))
        self.restart_probability = rng.choice((0.5, 1.0))
        self.pinned_share = rng.choice((0.25, 0.5))
        # Reads forwarded per incarnation (node -> (incarnation, count)).
        self._forwarded: dict[int, tuple[int, int]] = {}
        self._slow_answers: dict[int, float] = {}  # node -> until when the answers to it are slow
        self._restarting: set[int] = set()
        self._calm_until: dict[int, float] = {}  # a restarted follower serves some reads before the next restart
        self._generation = 0

    def describe(self) -> str:
        return (f"reads(cutoff-gap={self.cutoff_gap} restart={self.restart_probability} "
                f"pinned={self.pinned_share})")

    def schedule(self, fault_time: float) -> None:
        """Cut off the leader with a minority every C{cutoff_gap} seconds on
        average."""
        t = self.rng.uniform(0.3, 0.3 + self.cutoff_gap) if self.cutoff_gap != math.inf else math.inf
        while t < fault_time:
            self.sim.clock.callLater(t, self._cut_off_leader)
            t += self.rng.expovariate(1 / self.cutoff_gap) + 0.3
        self.sim.network.extra_delay.append(self._answer_delay)

    # -- a deposed leader answering reads ------------------------------

    def _cut_off_leader(self) -> None:
        sim = self.sim
        leader = sim.leader()
        if sim._healed or leader is None or len(sim.ids) < 3:
            return
        others = [i for i in sim.ids if i != leader]
        self.rng.shuffle(others)
        # As many as can be cut off while the others still make a quorum,
        # at most one node short of a quorum (alone in 3 or 4 nodes, with
        # one follower in 5 or 6).
        keep = min(sim.quorum - 1, len(sim.ids) - sim.quorum) - 1
        minority = [leader, *others[:keep]]
        majority = others[keep:]
        sim.network.heal()
        sim._partition_generation += 1  # the uniform schedule's pending "partition ends" must not undo this
        self._generation += 1
        sim.network.cut(minority, majority)
        sim.fault(f"reads-cutoff {sorted(minority)}|{sorted(majority)}")
        sim.stats["partitions"] += 1
        sim.stats["read_cutoffs"] += 1
        # Long enough for a new leader to commit writes and for check-quorum
        # to depose the old leader (two election timeouts and more).
        duration = self.rng.uniform(1.0, 2.5) * sim.raft_options["election_timeout_max"] + 0.3
        until = sim.clock.seconds() + duration
        for client in sim.clients:
            if self.rng.random() < self.pinned_share:
                client.pin(leader, until)
        sim.clock.callLater(duration, self._rejoin, self._generation)

    def _rejoin(self, generation: int) -> None:
        if generation == self._generation and not self.sim._healed:
            self.sim.network.heal()
            self.sim._partition_generation += 1
            self.sim.fault("reads-rejoin")

    # -- a follower restarted with forwarded reads in flight -----------

    def on_send(self, message: Any) -> None:
        sim = self.sim
        if sim._healed or type(message.body).__name__ != "ReadIndexRequest":
            return
        node_id = message.sender
        member = sim.members[node_id]
        incarnation, count = self._forwarded.get(node_id, (member.incarnation, 0))
        if incarnation != member.incarnation:
            count = 0
        count += 1
        self._forwarded[node_id] = (member.incarnation, count)
        # Mostly one of the first reads of an incarnation: the next
        # incarnation then soon forwards as many.
        p = self.restart_probability if count <= 3 else self.restart_probability / 20
        if node_id in self._restarting or sim.clock.seconds() < self._calm_until.get(node_id, 0.0) or self.rng.random() >= p:
            return
        down = self.rng.choice((0.005, 0.02, 0.06))
        # The answers to this follower arrive after it is back, at various
        # points of its catching up.
        self._slow_answers[node_id] = sim.clock.seconds() + 0.01
        self._restarting.add(node_id)
        sim.clock.callLater(self.rng.uniform(0.0, 0.003), self._crash, node_id, down)
        sim.stats["read_restarts"] += 1

    def _answer_delay(self, message: Any) -> float:
        """What is sent to a follower in its slow period is late: answers to
        its reads and entries by much (it waits long for its read indexes
        and catches up slowly, in small batches, out of order), heartbeats a
        little (it soon knows the leader and forwards reads)."""
        until = self._slow_answers.get(message.receiver)
        if until is None or self.sim.clock.seconds() > until:
            return 0.0
        name = type(message.body).__name__
        if name == "ReadIndexResponse" or (name == "AppendEntries" and message.body.entries):
            return self.rng.uniform(0.06, 0.4)
        return self.rng.uniform(0.0, 0.02)

    def _crash(self, node_id: int, down: float) -> None:
        sim = self.sim
        node = sim.members[node_id].node
        if sim._healed or node is None or node.core.role is Role.LEADER:
            self._restarting.discard(node_id)
            return
        self._slow_answers[node_id] = max(self._slow_answers.get(node_id, 0.0), sim.clock.seconds() + down)
        if sim.crash(node_id, "with forwarded reads in flight"):
            sim.clock.callLater(down, self._restart, node_id)
        else:
            self._restarting.discard(node_id)

    def _restart(self, node_id: int) -> None:
        sim = self.sim
        self._restarting.discard(node_id)
        if sim._healed:
            return
        sim.restart(node_id)
        until = sim.clock.seconds() + 0.5
        self._calm_until[node_id] = until
        self._slow_answers[node_id] = sim.clock.seconds() + self.rng.uniform(0.2, 0.6)
        # Its clients come back once it has heard from the leader (a read
        # it cannot forward yet fails at once).
        clients = [c for c in sim.clients if self.rng.random() < self.pinned_share]
        sim.clock.callLater(self.rng.uniform(0.03, 0.1), self._pin, clients, node_id, until)

    def _pin(self, clients: list[Any], node_id: int, until: float) -> None:
        for client in clients:
            client.pin(node_id, until)
