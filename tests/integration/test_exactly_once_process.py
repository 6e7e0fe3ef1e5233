# -*- test-case-name: tests.integration.test_exactly_once_process -*-
"""
Exactly-once writes with real processes (issue 14's verification): 8
clients each do 1,250 C{incr("counter")} through L{kvstore.client.Client}
with exactly-once sessions while the leader of a three-node cluster is
killed with SIGKILL twice and restarted; the counter ends at exactly 10,000
and the calls returned exactly the values 1 to 10,000.
C{benchmarks/exactly_once.py} runs the same without sessions beside it.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kvstore.client import OutcomeUnknown, _policy, _protocol as p
from kvstore.testing.counter_run import run_counter

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


class ExactlyOnceProcessTests(ProcessTestCase):
    """The exactly-once guarantee against leader crashes."""

    def test_counter_exact_through_two_leader_kills(self) -> None:
        """8 clients x 1,250 incr with the leader killed with SIGKILL twice: the counter is exactly
        10,000, the values returned are exactly 1..10,000 (no increment applied twice or lost), no call
        raised OutcomeUnknown, and tagged writes were in fact retried after unknown outcomes."""
        retried = self.count_retries_after_unknown_outcomes()
        cluster = self.make_cluster(3).start()
        cluster.wait_for_leader()
        cluster.wait_connected()
        run = run_counter(cluster, clients=8, increments=1250, exactly_once=True)
        self.assertEqual(len(run.kills), 2, run.describe())
        self.assertEqual(run.final, 10_000, run.describe())
        self.assertEqual(sorted(run.returned), list(range(1, 10_001)), run.describe())
        self.assertEqual(run.unknown, 0, run.describe())
        self.assertGreater(retried[0], 0, "no tagged write was retried: the kills exercised nothing")

    def count_retries_after_unknown_outcomes(self) -> list[int]:
        """Count, in the client library's policy, the tagged writes it sends again after an unknown
        outcome (the retries that sessions make safe)."""
        count, lock = [0], threading.Lock()

        def counting(original: Any) -> Any:
            def wrapper(request: p.Request, *args: Any, **kwargs: Any) -> _policy.Action:
                action = original(request, *args, **kwargs)
                if isinstance(request, p.Tagged) and isinstance(action, _policy.Retry) and isinstance(
                        action.error, OutcomeUnknown):
                    with lock:
                        count[0] += 1
                return action  # type: ignore[no-any-return]

            return wrapper

        self.patch(_policy, "after_reply", counting(_policy.after_reply))
        self.patch(_policy, "after_lost_connection", counting(_policy.after_lost_connection))
        return count
