# -*- test-case-name: tests.test_peers -*-
"""
Outbound links to the other members.

One L{twisted.application.internet.ClientService} per peer keeps a
persistent connection, reconnecting with jittered exponential back-off, so a
dead or restarting peer costs a retry now and then, never a blocked reactor.
Sending is best effort: a message for a peer that is not connected, or whose
connection is backed up far beyond what a healthy peer would let happen, is
dropped.  Raft tolerates lost messages (heartbeats and probes retry), and
dropping keeps a stopped or slow peer from growing this node's memory.

A message of a type that only later protocol versions carry (the snapshot
transfer's binary frames) goes only to a peer whose answer to the hello
chose such a version (L{may_send}).  Until the answer arrives it is dropped
like a message to a disconnected peer; a peer that chose an older version
never gets it: the link logs that once per connection and tells the
C{unsendable} observers, so the snapshot sender can report its transfer
failed at once rather than time out.
"""

from __future__ import annotations

import random
from typing import Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTCP, IReactorTime, ITCPTransport
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import NetstringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from kvstore import trace
from kvstore.protocols.peer import (
    MAX_HELLO_BYTES,
    SUPPORTED_VERSIONS,
    PeerRefusal,
    VersionRange,
    WireType,
    decode_answer,
    encode_hello,
    encode_message,
    may_send,
    wire_type_of,
)
from kvstore.protocols.sending import write_now
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, MalformedMessage, Message

# While the kernel buffer toward a peer is full, queue at most this much in
# Twisted's buffer before dropping messages for that peer.
MAX_BUFFERED_WHILE_PAUSED = 8 * 1024 * 1024

#: After the peer refused this node's hello (no protocol version in common),
#: the next attempt waits 1 s, doubling with each consecutive refusal up to
#: this many seconds (plus jitter): see L{retry_policy}.
REFUSED_MAX_DELAY = 30.0


def retry_policy(link: "PeerLink", jitter: Callable[[], float] = random.random) -> Callable[[int], float]:
    """
    The delay before the next attempt to connect C{link}.  Ordinarily 0.05 s
    doubling per failed attempt up to 1 s.  After a refusal it is 1 s
    doubling per consecutive refusal up to L{REFUSED_MAX_DELAY}: a refused
    link's TCP connect succeeded, which resets L{ClientService}'s attempt
    count, so without this it would reconnect about twice a second until an
    operator upgrades a node, each time costing the receiver a warning.
    Both add up to 1 s of jitter.
    """
    ordinary = backoffPolicy(initialDelay=0.05, maxDelay=1.0, factor=2.0, jitter=jitter)
    refused = backoffPolicy(initialDelay=0.5, maxDelay=REFUSED_MAX_DELAY, factor=2.0, jitter=jitter)

    def policy(attempt: int) -> float:
        if link.refusals:
            return refused(link.refusals)
        return ordinary(attempt)

    return policy


@implementer(IPushProducer)
class PeerClientProtocol(NetstringReceiver):
    """
    The sending end of a link: says hello, then sends messages.  The only
    thing it reads is the receiver's answer to the hello: the protocol
    version to use (a receiver of release 1 sends none; the version stays
    the lowest of this node's range) or a refusal.

    @ivar version: the protocol version in use on this connection.
    """

    # Set by makeConnection before any callback runs, and always a TCP (or
    # TCP-like) transport: narrows Protocol's Optional[ITransport].
    transport: ITCPTransport

    # An answer is a small JSON object; nothing else ever comes back.
    MAX_LENGTH = MAX_HELLO_BYTES
    log = Logger()

    def __init__(self, link: "PeerLink") -> None:
        self._link = link
        self.paused = False
        self.buffered_while_paused = 0
        self.version = link.versions.lowest
        self._answered = False
        self._close_logged = False
        self.refused = False
        #: The later-version types this connection has logged as unsendable.
        self.logged_unsendable: set[str] = set()

    @property
    def answered(self) -> bool:
        """Whether the receiver's welcome has arrived, so that L{version} is
        the negotiated version rather than the lowest of this node's range."""
        return self._answered and not self.refused

    def connectionMade(self) -> None:
        # AppendEntries batches are latency-bound: never wait for Nagle.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.transport.registerProducer(self, True)  # type: ignore[attr-defined]  # a TCP transport is also an IConsumer
        self.sendString(self._link.hello)
        self._link.connected(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]  # Twisted declares reason with a default; ours always gets one
        self._link.disconnected(self)

    def stringReceived(self, payload: bytes) -> None:
        if self.brokenPeer:
            return
        try:
            if self._answered:
                raise MalformedMessage("a second answer to the hello")
            self._answered = True
            self.version = decode_answer(payload, self._link.versions)
        except PeerRefusal as e:
            self.refused = True
            self._close_logged = True  # the link logs the refusal (once)
            self._link.refused(str(e))
            self.transport.loseConnection()  # the receiver closes it too
            self.brokenPeer = 1
            return
        except MalformedMessage as e:
            self._close_after_invalid_answer(str(e))
            return
        self._link.negotiated(self.version)

    def dataReceived(self, data: bytes) -> None:
        if self.brokenPeer:
            return  # closing; ignore what is still arriving
        super().dataReceived(data)
        if self.brokenPeer and not self._close_logged:
            # NetstringReceiver found bad framing or an over-long length
            # prefix (refused before buffering) and closed the connection.
            self._log_invalid_answer("invalid netstring framing or length over the limit")

    def _close_after_invalid_answer(self, reason: str) -> None:
        self._log_invalid_answer(reason)
        self.transport.loseConnection()
        self.brokenPeer = 1

    def _log_invalid_answer(self, reason: str) -> None:
        self._close_logged = True
        self._link.log.warn(
            "closing the connection to peer node {peer}: invalid answer to the hello: {reason}",
            peer=self._link.peer_id,
            reason=reason,
        )

    # IPushProducer: the transport tells us when its buffer is full.
    def pauseProducing(self) -> None:
        self.paused = True
        self.buffered_while_paused = 0

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        self.paused = True


