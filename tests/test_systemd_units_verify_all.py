"""
C{systemd-analyze verify} passes for every systemd unit in C{etc/}, the
socket unit included (C{tests/test_systemd_units.py} checks the service
unit's own details).

The units name C{/opt/kvstore/bin/twistd}, where docs/operations.md installs
kvstore, and C{systemd-analyze verify} checks that C{ExecStart=}'s program
exists and is executable.  So the units are verified as installed
instances (C{kvstore@0.service}, C{kvstore@0.socket}, side by side so that
the socket finds its service) in a temporary directory, with that one path
replaced by this environment's own twistd -- and, on a machine without
C{/opt/kvstore}, the units exactly as shipped are checked to fail for that
reason alone.  Skipped, saying so, where C{systemd-analyze} is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import slow

ETC = Path(__file__).resolve().parents[1] / "etc"
#: Where the units expect kvstore's twistd (docs/operations.md, "Installing").
INSTALLED_TWISTD = "/opt/kvstore/bin/twistd"
#: The suffixes of systemd unit files.
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".mount", ".target")


def _units() -> list[Path]:
    return sorted(p for p in ETC.iterdir() if p.suffix in UNIT_SUFFIXES)


def _instance_name(unit: Path) -> str:
    """C{kvstore@.service} -> C{kvstore@0.service}; other names unchanged."""
    return unit.name.replace("@.", "@0.")


def _this_twistd() -> str:
    twistd = Path(sys.executable).with_name("twistd")
    if twistd.exists():
        return str(twistd)
    found = shutil.which("twistd")
    if found is None:
        raise SkipTest("no twistd executable next to this Python or on PATH to stand for /opt/kvstore/bin/twistd")
    return found


class EveryUnitVerifiesTests(SynchronousTestCase):
    """Every unit in etc/ passes systemd-analyze verify."""

    def setUp(self) -> None:
        self.analyze = shutil.which("systemd-analyze")
        if self.analyze is None:
            raise SkipTest("systemd-analyze is not installed (Debian: package systemd); the units are not verified")

    def install(self, twistd: str | None) -> Path:
        """The units of etc/ as instances in a new directory, C{INSTALLED_TWISTD} replaced by C{twistd} if given."""
        directory = Path(self.mktemp())
        directory.mkdir()
        for unit in _units():
            text = unit.read_text()
            if twistd is not None:
                text = text.replace(INSTALLED_TWISTD, twistd)
            (directory / _instance_name(unit)).write_text(text)
        return directory

    def verify(self, unit: Path) -> subprocess.CompletedProcess[str]:
        assert self.analyze is not None
        return subprocess.run(
            [self.analyze, "verify", "--man=no", str(unit)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def test_there_are_units(self) -> None:
        """etc/ holds the service and the socket unit (so the test below checks something)."""
        self.assertEqual([unit.name for unit in _units()], ["kvstore@.service", "kvstore@.socket"])

    @slow
    def test_units_verify(self) -> None:
        """Each unit, installed with an existing twistd, verifies with no message at all."""
        directory = self.install(_this_twistd())
        for unit in sorted(directory.iterdir()):
            with self.subTest(unit=unit.name):
                result = self.verify(unit)
                self.assertEqual((result.returncode, result.stdout + result.stderr), (0, ""))

    @slow
    def test_only_the_install_path_is_missing(self) -> None:
        """Verified exactly as shipped, the units fail only because /opt/kvstore/bin/twistd is not installed here."""
        if Path(INSTALLED_TWISTD).exists():
            raise SkipTest(f"{INSTALLED_TWISTD} exists on this machine")
        directory = self.install(None)
        result = self.verify(directory / "kvstore@0.service")
        self.assertNotEqual(result.returncode, 0)
        messages = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        self.assertTrue(messages)
        for line in messages:
            self.assertIn(f"Command {INSTALLED_TWISTD} is not executable", line)
