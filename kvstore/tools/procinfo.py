# -*- test-case-name: tests.test_tools_helpers -*-
"""
What a local node process uses, read from Linux's C{/proc}: the benchmark
reports its nodes' memory, the fault tests check that hostile input leaks
neither memory nor file descriptors.
"""

from __future__ import annotations

import os

__all__ = ["cpu_seconds", "fd_count", "rss_kib"]


def rss_kib(pid: int | None) -> int:
    """
    The resident set size (VmRSS) of process C{pid}, in KiB.

    @raise OSError: if the process is gone (or this is not Linux).
    @raise ValueError: if its status has no VmRSS line (a zombie).
    """
    assert pid is not None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise ValueError(f"no VmRSS for pid {pid}")


def fd_count(pid: int | None) -> int:
    """How many file descriptors process C{pid} has open."""
    assert pid is not None
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid: int | None) -> float:
    """
    The CPU time (user and system) process C{pid} has used, in seconds.

    @raise OSError: if the process is gone (or this is not Linux).
    """
    assert pid is not None
    with open(f"/proc/{pid}/stat") as f:
        # The command name, in parentheses, may contain spaces: split after it.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
