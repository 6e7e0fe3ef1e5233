# -*- test-case-name: tests.test_tools_cli -*-
"""
C{kvstore-cli} without a terminal or a cluster: how lines and command lines
are read, what each library answer or error becomes (text, JSON, exit
status), the shell loop over a script, and the command line's options.
The same tool in a real pseudo-terminal against real nodes is
C{tests/integration/test_cli_process.py}.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client.errors import (
    BadRequest,
    ClientError,
    ConnectionFailed,
    KeyNotFound,
    NoLeader,
    OutcomeUnknown,
)
from kvstore.tools import cli
from kvstore.tools.cli import commands
from kvstore.tools.cli.commands import Cas, Delete, Exit, Get, Help, Incr, Put, Raw, Status, UsageError
from kvstore.tools.cli.shell import Shell, history_path


class FakeClient:
    """An in-memory stand-in for L{kvstore.client.Client}: a dict, and
    scripted errors or raw replies."""

    def __init__(self, data: dict[str, str] | None = None, node: str | None = "127.0.0.1:5001") -> None:
        self.data = {} if data is None else data
        self.node = node
        self.calls: list[tuple[Any, ...]] = []
        self.fail: ClientError | BaseException | None = None
        self.raw_replies: dict[str, str] = {}
        self.closed = False

    def _check(self, *call: Any) -> None:
        self.calls.append(call)
        if self.fail is not None:
            failure, self.fail = self.fail, None
            raise failure

    def put(self, key: str, value: str) -> None:
        self._check("put", key, value)
        self.data[key] = value

    def get(self, key: str, stale: bool = False) -> str:
        self._check("get", key, stale)
        if key not in self.data:
            raise KeyNotFound(key)
        return self.data[key]

    def delete(self, key: str) -> None:
        self._check("delete", key)
        if key not in self.data:
            raise KeyNotFound(key)
        del self.data[key]

    def status(self) -> dict[str, str]:
        self._check("status")
        return {"node": "1", "role": "leader"}

    def raw_command(self, line: str) -> str:
        self._check("raw", line)
        reply = self.raw_replies[line]
        if reply.startswith("Error: "):
            raise BadRequest(reply[len("Error: "):])
        return reply

    def close(self) -> None:
        self.closed = True


class ParseTests(SynchronousTestCase):
    """Shell lines and one-shot command lines become the same actions."""

    def test_shell_lines(self) -> None:
        """Lines are split as the server splits requests, the command word in any case."""
        cases = {
            "PUT k hello  world ": Put("k", "hello  world "),
            "put k v": Put("k", "v"),
            "PUT k ": Put("k", ""),
            "get k": Get("k"),
            "GET k stale": Get("k", stale=True),
            "DELETE k": Delete("k"),
            "status": Status(),
            "INCR counter 5": Incr("counter", 5),
            "CAS k old new": Cas("k", "old", "new"),
            "MEMBERS": Raw("MEMBERS"),
            "help": Help(),
            "HELP put": Help("put"),
            "exit": Exit(),
            "QUIT": Exit(),
        }
        for line, action in cases.items():
            with self.subTest(line=line):
                self.assertEqual(commands.parse_line(line), action)
        self.assertIsNone(commands.parse_line("   "))

    def test_shell_usage_errors(self) -> None:
        """A known command with the wrong arguments is refused before anything is sent, with its usage."""
        for line in ["PUT k", "PUT", "GET", "GET a b", "GET k fresh", "DELETE", "DELETE a b", "STATUS now"]:
            with self.subTest(line=line):
                with self.assertRaises(UsageError) as caught:
                    commands.parse_line(line)
                self.assertIn("Usage:", str(caught.exception))

    def test_one_shot_words(self) -> None:
        """A one-shot value may come as several words (joined by spaces) or as one with its own spaces."""
        self.assertEqual(commands.parse_argv(["put", "k", "hello", "world"]), Put("k", "hello world"))
        self.assertEqual(commands.parse_argv(["put", "k", "a  b"]), Put("k", "a  b"))
        self.assertEqual(commands.parse_argv(["get", "k", "STALE"]), Get("k", stale=True))
        self.assertEqual(commands.parse_argv(["incr", "n", "-3"]), Incr("n", -3))
        self.assertRaises(UsageError, commands.parse_argv, [])
        self.assertRaises(UsageError, commands.parse_argv, ["put", "k"])


class RunTests(SynchronousTestCase):
    """Each action's answer: the server's line, a JSON object, and an exit status."""

    def test_successes(self) -> None:
        """Successful commands read like the server's replies, exit 0, and say which node answered."""
        client = FakeClient()
        put = commands.run(Put("k", "v 1"), client)
        self.assertEqual((put.status, put.text), (commands.OK, "k added successfully."))
        get = commands.run(Get("k"), client)
        self.assertEqual((get.status, get.text), (commands.OK, "value of k: v 1"))
        self.assertEqual(get.data, {"ok": True, "command": "get", "key": "k", "value": "v 1",
                                    "node": "127.0.0.1:5001"})
        status = commands.run(Status(), client)
        self.assertEqual(status.text, "node=1 role=leader")
        self.assertEqual(status.data["status"], {"node": "1", "role": "leader"})
        self.assertEqual(commands.run(Delete("k"), client).text, "k deleted successfully.")
        self.assertEqual(put.node, "127.0.0.1:5001")

    def test_not_found_is_status_1(self) -> None:
        """A missing key (GET, DELETE, or a passed-through command's reply) exits 1 with the server's error line."""
        client = FakeClient()
        client.raw_replies["CAS k a b"] = "Error: Key k not found"
        for action in [Get("k"), Delete("k"), Raw("CAS k a b")]:
            with self.subTest(action=action):
                outcome = commands.run(action, client)
                self.assertEqual((outcome.status, outcome.text), (commands.NO, "Error: Key k not found"))
                self.assertEqual(outcome.data["error"], "not_found")

    def test_cas_failed_is_status_1(self) -> None:
        """A CAS that found another value is an answer (exit 1), not a failure."""
        client = FakeClient()
        client.raw_replies["CAS k a b"] = "Error: CAS failed: value of k is c"
        outcome = commands.run(Raw("CAS k a b"), client)
        self.assertEqual((outcome.status, outcome.text), (commands.NO, "Error: CAS failed: value of k is c"))
        self.assertEqual(outcome.data["error"], "cas_failed")

    def test_failures_are_status_2(self) -> None:
        """Library errors exit 2 with an Error: line and a JSON error name; an unknown outcome says so."""
        cases = [
            (ConnectionFailed("no node reachable"), "connection_failed"),
            (NoLeader("no leader elected"), "no_leader"),
            (OutcomeUnknown("connection lost after sending"), "outcome_unknown"),
            (BadRequest("Value too long (maximum 4 bytes)"), "bad_request"),
        ]
        for error, name in cases:
            with self.subTest(name=name):
                client = FakeClient(node=None)
                client.fail = error
                outcome = commands.run(Put("k", "v"), client)
                self.assertEqual(outcome.status, commands.ERROR)
                self.assertEqual(outcome.text, f"Error: {error}")
                self.assertEqual(outcome.data["error"], name)
                self.assertIsNone(outcome.data["node"])
                self.assertEqual(outcome.data.get("may_have_been_applied"), True if name == "outcome_unknown"
                                 else None)

    def test_passed_through_reply(self) -> None:
        """A passed-through command prints the server's line; a value line also gives the value in JSON."""
        client = FakeClient()
        client.raw_replies["INCR n 2"] = "value of n: 7"
        outcome = commands.run(Raw("INCR n 2"), client)
        self.assertEqual((outcome.status, outcome.text), (commands.OK, "value of n: 7"))
        self.assertEqual((outcome.data["command"], outcome.data["value"]), ("incr", "7"))

    def test_help(self) -> None:
        """help lists every command; help <command> gives its usage."""
        text = commands.help_text()
        for word in ["PUT", "GET", "DELETE", "STATUS", "INCR", "CAS", "MEMBERS", "EXIT"]:
            self.assertIn(word, text)
        self.assertIn("GET <key> [STALE]", commands.help_text("get"))
        self.assertIn("No such command", commands.help_text("frobnicate"))


