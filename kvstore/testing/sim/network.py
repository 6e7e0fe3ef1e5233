# -*- test-case-name: tests.test_sim_run -*-
"""
The simulated network, shared by the simulator (L{kvstore.testing.sim.world})
and the in-memory cluster (L{kvstore.testing.memory_cluster}): every
message's fate is drawn from a seeded RNG on a shared clock.

Per message it may be dropped, delayed (occasionally by much more than
usual, which reorders it behind later messages), or duplicated (the copy
gets its own delay), as the L{Weather} says; with C{in_order}, each link
delivers in the order it was sent, as a TCP connection would.  Directed
links can be cut; the cut is checked both when a message is sent and when
it arrives, so a partition that changes while messages are in flight
affects them realistically.  A message for a node that is down when it
arrives is lost.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, Iterable

from twisted.internet.interfaces import IReactorTime

from kvstore.raft.messages import Message


@dataclass
class Weather:
    """Per-message fault probabilities; changed by the fault schedule."""

    drop: float = 0.0
    duplicate: float = 0.0
    slow: float = 0.0  # probability of a long delay (reordering)
    latency: tuple[float, float] = (0.0003, 0.002)
    slow_latency: tuple[float, float] = (0.005, 0.08)


class SimulatedNetwork:
    """
    @ivar weather: the per-message fault probabilities and latencies.
    @ivar blocked: directed links C{(sender, receiver)} that lose everything.
    @ivar filters: predicates C{f(message)}; a message for which any is true
        is lost when sent (to lose only some message types, say).
    @ivar on_send: observers C{f(message)} called for each message sent.
    @ivar on_deliver: observers C{f(message)} called before each delivery.
    @ivar after_deliver: observers C{f(message)} called after the receiver
        processed a delivered message.
    @ivar extra_delay: callables C{f(message) -> seconds} added to each
        message's delay (a fault profile slows some messages down on purpose).
    @ivar stats: counts of what happened to messages, by fate.
    """

    def __init__(
        self, clock: IReactorTime, rng: random.Random, weather: Weather | None = None, *, in_order: bool = False
    ) -> None:
        self._clock = clock
        self._rng = rng
        self.weather = weather if weather is not None else Weather()
        self._in_order = in_order
        self._last_arrival: dict[tuple[int, int], float] = {}
        self.blocked: set[tuple[int, int]] = set()
        self.filters: list[Callable[[Message], bool]] = []
        self._receivers: dict[int, Callable[[Message], None]] = {}
        self.on_send: list[Callable[[Message], None]] = []
        self.on_deliver: list[Callable[[Message], None]] = []
        self.after_deliver: list[Callable[[Message], None]] = []
        self.extra_delay: list[Callable[[Message], float]] = []
        self.stats = {
            "sent": 0, "delivered": 0, "dropped": 0, "duplicated": 0, "lost_to_crash": 0, "cut": 0, "filtered": 0,
        }

    def attach(self, node_id: int, receive: Callable[[Message], None]) -> None:
        self._receivers[node_id] = receive

    def detach(self, node_id: int) -> None:
        self._receivers.pop(node_id, None)

    def send(self, message: Message) -> None:
        self.stats["sent"] += 1
        for observer in self.on_send:
            observer(message)
        if (message.sender, message.receiver) in self.blocked:
            self.stats["cut"] += 1
            return
        if self.filters and any(f(message) for f in self.filters):
            self.stats["filtered"] += 1
            return
        w, rng = self.weather, self._rng
        if w.drop and rng.random() < w.drop:
            self.stats["dropped"] += 1
            return
        copies = 2 if w.duplicate and rng.random() < w.duplicate else 1
        if copies == 2:
            self.stats["duplicated"] += 1
        for _ in range(copies):
            slow = w.slow and rng.random() < w.slow
            delay = rng.uniform(*(w.slow_latency if slow else w.latency))
            for extra in self.extra_delay:
                delay += extra(message)
            if self._in_order:
                link = (message.sender, message.receiver)
                now = self._clock.seconds()
                arrival = max(now + delay, self._last_arrival.get(link, 0.0))
                self._last_arrival[link] = arrival
                delay = arrival - now
            self._clock.callLater(delay, self._arrive, message)

    def _arrive(self, message: Message) -> None:
        if (message.sender, message.receiver) in self.blocked:
            self.stats["cut"] += 1
            return
        receive = self._receivers.get(message.receiver)
        if receive is None:
            self.stats["lost_to_crash"] += 1
            return
        self.stats["delivered"] += 1
        for observer in self.on_deliver:
            observer(message)
        receive(message)
        for observer in self.after_deliver:
            observer(message)

    # -- partitions ------------------------------------------------------

    def heal(self) -> None:
        self.blocked.clear()

    def cut(self, a: Iterable[int], b: Iterable[int], both_ways: bool = True) -> None:
        """Cut every link from group C{a} to group C{b} (and back)."""
        for x in a:
            for y in b:
                if x != y:
                    self.blocked.add((x, y))
                    if both_ways:
                        self.blocked.add((y, x))

    def isolate(self, node_id: int, members: Iterable[int]) -> None:
        """Cut every link to and from C{node_id}."""
        self.cut([node_id], [m for m in members if m != node_id])

    def partition(self, *groups: Iterable[int]) -> None:
        """Allow traffic only within each group."""
        sets = [list(g) for g in groups]
        for i, a in enumerate(sets):
            for b in sets[i + 1:]:
                self.cut(a, b)
