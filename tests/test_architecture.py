"""
The layering rules of docs/architecture.md, checked: the product (kvstore/
minus tools/ and testing/) imports neither the operator tools nor the
verification harness; the tools import no harness; the Raft core does no
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


def product_modules() -> list[Path]:
    """Every module of what runs in production: kvstore/ without its tools and harness."""
    return sorted(
        path for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] not in ("tools", "testing")
    )


def imports_any(path: Path, packages: tuple[str, ...]) -> list[str]:
    return sorted(
        name for name in imported_modules(path)
        if any(name == package or name.startswith(package + ".") for package in packages)
    )


class ArchitectureTests(SynchronousTestCase):
    """Import boundaries between the packages, read from the source with L{ast}."""

    @parametrize("path", product_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
    def test_product_imports_no_tools_or_harness(self, path: Path) -> None:
        """Nothing that runs in production imports kvstore.tools or kvstore.testing."""
        assert imports_any(path, ("kvstore.tools", "kvstore.testing")) == [], path

    @parametrize("path", sorted((PACKAGE / "tools").rglob("*.py")), ids=lambda p: p.name)
    def test_tools_import_no_harness(self, path: Path) -> None:
        """The operator tools run without the verification harness."""
        assert imports_any(path, ("kvstore.testing",)) == [], path

    def test_the_layout_is_as_documented(self) -> None:
        """The three parts exist where docs/architecture.md says, and the product finds its modules."""
        for part in ("raft", "storage", "protocols", "node", "daemon", "admin", "client", "tools", "testing",
                     "testing/sim"):
            assert (PACKAGE / part / "__init__.py").exists(), part
        assert len(product_modules()) > 20

    @parametrize("path", modules_under("raft"), ids=lambda p: p.name)
    def test_raft_core_does_no_io(self, path: Path) -> None:
        """Nothing in kvstore/raft imports sockets, files, JSON, time, the
        reactor, storage or protocols."""
        forbidden = ("os", "json", "socket", "time", "kvstore.storage", "kvstore.protocols", "kvstore.node",
                     "kvstore.daemon",
                     "twisted.internet.reactor")
        for name in imported_modules(path):
            for bad in forbidden:
                assert not (name == bad or name.startswith(bad + ".")), f"{path.name} imports {name}"

    @parametrize("path", modules_under("storage"), ids=lambda p: p.name)
    def test_storage_knows_no_raft(self, path: Path) -> None:
        """Storage never imports the Raft core, the protocols or the node."""
        for name in imported_modules(path):
            layers_above = ("kvstore.raft", "kvstore.protocols", "kvstore.node", "kvstore.daemon")
            assert not name.startswith(layers_above), f"{path.name}: {name}"

    def test_only_the_composition_root_imports_the_global_reactor(self) -> None:
        """Only service.py (building the production node) and the WAL's default
        thread runner import the global reactor, both inside a function;
        everything else receives a reactor or clock."""
        allowed = {"daemon/service.py", "storage/wal.py"}
        offenders = []
        for path in sorted(PACKAGE.rglob("*.py")):
            relative = str(path.relative_to(PACKAGE))
            names = imported_modules(path)
            if ("twisted.internet.reactor" in names) and relative not in allowed:
                offenders.append(relative)
        assert offenders == []
