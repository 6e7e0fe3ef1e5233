# -*- test-case-name: tests.test_protocols_client -*-
"""
Errors that cross the boundary between the node and its clients.

The client protocol turns each of these into one ``Error: ...`` reply line.
The distinction between L{NotLeader} (the request was refused and certainly
not applied) and L{OutcomeUnknown} (the request may still commit) matters to
clients that retry, so the two must never be conflated.
"""

from __future__ import annotations


class KeyValueError(Exception):
    """Base class of errors reported to clients."""


class KeyNotFound(KeyValueError):
    """The key named in a GET or DELETE does not exist."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class NotLeader(KeyValueError):
    """
    This node is not the leader, so it refused a write before appending it.

    @ivar leader_id: the id of the node believed to lead, or L{None} if no
        leader is known.
    @ivar leader_address: C{"host:port"} of that leader's client port, or
        L{None} if unknown.
    """

    def __init__(self, leader_id: int | None, leader_address: str | None) -> None:
        super().__init__(leader_id, leader_address)
        self.leader_id = leader_id
        self.leader_address = leader_address


class OutcomeUnknown(KeyValueError):
    """
    A write was appended to the log but its fate is not known: leadership was
    lost or the commit did not arrive in time.  It may still commit later.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unavailable(KeyValueError):
    """
    A request (typically a linearizable read) could not be served now, for
    example because no leader is known or leadership could not be confirmed in
    time.  Nothing was changed.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotAnInteger(KeyValueError):
    """An INCR found a value that is not a decimal integer; nothing changed."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class IntegerOverflow(KeyValueError):
    """An INCR would have left the signed 64-bit range (or found a value
    outside it); nothing changed."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class CasFailed(KeyValueError):
    """A CAS found C{actual}, not the expected value; nothing changed."""

    def __init__(self, key: str, actual: str) -> None:
        super().__init__(key, actual)
        self.key = key
        self.actual = actual


class SessionExpired(KeyValueError):
    """
    A write tagged with a session the state machine does not know (it
    expired, was evicted, or never existed).  This write was certainly not
    applied; an earlier attempt with the same tag may have been, which only
    the client can know.
    """

    def __init__(self, session: int) -> None:
        super().__init__(session)
        self.session = session


class StaleSequence(KeyValueError):
    """
    A write tagged with a sequence number below the highest its session has
    applied (C{highest}): not applied now, and the reply to it, if it was
    applied earlier, is no longer kept.
    """

    def __init__(self, highest: int) -> None:
        super().__init__(highest)
        self.highest = highest


class Refused(KeyValueError):
    """
    An admin request (C{ADDNODE}, C{REMOVENODE}, C{TRANSFER}) was refused and
    changed nothing: C{str()} is the reply's text after C{"Error: "} (for
    example C{Membership change in progress}).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
