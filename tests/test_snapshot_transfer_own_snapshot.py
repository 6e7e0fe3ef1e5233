# -*- test-case-name: tests.test_snapshot_transfer_own_snapshot -*-
"""
A follower that is writing its own snapshot of the same index and term as
the one its leader starts sending (it applied that far too, and its policy
fired) refuses the transfer quietly: an info line, no failure logged, a
refusal to the leader, and a later transfer of that snapshot goes through.
Found by the simulator once snapshots ran in every seed (seed 183).
"""

from __future__ import annotations

from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.messages import SnapshotChunkResponse
from tests.snapshot_support import meta
from tests.snapshot_transfer_support import FOLLOWER, LEADER, Pair


class OwnSnapshotInProgressTests(SynchronousTestCase):
    """The follower's own writer holds the file name the transfer needs."""

    def test_transfer_refused_without_a_logged_failure(self) -> None:
        """While the follower writes its own snapshot of that index and term,
        the first chunk is answered with a refusal, logged at info level
        without a traceback; once its writer is done, the transfer succeeds."""
        pair = Pair(3000)
        own = pair.follower_store.begin(meta(pair.info.index, pair.info.term))
        pair.offer()
        with capturedLogs() as events:
            pair.deliver_one()  # the first chunk reaches the follower
        failures = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual(failures, [])
        refusals = [e for e in events if "not receiving snapshot" in e.get("log_format", "")]
        self.assertEqual([e["log_level"] for e in refusals], [LogLevel.info])
        answers = [m.body for m in pair.network.queue if m.receiver == LEADER]
        self.assertEqual([(a.accepted, a.offset) for a in answers if isinstance(a, SnapshotChunkResponse)],
                         [(False, 0)])
        own.abort()
        with capturedLogs():
            pair.run()
        self.assertEqual(pair.installs[-1][2], pair.info.index)
        self.assertEqual([i.index for i in pair.installed_files()], [pair.info.index])
        self.assertIn((FOLLOWER, True), pair.reports)
