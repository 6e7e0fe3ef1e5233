"""
The monitoring files shipped in etc/: the Prometheus alert rules
(etc/prometheus/kvstore-alerts.yml, with promtool unit tests beside them) and
the Grafana dashboard (etc/grafana/kvstore-dashboard.json).  Both parse, are
well formed, and name only metrics a node exports; where promtool is
installed, it checks the rules, runs their unit tests, and parses every
dashboard query.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml
from unittest import SkipTest
from twisted.trial.unittest import SynchronousTestCase

from kvstore.admin.endpoint import AdminInstruments
from kvstore.admin.metrics import METRIC_NAMES
from kvstore.admin.view import NodeView
from kvstore.protocols.peer_links import PeerLink
from kvstore.testing.memory_cluster import CLUSTER_ID, InMemoryCluster
from tests.admin_support import scrape
from tests.support import slow

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "etc" / "prometheus" / "kvstore-alerts.yml"
RULE_TESTS = ROOT / "etc" / "prometheus" / "kvstore-alerts.test.yml"
DASHBOARD = ROOT / "etc" / "grafana" / "kvstore-dashboard.json"

#: A metric name in a PromQL expression: ours, and the process collector's.
_METRIC = re.compile(r"\b((?:kvstore|process)_[a-z0-9_]+)")


def exported_names() -> set[str]:
    """Every sample name a node of a 3-node cluster exports (process metrics
    and peer links included)."""
    cluster = InMemoryCluster(3)
    admin = AdminInstruments(cluster.clock, [1, 2], process_metrics=True)
    links = {peer: PeerLink(peer, f"127.0.0.1:{5000 + peer}", b"hello") for peer in (1, 2)}
    admin.attach(NodeView(cluster.node(0), CLUSTER_ID, {i: f"127.0.0.1:{5000 + i}" for i in range(3)}, links))
    return scrape(admin).names()


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        raise SkipTest(
            "promtool is not installed (Debian: apt-get install prometheus); the rules and the dashboard's "
            "queries are then only checked for structure and metric names"
        )
    return promtool


class AlertRulesTests(SynchronousTestCase):
    """etc/prometheus/kvstore-alerts.yml."""

    def test_rules_are_well_formed(self) -> None:
        """Every rule is an alert with an expression, a severity, a summary and a description; names are unique."""
        found = rules()
        names = [rule["alert"] for rule in found]
        self.assertEqual(len(names), len(set(names)))
        for rule in found:
            self.assertTrue(rule["expr"].strip(), rule)
            self.assertIn(rule["labels"]["severity"], ("critical", "warning"), rule["alert"])
            self.assertTrue(rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"])

    def test_the_issue_s_alerts_are_there(self) -> None:
        """No leader, frequent leader changes, slow fsyncs, a node behind, a peer unreachable."""
        names = {rule["alert"] for rule in rules()}
        for name in (
            "KvstoreNoLeader",
            "KvstoreFrequentLeaderChanges",
            "KvstoreHighFsyncDurations",
            "KvstoreNodeBehind",
            "KvstorePeerUnreachable",
        ):
            self.assertIn(name, names)

    def test_rules_name_only_exported_metrics(self) -> None:
        """Every metric the rules and their unit tests name is in a node's scrape."""
        exported = exported_names()
        used = set()
        for rule in rules():
            used |= set(_METRIC.findall(rule["expr"]))
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
            for series in test["input_series"]:
                used |= set(_METRIC.findall(series["series"]))
        self.assertTrue(used)
        self.assertEqual(sorted(used - exported), [])

    @slow
    def test_promtool_check_rules(self) -> None:
        """promtool accepts the rules."""
        result = subprocess.run([_promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    @slow
    def test_promtool_unit_tests(self) -> None:
        """The rules' unit tests pass: each alert fires on what it describes, and only there."""
        result = subprocess.run(
            [_promtool(), "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)


class DashboardTests(SynchronousTestCase):
    """etc/grafana/kvstore-dashboard.json."""

    def test_structure(self) -> None:
        """Unique panel ids; every panel placed within 24 columns without overlapping another; every query has a unique refId and the templated data source."""
        board = dashboard()
        self.assertTrue(board["title"] and board["uid"])
        panels = board["panels"]
        ids = [panel["id"] for panel in panels]
        self.assertEqual(len(ids), len(set(ids)))
        cells: set[tuple[int, int]] = set()
        for panel in panels:
            grid = panel["gridPos"]
            self.assertLessEqual(grid["x"] + grid["w"], 24, panel["title"])
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    self.assertNotIn((x, y), cells, f"{panel['title']} overlaps another panel")
                    cells.add((x, y))
            if panel["type"] == "row":
                continue
            self.assertEqual(panel["datasource"]["uid"], "${datasource}")
            refs = [target["refId"] for target in panel["targets"]]
            self.assertEqual(len(refs), len(set(refs)), panel["title"])
            self.assertTrue(all(target["expr"].strip() for target in panel["targets"]), panel["title"])

    def test_variables(self) -> None:
        """The variables the queries use are defined."""
        defined = {variable["name"] for variable in dashboard()["templating"]["list"]}
        used = set()
        for query in dashboard_queries():
            used |= set(re.findall(r"\$(\w+)", query))
        self.assertEqual(used - defined, set())

    def test_queries_name_only_exported_metrics(self) -> None:
        """Every metric the dashboard queries is in a node's scrape, and every kvstore_ family is on it."""
        exported = exported_names()
        used = set()
        for query in dashboard_queries():
            used |= set(_METRIC.findall(query))
        self.assertEqual(sorted(used - exported), [])
        shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
        self.assertEqual(sorted(set(METRIC_NAMES) - shown - {"kvstore_node_info"}), [])

    @slow
    def test_promtool_parses_every_query(self) -> None:
        """promtool parses every dashboard query (each as a recording rule, the variables filled in)."""
        promtool = _promtool()
        records = [
            {"record": f"kvstore:dashboard_query_{n}:check", "expr": query.replace("$job", "kvstore").replace("$instance", ".*")}
            for n, query in enumerate(dashboard_queries())
        ]
        path = Path(self.mktemp() + ".yml")
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
        result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
