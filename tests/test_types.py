# -*- test-case-name: tests.test_types -*-
"""
The package type-checks: mypy, configured by mypy.ini at the checkout root
(strict for the product, checked but lenient for the harness and tools), runs
as part of the test suite so that a type error fails the README's test command.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

_ROOT = Path(__file__).resolve().parent.parent


class MypyTests(SynchronousTestCase):
    """mypy over kvstore/ with the checkout's mypy.ini."""

    def test_package_type_checks(self) -> None:
        """mypy reports no error on the kvstore package."""
        if importlib.util.find_spec("mypy") is None:
            self.skipTest("mypy is not installed (pip install -e '.[test]' installs it)")
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", str(_ROOT / "mypy.ini")],
            cwd=_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, msg=f"mypy failed:\n{result.stdout}{result.stderr}")
