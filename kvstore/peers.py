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
"""

from __future__ import annotations

from typing import Callable

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTCP, IReactorTime
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import NetstringReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from kvstore import trace
from kvstore.protocols.peer import encode_hello, encode_message
from kvstore.protocols.sending import send_now
from kvstore.raft.messages import AppendEntries, AppendEntriesResponse, Message

# While the kernel buffer toward a peer is full, queue at most this much in
# Twisted's buffer before dropping messages for that peer.
MAX_BUFFERED_WHILE_PAUSED = 8 * 1024 * 1024


@implementer(IPushProducer)
class PeerClientProtocol(NetstringReceiver):
    """The sending end of a link: says hello, then sends messages.  It
    expects nothing back; any inbound data is ignored."""

    log = Logger()

    def __init__(self, link: "PeerLink") -> None:
        self._link = link
        self.paused = False
        self.buffered_while_paused = 0

    def connectionMade(self) -> None:
        # AppendEntries batches are latency-bound: never wait for Nagle.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        self.transport.registerProducer(self, True)
        self.sendString(self._link.hello)
        self._link.connected(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._link.disconnected(self)

    def dataReceived(self, data: bytes) -> None:
        pass

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

    def buildProtocol(self, addr: IAddress) -> PeerClientProtocol:
        return PeerClientProtocol(self._link)


class PeerLink:
    """The connection state toward one peer."""

    log = Logger()

    def __init__(self, peer_id: int, address: str, hello: bytes) -> None:
        self.peer_id = peer_id
        self.address = address
        self.hello = hello
        self.protocol: PeerClientProtocol | None = None
        self.dropped = 0
        self.sent = 0

    def connected(self, protocol: PeerClientProtocol) -> None:
        self.protocol = protocol
        self.log.info("connected to peer node {peer} at {address}", peer=self.peer_id, address=self.address)

    def disconnected(self, protocol: PeerClientProtocol) -> None:
        if self.protocol is protocol:
            self.protocol = None
            self.log.info("lost connection to peer node {peer} at {address}", peer=self.peer_id, address=self.address)

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
        protocol.sendString(payload)
        self.sent += 1
        if not protocol.paused:
            # A Ready pass sends at most one message per peer in each
            # direction of a write's path: send it now, not next iteration.
            send_now(protocol.transport)


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
    """

    def __init__(
        self,
        reactor: IReactorTCP,
        node_id: int,
        cluster_id: str,
        peers: dict[int, tuple[str, int]],
        clock: IReactorTime | None = None,
        encode: Callable[[Message], bytes] = encode_message,
    ) -> None:
        super().__init__()
        hello = encode_hello(node_id, cluster_id)
        self._encode = encode
        self.links: dict[int, PeerLink] = {}
        for peer_id, (host, port) in sorted(peers.items()):
            link = PeerLink(peer_id, f"{host}:{port}", hello)
            self.links[peer_id] = link
            service = ClientService(
                peer_endpoint(reactor, host, port),
                _LinkFactory(link),
                retryPolicy=backoffPolicy(initialDelay=0.05, maxDelay=1.0, factor=2.0),
                clock=clock or reactor,  # type: ignore[arg-type]
            )
            service.setServiceParent(self)

    def send(self, message: Message) -> None:
        """Send C{message} to its receiver if connected; drop it otherwise."""
        link = self.links.get(message.receiver)
        if link is not None:
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
