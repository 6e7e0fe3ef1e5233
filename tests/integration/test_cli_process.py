# -*- test-case-name: tests.integration.test_cli_process -*-
"""
C{kvstore-cli} as a person and a script use it, against three real node
processes: the shell in a real pseudo-terminal (pexpect), with line
editing, completion, history kept between sessions, C{--verbose} naming the
node that answered, and a leader killed with SIGKILL between two commands;
the one-shot mode's output, C{--json} and exit statuses; the cluster taken
from C{$KVSTORE_CLUSTER}.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kvstore.testing.processes import ROOT, NodeProcess

from tests.integration.support import ProcessTestCase

try:
    import pexpect
except ImportError:  # pragma: no cover - pexpect is in the test extras
    pexpect = None

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "kvstore.tools.cli"]
#: Long enough for a failover (elections take 300-600 ms here) on a loaded machine.
CALL_TIMEOUT = "15"
EXPECT_TIMEOUT = 30


class CliTestCase(ProcessTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.cluster = self.make_cluster(3).start()
        self.leader = self.cluster.wait_for_leader()
        self.cluster.wait_connected()
        self.state_home = self.tmp_path / "state"

    def environment(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ, TERM="dumb", XDG_STATE_HOME=str(self.state_home), **extra)
        env.pop("KVSTORE_CLUSTER", None)
        env.update(extra)
        return env

    def follower_first(self) -> str:
        """The cluster's addresses with a follower first, so that writes must be redirected."""
        nodes = sorted(self.cluster.nodes, key=lambda n: n is self.leader)
        return ",".join(n.address for n in nodes)

    def shell(self, *options: str) -> "pexpect.spawn":
        if pexpect is None:
            self.skipTest("pexpect is not installed (pip install -e '.[test]' installs it)")
        child = pexpect.spawn(CLI[0], [*CLI[1:], "--timeout", CALL_TIMEOUT, *options], cwd=str(ROOT),
                              env=self.environment(), encoding="utf-8", timeout=EXPECT_TIMEOUT,
                              dimensions=(40, 250))
        self.addCleanup(self._end, child)
        child.expect_exact("kvstore> ")
        return child

    def _end(self, child: "pexpect.spawn") -> None:
        if child.isalive():
            child.terminate(force=True)

    def command(self, child: "pexpect.spawn", line: str, *expected: str) -> str:
        """Type C{line} and Enter; wait for each expected text, then the next prompt; return what came between."""
        child.sendline(line)
        for text in expected:
            child.expect_exact(text)
        child.expect_exact("kvstore> ")
        return child.before  # type: ignore[no-any-return]

    def one_shot(self, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "--timeout", CALL_TIMEOUT, *argv], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env=env or self.environment())


