"""
Tests for the twistd plugin (twisted/plugins/kvstore_plugin.py) and for the
packaging that ships it.

The checkout root must be on sys.path for Twisted to find the plugin in the
checkout; the [pytest] ``pythonpath`` setting in tox.ini does that under
pytest, the editable install's path entry under trial, and the subprocess
tests put it on PYTHONPATH.
"""

import ast
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial.unittest import SynchronousTestCase

import kvstore
from kvstore.daemon.options import Options

from tests.support import slow

ROOT = Path(__file__).resolve().parents[1]
PLUGIN_FILE = ROOT / "twisted" / "plugins" / "kvstore_plugin.py"


def _option_names() -> list[str]:
    options = Options()
    return [f[0] for f in options.optFlags] + [p[0] for p in options.optParameters]


def _twistd_command() -> list[str]:
    """
    The twistd script installed beside this interpreter, run with it; or,
    without one, the same entry point through C{-c}.  (C{python -m twisted}
    is C{twist}, not C{twistd}.)
    """
    script = Path(sys.executable).parent / "twistd"
    if script.exists():
        return [sys.executable, str(script)]
    return [
        sys.executable,
        "-c",
        "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
    ]


def _twistd(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """
    Run twistd with the checkout first on PYTHONPATH, from C{cwd} so that
    nothing depends on the working directory.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run(
        [*_twistd_command(), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _kvstore_makers() -> list[Any]:
    return [m for m in getPlugins(IServiceMaker) if m.tapname == "kvstore"]


class PluginTests(SynchronousTestCase):
    """
    The twistd plugin is found, cheap to scan, documents every option, and ships with the package.
    """

    def setUp(self) -> None:
        self.tmp_path = Path(self.mktemp())
        self.tmp_path.mkdir()

    def test_get_plugins_finds_kvstore(self) -> None:
        """
        getPlugins(IServiceMaker) finds the kvstore service maker, which points
        at kvstore.daemon.service and is described.
        """
        makers = _kvstore_makers()
        assert makers, "kvstore plugin not found; is the checkout root on sys.path?"
        for maker in makers:
            assert maker.module == "kvstore.daemon.service"
            assert maker.description

    def test_no_init_in_plugin_directory(self) -> None:
        """
        twisted/plugins has no __init__.py, which would shadow Twisted's own
        twisted.plugins package.
        """
        assert PLUGIN_FILE.exists()
        assert not (PLUGIN_FILE.parent / "__init__.py").exists()
        assert not (PLUGIN_FILE.parent.parent / "__init__.py").exists()

    def test_plugin_file_imports_only_service_maker(self) -> None:
        """
        The plugin file imports nothing but ServiceMaker, so scanning plugins
        stays cheap and never installs a reactor.
        """
        tree = ast.parse(PLUGIN_FILE.read_text(encoding="utf-8"))
        imports = [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
        assert len(imports) == 1
        (node,) = imports
        assert isinstance(node, ast.ImportFrom)
        assert node.module == "twisted.application.service"
        assert [alias.name for alias in node.names] == ["ServiceMaker"]

    def test_scanning_plugins_imports_neither_reactor_nor_kvstore(self) -> None:
        """
        Finding the plugin imports no kvstore module and not the reactor.
        """
        code = (
            "import sys\n"
            "from twisted.plugin import getPlugins\n"
            "from twisted.application.service import IServiceMaker\n"
            "assert any(m.tapname == 'kvstore' for m in getPlugins(IServiceMaker))\n"
            "bad = [m for m in sys.modules if m == 'twisted.internet.reactor'"
            " or m.split('.')[0] == 'kvstore']\n"
            "assert not bad, bad\n"
        )
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=self.tmp_path, env=env,
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr

    @slow
    def test_twistd_help_lists_kvstore(self) -> None:
        """
        `twistd --help` lists the kvstore subcommand.
        """
        result = _twistd("--help", cwd=self.tmp_path)
        assert result.returncode == 0, result.stderr
        assert any(line.split()[:1] == ["kvstore"] for line in result.stdout.splitlines()), result.stdout

    @slow
    def test_twistd_kvstore_help_documents_every_option(self) -> None:
        """
        `twistd kvstore --help` documents every option of kvstore.daemon.options.Options.
        """
        result = _twistd("kvstore", "--help", cwd=self.tmp_path)
        assert result.returncode == 0, result.stderr
        assert "twistd [options] kvstore [options]" in result.stdout
        for name in _option_names():
            assert f"--{name}" in result.stdout, name

    @slow
    def test_twistd_kvstore_rejects_bad_options(self) -> None:
        """
        A usage error stops twistd with a non-zero status and the message, before
        any service starts.
        """
        result = _twistd("--nodaemon", "kvstore", "--node-id", "1", "--peers", "5001", cwd=self.tmp_path)
        assert result.returncode != 0
        assert "ID@HOST:PORT" in result.stdout + result.stderr
        assert not (self.tmp_path / "kvstore-data").exists()

    def test_service_module_uses_options(self) -> None:
        """
        kvstore.daemon.service exposes the validated Options (extended with the pid
        file default) and a makeService, as
        ServiceMaker requires.
        """
        from kvstore.daemon import service

        assert issubclass(service.Options, Options)
        assert callable(service.makeService)

    def test_setup_ships_plugin_and_packages(self) -> None:
        """
        setup.py lists twisted.plugins explicitly (find_packages cannot find it),
        every kvstore package, the version of kvstore/__init__.py, and the
        kvstore-cluster script.
        """
        import setuptools

        captured: dict[str, Any] = {}
        self.patch(setuptools, "setup", lambda **kw: captured.update(kw))
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(ROOT)
        runpy.run_path(str(ROOT / "setup.py"))

        packages = captured["packages"]
        assert "twisted.plugins" in packages
        assert "twisted" not in packages
        expected = {
            ".".join(path.relative_to(ROOT).parent.parts)
            for path in (ROOT / "kvstore").rglob("__init__.py")
        }
        assert expected <= set(packages)
        assert not [p for p in packages if p.startswith("tests")]
        assert captured["version"] == kvstore.__version__
        assert "kvstore-cluster=kvstore.tools.cluster:main" in captured["entry_points"]["console_scripts"]
        assert "twisted[tls]>=24.7" in captured["install_requires"]
