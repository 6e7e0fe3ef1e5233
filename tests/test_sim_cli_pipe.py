# -*- test-case-name: tests.test_sim_cli_pipe -*-
"""
C{kvstore-sim --trace | head}: a reader that stops early ends the simulator
quietly, without a C{BrokenPipeError} traceback.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.processes import ROOT

from tests.support import slow


@slow
class BrokenPipeTests(SynchronousTestCase):
    """The simulator's output piped into a reader that closes early."""

    def test_trace_into_head(self) -> None:
        """Closing the pipe after one line of the trace leaves stderr empty
        and exit status 1."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        # A pipe smaller than the trace (about 18 KB), so the simulator is
        # still writing when the reader goes away, as with a long trace.
        read_end, write_end = os.pipe()
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
        process = subprocess.Popen(
            [sys.executable, "-m", "kvstore.testing.sim.cli", "--seed", "1", "--trace"],
            env=env, stdin=subprocess.DEVNULL, stdout=write_end, stderr=subprocess.PIPE,
        )
        os.close(write_end)
        assert process.stderr is not None
        with open(read_end, "rb") as stdout:
            self.assertTrue(stdout.readline().startswith(b"0.000000 start seed=1"))
        # Closed: what head does after its lines.
        errors = process.stderr.read().decode(errors="replace")
        process.stderr.close()
        self.assertEqual((process.wait(120), errors), (1, ""))
