"""
The admin endpoint over HTTP (L{kvstore.admin.web}): each page's status,
headers and body, served by the real twisted.web site over an in-memory
transport, in front of an instrumented in-memory cluster.
"""

from __future__ import annotations

import json

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from kvstore.admin.health import Check
from kvstore.admin.web import AdminSite, format_checks
from tests.admin_support import MeteredCluster


class Response:
    """A parsed HTTP/1.0 response."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class AdminHttpTests(SynchronousTestCase):
    """Requests to the admin site of a node of a 3-node cluster."""

    def setUp(self) -> None:
        self.cluster = MeteredCluster(3, seed=21)
        self.leader = self.cluster.wait_for_leader()
        self.follower = next(i for i in self.cluster.ids if i != self.leader)
        self.sites = {i: AdminSite(self.cluster.resources[i], reactor=self.cluster.clock) for i in self.cluster.ids}

    def request(self, node_id: int, path: str, method: str = "GET", headers: str = "") -> Response:
        """Send one HTTP/1.0 request and run the cluster until it is answered."""
        protocol = self.sites[node_id].buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(f"{method} {path} HTTP/1.0\r\n{headers}\r\n".encode())
        if not self.cluster.run_until(lambda: transport.disconnecting, 5):
            self.fail(f"no complete response to {path}: {transport.value()!r}")
        return Response(transport.value())

    def test_metrics(self) -> None:
        """/metrics is the node's registry in Prometheus' text format."""
        response = self.request(self.leader, "/metrics")
        self.assertEqual(response.status, 200)
        self.assertTrue(response.headers["content-type"].startswith("text/plain; version=0.0.4"))
        values = {s.name: s.value for f in text_string_to_metric_families(response.text) for s in f.samples}
        self.assertEqual(values["kvstore_is_leader"], 1.0)
        self.assertEqual(values["kvstore_current_term"], float(self.cluster.node(self.leader).core.term))

    def test_metrics_openmetrics(self) -> None:
        """A scraper that asks for OpenMetrics gets it."""
        response = self.request(self.leader, "/metrics", headers="Accept: application/openmetrics-text; version=1.0.0\r\n")
        self.assertTrue(response.headers["content-type"].startswith("application/openmetrics-text"))
        self.assertTrue(response.text.endswith("# EOF\n"))

    def test_livez(self) -> None:
        """/livez answers 200 ok; with ?verbose it lists each check."""
        response = self.request(self.follower, "/livez")
        self.assertEqual((response.status, response.text), (200, "ok\n"))
        self.assertEqual(response.headers["content-type"], "text/plain; charset=utf-8")
        verbose = self.request(self.follower, "/livez?verbose")
        self.assertEqual(verbose.text, "[+]serving ok\n[+]reactor ok\nlivez check passed\n")

    def test_readyz_cut_off_and_healed(self) -> None:
        """/readyz is 200 on a healthy node, 503 naming the failed checks once it is cut off, and 200 again once healed."""
        self.assertEqual(self.request(self.follower, "/readyz").status, 200)
        self.cluster.network.isolate(self.follower, self.cluster.ids)
        self.assertTrue(self.cluster.run_until(lambda: self.cluster.node(self.follower).core.leader_id is None, 5))
        response = self.request(self.follower, "/readyz")
        self.assertEqual(response.status, 503)
        lines = response.text.splitlines()
        self.assertTrue(lines[0].startswith("[-]leader failed: no leader is known"), lines)
        self.assertTrue(lines[1].startswith("[-]read_index failed: a linearizable read failed"), lines)
        self.assertEqual(lines[2:], ["readyz check failed"])
        verbose = self.request(self.follower, "/readyz?verbose").text.splitlines()
        self.assertEqual([line[:3] for line in verbose[:-1]], ["[+]", "[-]", "[+]", "[+]", "[-]"])
        self.cluster.network.heal()
        self.assertTrue(self.cluster.run_until(lambda: self.cluster.node(self.follower).core.leader_id is not None, 10))
        self.assertEqual(self.request(self.follower, "/readyz?verbose").status, 200)

    def test_readyz_exclude(self) -> None:
        """?exclude=CHECK leaves a check out of the verdict, and says so."""
        self.cluster.network.isolate(self.follower, self.cluster.ids)
        self.cluster.run_until(lambda: self.cluster.node(self.follower).core.leader_id is None, 5)
        response = self.request(self.follower, "/readyz?exclude=leader&exclude=read_index")
        self.assertEqual((response.status, response.text), (200, "ok\n"))
        verbose = self.request(self.follower, "/readyz?verbose&exclude=leader&exclude=read_index")
        self.assertIn("[+]leader excluded: ok", verbose.text)
        self.assertTrue(verbose.text.endswith("readyz check passed\n"))

    def test_status(self) -> None:
        """/status is the STATUS fields and the membership, as JSON."""
        response = self.request(self.follower, "/status")
        self.assertEqual(response.headers["content-type"], "application/json")
        document = json.loads(response.text)
        node = self.cluster.node(self.follower)
        self.assertEqual(document["node"], self.follower)
        self.assertEqual(document["role"], "follower")
        self.assertEqual(document["leader"], self.leader)
        self.assertEqual(document["term"], node.core.term)
        self.assertEqual(document["commit"], node.core.commit_index)
        self.assertEqual(
            document["members"],
            [
                {"id": i, "address": f"127.0.0.1:{5000 + i}", "voter": True, "self": i == self.follower, "connected": None}
                for i in self.cluster.ids
            ],
        )

    def test_status_without_leader(self) -> None:
        """/status gives a null leader when none is known."""
        self.cluster.network.isolate(self.follower, self.cluster.ids)
        self.cluster.run_until(lambda: self.cluster.node(self.follower).core.leader_id is None, 5)
        self.assertIsNone(json.loads(self.request(self.follower, "/status").text)["leader"])

    def test_index_unknown_paths_and_methods(self) -> None:
        """/ lists the pages; an unknown page is 404; a POST is refused with 405."""
        index = self.request(self.leader, "/")
        self.assertEqual(index.status, 200)
        self.assertIn("/metrics", index.text)
        self.assertEqual(self.request(self.leader, "/nope").status, 404)
        self.assertEqual(self.request(self.leader, "/metrics", method="POST").status, 405)


class FormatTests(SynchronousTestCase):
    """The health pages' text."""

    def test_format(self) -> None:
        """Quiet and passed: ok; otherwise the failed checks (all of them with verbose) and a verdict."""
        good, bad = Check("a", True), Check("b", False, "why")
        self.assertEqual(format_checks("readyz", [good], verbose=False), "ok\n")
        self.assertEqual(format_checks("readyz", [good, bad], verbose=False), "[-]b failed: why\nreadyz check failed\n")
        self.assertEqual(
            format_checks("readyz", [good, bad], verbose=True), "[+]a ok\n[-]b failed: why\nreadyz check failed\n"
        )
        self.assertEqual(format_checks("livez", [good, bad], verbose=False, excluded=frozenset({"b"})), "ok\n")
        self.assertEqual(
            format_checks("livez", [good, bad], verbose=True, excluded=frozenset({"b"})),
            "[+]a ok\n[+]b excluded: ok\nlivez check passed\n",
        )
