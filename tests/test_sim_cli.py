"""
The kvstore-sim command line (kvstore.testing.sim.cli): listing plants, replaying
one seed with its trace, and soak exit status with and without a plant.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.cli import main
from kvstore.testing.sim.plants import PLANTS

from tests.support import captured_output, slow


class SimulatorCommandLineTests(SynchronousTestCase):
    """The C{kvstore-sim} command line, run in-process with its output captured."""

    def test_list_plants(self):
        """--list-plants names every planted bug."""
        output = captured_output(self)
        assert main(["--list-plants"]) == 0
        out = output.read().out
        for name in PLANTS:
            assert name in out

    def test_replay_one_seed_prints_trace_and_hash(self):
        """--seed --trace prints the same trace and hash every time."""
        output = captured_output(self)
        assert main(["--seed", "4", "--trace"]) == 0
        first = output.read().out
        assert main(["--seed", "4", "--trace"]) == 0
        assert output.read().out == first
        assert "trace hash" in first and "deliver" in first

    def test_soak_passes_and_reports_coverage(self):
        """A clean soak exits 0 and prints rate and coverage."""
        output = captured_output(self)
        assert main(["--seeds", "3", "--jobs", "1"]) == 0
        out = output.read().out
        assert "seeds/s" in out and "coverage: crashes=" in out and "all seeds passed" in out

    @slow
    def test_soak_with_a_plant_fails_and_prints_replay(self):
        """With a planted bug the soak exits non-zero and prints each failing
        seed's replay command."""
        output = captured_output(self)
        assert main(["--seeds", "2", "--start", "1", "--jobs", "2", "--plant", "forget-vote-on-restart"]) == 1
        out = output.read().out
        assert "FAILING" in out and "kvstore-sim --seed 1 --nodes 3 --plant forget-vote-on-restart --trace" in out

    def test_profile_option(self):
        """--profile forces a fault profile on every seed, shows in the soak
        summary, and is part of the replay command of a failing seed."""
        output = captured_output(self)
        assert main(["--seeds", "1", "--jobs", "1", "--profile", "figure8"]) == 0
        assert "profile figure8" in output.read().out
        assert main(["--seed", "7", "--plant", "commit-old-term", "--profile", "figure8"]) == 1
        out = output.read().out
        assert "seed 7 (figure8): FAILED" in out
        assert "kvstore-sim --seed 7 --nodes 3 --plant commit-old-term --profile figure8 --trace" in out
