# -*- test-case-name: tests.test_docs_references -*-
"""
What docs/ and the README name exists in the code: every repository path in
backquotes, every dotted C{kvstore.} name, and every C{twistd kvstore}
option in the operations guide's table.  A move or rename that forgets the
documentation fails here.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import Options

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]

#: A repository path in backquotes: kvstore/..., tests/..., benchmarks/...,
#: twisted/..., etc/..., docs/... (globs and placeholders are skipped).
_PATH = re.compile(r"`((?:kvstore|tests|benchmarks|twisted|etc|docs)/[\w./-]*)`")
#: A dotted name in backquotes: kvstore.testing.sim.world.Simulation.
_DOTTED = re.compile(r"`(kvstore(?:\.\w+)+)`")
_OPTION_ROW = re.compile(r"^\| `(--[\w-]+)` \|", re.M)
#: Paths the documents name because they must never exist.
_ABSENT_ON_PURPOSE = {"twisted/plugins/__init__.py"}


def _resolve(dotted: str) -> object:
    """Import the longest importable module prefix of C{dotted}, then get the rest as attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            value = getattr(value, name)
        return value
    raise ImportError(dotted)


class DocumentReferenceTests(SynchronousTestCase):
    """The documents name only what exists."""

    def test_paths_exist(self) -> None:
        """Every backquoted repository path in docs/ and the README exists."""
        missing = []
        for document in DOCUMENTS:
            for path in _PATH.findall(document.read_text(encoding="utf-8")):
                if "<" in path or "*" in path:
                    continue
                if path in _ABSENT_ON_PURPOSE:
                    self.assertFalse((ROOT / path).exists(), path)
                    continue
                if not (ROOT / path.rstrip("/")).exists():
                    missing.append(f"{document.name}: {path}")
        self.assertEqual(missing, [])

    def test_dotted_names_resolve(self) -> None:
        """Every backquoted kvstore.dotted.name in docs/ and the README imports."""
        broken = []
        for document in DOCUMENTS:
            for dotted in _DOTTED.findall(document.read_text(encoding="utf-8")):
                if dotted.endswith((".conf", ".service", ".example")):
                    continue  # file names in etc/, not modules
                try:
                    _resolve(dotted)
                except (ImportError, AttributeError) as e:
                    broken.append(f"{document.name}: {dotted} ({e})")
        self.assertEqual(broken, [])

    def test_operations_options_exist(self) -> None:
        """Every option in docs/operations.md's table is a twistd kvstore option, and every option is in it."""
        text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
        documented = set(_OPTION_ROW.findall(text))
        options = {f"--{name.rstrip('=')}" for name in Options().longOpt} - {"--help", "--version"}
        self.assertEqual(sorted(documented - options), [])
        self.assertEqual(sorted(options - documented), [])
