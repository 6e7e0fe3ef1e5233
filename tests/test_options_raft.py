# -*- test-case-name: tests.test_options_raft -*-
"""
The Raft core's tunables as C{twistd kvstore} options: one validated
L{RaftConfig}, whose rules the options share rather than repeat.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import Options, parse_config
from kvstore.protocols.peer import MAX_ENTRIES_BYTES
from kvstore.raft.config import RaftConfig


class RaftOptionsTests(SynchronousTestCase):
    """Replication limits and Pre-Vote are options; their defaults are the core's."""

    def test_defaults_are_the_core_defaults(self) -> None:
        """With no options, the node's RaftConfig has the core's defaults (and the peer message limit)."""
        raft = parse_config(["--peers", "5001,5002"]).raft
        self.assertEqual(raft, RaftConfig(0, peers=(1, 2), max_entries_bytes=MAX_ENTRIES_BYTES))

    def test_options_reach_the_config(self) -> None:
        """Each tunable given on the command line lands in the RaftConfig."""
        raft = parse_config(
            ["--max-inflight", "4", "--max-append-bytes", "64k", "--max-append-entries", "16",
             "--max-apply-batch", "100", "--no-pre-vote"]
        ).raft
        self.assertEqual(
            (raft.max_inflight, raft.max_append_bytes, raft.max_append_entries, raft.max_apply_batch, raft.pre_vote),
            (4, 65536, 16, 100, False),
        )

    def test_help_documents_them(self) -> None:
        """twistd kvstore --help names every operator tunable."""
        text = Options().getUsage(width=200)
        for option in ("--max-inflight", "--max-append-bytes", "--max-append-entries", "--max-apply-batch",
                       "--no-pre-vote"):
            self.assertIn(option, text)

    def test_append_budget_above_the_message_limit(self) -> None:
        """A per-message budget above the peer message limit is refused, naming the option."""
        error = self.assertRaises(usage.UsageError, parse_config, ["--max-append-bytes", "1GiB"])
        self.assertIn("--max-append-bytes", str(error))

    def test_zero_window_refused(self) -> None:
        """A pipelining window of 0 is refused."""
        error = self.assertRaises(usage.UsageError, parse_config, ["--max-inflight", "0"])
        self.assertIn("--max-inflight", str(error))


class OneElectionRuleTests(SynchronousTestCase):
    """The election-timeout rule is RaftConfig's, and the options apply that same rule."""

    def test_exactly_three_heartbeats_is_refused_by_both(self) -> None:
        """An election timeout of exactly 3 heartbeats fails in the core's config and on the command line alike."""
        # Binary-exact values, so that the bound itself is what is tested.
        config = RaftConfig(0, heartbeat_interval=0.125, election_timeout_min=0.375, election_timeout_max=0.5)
        self.assertRaises(ValueError, config.validate)
        error = self.assertRaises(
            usage.UsageError, parse_config, ["--heartbeat-interval", "125", "--election-timeout", "375-500"]
        )
        self.assertIn("--election-timeout minimum (375 ms) must be more than 3 x --heartbeat-interval (125 ms)",
                      str(error))

    def test_exactly_three_heartbeats_is_refused_whatever_the_rounding(self) -> None:
        """Exactly 3 heartbeats is refused for every whole-millisecond heartbeat, although in float seconds
        3 * 0.009 is a hair below 0.027 (found in review)."""
        for heartbeat_ms in (9, 18, 19, 36, 37, 100, 125):
            with self.subTest(heartbeat_ms=heartbeat_ms):
                self.assertRaises(
                    usage.UsageError,
                    parse_config,
                    ["--heartbeat-interval", str(heartbeat_ms), "--election-timeout",
                     f"{3 * heartbeat_ms}-{6 * heartbeat_ms}"],
                )

    def test_just_above_is_accepted_by_both(self) -> None:
        """Just above 3 heartbeats is fine for both."""
        RaftConfig(0, heartbeat_interval=0.1, election_timeout_min=0.301, election_timeout_max=0.6).validate()
        self.assertAlmostEqual(
            parse_config(["--heartbeat-interval", "100", "--election-timeout", "301-600"]).raft.election_timeout_min,
            0.301,
        )
