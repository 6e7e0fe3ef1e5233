"""
Packaging for kvstore.

``twisted.plugins`` is listed explicitly because it has no ``__init__.py``
(it must not: it is a namespace shared with Twisted and every other plugin),
so ``find_packages`` cannot find it.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

_HERE = Path(__file__).resolve().parent


def _version() -> str:
    text = (_HERE / "kvstore" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("kvstore/__init__.py defines no __version__")
    return match.group(1)


setup(
    name="kvstore",
    version=_version(),
    description="A Raft-replicated key-value store on Twisted",
    python_requires=">=3.10",
    packages=find_packages(include=["kvstore", "kvstore.*"]) + ["twisted.plugins"],
    install_requires=[
        "twisted[tls]>=24.7",
        "service-identity",
        # --config reads TOML: the standard library's tomllib from 3.11.
        "tomli>=1.1; python_version < '3.11'",
        # --admin-listen's /metrics (kvstore/admin): one registry per node.
        "prometheus_client>=0.17",
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "pytest-twisted",
            "hypothesis",
            # tests/test_types.py runs mypy with mypy.ini (zope plugin for
            # Twisted's interfaces).
            "mypy",
            "mypy-zope",
            # tests/test_admin_etc.py reads etc/kvstore-alerts.yml.
            "pyyaml",
            # The suite runs the peer-decoder fuzz target briefly; atheris
            # ships wheels for Linux x86_64 (elsewhere that test skips).
            "atheris; platform_system == 'Linux' and platform_machine == 'x86_64'",
            # kvstore-cli's shell is tested in a real pseudo-terminal.
            "pexpect",
        ],
        "fuzz": ["atheris"],
    },
    entry_points={
        "console_scripts": [
            "kvstore=kvstore.tools.cluster:main",
            "kvstore-cluster=kvstore.tools.cluster:main",
            "kvstore-sim=kvstore.testing.sim.cli:main",
            "kvstore-bench=kvstore.tools.bench:main",
            "kvstore-inspect=kvstore.tools.inspect:main",
            "kvstore-cli=kvstore.tools.cli:main",
            "kvstore-snapshot=kvstore.tools.snapshot:main",
        ],
    },
    zip_safe=False,
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
    ],
)
