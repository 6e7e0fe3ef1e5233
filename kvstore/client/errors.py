# -*- test-case-name: tests.test_client_blocking -*-
"""
The exceptions of L{kvstore.client}, one per distinction the protocol makes.

What matters to a caller is whether a failed write may have been applied:

  - L{NotApplied} and its subclasses (L{KeyNotFound}, L{CasFailed},
    L{BadRequest}, L{Unavailable}, L{NoLeader}, L{ConnectionFailed})
    guarantee that the
    request changed nothing.
  - L{OutcomeUnknown} means a write may or may not have been applied; its
    C{may_have_been_applied} attribute is always C{True} and its message
    says so, because the client could not tell.

C{Not leader} replies never reach the caller: the client follows them.
"""

from __future__ import annotations

__all__ = [
    "ClientError",
    "NotApplied",
    "KeyNotFound",
    "CasFailed",
    "BadRequest",
    "Unavailable",
    "NoLeader",
    "ConnectionFailed",
    "OutcomeUnknown",
    "ProtocolError",
]


class ClientError(Exception):
    """Base class of every error raised by L{kvstore.client}."""


class NotApplied(ClientError):
    """The request certainly changed nothing on the cluster."""


class KeyNotFound(NotApplied, KeyError):
    """C{get} or C{delete} of a key that does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"key {self.key!r} not found"


class CasFailed(NotApplied):
    """
    A C{cas} found another value than the expected one, C{actual}, and
    changed nothing.  Raised only by C{cas(..., raise_on_mismatch=True)};
    plain C{cas} returns C{False} instead.
    """

    def __init__(self, key: str, actual: str) -> None:
        super().__init__(key, actual)
        self.key, self.actual = key, actual

    def __str__(self) -> str:
        return f"CAS failed: value of {self.key} is {self.actual}"


class BadRequest(NotApplied, ValueError):
    """
    The request itself is invalid: refused by the library before sending
    (a key with whitespace, a control character) or answered by the server
    with an C{Error:} reply about the request (C{Key too long}, ...).
    """


class Unavailable(NotApplied):
    """
    The cluster could not serve the request before the timeout (the last
    node asked replied C{Error: Unavailable: ...}, or a read got no reply in
    time).  Nothing was changed.
    """


class NoLeader(Unavailable):
    """No leader could be found before the timeout (an election lasted too
    long, or every node that answered said it was not the leader)."""


class ConnectionFailed(Unavailable):
    """No listed node accepted a connection before the timeout."""


class OutcomeUnknown(ClientError):
    """
    A write was sent but its fate is unknown: the server replied C{Error:
    Outcome unknown}, the connection was lost after the request was sent, or
    no reply came before the timeout.  The write may have been applied, may
    be applied later, or may never be.  Read the key to find out.

    Without exactly-once sessions the client never retries such a write
    itself: a retried C{PUT} could overwrite a later write by another client
    and a retried C{DELETE} could delete a key created again meanwhile.
    """

    may_have_been_applied = True

    def __init__(self, message: str) -> None:
        super().__init__(f"{message} (the write may or may not have been applied)")


class ProtocolError(ClientError):
    """The server sent something this library does not understand (a reply
    that does not fit the request, a reply without a request).  The
    connection is dropped."""