class ShellScriptTests(SynchronousTestCase):
    """The shell loop, fed lines without a terminal (as from a file or a pipe)."""

    def shell(self, text: str, client: FakeClient, **options: Any) -> tuple[Shell, io.StringIO, io.StringIO]:
        out, err = io.StringIO(), io.StringIO()
        clients = iter([client, FakeClient(client.data)])
        shell = Shell(lambda: next(clients), "a:1", interactive=False, stdin=io.StringIO(text), stdout=out,
                      stderr=err, **options)
        return shell, out, err

    def test_script(self) -> None:
        """Each line's answer is printed in order; the exit status is the worst; EXIT says goodbye and stops."""
        client = FakeClient()
        shell, out, err = self.shell("PUT a 1\nGET a\n\nGET b\nPUT x\nEXIT\nGET a\n", client)
        self.assertEqual(shell.run(), commands.ERROR)
        self.assertEqual(out.getvalue().splitlines(), [
            "a added successfully.", "value of a: 1", "Error: Key b not found",
            "Error: Usage: PUT <key> <value>", "Goodbye."])
        self.assertEqual(err.getvalue(), "")
        self.assertTrue(client.closed)

    def test_json_and_verbose(self) -> None:
        """--json prints one object per line; --verbose names the answering node on standard error."""
        shell, out, err = self.shell("PUT a 1\nGET a\n", FakeClient(), as_json=True, verbose=True)
        self.assertEqual(shell.run(), commands.OK)
        objects = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual([o["command"] for o in objects], ["put", "get"])
        self.assertEqual(objects[1]["value"], "1")
        self.assertEqual(err.getvalue().count("[answered by 127.0.0.1:5001 in "), 2)

    def test_interrupted_call_gets_a_new_client(self) -> None:
        """Ctrl-C during a call closes that client (its connection may hold half a request) and makes another."""
        client = FakeClient()
        client.fail = KeyboardInterrupt()
        shell, out, _ = self.shell("PUT a 1\nPUT b 2\n", client)
        self.assertEqual(shell.run(), commands.ERROR)
        self.assertIn("Interrupted", out.getvalue().splitlines()[0])
        self.assertTrue(client.closed)
        self.assertEqual(client.data, {"b": "2"})
        self.assertIsNot(shell.client, client)


