# -*- test-case-name: tests.test_protocols_client -*-
"""
The Twisted shell around the client request language.

L{ClientProtocol} turns bytes into lines, lines into commands (with the pure
L{kvstore.protocols.commands.parse_command}), commands into calls on a
L{KeyValueService} (the node), and results or failures into exactly one reply
line per request.  It owns the three things a pure parser cannot:

  - B{ordering}: clients may pipeline; the node may finish requests out of
    order.  Each request takes a slot in a per-connection FIFO and replies
    leave strictly in request order, and a read never starts before the
    connection's earlier writes finish (nor a write before its earlier
    reads), so a connection sees its own requests take effect in order.
  - B{flow control}: reading stops while more than C{max_pending} replies are
    outstanding, or while the transport's send buffer is full (we register as
    its streaming producer), so one client cannot grow server memory without
    bound by pipelining and not reading.
  - B{containment}: garbage, over-long lines and disconnects affect only that
    connection, and unexpected exceptions become C{Error: Internal error}
    without closing it.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Protocol, runtime_checkable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer, ITCPTransport
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from kvstore import trace
from kvstore.errors import (
    CasFailed,
    IntegerOverflow,
    KeyNotFound,
    KeyValueError,
    NotAnInteger,
    NotLeader,
    OutcomeUnknown,
    SessionExpired,
    StaleSequence,
    Refused,
    Unavailable,
)
from kvstore.protocols import replies
from kvstore.protocols.sending import write_now
from kvstore.protocols.commands import (
    DEFAULT_LIMITS,
    Cas,
    CommandError,
    Delete,
    Exit,
    Get,
    Incr,
    Limits,
    LineTooLong,
    OpenSession,
    Ping,
    Put,
    Status,
    Tagged,
    AddNode,
    Members,
    RemoveNode,
    Transfer,
    MEMBERSHIP_COMMANDS,
    parse_command,
)
from kvstore.statemachine import SessionTag

__all__ = [
    "KeyValueService",
    "ClientProtocol",
    "ClientFactory",
    "ForwardedReply",
    "WriteForwarding",
    "DEFAULT_MAX_PENDING",
    "format_error",
    "format_status",
]

#: Replies that may be outstanding on one connection before it stops reading.
DEFAULT_MAX_PENDING = 1000

#: Replies produced while handling one chunk of input are written together;
#: past this many bytes they are written at once so backpressure can act.
_MAX_BATCH_BYTES = 64 * 1024

_INTERNAL_ERROR = b"Error: Internal error\n"
_PONG = b"PONG\n"
_GOODBYE = b"Goodbye.\n"


@runtime_checkable
class KeyValueService(Protocol):
    """
    What the client protocol needs from the node.

    Every returned Deferred must eventually fire (the node enforces commit
    and read deadlines), because a reply that never comes blocks every later
    reply on that connection.
    """

    def put(self, key: str, value: str, session: SessionTag | None = None) -> Deferred[None]:
        """
        Replicate and apply C{key=value}; fire once committed and applied.
        Fails with L{NotLeader} (refused, certainly not applied) or
        L{OutcomeUnknown} (appended, fate unknown).  With C{session}, the
        write is applied at most once per tag (every write method takes
        it), and may fail with L{SessionExpired} (not applied) or
        L{StaleSequence}.
        """

    def delete(self, key: str, session: SessionTag | None = None) -> Deferred[None]:
        """
        Replicate and apply the deletion of C{key}.  Fails with
        L{KeyNotFound}, L{NotLeader} or L{OutcomeUnknown}.
        """

    def incr(self, key: str, delta: int, session: SessionTag | None = None) -> Deferred[int]:
        """
        Replicate and apply adding C{delta} to the integer in C{key}; fire
        with the new value.  Also fails with L{NotAnInteger} or
        L{IntegerOverflow} (nothing changed).
        """

    def cas(self, key: str, expected: str, new: str, session: SessionTag | None = None) -> Deferred[None]:
        """
        Replicate and apply setting C{key} to C{new} if its value is
        C{expected}.  Also fails with L{KeyNotFound} or L{CasFailed}
        (nothing changed).
        """

    def open_session(self) -> Deferred[int]:
        """Replicate the registration of an exactly-once session; fire with its id."""

    def get(self, key: str, stale: bool) -> Deferred[str]:
        """
        Read C{key}: linearizably, or from local state if C{stale}.  Fails
        with L{KeyNotFound}, L{NotLeader} or L{Unavailable}.
        """

    def status(self) -> dict[str, object]:
        """Return an ordered mapping of status names to values."""


@runtime_checkable
class MembershipService(Protocol):
    """
    What the admin commands need from the node (issue 13): each fails with
    L{NotLeader} on a follower and L{Refused} for a bad request.
    """

    def members_text(self) -> str:
        """The C{MEMBERS} reply (raises L{NotLeader} on a follower)."""

    def add_node(self, node_id: int, address: str) -> Deferred[None]:
        """Add C{node_id} as a learner; fires once the change commits."""

    def remove_node(self, node_id: int) -> Deferred[None]:
        """Remove C{node_id}; fires once the change commits."""

    def transfer_leadership(self, node_id: int) -> Deferred[None]:
        """Hand leadership to C{node_id}; fires once it leads."""


class WriteForwarding(Protocol):
    """
    Write forwarding as the client protocol sees it
    (L{kvstore.node.forwarding.WriteForwarder}, on with C{--forward-writes}).
    """

    def forward_if_refused(self, result: Deferred[Any], line: bytes) -> Deferred[Any]:
        """
        C{result} of the request C{line}, unless the node refused it with
        L{NotLeader}: then the leader's answer to C{line}, a
        L{ForwardedReply} (or a failure the protocol renders as usual).
        """


class ForwardedReply:
    """The leader's reply C{line} (LF included) to a forwarded request,
    written to the client as it is."""

    __slots__ = ("line",)

    def __init__(self, line: bytes) -> None:
        self.line = line


def _one_line(text: str) -> str:
    """Make C{text} safe to embed in a single reply line."""
    if "\n" in text or "\r" in text:
        return text.replace("\r", "\\r").replace("\n", "\\n")
    return text


def format_error(error: KeyValueError) -> str:
    """
    Render a node error as a reply line (without the trailing LF).

    The texts are part of the protocol: clients match on them to decide
    whether to redirect (C{Not leader}), retry (C{Unavailable}) or check
    before retrying (C{Outcome unknown}).
    """
    if isinstance(error, KeyNotFound):
        return f"Error: Key {_one_line(str(error.key))} not found"
    if isinstance(error, NotLeader):
        if error.leader_id is None:
            return "Error: Not leader. No leader elected yet"
        if error.leader_address is None:
            return f"Error: Not leader. Current leader is Node {error.leader_id}"
        return (
            f"Error: Not leader. Current leader is Node {error.leader_id} "
            f"at {_one_line(error.leader_address)}"
        )
    if isinstance(error, OutcomeUnknown):
        return (
            f"Error: Outcome unknown: {_one_line(error.reason)} "
            "(the write may or may not have been applied)"
        )
    if isinstance(error, Unavailable):
        return f"Error: Unavailable: {_one_line(error.reason)}"
    if isinstance(error, CasFailed):
        return replies.cas_failed_error(_one_line(error.key), _one_line(error.actual))
    if isinstance(error, NotAnInteger):
        return replies.not_an_integer_error(_one_line(error.key))
    if isinstance(error, IntegerOverflow):
        return replies.overflow_error(_one_line(error.key))
    if isinstance(error, SessionExpired):
        return replies.session_expired_error(error.session)
    if isinstance(error, StaleSequence):
        return replies.stale_sequence_error(error.highest)
    if isinstance(error, Refused):
        return f"Error: {_one_line(error.reason)}"
    return f"Error: {_one_line(str(error)) or type(error).__name__}"


def _status_value(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return ",".join(_status_value(v) for v in items)
    return "_".join(str(value).split()) or "-"


def format_status(status: dict[str, object]) -> str:
    """
    Render a status mapping as one line of space-separated C{name=value}
    tokens, in the mapping's order.

    Sequences are joined with commas, L{None} is C{none}, booleans are
    C{true}/C{false}, an empty value is C{-}, and whitespace inside a value
    becomes C{_} so that every token stays whitespace-free.
    """
    return " ".join(
        f"{'_'.join(str(name).split())}={_status_value(value)}"
        for name, value in status.items()
    )


def _put_reply(key: str, result: object) -> bytes:
    return f"{key} added successfully.\n".encode("utf-8")


def _delete_reply(key: str, result: object) -> bytes:
    return f"{key} deleted successfully.\n".encode("utf-8")


def _added_reply(node_id: object, result: object) -> bytes:
    return f"Node {node_id} added successfully.\n".encode("utf-8")


def _removed_reply(node_id: object, result: object) -> bytes:
    return f"Node {node_id} removed successfully.\n".encode("utf-8")


def _transferred_reply(node_id: object, result: object) -> bytes:
    return f"Leadership transferred to Node {node_id}.\n".encode("utf-8")


def _members(service: MembershipService) -> Deferred[str]:
    """C{MEMBERS}'s line, or the node's refusal (L{NotLeader} on a follower)."""
    try:
        return succeed(service.members_text())
    except KeyValueError as e:
        return fail(e)


def _members_reply(key: object, text: object) -> bytes:
    return f"{text}\n".encode("utf-8")


def _get_reply(key: str, value: object) -> bytes:
    return f"value of {key}: {_one_line(str(value))}\n".encode("utf-8")


def _stale_get_reply(key: str, value: object) -> bytes:
    """As L{_get_reply}, for C{GET key STALE}: a function of its own, so that
    a result's renderer tells the two reads apart (L{kvstore.admin.requests}
    counts them apart)."""
    return f"value of {key}: {_one_line(str(value))}\n".encode("utf-8")


def _incr_reply(key: str, value: object) -> bytes:
    return (replies.incr_reply(key, int(value)) + "\n").encode("utf-8")  # type: ignore[call-overload]  # an INCR's Deferred fires with an int


def _cas_reply(key: str, result: object) -> bytes:
    return (replies.cas_reply(key) + "\n").encode("utf-8")


def _session_reply(key: str, session: object) -> bytes:
    return (replies.session_reply(int(session)) + "\n").encode("utf-8")  # type: ignore[call-overload]  # SESSION's Deferred fires with an int


_WRITES = (Put, Delete, Incr, Cas, Tagged, OpenSession)


class _Slot:
    """A reply position in a connection's FIFO; C{reply} is set when known."""

    __slots__ = ("reply", "line")

    def __init__(self, reply: bytes | None = None) -> None:
        self.reply = reply
        #: The request line, kept until the request starts only when writes
        #: are forwarded (a refused one is forwarded as the client sent it).
        self.line: bytes | None = None


