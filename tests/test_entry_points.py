# -*- test-case-name: tests.test_entry_points -*-
"""
Every console script setup.py installs names a callable that exists, in the
part of the tree its job belongs to: operator tools in kvstore.tools, the
simulator in the verification harness.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = re.compile(r'"([\w-]+)=([\w.]+):(\w+)"')

EXPECTED = {
    "kvstore": "kvstore.tools.cluster",
    "kvstore-cluster": "kvstore.tools.cluster",
    "kvstore-bench": "kvstore.tools.bench",
    "kvstore-inspect": "kvstore.tools.inspect",
    "kvstore-cli": "kvstore.tools.cli",
    "kvstore-snapshot": "kvstore.tools.snapshot",
    "kvstore-sim": "kvstore.testing.sim.cli",
}


class EntryPointTests(SynchronousTestCase):
    """The console scripts survive the layout."""

    def test_every_script_resolves(self) -> None:
        """Each console_scripts entry imports and names a callable; the set and modules are as documented."""
        scripts = dict(
            (name, (module, function)) for name, module, function in _SCRIPT.findall((ROOT / "setup.py").read_text())
        )
        self.assertEqual({name: module for name, (module, _) in scripts.items()}, EXPECTED)
        for name, (module, function) in scripts.items():
            with self.subTest(script=name):
                self.assertTrue(callable(getattr(importlib.import_module(module), function)))