class CommandLineTests(SynchronousTestCase):
    """The options of kvstore-cli and its one-shot mode."""

    def setUp(self) -> None:
        self.client = FakeClient()
        self.made: list[tuple[list[str], float]] = []

        def make(nodes: list[str], timeout: float) -> FakeClient:
            self.made.append((nodes, timeout))
            return self.client

        class Context:
            def __init__(self, nodes: list[str], timeout: float) -> None:
                self.client = make(nodes, timeout)

            def __enter__(self) -> FakeClient:
                return self.client

            def __exit__(self, *exc: object) -> None:
                self.client.close()

        self.patch(cli, "Client", Context)
        self.out, self.err = io.StringIO(), io.StringIO()
        self.patch(cli.sys, "stdout", self.out)
        self.patch(cli.sys, "stderr", self.err)

    def main(self, *argv: str) -> int:
        return cli.main(list(argv))

    def test_exit_statuses_and_output(self) -> None:
        """put prints the server's line and exits 0; get prints the bare value; a missing key exits 1."""
        self.assertEqual(self.main("put", "k", "hello", "world"), 0)
        self.assertEqual(self.main("get", "k"), 0)
        self.assertEqual(self.main("get", "missing"), 1)
        self.assertEqual(self.out.getvalue().splitlines(), ["k added successfully.", "hello world"])
        self.assertEqual(self.err.getvalue().splitlines(), ["Error: Key missing not found"])

    def test_error_exit_status(self) -> None:
        """An unreachable cluster exits 2, its error on standard error."""
        self.client.fail = ConnectionFailed("no node reachable")
        self.assertEqual(self.main("status"), 2)
        self.assertEqual(self.err.getvalue(), "Error: no node reachable\n")

    def test_json_after_the_command(self) -> None:
        """--json may follow the command; the answer is one JSON object."""
        self.client.data["k"] = "v"
        self.assertEqual(self.main("get", "k", "--json"), 0)
        self.assertEqual(json.loads(self.out.getvalue())["value"], "v")

    def test_cluster_from_option_environment_or_default(self) -> None:
        """--cluster wins over $KVSTORE_CLUSTER, which wins over the seed's three local nodes."""
        self.patch(cli.os, "environ", {"KVSTORE_CLUSTER": "10.0.0.1:7000, 10.0.0.2:7000"})
        self.main("status")
        self.main("--cluster", "h:1", "status")
        self.patch(cli.os, "environ", {})
        self.main("status")
        self.assertEqual([nodes for nodes, _ in self.made], [
            ["10.0.0.1:7000", "10.0.0.2:7000"], ["h:1"], cli.DEFAULT_CLUSTER.split(",")])

    def test_bad_cluster_is_a_usage_error(self) -> None:
        """A --cluster that is not host:port addresses exits 2 before connecting."""
        with self.assertRaises(SystemExit) as caught:
            self.main("--cluster", "nonsense", "status")
        self.assertEqual(caught.exception.code, 2)
        self.assertEqual(self.made, [])

    def test_usage_error_exit_status(self) -> None:
        """A one-shot command with the wrong arguments exits 2 (with --json, a usage error object) and sends
        nothing."""
        self.assertEqual(self.main("put", "k"), 2)
        self.assertIn("Usage: PUT", self.err.getvalue())
        self.assertEqual(self.main("--json", "get"), 2)
        self.assertEqual(json.loads(self.out.getvalue())["error"], "usage")
        self.assertEqual(self.client.calls, [])


class HistoryPathTests(SynchronousTestCase):
    """The shell's history never lands in the current directory."""

    def test_xdg_state_home(self) -> None:
        """$XDG_STATE_HOME/kvstore/cli_history when set, else ~/.local/state/kvstore/cli_history."""
        self.assertEqual(history_path({"XDG_STATE_HOME": "/s"}), Path("/s/kvstore/cli_history"))
        self.assertEqual(history_path({}), Path.home() / ".local" / "state" / "kvstore" / "cli_history")
