# -*- test-case-name: tests.test_tools_cli_incr_cas -*-
"""
C{kvstore-cli}'s INCR and CAS go through the library's C{incr} and C{cas}
(so they are tagged with an exactly-once session and retried after an
unknown outcome), with the same text, JSON and exit status as when they
were sent as typed.  Run through the real blocking client against the
scripted node of L{tests.test_client_sessions} that keeps sessions.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from kvstore.client import Client
from kvstore.tools.cli import commands
from kvstore.tools.cli.commands import Cas, Incr, Raw
from tests.client_fakes import FakeNode
from tests.test_client_sessions import SessionStore


class IncrCasTests(SynchronousTestCase):
    """INCR and CAS in the shell and one-shot mode."""

    def node(self, data: dict[str, str] | None = None) -> tuple[SessionStore, FakeNode]:
        store = SessionStore()
        store.data.update(data or {})
        return store, FakeNode(self, store)

    def client(self, node: FakeNode, **kwargs: Any) -> Client:
        client = Client([node.address], timeout=5, backoff=(0.01, 0.05), **kwargs)
        self.addCleanup(client.close)
        return client

    def test_parsed_for_the_library(self) -> None:
        """Well-formed INCR and CAS lines become library calls; a line the server would refuse is sent as
        typed, so the server's usage line answers it as before."""
        cases = {
            "INCR n": Incr("n", 1),
            "incr n -3": Incr("n", -3),
            "CAS k a new value  with spaces ": Cas("k", "a", "new value  with spaces "),
            "INCR n x": Raw("INCR n x"),
            "INCR n 99999999999999999999": Raw("INCR n 99999999999999999999"),
            "INCR": Raw("INCR"),
            "CAS k a": Raw("CAS k a"),
            "CAS k  a b": Raw("CAS k  a b"),
        }
        for line, action in cases.items():
            with self.subTest(line=line):
                self.assertEqual(commands.parse_line(line), action)

    def test_sent_in_a_session(self) -> None:
        """INCR and CAS are tagged writes of the client's exactly-once session."""
        store, node = self.node()
        client = self.client(node)
        for line in ["INCR n 5", "CAS n 5 7", "CAS n 5 9"]:
            commands.run(commands.parse_line(line), client)  # type: ignore[arg-type]  # a command, not None
        self.assertEqual(node.lines(), ["SESSION", "@1:1 INCR n 5", "@1:2 CAS n 5 7", "@1:3 CAS n 5 9"])
        self.assertEqual(store.data["n"], "7")

    def test_unknown_outcome_retried(self) -> None:
        """An INCR whose first attempt's outcome is unknown is retried with its tag and applied once: the
        shell shows the new value instead of an Outcome unknown error."""
        store, node = self.node()
        store.fault("@1:1 INCR n 1", "apply-unknown", "apply-close")
        outcome = commands.run(commands.parse_line("INCR n"), self.client(node))  # type: ignore[arg-type]
        self.assertEqual((outcome.status, outcome.text), (commands.OK, "value of n: 1"))
        self.assertEqual(store.applied, [(1, 1)])
        self.assertEqual(store.data["n"], "1")

    def test_output_unchanged(self) -> None:
        """Each answer (text, JSON, exit status) is the one the command got when it was sent as typed."""
        lines = ["INCR n 5", "INCR n -2", "INCR s", "CAS k a b c", "CAS k x y", "CAS missing a b", "INCR n x"]
        for line in lines:
            with self.subTest(line=line):
                now_store, now_node = self.node({"k": "a", "s": "text"})
                before_store, before_node = self.node({"k": "a", "s": "text"})
                now = commands.run(commands.parse_line(line), self.client(now_node))  # type: ignore[arg-type]
                before = commands.run(Raw(line), self.client(before_node, exactly_once=False))
                self.assertEqual((now.status, now.text), (before.status, before.text))
                now.data.pop("node"), before.data.pop("node")
                self.assertEqual(now.data, before.data)
                self.assertEqual(now_store.data, before_store.data)
        self.assertEqual(commands.run(commands.parse_line("CAS k x y"),  # type: ignore[arg-type]
                                      self.client(self.node({"k": "a"})[1])).text,
                         "Error: CAS failed: value of k is a")
