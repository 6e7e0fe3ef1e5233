"""
The kvstore-sim command line (kvstore.sim.cli): listing plants, replaying
one seed with its trace, and soak exit status with and without a plant.
"""

from __future__ import annotations

from kvstore.sim.cli import main
from kvstore.sim.plants import PLANTS


def test_list_plants(capsys):
    """--list-plants names every planted bug."""
    assert main(["--list-plants"]) == 0
    out = capsys.readouterr().out
    for name in PLANTS:
        assert name in out


def test_replay_one_seed_prints_trace_and_hash(capsys):
    """--seed --trace prints the same trace and hash every time."""
    assert main(["--seed", "4", "--trace"]) == 0
    first = capsys.readouterr().out
    assert main(["--seed", "4", "--trace"]) == 0
    assert capsys.readouterr().out == first
    assert "trace hash" in first and "deliver" in first


def test_soak_passes_and_reports_coverage(capsys):
    """A clean soak exits 0 and prints rate and coverage."""
    assert main(["--seeds", "3", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "seeds/s" in out and "coverage: crashes=" in out and "all seeds passed" in out


def test_soak_with_a_plant_fails_and_prints_replay(capsys):
    """With a planted bug the soak exits non-zero and prints each failing
    seed's replay command."""
    assert main(["--seeds", "2", "--start", "1", "--jobs", "2", "--plant", "forget-vote-on-restart"]) == 1
    out = capsys.readouterr().out
    assert "FAILING" in out and "kvstore-sim --seed 1 --nodes 3 --plant forget-vote-on-restart --trace" in out


def test_profile_option(capsys):
    """--profile forces a fault profile on every seed, shows in the soak
    summary, and is part of the replay command of a failing seed."""
    assert main(["--seeds", "1", "--jobs", "1", "--profile", "figure8"]) == 0
    assert "profile figure8" in capsys.readouterr().out
    assert main(["--seed", "7", "--plant", "commit-old-term", "--profile", "figure8"]) == 1
    out = capsys.readouterr().out
    assert "seed 7 (figure8): FAILED" in out
    assert "kvstore-sim --seed 7 --nodes 3 --plant commit-old-term --profile figure8 --trace" in out
