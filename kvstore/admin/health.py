# -*- test-case-name: tests.test_admin_health -*-
"""
The health checks behind C{/livez} and C{/readyz}, named as Kubernetes and
etcd name theirs.

Liveness (restart the process if it fails): the node still serves (it has
not stopped itself after a failure), and the reactor is responsive (the
reactor-lag probe is not overdue).  A reactor blocked outright does not
answer C{/livez} at all, which a prober counts as a failure too.

Readiness (send it clients if it passes):

  - C{serving}: as above;
  - C{leader}: a leader is known;
  - C{voter}: the node is a voting member (a learner, once membership
    changes exist, would be ready only once caught up);
  - C{applied}: its applied index is within L{HealthChecks.max_apply_lag}
    entries of its commit index;
  - C{read_index}: a linearizable read (a ReadIndex round, through the
    leader if this node follows) completes within
    L{HealthChecks.read_timeout} seconds: a leader is known I{and} reachable,
    its leadership confirmed by a majority, and this node has applied up to
    the leader's commit index.  Concurrent C{/readyz} requests share one
    round.
"""

from __future__ import annotations

from dataclasses import dataclass
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from kvstore.admin.instruments import ReactorLagProbe
from kvstore.admin.view import NodeView
from kvstore.errors import KeyNotFound

__all__ = ["Check", "HealthChecks", "LIVEZ_MAX_REACTOR_LAG", "READYZ_READ_TIMEOUT"]

#: Seconds the reactor may have been blocked before /livez fails.  Elections
#: time out after 1-2 s by default, so a reactor blocked for 5 s has already
#: cost this node its leadership or its followers' trust.
LIVEZ_MAX_REACTOR_LAG = 5.0
#: Seconds /readyz waits for its ReadIndex round (a round is one heartbeat
#: exchange with a majority: milliseconds on a healthy network).
READYZ_READ_TIMEOUT = 2.0
#: The key /readyz reads: any key would do (the value is discarded; a key
#: with no value is a successful read).
_READ_PROBE_KEY = "kvstore-readyz"


@dataclass(frozen=True)
class Check:
    """One check's outcome; C{reason} says why it failed."""

    name: str
    ok: bool
    reason: str = ""


class HealthChecks:
    """
    The checks of one node, run on the reactor thread.

    @ivar max_apply_lag: committed entries the node may have left to apply
        and still be ready; by default two apply batches (a node further
        behind is catching up).
    """

    def __init__(
        self,
        view: NodeView,
        clock: IReactorTime,
        probe: ReactorLagProbe,
        *,
        read_timeout: float = READYZ_READ_TIMEOUT,
        max_reactor_lag: float = LIVEZ_MAX_REACTOR_LAG,
        max_apply_lag: int | None = None,
    ) -> None:
        self._view = view
        self._clock = clock
        self._probe = probe
        self.read_timeout = read_timeout
        self.max_reactor_lag = max_reactor_lag
        self.max_apply_lag = (
            max_apply_lag if max_apply_lag is not None else 2 * view.node.core.config.max_apply_batch
        )
        self._read_round: _ReadRound | None = None

    def livez(self) -> Deferred[list[Check]]:
        """The liveness checks (they complete at once)."""
        return succeed([self._serving(), self._reactor()])

    def readyz(self) -> Deferred[list[Check]]:
        """The readiness checks; fires once the ReadIndex round is over."""
        checks = [self._serving(), self._leader(), self._voter(), self._applied()]
        return self._read_index().addCallback(lambda read: checks + [read])

    # -- the checks ------------------------------------------------------

    def _serving(self) -> Check:
        reason = self._view.node.not_serving_reason
        return Check("serving", reason is None, reason or "")

    def _reactor(self) -> Check:
        lag = max(self._probe.overdue(), self._probe.last_lag)
        if lag > self.max_reactor_lag:
            return Check("reactor", False, f"the reactor was blocked for {lag:.1f} s (limit {self.max_reactor_lag:g} s)")
        return Check("reactor", True)

    def _leader(self) -> Check:
        if self._view.leader_id is None:
            return Check("leader", False, "no leader is known (an election is under way, or this node is cut off)")
        return Check("leader", True)

    def _voter(self) -> Check:
        if not self._view.is_voter:
            return Check("voter", False, "this node is not a voting member")
        return Check("voter", True)

    def _applied(self) -> Check:
        behind = self._view.commit_index - self._view.applied_index
        if behind > self.max_apply_lag:
            return Check(
                "applied", False,
                f"applied index {self._view.applied_index} is {behind} entries behind the commit index "
                f"(limit {self.max_apply_lag})",
            )
        return Check("applied", True)

    def _read_index(self) -> Deferred[Check]:
        """A linearizable read's outcome, sharing a read already under way."""
        read_round = self._read_round
        if read_round is None or read_round.finished:
            read_round = self._read_round = _ReadRound(self)
        return read_round.wait()


class _ReadRound:
    """
    One linearizable read made for C{/readyz}, and the requests waiting for
    its outcome.  The node's Deferred is never cancelled (the node fires it
    itself, at its own read timeout at the latest); the round stops waiting
    for it after the checks' C{read_timeout}, and a later round is a new
    L{_ReadRound}, so a late answer to this one cannot end it.
    """

    def __init__(self, checks: HealthChecks) -> None:
        self._checks = checks
        self._waiters: list[Deferred[Check]] = []
        self._outcome: Check | None = None
        timeout = checks.read_timeout
        self._timer = checks._clock.callLater(
            timeout, self._finish,
            Check("read_index", False, f"a linearizable read did not complete within {timeout:g} s"),
        )
        checks._view.node.get(_READ_PROBE_KEY).addBoth(self._answered)

    @property
    def finished(self) -> bool:
        return self._outcome is not None

    def wait(self) -> Deferred[Check]:
        if self._outcome is not None:
            return succeed(self._outcome)
        waiter: Deferred[Check] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def _answered(self, result: object) -> None:
        if isinstance(result, Failure) and not result.check(KeyNotFound):
            self._finish(Check("read_index", False, f"a linearizable read failed: {result.getErrorMessage()}"))
        else:
            self._finish(Check("read_index", True))

    def _finish(self, check: Check) -> None:
        if self._outcome is not None:
            return  # the timeout, or the read, came first
        self._outcome = check
        if self._timer.active():
            self._timer.cancel()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(check)


def summary(checks: list[Check]) -> bool:
    """Whether every check passed."""
    return all(check.ok for check in checks)

