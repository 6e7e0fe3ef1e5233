"""
The layering rules of docs/architecture.md, checked: the Raft core does no
I/O and knows nothing of storage, protocols or JSON; storage knows nothing of
Raft; only the composition root and tools import the global reactor.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.support import parametrize


PACKAGE = Path(__file__).resolve().parent.parent / "kvstore"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_under(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).glob("*.py"))


class ArchitectureTests(SynchronousTestCase):
    """Import boundaries between the packages, read from the source with L{ast}."""

    @parametrize("path", modules_under("raft"), ids=lambda p: p.name)
    def test_raft_core_does_no_io(self, path: Path) -> None:
        """Nothing in kvstore/raft imports sockets, files, JSON, time, the
        reactor, storage or protocols."""
        forbidden = ("os", "json", "socket", "time", "kvstore.storage", "kvstore.protocols", "kvstore.node",
                     "twisted.internet.reactor")
        for name in imported_modules(path):
            for bad in forbidden:
                assert not (name == bad or name.startswith(bad + ".")), f"{path.name} imports {name}"

    @parametrize("path", modules_under("storage"), ids=lambda p: p.name)
    def test_storage_knows_no_raft(self, path: Path) -> None:
        """Storage never imports the Raft core, the protocols or the node."""
        for name in imported_modules(path):
            assert not name.startswith(("kvstore.raft", "kvstore.protocols", "kvstore.node")), f"{path.name}: {name}"

    def test_only_the_composition_root_imports_the_global_reactor(self) -> None:
        """Only service.py (building the production node) and the WAL's default
        thread runner import the global reactor, both inside a function;
        everything else receives a reactor or clock."""
        allowed = {"service.py", "storage/wal.py"}
        offenders = []
        for path in sorted(PACKAGE.rglob("*.py")):
            relative = str(path.relative_to(PACKAGE))
            names = imported_modules(path)
            if ("twisted.internet.reactor" in names) and relative not in allowed:
                offenders.append(relative)
        assert offenders == []
