# -*- test-case-name: tests.test_forwarding -*-
"""
Write forwarding (C{--forward-writes}, issue 14): a follower sends a write
it would refuse with C{Not leader} to the leader, over its peer link, and
gives the client the leader's reply; so a client that talks to any node
(C{nc}, a simple script) never has to follow the leader itself.

Two halves, both attached to every node by L{attach_forwarding}:

  - B{the follower's} L{WriteForwarder}, handed to the client protocol
    (L{kvstore.protocols.client.ClientProtocol.forwarder}) only when
    C{--forward-writes} is on.  The client protocol runs each request as
    usual; a request the node refuses with L{NotLeader} (refused before
    anything was appended, so certainly not applied) is forwarded as the
    line the client sent, and the leader's reply line comes back as it is.
    Nothing here knows any command: INCR, CAS, session-tagged writes and
    membership commands are forwarded as soon as the node refuses them
    with Not leader.
  - B{the leader's} L{ForwardExecutor}, always on (a follower with the
    option may forward to a leader without it): it runs a forwarded line
    exactly as a line a client sent on a connection of its own (a
    L{ClientProtocol} on this node's client service, with this node's
    current limits), never forwarding it again, and answers with the reply
    line.

Guarantees (docs/protocol.md, "Write forwarding"):

  - B{Ordering.}  A forwarded write counts as a write in flight on the
    client's connection, so the connection's ordering rule holds as for a
    local write: its later reads wait for the leader's answer, replies
    leave in request order, and a linearizable C{GET} after a forwarded
    C{PUT} sees it (the follower's ReadIndex read is at least the commit
    index the leader had when it answered).  Writes pipelined on one
    connection reach the leader in order over the one peer connection and
    are proposed in arrival order.
  - B{Honesty.}  A write that was never sent (no leader known, the link to
    the leader is down or speaks a protocol version older than
    L{FORWARDING_SINCE}, too many forwarded writes in flight) gets the
    refusal the node gave, C{Error: Not leader. ...}: it was not applied.
    A leader's own C{Not leader} answer is retried with the new leader
    while time remains, for the same reason.  Once sent, a write whose
    leader changes, whose link to the leader drops, or that gets no answer
    within the commit timeout (plus L{RESPONSE_GRACE}) gets C{Error:
    Outcome unknown: ...}: it may have been applied.  One exception to
    "leader changed": a C{TRANSFER}, whose success I{is} a leadership
    change, waits for the old leader's answer (C{Leadership transferred to
    Node <id>.} or its error) over the same connection, within the same
    time; only a dropped connection or no answer make it unknown.
  - B{Bounds.}  At most C{max_in_flight} forwarded writes per follower
    (L{DEFAULT_MAX_IN_FLIGHT}); past that a write gets the node's own
    refusal, C{Not leader}, as without forwarding.  The leader runs at
    most L{MAX_RUNNING_PER_FOLLOWER} forwarded requests of one follower at
    a time and refuses more with C{Error: Unavailable: ...} (not applied).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IConsumer, IDelayedCall, IProducer, IReactorTime, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from kvstore.errors import KeyValueError, NotLeader, OutcomeUnknown
from kvstore.node.forwarding_messages import FORWARD_TYPE, ForwardRequest, ForwardResponse
from kvstore.node.node import Node, PeerSender
from kvstore.protocols.client import ClientFactory, ClientProtocol, ForwardedReply
from kvstore.protocols.peer import WIRE_TYPES
from kvstore.protocols.peer_links import PeerLinks
from kvstore.raft.messages import MAX_FIELD_VALUE, Message

__all__ = [
    "DEFAULT_MAX_IN_FLIGHT",
    "MAX_RUNNING_PER_FOLLOWER",
    "RESPONSE_GRACE",
    "RETRY_INTERVAL",
    "ForwardChannel",
    "ForwardedError",
    "ForwardExecutor",
    "Forwarding",
    "PeerLinksChannel",
    "WriteForwarder",
    "attach_forwarding",
]

#: Forwarded writes one follower keeps in flight at most (waiting for a
#: leader or for its answer); past it a write is refused as without
#: forwarding.  It equals a client connection's backlog (C{max_pending}).
DEFAULT_MAX_IN_FLIGHT = 1000

#: Forwarded requests of one follower a leader runs at once at most; a
#: correct follower sends at most its own cap, so this only bounds a
#: faulty member.
MAX_RUNNING_PER_FOLLOWER = 2 * DEFAULT_MAX_IN_FLIGHT

#: Seconds a follower waits for the leader's answer beyond the commit
#: timeout: the leader's own commit timeout starts when the request
#: arrives, and its answer (success, or its own C{Outcome unknown}) is
#: better than the follower's guess.
RESPONSE_GRACE = 0.5

#: Seconds between a follower's attempts to forward a write that could not
#: go yet (no leader known, the link to it not up) or that the leader
#: refused with C{Not leader} (it had just lost leadership).
RETRY_INTERVAL = 0.05

# Forward request ids start at a random number below 2**62 on every boot
# (as read ids do, see kvstore.node.node): a late answer to a request of an
# earlier incarnation of this node never matches a request of this one.
_ID_START_BITS = 62

_NOT_LEADER_PREFIX = b"Error: Not leader"
_ERROR_PREFIX = b"Error: "
_TRANSFER_WORD = b"TRANSFER"


def _outlives_its_leader(line: bytes) -> bool:
    """Whether the forwarded request C{line} is a C{TRANSFER} (the command
    word in any case, as the parser takes it): the one request whose
    success ends its leader's term, so that a leadership change says
    nothing about its outcome and its answer is still to come."""
    return line[: len(_TRANSFER_WORD) + 1].upper() == _TRANSFER_WORD + b" "


class ForwardedError(KeyValueError):
    """
    An error line the leader replied to a forwarded request.  C{str()} is
    the line without its C{Error: } prefix, so the client protocol's
    L{format_error<kvstore.protocols.client.format_error>} writes the
    leader's line as it is.
    """


class ForwardChannel(Protocol):
    """The peer links as forwarding sees them (L{PeerLinksChannel})."""

    def may_forward(self, peer: int) -> bool | None:
        """
        Whether a forwarded request may go to C{peer} now: C{True} if its
        link negotiated a version with the forwarding messages, C{False} if
        it negotiated an older one (forward nothing to it), C{None} if that
        is not known now (not connected, or not yet answered).
        """

    def connection(self, peer: int) -> object | None:
        """The current connection to C{peer} (any object, compared by
        identity: another one means the one a request went on dropped)."""


class _AlwaysConnected:
    """The channel of a network without connections or versions (the
    in-memory cluster, the simulator): every peer takes forwarded
    requests, over one everlasting connection."""

    def may_forward(self, peer: int) -> bool | None:
        return True

    def connection(self, peer: int) -> object | None:
        return self


class PeerLinksChannel:
    """
    The production L{ForwardChannel}: the node's outbound peer links
    (L{kvstore.protocols.peer_links.PeerLinks}), looked up by peer id at
    each use (so links added or removed later are seen).
    """

    def __init__(self, links: PeerLinks) -> None:
        self._links = links
        self._wire_type = WIRE_TYPES[FORWARD_TYPE]

    def may_forward(self, peer: int) -> bool | None:
        link = self._links.links.get(peer)
        if link is None:
            return None
        return link.allows(self._wire_type)

    def connection(self, peer: int) -> object | None:
        link = self._links.links.get(peer)
        return None if link is None else link.protocol


@dataclass(eq=False)
class _Forward:
    """One forwarded write, from the node's refusal to its answer."""

    line: bytes
    deferred: Deferred[Any]
    refusal: NotLeader
    #: After this, a write not sent yet is refused, not sent.
    send_until: float
    #: After this, a sent write's outcome is unknown.
    answer_until: float
    request_id: int = 0
    #: Arrival order: a write is never sent before an earlier one that
    #: still waits to be sent (per-connection write order, see _pump).
    seq: int = 0
    #: (leader, term, connection) it was sent in.
    epoch: tuple[int, int, object] | None = None
    timer: IDelayedCall | None = None