class _LinkFactory(Factory):

    noisy = False
    def __init__(self, link: "PeerLink") -> None:
        self._link = link

    def buildProtocol(self, addr: IAddress | None) -> PeerClientProtocol:
        return PeerClientProtocol(self._link)


class PeerLink:
    """
    The connection state toward one peer.  C{hello} must announce
    C{versions}, the protocol versions this node speaks.
    """

    log = Logger()

    def __init__(self, peer_id: int, address: str, hello: bytes, versions: VersionRange = SUPPORTED_VERSIONS) -> None:
        self.peer_id = peer_id
        self.address = address
        self.hello = hello
        self.versions = versions
        self.protocol: PeerClientProtocol | None = None
        self.dropped = 0
        self.sent = 0
        self._last_refusal: str | None = None
        #: How many connections in a row the peer refused (see L{retry_policy}).
        self.refusals = 0
        #: When the link's back-off ends (C{clock.seconds()}), set as each wait
        #: begins: until then the link waits, afterwards an attempt is under
        #: way or it is connected (L{PeerLinks.reconnect_now}).
        self.retry_at = 0.0

    @property
    def version(self) -> int | None:
        """The protocol version in use toward the peer, or C{None} while not
        connected.  A sender may send a message type only if
        L{kvstore.protocols.peer.may_send} allows it at this version."""
        protocol = self.protocol
        return protocol.version if protocol is not None else None

    def connected(self, protocol: PeerClientProtocol) -> None:
        self.protocol = protocol
        self.log.info("connected to peer node {peer} at {address}", peer=self.peer_id, address=self.address)

    def negotiated(self, version: int) -> None:
        self._last_refusal = None
        self.log.info("peer node {peer} speaks peer protocol version {version} with this node",
                      peer=self.peer_id, version=version)

    def refused(self, reason: str) -> None:
        self.refusals += 1
        # The link keeps reconnecting (less and less often, see
        # retry_policy): log a refusal when it first happens or changes, not
        # at every attempt.
        if reason != self._last_refusal:
            self._last_refusal = reason
            self.log.warn("peer node {peer} at {address} refused this node's connection: {reason}",
                          peer=self.peer_id, address=self.address, reason=reason)

    def disconnected(self, protocol: PeerClientProtocol) -> None:
        if not protocol.refused:
            self.refusals = 0  # the peer accepted, or at least did not refuse
        if self.protocol is protocol:
            self.protocol = None
            self.log.info("lost connection to peer node {peer} at {address}", peer=self.peer_id, address=self.address)

    def allows(self, wire_type: WireType) -> bool | None:
        """
        Whether a message of C{wire_type} may go to the peer now: C{True} if
        the negotiated version allows it, C{False} if the peer chose a
        version that does not (logged once per connection), C{None} if that
        is not known yet (not connected, or the welcome has not arrived):
        the message is dropped, as one to a disconnected peer.
        """
        protocol = self.protocol
        if protocol is None or not protocol.answered:
            return None
        if may_send(wire_type, protocol.version):
            return True
        if wire_type.name not in protocol.logged_unsendable:
            protocol.logged_unsendable.add(wire_type.name)
            self.log.warn(
                "not sending {type} messages to peer node {peer}: it speaks peer protocol version {version} with"
                " this node, and they need version {since} or later (upgrade node {peer})",
                type=wire_type.name,
                peer=self.peer_id,
                version=protocol.version,
                since=wire_type.since,
            )
        return False

    def send(self, payload: bytes) -> None:
        protocol = self.protocol
        if protocol is None:
            self.dropped += 1
            return
        if protocol.paused:
            if protocol.buffered_while_paused > MAX_BUFFERED_WHILE_PAUSED:
                self.dropped += 1
                return
            protocol.buffered_while_paused += len(payload)
        # The netstring, built here rather than by sendString so that it is
        # one write (and, sent at once, one system call).
        frame = b"%d:%s," % (len(payload), payload)
        self.sent += 1
        if protocol.paused:
            protocol.transport.write(frame)
        else:
            # A Ready pass sends at most one message per peer in each
            # direction of a write's path: send it now, not next iteration.
            write_now(protocol.transport, frame)


