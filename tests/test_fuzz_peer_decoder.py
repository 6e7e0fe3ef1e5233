"""
A short run of the coverage-guided fuzz target for the peer decoder
(tests/fuzz/peer_decoder.py), if atheris is installed (``pip install -e
'.[fuzz]'``).  ``KVSTORE_FUZZ_SECONDS`` sets its length (default 10); see
docs/testing.md for a long run with a kept corpus.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from unittest import skipIf

from twisted.trial.unittest import SynchronousTestCase

from kvstore.tools.spawn import child_environment

from tests.support import slow, temporary_directory

TARGET = Path(__file__).parent / "fuzz" / "peer_decoder.py"
SECONDS = int(os.environ.get("KVSTORE_FUZZ_SECONDS", "10"))


class PeerDecoderFuzzTests(SynchronousTestCase):
    """A short libFuzzer run of the peer decoder's fuzz target in a subprocess."""

    @slow
    @skipIf(importlib.util.find_spec("atheris") is None,
            "atheris is not installed (pip install -e '.[fuzz]'); the peer decoder is not fuzzed")
    def test_fuzz_peer_decoder(self) -> None:
        """libFuzzer finds no input that breaks the peer decoder's invariants
        within a short run, starting from valid messages of every type."""
        tmp_path = temporary_directory(self)
        corpus = tmp_path / "corpus"
        result = subprocess.run(
            [sys.executable, str(TARGET), "--write-seeds", f"-max_total_time={SECONDS}", "-rss_limit_mb=1024",
             f"-artifact_prefix={tmp_path}/", str(corpus)],
            env=child_environment(), capture_output=True, text=True, timeout=SECONDS + 120,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output[-5000:]
        done = [line for line in output.splitlines() if "DONE" in line]
        assert done, output[-3000:]
        print(f"\n[fuzz] {done[-1]}")
