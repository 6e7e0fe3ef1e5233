# -*- test-case-name: tests.test_client_protocol -*-
"""
What the client does after each reply or failure: return, raise, follow the
leader, or try again.  Pure functions shared by the blocking and the
Twisted client, so both retry under exactly the same rules.

The rules (see C{docs/client.md}, "Retries"):

  - A request is retried only when it is known not to have been applied:
    C{Not leader} (refused before anything was done), C{Unavailable}
    (nothing changed), a connection that could not be made, or a connection
    found closed before the request was written to it.  Reads (C{GET},
    C{STATUS}, C{PING}) change nothing, so they are also retried after a
    lost connection.
  - An untagged write (C{PUT}, C{DELETE}, C{INCR}, C{CAS}) whose outcome
    is unknown (C{Error: Outcome unknown}, C{Error: Internal error}, a
    connection lost after the request was sent, no reply before the
    deadline) is never retried: without exactly-once sessions a retry is
    not safe (a retried PUT may overwrite a later write by another client,
    which a linearizable history forbids; a retried INCR counts twice).
    The caller gets L{errors.OutcomeUnknown}.  This is etcd clientv3's rule
    for non-idempotent requests.
  - A write tagged with a session (L{p.retry_safe}) I{is} retried after
    C{Outcome unknown} or a connection lost after sending: the cluster
    applies a tag at most once and answers a copy with the first reply.  So
    is C{SESSION}.  C{Error: Session expired} asks the caller for a new
    session (L{RenewSession}): the caller knows whether an earlier attempt
    of the same write may have been applied.
  - Every retry is bounded by the call's deadline.  When it passes, the
    error raised describes the last reason for retrying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from kvstore.client import _protocol as p
from kvstore.client import errors

__all__ = ["Return", "Raise", "Redirect", "Retry", "RenewSession", "Action", "after_reply", "after_lost_connection",
           "after_connect_failure", "after_timeout", "backoff_delay"]


@dataclass(frozen=True, slots=True)
class Return:
    """The call succeeded with C{value}."""

    value: object


@dataclass(frozen=True, slots=True)
class Raise:
    """The call failed for good."""

    error: errors.ClientError


@dataclass(frozen=True, slots=True)
class Redirect:
    """Send the request again, at once, to the leader at C{address}."""

    address: str


@dataclass(frozen=True, slots=True)
class Retry:
    """
    Send the request again to another node, after a backoff if C{backoff}.
    C{error} is what the caller gets if the deadline passes first.
    """

    error: errors.ClientError
    backoff: bool


@dataclass(frozen=True, slots=True)
class RenewSession:
    """
    The tagged write's session is gone and this attempt was not applied:
    send the write again in a new session if no earlier attempt may have
    been applied, or else raise C{OutcomeUnknown} (only the caller knows
    which).  C{message} is the server's.
    """

    message: str


Action = Union[Return, Raise, Redirect, Retry, RenewSession]


def _cas(request: p.Request) -> p.Cas | None:
    command = request.command if isinstance(request, p.Tagged) else request
    return command if isinstance(command, p.Cas) else None


def after_reply(request: p.Request, reply: p.Reply, node: str) -> Action:
    """The action after C{reply} to C{request} from C{node} (C{host:port})."""
    if isinstance(reply, p.Done):
        return Return(True if _cas(request) is not None else None)
    if isinstance(reply, p.Value):
        return Return(reply.value)
    if isinstance(reply, p.Number):
        return Return(reply.value)
    if isinstance(reply, p.CasMismatch):
        # Raised, so that the value found reaches whoever wants it; the
        # clients' cas() turns it into False unless asked not to.
        cas = _cas(request)
        return Raise(errors.CasFailed(cas.key if cas is not None else "?", reply.actual))
    if isinstance(reply, p.SessionOpened):
        return Return(reply.session)
    if isinstance(reply, p.SessionExpired):
        return RenewSession(f"{node}: {reply.message}")
    if isinstance(reply, p.StaleSequence):
        return Raise(errors.OutcomeUnknown(f"{node}: {reply.message}"))
    if isinstance(reply, p.StatusFields):
        return Return(dict(reply.fields))
    if isinstance(reply, p.NotFound):
        return Raise(errors.KeyNotFound(reply.key))
    if isinstance(reply, p.NotLeader):
        if reply.address is not None and reply.address != node:
            return Redirect(reply.address)
        if reply.leader_id is None:
            return Retry(errors.NoLeader(f"no leader elected (last asked {node})"), backoff=True)
        return Retry(errors.NoLeader(f"{node} names node {reply.leader_id} as leader but not its address"),
                     backoff=False)
    if isinstance(reply, p.Unavailable):
        return Retry(errors.Unavailable(f"{node}: {reply.reason}"), backoff=True)
    if isinstance(reply, p.OutcomeUnknown):
        if p.retry_safe(request):
            return Retry(errors.OutcomeUnknown(f"{node}: {reply.reason}"), backoff=True)
        return Raise(errors.OutcomeUnknown(f"{node}: {reply.reason}"))
    if isinstance(reply, p.InternalError):
        if p.is_write(request):
            return Raise(errors.OutcomeUnknown(f"{node}: internal server error"))
        return Raise(errors.ClientError(f"{node}: internal server error"))
    if isinstance(reply, p.RequestError):
        return Raise(errors.BadRequest(reply.message))
    raise TypeError(f"not a reply: {reply!r}")


def after_lost_connection(request: p.Request, node: str, sent: bool, reason: str) -> Action:
    """
    The action after the connection to C{node} was lost before C{request}
    got its reply.  C{sent} is whether the request may have reached the
    server (any of its bytes were handed to the connection).
    """
    if sent and p.is_write(request):
        unknown = errors.OutcomeUnknown(f"connection to {node} lost after sending: {reason}")
        return Retry(unknown, backoff=False) if p.retry_safe(request) else Raise(unknown)
    return Retry(errors.ConnectionFailed(f"connection to {node} lost: {reason}"), backoff=False)


def after_connect_failure(node: str, reason: str, round_complete: bool) -> Action:
    """The action after a connection to C{node} could not be made; back off
    once every known node has been tried (C{round_complete})."""
    return Retry(errors.ConnectionFailed(f"no node reachable (last: {node}: {reason})"), backoff=round_complete)


def after_timeout(request: p.Request, node: str | None, sent: bool, timeout: float,
                  last: errors.ClientError | None) -> errors.ClientError:
    """The error raised when the call's deadline passes."""
    if sent and p.is_write(request):
        return errors.OutcomeUnknown(f"no reply from {node} within {timeout:g}s")
    if last is not None:
        return last
    if sent:
        return errors.Unavailable(f"no reply from {node} within {timeout:g}s")
    return errors.ConnectionFailed(f"no node reachable within {timeout:g}s")


def backoff_delay(attempt: int, initial: float, maximum: float, jitter: float) -> float:
    """
    Exponential backoff: C{initial * 2**attempt} capped at C{maximum}, times
    C{0.5 + jitter} where C{jitter} is a random number in [0, 1), so that
    clients do not retry in step.
    """
    growth: float = 2 ** min(attempt, 30)
    return min(maximum, initial * growth) * (0.5 + jitter)
