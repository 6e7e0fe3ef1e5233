# -*- test-case-name: tests.fault.test_hostile_input -*-
"""
Shared set-up for the fault suite (C{tests/fault}): real C{twistd kvstore}
processes attacked with hostile input, crashes, pauses and partitions.

Every process a test starts is stopped by the test (by pid), pass or fail.
The suite's length scales with C{KVSTORE_FAULT_SECONDS} (see
C{docs/testing.md}).
"""

from __future__ import annotations

import resource


def raise_fd_limit() -> None:
    """
    Raise this process's soft RLIMIT_NOFILE to its hard limit: the idle
    connection test holds thousands of sockets, and node processes started
    from here inherit the limit.  Every fault test calls this before it
    starts a node (it is cheap and idempotent).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass
