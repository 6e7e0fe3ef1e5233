# -*- test-case-name: tests.test_tools_helpers -*-
"""
Reading the client protocol's reply lines, for programs that talk to nodes
(the benchmark, the cluster launcher's tests, the process harness): the
inverse of L{kvstore.protocols.client.format_status} and of the C{Not
leader} line of L{kvstore.protocols.client.format_error}.  The node itself
never parses replies; this lives beside the code that writes them so that
both change together.
"""

from __future__ import annotations

__all__ = ["parse_leader_address", "parse_status"]


def parse_status(reply: str) -> dict[str, str]:
    """
    Parse a C{STATUS} reply, C{name=value ...}, into a dict.

    @raise ValueError: if the reply is an error line.
    """
    if reply.startswith("Error"):
        raise ValueError(f"STATUS failed: {reply}")
    return dict(token.partition("=")[::2] for token in reply.split())


def parse_leader_address(reply: str) -> tuple[str, int] | None:
    """
    The C{(host, port)} a C{Not leader} error names (C{... Current leader is
    Node 0 at 127.0.0.1:5000}, or C{[::1]:5000}), or L{None} when it names
    no address.
    """
    marker = " at "
    if marker not in reply:
        return None
    host, _, port = reply.rsplit(marker, 1)[1].strip().rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return None