class WriteForwarder:
    """
    The follower's half (see the module docstring): forwards the writes
    this node refuses with Not leader to the leader and answers them with
    the leader's reply lines.

    @ivar in_flight: forwarded writes waiting for a leader or its answer.
    @ivar refused_busy: writes refused because L{in_flight} was at the cap.
    """

    log = Logger()

    def __init__(
        self,
        node: Node,
        peers: PeerSender,
        clock: IReactorTime,
        channel: ForwardChannel,
        run_locally: Callable[[bytes], Deferred[bytes]],
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        rng: random.Random | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self._node = node
        self._peers = peers
        self._clock = clock
        self._channel = channel
        self._run_locally = run_locally
        self.max_in_flight = max_in_flight
        self._rng = rng if rng is not None else random.SystemRandom()
        self._next_id = self._first_id()
        self.in_flight = 0
        self.refused_busy = 0
        # Sent writes by epoch, then by request id.
        self._sent: dict[tuple[int, int, object], dict[int, _Forward]] = {}
        self._by_id: dict[int, _Forward] = {}
        # Writes not sent yet (no usable link, or refused by a leader that
        # had just lost leadership), by arrival order, and the one timer
        # that tries the oldest again.
        self._waiting: dict[int, _Forward] = {}
        self._next_seq = 0
        self._pump_timer: IDelayedCall | None = None

    # -- the client protocol's hook ---------------------------------------

    def forward_if_refused(self, result: Deferred[Any], line: bytes) -> Deferred[Any]:
        """C{result}, or, if it fails with L{NotLeader}, the leader's answer
        to C{line} (see L{forward})."""
        return result.addErrback(self._refused, line)

    def _refused(self, failure: Failure, line: bytes) -> Any:
        refusal = failure.value
        if not isinstance(refusal, NotLeader):
            return failure
        return self.forward(line, refusal)

    def forward(self, line: bytes, refusal: NotLeader) -> Deferred[Any]:
        """
        Forward the request C{line}, which this node refused with
        C{refusal}, to the leader.  Fires with a L{ForwardedReply} or fails
        with L{ForwardedError} (the leader's reply line), with C{refusal} or
        another L{NotLeader} (not sent: not applied), or with
        L{OutcomeUnknown} (sent, and the answer is lost).
        """
        if self.in_flight >= self.max_in_flight:
            self.refused_busy += 1
            return _failed(refusal)
        try:
            line.decode("utf-8")  # the wire carries text; the parser saw it is
        except UnicodeDecodeError:
            return _failed(refusal)
        now = self._clock.seconds()
        timeout = self._node.commit_timeout
        request = _Forward(line, Deferred(), refusal, now + timeout, now + timeout + RESPONSE_GRACE)
        self._next_seq += 1
        request.seq = self._next_seq
        self.in_flight += 1
        self._waiting[request.seq] = request
        self._pump()
        return request.deferred

    # -- sending -------------------------------------------------------------

    def _pump(self) -> None:
        """
        Send (or settle) the waiting writes oldest first, stopping at the
        first that must wait: a later write is never sent before an earlier
        one, so writes pipelined on a connection reach the leader, and are
        proposed, in request order (as on the leader itself), even when
        the earlier one had to wait for a link or was refused by a leader
        that had just lost leadership.
        """
        while self._waiting and self._pump_timer is None:
            seq = next(iter(self._waiting))
            request = self._waiting.pop(seq)
            if not self._attempt(request):
                self._requeue(request)

    def _requeue(self, request: _Forward) -> None:
        """C{request} waits again, in its arrival place; the oldest
        waiting write is tried again shortly."""
        self._waiting[request.seq] = request
        self._waiting = dict(sorted(self._waiting.items()))
        if self._pump_timer is None:
            self._pump_timer = self._clock.callLater(RETRY_INTERVAL, self._retry)

    def _retry(self) -> None:
        self._pump_timer = None
        self._pump()

    def _attempt(self, request: _Forward) -> bool:
        """Send C{request} to the leader if one can take it now (or
        settle it); C{False} if it must wait and be tried again shortly,
        until its time to be sent is up."""
        node = self._node
        if node.not_serving_reason is not None:
            self._finish(request, Failure(request.refusal))
            return True
        core = node.core
        leader = core.leader_id
        if leader == core.node_id:
            # This node leads now: run the line here, as the leader would.
            self._run_locally(request.line).addBoth(self._answered_locally, request)
            return True
        allowed = self._channel.may_forward(leader) if leader is not None else None
        if allowed is False:
            # The leader's link speaks a version without forwarding: answer
            # as without forwarding (the link logged why, once).
            self._finish(request, Failure(request.refusal))
            return True
        now = self._clock.seconds()
        if allowed is None:
            if now >= request.send_until:
                self._finish(request, Failure(self._current_refusal(request)))
                return True
            return False
        assert leader is not None
        request_id = self._new_id()
        epoch = (leader, core.term, self._channel.connection(leader))
        request.request_id = request_id
        request.epoch = epoch
        self._sent.setdefault(epoch, {})[request_id] = request
        self._by_id[request_id] = request
        request.timer = self._clock.callLater(max(0.0, request.answer_until - now), self._timed_out, request)
        self._peers.send(Message(core.node_id, leader, ForwardRequest(core.term, request_id, request.line)))
        return True

    def _current_refusal(self, request: _Forward) -> NotLeader:
        """The refusal to give a write that was never sent: the node's own
        view of the leader now, else the one it refused with."""
        leader = self._node.core.leader_id
        if leader is None or leader == self._node.core.node_id:
            return request.refusal
        return NotLeader(leader, self._node.leader_address())

    def _answered_locally(self, reply: bytes | Failure, request: _Forward) -> None:
        if isinstance(reply, Failure):
            self._finish(request, reply)
        else:
            self._answered(request, reply)

    # -- answers -------------------------------------------------------------

    def receive(self, message: Message) -> None:
        """A L{ForwardResponse} arrived (routed here by the node)."""
        body = message.body
        if not isinstance(body, ForwardResponse):
            return
        request = self._by_id.get(body.request_id)
        if request is None or request.epoch is None or request.epoch[0] != message.sender:
            # Late (its write already answered), or not ours.
            self.log.debug(
                "ignoring an answer from node {peer} to forwarded request {id}: none is waiting for it",
                peer=message.sender, id=body.request_id,
            )
            return
        self._unsend(request)
        self._answered(request, body.reply)

    def _answered(self, request: _Forward, reply: bytes) -> None:
        """The leader (or this node, leading now) answered C{reply}."""
        if b"\n" in reply or b"\r" in reply:
            # Not a reply line (a faulty peer): written as it is, it would
            # shift every later reply on the client's connection.
            self._finish(
                request, Failure(OutcomeUnknown("the leader's answer to the forwarded write was not one line"))
            )
            return
        if reply.startswith(_NOT_LEADER_PREFIX) and self._clock.seconds() < request.send_until:
            # Refused before anything was appended (it had just lost
            # leadership): not applied, so try the next leader, before any
            # later write.
            self._requeue(request)
            return
        if reply.startswith(_ERROR_PREFIX):
            error = ForwardedError(reply[len(_ERROR_PREFIX):].decode("utf-8", "replace"))
            self._finish(request, Failure(error))
        else:
            self._finish(request, ForwardedReply(reply + b"\n"))

    def watch(self) -> None:
        """
        After each processing pass of the node: a write sent to a leader
        that is no longer this node's leader in the same term, or over a
        connection that has since dropped, may or may not have been
        applied: its outcome is unknown.
        """
        if not self._sent:
            return
        core = self._node.core
        leader, term = core.leader_id, core.term
        current = None if leader is None else (leader, term, self._channel.connection(leader))
        for epoch in [e for e in self._sent if e != current]:
            old_leader, old_term, connection = epoch
            link_kept = connection is not None and self._channel.connection(old_leader) is connection
            if (old_leader, old_term) != (leader, term):
                reason = f"leadership changed while the write was forwarded to node {old_leader}"
            else:
                reason = f"the connection to the leader (node {old_leader}) dropped while the write was forwarded"
            for request in list(self._sent[epoch].values()):
                if link_kept and _outlives_its_leader(request.line):
                    continue  # the old leader answers it (or _timed_out settles it)
                self._unsend(request)
                self._finish(request, Failure(OutcomeUnknown(reason)))

    def _timed_out(self, request: _Forward) -> None:
        request.timer = None
        self._unsend(request)
        leader = request.epoch[0] if request.epoch is not None else "?"
        self._finish(
            request, Failure(OutcomeUnknown(f"the leader (node {leader}) did not answer the forwarded write in time"))
        )

    def _unsend(self, request: _Forward) -> None:
        """Forget that C{request} waits for an answer."""
        if request.timer is not None and request.timer.active():
            request.timer.cancel()
        request.timer = None
        self._by_id.pop(request.request_id, None)
        epoch = request.epoch
        if epoch is not None:
            sent = self._sent.get(epoch)
            if sent is not None:
                sent.pop(request.request_id, None)
                if not sent:
                    del self._sent[epoch]
        request.epoch = None

    def _finish(self, request: _Forward, result: ForwardedReply | Failure) -> None:
        """Answer C{request}: a reply to write, or a failure to render."""
        self.in_flight -= 1
        request.deferred.callback(result)

    def stop(self) -> None:
        """The node stopped: every forwarded write gets its answer now."""
        for request in list(self._by_id.values()):
            self._unsend(request)
            self._finish(request, Failure(OutcomeUnknown("the node is shutting down")))

    # -- ids -----------------------------------------------------------------

    def _first_id(self) -> int:
        return self._rng.getrandbits(_ID_START_BITS) + 1

    def _new_id(self) -> int:
        request_id = self._next_id
        self._next_id += 1
        if self._next_id >= MAX_FIELD_VALUE:
            self._next_id = self._first_id()
        return request_id


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(Failure(error))
    return d


@implementer(ITransport, IConsumer)
class _ReplyTransport:
    """
    The transport of a forwarded request's one-request connection on the
    leader: it keeps what the client protocol writes and hands the first
    whole line to C{on_reply}.
    """

    disconnecting = False

    def __init__(self, on_reply: Callable[[bytes], None]) -> None:
        self._on_reply: Callable[[bytes], None] | None = on_reply
        self._buffer = b""

    def write(self, data: bytes) -> None:
        if self._on_reply is None:
            return
        self._buffer += data
        line, found, _ = self._buffer.partition(b"\n")
        if found:
            on_reply, self._on_reply = self._on_reply, None
            on_reply(line)

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True

    def getPeer(self) -> IAddress:
        return _ForwardedAddress()  # type: ignore[return-value]  # only ever logged

    def getHost(self) -> IAddress:
        return _ForwardedAddress()  # type: ignore[return-value]  # only ever logged

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


class _ForwardedAddress:
    def __str__(self) -> str:
        return "forwarded request"

    __repr__ = __str__


class ForwardExecutor:
    """
    The leader's half (see the module docstring): runs the requests its
    followers forward as client requests and sends back the replies.

    @ivar rejected: forwarded requests dropped unanswered (from a node
        that is not a member, or reusing the id of one still running).
    """

    log = Logger()

    def __init__(self, node: Node, client_factory: ClientFactory, peers: PeerSender) -> None:
        self._node = node
        self._factory = client_factory
        self._peers = peers
        self._running: set[tuple[int, int]] = set()
        self._running_by: defaultdict[int, int] = defaultdict(int)
        self.rejected = 0

    def run(self, line: bytes) -> Deferred[bytes]:
        """
        Run the request C{line} as if a client had sent it alone on a
        connection to this node: the node's client service, with the
        current limits (a reload changes them), and no forwarding (a
        forwarded request is never forwarded again).  Fires with the reply
        line, without its LF.
        """
        factory = self._factory
        protocol = ClientProtocol(factory.service, factory.limits)
        replied: Deferred[bytes] = Deferred()

        def on_reply(reply: bytes) -> None:
            protocol.connectionLost(Failure(ConnectionDone()))
            replied.callback(reply)

        protocol.makeConnection(_ReplyTransport(on_reply))  # type: ignore[no-untyped-call]  # Twisted's, unannotated
        protocol.lineReceived(line)
        return replied

    def receive(self, message: Message) -> None:
        """A L{ForwardRequest} arrived (routed here by the node)."""
        body = message.body
        if not isinstance(body, ForwardRequest):
            return
        sender = message.sender
        node_id = self._node.core.node_id
        if sender == node_id or sender not in self._node.core.configuration.member_ids:
            self._reject(sender, body.request_id, "it is not a member of this cluster")
            return
        key = (sender, body.request_id)
        if key in self._running:
            self._reject(sender, body.request_id, "a request with this id from that node is still running")
            return
        if self._running_by[sender] >= MAX_RUNNING_PER_FOLLOWER:
            self._answer(
                sender, body.request_id,
                f"Error: Unavailable: too many requests forwarded by node {sender} are running".encode("utf-8"),
            )
            return
        self._running.add(key)
        self._running_by[sender] += 1
        self.run(body.line).addCallback(self._ran, key)

    def _ran(self, reply: bytes, key: tuple[int, int]) -> None:
        sender, request_id = key
        self._running.discard(key)
        self._running_by[sender] -= 1
        if not self._running_by[sender]:
            del self._running_by[sender]
        self._answer(sender, request_id, reply)

    def _answer(self, follower: int, request_id: int, reply: bytes) -> None:
        core = self._node.core
        self._peers.send(Message(core.node_id, follower, ForwardResponse(core.term, request_id, reply)))

    def _reject(self, sender: int, request_id: int, reason: str) -> None:
        self.rejected += 1
        self.log.warn(
            "rejected request {id} forwarded by node {peer}: {reason}", id=request_id, peer=sender, reason=reason
        )


@dataclass
class Forwarding:
    """What L{attach_forwarding} attached to a node: both halves."""

    forwarder: WriteForwarder
    executor: ForwardExecutor
    detach: list[Callable[[], None]] = field(default_factory=list)


def attach_forwarding(
    node: Node,
    client_factory: ClientFactory,
    peers: PeerSender,
    clock: IReactorTime,
    *,
    forward_writes: bool,
    channel: ForwardChannel | None = None,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    rng: random.Random | None = None,
) -> Forwarding:
    """
    Give C{node} both halves of write forwarding: it always runs the
    requests its followers forward when it leads, and, if
    C{forward_writes}, the connections C{client_factory} builds from now on
    forward the writes it refuses with Not leader.

    @param channel: the peer links' versions and connections
        (L{PeerLinksChannel} in production); by default every peer takes
        forwarded requests, as in the in-memory cluster.
    """
    executor = ForwardExecutor(node, client_factory, peers)
    forwarder = WriteForwarder(
        node, peers, clock, channel if channel is not None else _AlwaysConnected(), executor.run,
        max_in_flight=max_in_flight, rng=rng,
    )
    node.route(ForwardRequest, executor.receive)
    node.route(ForwardResponse, forwarder.receive)
    node.after_process.append(forwarder.watch)
    if forward_writes:
        client_factory.forwarder = forwarder
    return Forwarding(forwarder, executor)