@implementer(IPushProducer, IHalfCloseableProtocol)
class ClientProtocol(LineReceiver):
    """
    One client connection.

    Lines are LF-terminated (a trailing CR is ignored).  Each request gets one
    reply, in request order.  After C{EXIT} or an over-long line no further
    input is read; the connection closes once every earlier reply has been
    written.  After the connection is lost, results that arrive late are
    discarded.

    This protocol registers itself as the transport's streaming producer so
    that a full send buffer stops reading; it does not support a second
    producer on the same transport.
    """

    # Set by makeConnection before any callback runs, and always a TCP (or
    # TCP-like) transport: narrows Protocol's Optional[ITransport].
    transport: ITCPTransport

    log = Logger()
    delimiter = b"\n"

    #: Where requests the node refuses with Not leader go (C{--forward-writes},
    #: set by L{ClientFactory}); L{None}: the refusal is the reply.
    forwarder: WriteForwarding | None = None

    def __init__(
        self,
        service: KeyValueService,
        limits: Limits = DEFAULT_LIMITS,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self._service = service
        self._limits = limits
        self.MAX_LENGTH = limits.max_line_bytes
        self._max_pending = max_pending
        self._resume_at = max_pending // 2
        self._queue: deque[_Slot] = deque()
        # Replies produced while handling one dataReceived call are written
        # with one writeSequence at its end; None when not receiving.
        self._batch: list[bytes] | None = None
        self._batch_bytes = 0
        self._pause_reasons: set[str] = set()
        self._closing = False  # EXIT or over-long line: read nothing more
        self._close_requested = False  # loseConnection() has been called
        self._lost = False
        self._producing_for_transport = False
        self._reads_in_flight = 0
        self._writes_in_flight = 0
        # Requests waiting for the ordering rule, with their reply slots.
        self._held: deque[tuple[Any, _Slot, bool]] = deque()
        self._draining = False

    # -- connection lifecycle ---------------------------------------------

    def connectionMade(self) -> None:
        try:
            self.transport.registerProducer(self, True)  # type: ignore[attr-defined]  # a TCP transport is also an IConsumer and IPushProducer
            self._producing_for_transport = True
        except RuntimeError:
            self.log.warn(
                "Transport already has a producer; client replies will not "
                "apply write backpressure"
            )

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._closing = True
        self._producing_for_transport = False
        self.paused = True
        self._queue.clear()
        self._held.clear()
        self._batch = None
        self.clearLineBuffer()

    # -- IHalfCloseableProtocol: the client stopped sending ------------------

    def readConnectionLost(self) -> None:
        """
        The client shut down its sending side (C{nc -q1}, C{nc -N}, a
        script's C{shutdown(SHUT_WR)}) after its last request: like C{EXIT},
        answer every request already read, then close.  An unterminated
        last line is not a request and is dropped.
        """
        self._start_closing()

    def writeConnectionLost(self) -> None:
        """The client can no longer read our replies: close."""
        self._closing = True
        self.transport.loseConnection()

    # -- IPushProducer: called by the transport about our writes -------------

    def pauseProducing(self) -> None:
        """The send buffer is full: stop reading requests until it drains."""
        self._pause("send buffer")

    def resumeProducing(self) -> None:
        """The send buffer drained: read requests again if nothing else stops us."""
        self._resume("send buffer")

    def stopProducing(self) -> None:
        """The transport is going away: never read or write again."""
        self._closing = True
        self.paused = True

    def _pause(self, reason: str) -> None:
        if not self._pause_reasons and not self._closing:
            self.paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]  # a TCP transport is also an IConsumer and IPushProducer
        self._pause_reasons.add(reason)

    def _resume(self, reason: str) -> None:
        if reason not in self._pause_reasons:
            return
        self._pause_reasons.discard(reason)
        if self._pause_reasons or self._closing:
            return
        self.paused = False
        self.transport.resumeProducing()  # type: ignore[attr-defined]  # a TCP transport is also an IConsumer and IPushProducer
        # Lines that arrived before we paused are still in LineReceiver's
        # buffer; deliver them now rather than waiting for more data.
        self.dataReceived(b"")

    # -- input ------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if trace.ENABLED:
            trace.record("client.received")
        if self._closing:
            return
        if self._batch is not None:
            # Re-entered (a resume while handling a line): the outer call
            # owns the batch and LineReceiver will buffer the data.
            LineReceiver.dataReceived(self, data)
            return
        self._batch = []
        try:
            LineReceiver.dataReceived(self, data)
        finally:
            self._write_batch()
            self._batch = None
            self._maybe_close()

    def lineLengthExceeded(self, line: bytes) -> None:
        """
        Reply with an error and close: the rest of an over-long line cannot
        be told apart from requests, so nothing after it is read.
        """
        if self._closing:
            return
        self.log.info(
            "Closing client connection {peer}: line longer than {max} bytes",
            peer=self.transport.getPeer(),
            max=self.MAX_LENGTH,
        )
        self._reply(
            f"Error: {LineTooLong(self._limits.max_line_bytes)}\n".encode("utf-8")
        )
        self._start_closing()

    def lineReceived(self, line: bytes) -> None:
        if self._closing:
            return
        try:
            command = parse_command(line, self._limits)
        except LineTooLong:
            self.lineLengthExceeded(line)
            return
        except CommandError as e:
            self._reply(f"Error: {e}\n".encode("utf-8"))
            return

        cls = type(command)
        if cls is Ping:
            self._reply(_PONG)
            return
        if cls is Exit:
            self._reply(_GOODBYE)
            self._start_closing()
            return
        # GET and STATUS read; PUT, DELETE, INCR, CAS and SESSION write
        # (tagged or not), and so do the membership admin commands.  Reserve the reply's place now; start the
        # operation when the connection's ordering rule allows it (see
        # _may_start).
        is_write = cls in _WRITES or cls in MEMBERSHIP_COMMANDS
        slot = _Slot()
        if self.forwarder is not None:
            slot.line = line
        self._queue.append(slot)
        if self._held or not self._may_start(is_write):
            self._held.append((command, slot, is_write))
        else:
            self._start(command, slot, is_write)
        if len(self._queue) > self._max_pending:
            self._pause("backlog")

    def _may_start(self, is_write: bool) -> bool:
        """
        Per-connection sequential consistency: a read waits for this
        connection's earlier writes to finish, and a write for its earlier
        reads, so a pipelining client observes its own requests in order
        (C{PUT k v} then C{GET k} sees C{v}; C{GET k} then C{PUT k w} does
        not see C{w}).  Consecutive reads, and consecutive writes, still run
        concurrently: the log orders writes anyway.
        """
        if is_write:
            return self._reads_in_flight == 0
        return self._writes_in_flight == 0

    def _start(self, command: Any, slot: _Slot, is_write: bool) -> None:
        service = self._service
        d: Deferred[Any]
        render: Callable[[Any, object], bytes]
        key: Any
        try:
            if type(command) is Tagged:
                # A session's write: the same operation, tagged.  Only the
                # tagged call passes session=, so an untagged one needs
                # nothing new from the service.
                tag = SessionTag(command.session, command.seq)
                match command.command:
                    case Put(key, value):
                        d, render = service.put(key, value, session=tag), _put_reply
                    case Delete(key):
                        d, render = service.delete(key, session=tag), _delete_reply
                    case Incr(key, delta):
                        d, render = service.incr(key, delta, session=tag), _incr_reply
                    case Cas(key, expected, new):
                        d, render = service.cas(key, expected, new, session=tag), _cas_reply
                    case _:  # pragma: no cover - parse_command tags only writes
                        raise TypeError(f"unhandled tagged command {command!r}")
                command = command.command
            else:
                match command:
                    case Get(key, stale):
                        d = service.get(key, stale)
                        render = _stale_get_reply if stale else _get_reply
                    case Put(key, value):
                        d = service.put(key, value)
                        render = _put_reply
                    case Delete(key):
                        d = service.delete(key)
                        render = _delete_reply
                    case Incr(key, delta):
                        d = service.incr(key, delta)
                        render = _incr_reply
                    case Cas(key, expected, new):
                        d = service.cas(key, expected, new)
                        render = _cas_reply
                    case OpenSession():
                        d = service.open_session()
                        render, key = _session_reply, ""
                    case Status():
                        slot.reply = format_status(service.status()).encode("utf-8") + b"\n"
                        self._flush()
                        return
                    case Members() | AddNode() | RemoveNode() | Transfer():
                        if not isinstance(service, MembershipService):
                            raise Refused("This server does not manage membership")
                        if isinstance(command, Members):
                            # A Deferred, so that a follower's Not leader reaches write forwarding as a write's does.
                            d, render, key = _members(service), _members_reply, None
                        else:
                            d, render, key = self._start_membership(service, command)
                    case _:  # pragma: no cover - parse_command returns no others
                        raise TypeError(f"unhandled command {command!r}")
        except KeyValueError as e:
            # A node that refuses synchronously instead of via the Deferred.
            slot.reply = format_error(e).encode("utf-8") + b"\n"
            self._flush()
            return
        except Exception:
            self.log.failure("Unexpected error handling {command!r}", command=command)
            slot.reply = _INTERNAL_ERROR
            self._flush()
            return
        if slot.line is not None and self.forwarder is not None:
            d = self.forwarder.forward_if_refused(d, slot.line)
            slot.line = None
        if is_write:
            self._writes_in_flight += 1
        else:
            self._reads_in_flight += 1
        d.addCallbacks(
            self._succeeded,
            self._failed,
            callbackArgs=(slot, render, key),
            errbackArgs=(slot, command),
        )
        d.addBoth(self._finished, is_write)

    @staticmethod
    def _start_membership(
        service: MembershipService, command: AddNode | RemoveNode | Transfer
    ) -> tuple[Deferred[Any], Callable[[Any, object], bytes], int]:
        """Start an C{ADDNODE}, C{REMOVENODE} or C{TRANSFER}: its Deferred,
        how to render its success, and the node id the reply names."""
        if isinstance(command, AddNode):
            return service.add_node(command.node_id, command.address), _added_reply, command.node_id
        if isinstance(command, RemoveNode):
            return service.remove_node(command.node_id), _removed_reply, command.node_id
        return service.transfer_leadership(command.node_id), _transferred_reply, command.node_id

    def _finished(self, result: object, is_write: bool) -> None:
        if is_write:
            self._writes_in_flight -= 1
        else:
            self._reads_in_flight -= 1
        if self._draining:
            # A held request finished at once inside the loop below: the
            # outermost call keeps draining, so the stack stays flat however
            # many requests in a row complete immediately.
            return None
        self._draining = True
        try:
            held = self._held
            while held and not self._lost and self._may_start(held[0][2]):
                command, slot, held_is_write = held.popleft()
                self._start(command, slot, held_is_write)
        finally:
            self._draining = False
        return None

    # -- results ----------------------------------------------------------

    def _succeeded(
        self,
        result: object,
        slot: _Slot,
        render: Callable[[Any, object], bytes],
        key: Any,
    ) -> None:
        if self._lost:
            return None
        try:
            slot.reply = result.line if type(result) is ForwardedReply else render(key, result)
        except Exception:
            self.log.failure("Could not render the result for key {key!r}", key=key)
            slot.reply = _INTERNAL_ERROR
        self._flush()
        return None

    def _failed(self, failure: Failure, slot: _Slot, command: Any) -> None:
        # Always consume the failure: after a disconnect nobody is listening,
        # and an unconsumed one would be logged as an unhandled error.
        if self._lost:
            return None
        error = failure.value
        if isinstance(error, KeyValueError):
            try:
                slot.reply = format_error(error).encode("utf-8") + b"\n"
            except Exception:
                self.log.failure("Could not render error for {command!r}", command=command)
                slot.reply = _INTERNAL_ERROR
        else:
            self.log.failure(
                "Unexpected failure handling {command!r}",
                failure=failure,
                command=command,
            )
            slot.reply = _INTERNAL_ERROR
        self._flush()
        return None

    # -- output -----------------------------------------------------------

    def _reply(self, data: bytes) -> None:
        """Send a reply that is ready now, behind any still-pending ones."""
        if self._queue:
            self._queue.append(_Slot(data))
            if len(self._queue) > self._max_pending:
                self._pause("backlog")
        elif self._batch is not None:
            self._batch.append(data)
            self._batch_bytes += len(data)
            if self._batch_bytes >= _MAX_BATCH_BYTES:
                self._write_batch()
        elif not self._lost:
            self.transport.write(data)

    def _write_batch(self) -> None:
        """
        Hand the replies batched so far to the transport.  Done at the end of
        each dataReceived, and early once the batch is large, so that the
        transport can pause us (via L{pauseProducing}) before one chunk of
        small requests turns into an unbounded amount of reply data.
        """
        batch = self._batch
        if batch:
            self._batch_bytes = 0
            if not self._lost:
                if trace.ENABLED:
                    trace.record("reply.written")
                write_now(self.transport, batch[0] if len(batch) == 1 else b"".join(batch))
            batch.clear()

    def _flush(self) -> None:
        """Write every ready reply at the head of the FIFO."""
        queue = self._queue
        if not queue or queue[0].reply is None:
            return
        ready: list[bytes] = []
        while queue and queue[0].reply is not None:
            ready.append(queue.popleft().reply)  # type: ignore[arg-type]  # the loop condition checked that reply is not None
        batch = self._batch
        if batch is not None:
            batch.extend(ready)
            self._batch_bytes += sum(map(len, ready))
            if self._batch_bytes >= _MAX_BATCH_BYTES:
                self._write_batch()
        else:
            data = ready[0] if len(ready) == 1 else b"".join(ready)
            if trace.ENABLED:
                trace.record("reply.written")
            if not queue:
                # Nothing more is outstanding on this connection, so nothing
                # else can join this write: send it now rather than at the
                # next reactor iteration (for a pipelining client, the
                # connection's last reply of the pass sends them all).
                write_now(self.transport, data)
            else:
                self.transport.write(data)
        if len(queue) <= self._resume_at:
            self._resume("backlog")
        self._maybe_close()

    def _start_closing(self) -> None:
        """Read nothing more; close after every earlier reply is written."""
        if not self._closing:
            if not self._pause_reasons:
                self.transport.pauseProducing()  # type: ignore[attr-defined]  # a TCP transport is also an IConsumer and IPushProducer
            self._closing = True
            self.paused = True
            self.clearLineBuffer()
        self._maybe_close()

    def _maybe_close(self) -> None:
        if (
            self._closing
            and not self._close_requested
            and not self._lost
            and not self._queue
            and self._batch is None
        ):
            self._close_requested = True
            if self._producing_for_transport:
                # A registered (possibly paused) producer keeps a TCP
                # transport from closing, so step down first.
                self._producing_for_transport = False
                self.transport.unregisterProducer()  # type: ignore[attr-defined]  # a TCP transport is also an IConsumer and IPushProducer
            self.transport.loseConnection()


class ClientFactory(Factory):
    """
    Builds a L{ClientProtocol} for each accepted client connection, all
    sharing one L{KeyValueService} and one set of limits.
    """

    protocol = ClientProtocol

    def __init__(
        self,
        service: KeyValueService,
        limits: Limits = DEFAULT_LIMITS,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.service = service
        self.limits = limits
        self.max_pending = max_pending
        #: Given to every connection built from now on (C{--forward-writes}).
        self.forwarder: WriteForwarding | None = None

    def buildProtocol(self, addr: object) -> ClientProtocol:
        proto = self.protocol(self.service, self.limits, self.max_pending)
        proto.factory = self
        if self.forwarder is not None:
            proto.forwarder = self.forwarder
        return proto