class ShellTests(CliTestCase):
    """The interactive shell in a pseudo-terminal."""

    def test_session_with_editing_completion_and_history(self) -> None:
        """
        Commands typed at the prompt are answered like nc's replies, writes
        sent to a follower reach the leader (which --verbose names), Tab
        completes a command word, Ctrl-P recalls the last line, and the
        history survives into the next session, under $XDG_STATE_HOME.
        """
        child = self.shell("--cluster", self.follower_first(), "--verbose")
        self.assertEqual(self.answered_by(child, "PUT greeting hello  world", "greeting added successfully."),
                         self.leader.address)
        self.command(child, "get greeting", "value of greeting: hello  world")
        self.command(child, "GET nothing", "Error: Key nothing not found")
        self.command(child, "PUT lonely", "Error: Usage: PUT <key> <value>")
        self.command(child, "help", "GET <key> [STALE]", "INCR <key> [<delta>]")
        # Tab completes "sta" to STATUS; the node's status line names the leader.
        child.send("sta\t")
        child.expect_exact("STATUS ")
        child.sendline("")
        child.expect_exact(f"leader={self.leader.node_id} ")
        child.expect_exact("kvstore> ")
        # Ctrl-P brings back the last line (STATUS), Ctrl-A/Ctrl-K edit it into GET greeting.
        child.sendcontrol("p")
        child.sendcontrol("a")
        child.sendcontrol("k")
        self.command(child, "GET greeting", "value of greeting: hello  world")
        child.sendline("EXIT")
        child.expect_exact("Goodbye.")
        child.expect(pexpect.EOF)
        child.close()
        self.assertEqual(child.exitstatus, 0)
        history = self.state_home / "kvstore" / "cli_history"
        self.assertIn("PUT greeting hello  world", history.read_text().splitlines())
        self.assertFalse((ROOT / "cli_history").exists())

        # A new session: the up arrow walks back through the last one.
        again = self.shell("--cluster", self.follower_first())
        again.send("\x1b[A\x1b[A")  # EXIT, then GET greeting
        again.sendline("")
        again.expect_exact("value of greeting: hello  world")
        again.expect_exact("kvstore> ")
        again.sendeof()
        again.expect(pexpect.EOF)

    def test_leader_killed_between_commands(self) -> None:
        """After the leader is killed with SIGKILL, the next write is answered by the new leader with no
        error shown, and the earlier write is still there."""
        child = self.shell("--cluster", ",".join(self.cluster.addresses), "--verbose")
        self.assertEqual(self.answered_by(child, "PUT before 1", "before added successfully."), self.leader.address)
        self.leader.kill()
        child.sendline("PUT after 2")
        index = child.expect_exact(["after added successfully.", "Error:"])
        self.assertEqual(index, 0, f"the write failed: {child.before}{child.after}{child.buffer}")
        child.expect(r"\[answered by (\S+) in ")
        by = child.match.group(1)
        child.expect_exact("kvstore> ")
        new_leader = self.cluster.wait_for_leader()
        self.assertNotEqual(new_leader.node_id, self.leader.node_id)
        self.assertEqual(by, new_leader.address)
        self.assertEqual(self.answered_by(child, "GET before", "value of before: 1"), new_leader.address)
        child.sendline("EXIT")
        child.expect(pexpect.EOF)

    def answered_by(self, child: "pexpect.spawn", line: str, expected: str) -> str:
        """Type C{line}; wait for C{expected} and --verbose's note; return the node it names."""
        child.sendline(line)
        child.expect_exact(expected)
        child.expect(r"\[answered by (\S+) in ")
        node: str = child.match.group(1)
        child.expect_exact("kvstore> ")
        return node


class OneShotTests(CliTestCase):
    """kvstore-cli COMMAND, as a script runs it."""

    def test_exit_statuses_output_and_json(self) -> None:
        """
        put/get/delete/status exit 0 (get prints the bare value), a missing
        key exits 1, an unreachable cluster and a usage error exit 2; --json
        prints one object naming the node that answered; a follower listed
        first does not matter.
        """
        cluster = ["--cluster", self.follower_first()]
        put = self.one_shot(*cluster, "put", "k", "two words")
        self.assertEqual((put.returncode, put.stdout), (0, "k added successfully.\n"), put.stderr)
        get = self.one_shot(*cluster, "get", "k")
        self.assertEqual((get.returncode, get.stdout), (0, "two words\n"), get.stderr)
        # A linearizable read is served by the first node that answers: here the follower.
        as_json = self.one_shot(*cluster, "get", "k", "--json")
        self.assertEqual(json.loads(as_json.stdout), {"ok": True, "command": "get", "key": "k", "value": "two words",
                                                      "node": cluster[1].split(",")[0]})
        status = self.one_shot(*cluster, "--json", "status")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertEqual(json.loads(status.stdout)["status"]["leader"], str(self.leader.node_id))
        self.assertEqual(self.one_shot(*cluster, "delete", "k").returncode, 0)
        missing = self.one_shot(*cluster, "get", "k")
        self.assertEqual((missing.returncode, missing.stdout, missing.stderr), (1, "", "Error: Key k not found\n"))
        missing_json = self.one_shot(*cluster, "--json", "delete", "k")
        self.assertEqual(missing_json.returncode, 1)
        self.assertEqual(json.loads(missing_json.stdout)["error"], "not_found")
        self.assertEqual(self.one_shot(*cluster, "get").returncode, 2)

        # Every node down: exit 2 within about the timeout, and the JSON says why.
        down = NodeProcess(9, self.cluster.nodes[0].port + 10, self.tmp_path / "unused", self.tmp_path / "unused")
        unreachable = self.one_shot("--cluster", down.address, "--timeout", "0.5", "--json", "get", "k")
        self.assertEqual(unreachable.returncode, 2)
        self.assertEqual(json.loads(unreachable.stdout)["error"], "connection_failed")

    def test_cluster_from_environment(self) -> None:
        """Without --cluster the nodes come from $KVSTORE_CLUSTER."""
        env = self.environment(KVSTORE_CLUSTER=",".join(self.cluster.addresses))
        result = self.one_shot("put", "from-env", "yes", env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        with self.cluster.client(timeout=10) as kv:
            self.assertEqual(kv.get("from-env"), "yes")
