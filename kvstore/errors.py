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


class Refused(KeyValueError):
    """
    An admin request (C{ADDNODE}, C{REMOVENODE}, C{TRANSFER}) was refused and
    changed nothing: C{str()} is the reply's text after C{"Error: "} (for
    example C{Membership change in progress}).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
