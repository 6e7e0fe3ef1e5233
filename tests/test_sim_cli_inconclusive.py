# -*- test-case-name: tests.test_sim_cli_inconclusive -*-
"""
A soak (kvstore.testing.sim.cli.soak) tolerates no key the linearizability search
left undecided: one such key among many seeds fails the soak, which prints
the seed, the key and its replay command.
"""

from __future__ import annotations

import io
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim import cli


def _fake_work(undecided: dict[int, list[str]]) -> Any:
    """A stand-in for L{cli._work}: every seed passes, and the seeds in
    C{undecided} report those keys as inconclusive."""

    def work(args: tuple[int, int | None, frozenset[str], float, str | None]) -> dict[str, Any]:
        seed = args[0]
        return {
            "seed": seed,
            "ok": True,
            "report": f"seed {seed} (mixed): ok (3 nodes)",
            "stats": {"inconclusive_keys": len(undecided.get(seed, []))},
            "properties": [],
            "trace_hash": "0",
            "nodes": 3,
            "inconclusive": undecided.get(seed, []),
            "replay": f"kvstore-sim --seed {seed} --nodes 3 --trace",
        }

    return work


class InconclusiveBoundTests(SynchronousTestCase):
    def test_one_undecided_key_in_a_hundred_seeds_fails_the_soak(self) -> None:
        """A 100-seed soak whose seeds all pass but one key stayed undecided
        exits 1 and prints that seed's key and replay command."""
        self.patch(cli, "_work", _fake_work({42: ["b"]}))
        out = io.StringIO()
        self.assertEqual(cli.soak(range(100), None, frozenset(), 1, 3.0, out=out), 1)
        text = out.getvalue()
        self.assertIn("seed 42 key b", text)
        self.assertIn("kvstore-sim --seed 42 --nodes 3 --trace", text)
        self.assertNotIn("all seeds passed", text)

    def test_a_soak_with_every_key_decided_passes(self) -> None:
        """The same soak with every key decided exits 0."""
        self.patch(cli, "_work", _fake_work({}))
        out = io.StringIO()
        self.assertEqual(cli.soak(range(100), None, frozenset(), 1, 3.0, out=out), 0)
        self.assertIn("all seeds passed", out.getvalue())
