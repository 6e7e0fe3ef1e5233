# -*- test-case-name: tests.integration.test_design_card -*-
"""
The design card's three command lines, run verbatim from one working
directory as a person does in three terminals, form a working cluster.

Ports 5000-5002 may be taken on a shared machine, so the lines run with the
ports renumbered into the test range (20000-29999) and nothing else changed.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.processes import ROOT, allocate_port_range, command, parse_status, wait_until

try:
    import pytest
except ImportError:  # pragma: no cover - trial without pytest installed
    pass
else:
    pytestmark = pytest.mark.integration

#: From the design card, character for character.
DESIGN_CARD = (
    "twistd -n kvstore --node-id 0 --port 5000 --peers 5001,5002",
    "twistd -n kvstore --node-id 1 --port 5001 --peers 5000,5002",
    "twistd -n kvstore --node-id 2 --port 5002 --peers 5000,5001",
)

#: Seconds for three nodes to start (twistd scans plugins) and elect a
#: leader with the default 1-2 s election timeout, on a loaded machine.
_TIMEOUT = 60


def renumber(line: str, base: int) -> str:
    """C{line} with ports 5000-5002 replaced by C{base}..C{base + 2}."""
    return re.sub(r"\b500([0-2])\b", lambda m: str(base + int(m[1])), line)


class DesignCardTests(SynchronousTestCase):
    """The design card's command lines, verbatim, from one directory."""

    def start(self, line: str, cwd: Path, out: Path) -> subprocess.Popen[bytes]:
        """Run C{line} in C{cwd} with the venv's bin first on PATH, as after
        C{. .venv/bin/activate}; stopped (by pid) when the test ends."""
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(out, "wb") as output:
            process = subprocess.Popen(
                shlex.split(line), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )

        def stop() -> None:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(15)

        self.addCleanup(stop)
        return process

    def test_three_lines_from_one_directory(self) -> None:
        """The three lines, from one working directory, elect a leader that
        takes a write, a follower serves it with a linearizable read, and
        each node's pid file is in its own data directory."""
        if not (Path(sys.executable).parent / "twistd").exists():
            self.skipTest("no twistd script beside this Python")
        base = allocate_port_range(3)
        ports = [base, base + 1, base + 2]
        work = Path(self.mktemp())
        cwd = work / "cwd"
        cwd.mkdir(parents=True)
        lines = [renumber(line, base) for line in DESIGN_CARD]
        outs = [work / f"node-{i}.out" for i in range(3)]
        processes = [self.start(line, cwd, out) for line, out in zip(lines, outs)]

        def report() -> str:
            return "\n".join(
                f"--- {line} ({'running' if p.poll() is None else f'exited {p.returncode}'})\n"
                + out.read_text(errors="replace")[-3000:]
                for line, p, out in zip(lines, processes, outs)
            )

        def cluster_ready() -> int | None:
            """The leader's port once every node names it and every node
            has its links to the others up (needed to forward reads)."""
            for process in processes:
                if process.poll() is not None:
                    raise AssertionError(f"a node exited\n{report()}")
            statuses = [parse_status(command(port, "STATUS", timeout=2)) for port in ports]
            leaders = {s["leader"] for s in statuses}
            roles = [s["role"] for s in statuses]
            connected = all(len(s.get("connected", "").split(",")) == 2 for s in statuses)
            if len(leaders) == 1 and roles.count("leader") == 1 and connected:
                return ports[roles.index("leader")]
            return None

        leader = wait_until(cluster_ready, _TIMEOUT, message=lambda: f"a leader\n{report()}")
        follower = next(port for port in ports if port != leader)
        self.assertEqual(command(leader, "PUT design card"), "design added successfully.")
        self.assertEqual(command(follower, "GET design"), "value of design: card")

        # Every pid file is in its node's data directory, none in the shared one.
        self.assertFalse((cwd / "twistd.pid").exists())
        for node_id, process in enumerate(processes):
            pidfile = cwd / "kvstore-data" / f"node-{node_id}" / "twistd.pid"
            self.assertEqual(pidfile.read_text(), f"{process.pid}\n")