def peer_endpoint(reactor: IReactorTCP, host: str, port: int) -> IStreamClientEndpoint:
    """An endpoint for C{host:port}; IP literals skip name resolution."""
    if isIPAddress(host):
        return TCP4ClientEndpoint(reactor, host, port, timeout=5)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(reactor, host, port, timeout=5)
    return HostnameEndpoint(reactor, host, port, timeout=5)


class PeerLinks(MultiService):
    """
    All outbound links of a node, as one service; implements the node's
    C{PeerSender}.

    @ivar unsendable: observers C{f(message)} told of each message that was
        not sent because its receiver negotiated a protocol version that
        cannot carry it (the snapshot transfer fails its transfer at once).
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        node_id: int,
        cluster_id: str,
        peers: dict[int, tuple[str, int]],
        clock: IReactorTime | None = None,
        encode: Callable[[Message], bytes] = encode_message,
        address: str | None = None,
    ) -> None:
        super().__init__()
        # The hello names this node's advertised address, so that a peer
        # whose configuration does not know it yet can link back.
        self._hello = encode_hello(node_id, cluster_id, address=address)
        self._reactor = reactor
        self._clock = clock
        self._encode = encode
        self.unsendable: list[Callable[[Message], None]] = []
        self.links: dict[int, PeerLink] = {}
        self._services: dict[int, ClientService] = {}
        for peer_id, (host, port) in sorted(peers.items()):
            self.add(peer_id, host, port)

    def add(self, peer_id: int, host: str, port: int) -> None:
        """Keep a link to C{peer_id} at C{host:port} from now on (a member
        that joined; issue 13); started at once if the links run."""
        link = PeerLink(peer_id, f"{host}:{port}", self._hello)
        self.links[peer_id] = link
        clock: IReactorTime = self._clock or self._reactor  # type: ignore[assignment]  # the reactor provides IReactorTime, its declared type does not say so
        policy = retry_policy(link)

        def waiting(attempt: int) -> float:
            # ClientService asks right before it starts waiting this long.
            delay = policy(attempt)
            link.retry_at = clock.seconds() + delay
            return delay

        service = ClientService(
            peer_endpoint(self._reactor, host, port),
            _LinkFactory(link),
            retryPolicy=waiting,
            clock=clock,
        )
        self._services[peer_id] = service
        service.setServiceParent(self)

    def remove(self, peer_id: int) -> None:
        """Close and forget the link to C{peer_id} (a member removed)."""
        self.links.pop(peer_id, None)
        service = self._services.pop(peer_id, None)
        if service is not None:
            service.disownServiceParent()  # stops it (closing the connection) if running

    def reconnect_now(self, peer_id: int) -> bool:
        """
        The peer C{peer_id} has just connected to this node (its hello was
        accepted): if this node's own link to it is down, try it now rather
        than when its back-off ends (up to 1 s plus 1 s of jitter after a
        peer was down for a while, see L{retry_policy}), since this node's
        messages to the peer (a restarted follower's heartbeats and read
        answers) go only through that link.  Only a link waiting out its
        back-off is retried, once: not one whose attempt is under way.
        Return whether it was retried.
        """
        link = self.links.get(peer_id)
        service = self._services.get(peer_id)
        if link is None or service is None or link.protocol is not None or not service.running or link.refusals:
            return False
        clock: IReactorTime = self._clock or self._reactor  # type: ignore[assignment]  # see add
        if clock.seconds() >= link.retry_at:
            # Not waiting: an attempt is under way.  Cancelling it for a new
            # one only restarts the handshake, and a burst of hellos (from
            # anybody who names a member) would keep the link from coming up.
            return False
        link.retry_at = 0.0
        service.stopService()  # cancels the wait ...
        service.startService()  # ... and connects again at once
        return True

    def connected(self, peer_id: int) -> bool:
        """Whether the link to C{peer_id} is connected and answered."""
        link = self.links.get(peer_id)
        return link is not None and link.protocol is not None and link.protocol.answered

    def send(self, message: Message) -> None:
        """Send C{message} to its receiver if connected and the negotiated
        protocol version carries it; drop it otherwise."""
        link = self.links.get(message.receiver)
        if link is not None:
            wire_type = wire_type_of(message)
            if wire_type is not None:
                allowed = link.allows(wire_type)
                if not allowed:
                    link.dropped += 1
                    if allowed is False:
                        for observer in self.unsendable:
                            observer(message)
                    return
            payload = self._encode(message)
            if trace.ENABLED:
                _trace_sent(message)
            link.send(payload)


def _trace_sent(message: Message) -> None:
    """Trace new entries leaving the leader and acknowledgements leaving a
    follower (heartbeats are not stages of a write)."""
    body = message.body
    if type(body) is AppendEntries and body.entries:
        trace.record("ae.sent", body.entries[-1][0])
    elif type(body) is AppendEntriesResponse and body.success:
        trace.record("ack.sent", body.index)
