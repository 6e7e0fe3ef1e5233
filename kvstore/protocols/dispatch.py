# -*- test-case-name: tests.test_protocols_dispatch -*-
"""
One listening port for clients and peers: the first byte decides.

A peer connection starts with a netstring, whose first byte is an ASCII
digit (its length); a client connection starts with a command word, which
never does.  With a snapshot factory, a connection starting with C{S} goes
to it instead (C{SNAPSHOT}, an online backup; it hands C{STATUS} and the
like on to the client protocol: L{kvstore.protocols.backup}).  L{FirstByteDispatcher} waits for that byte, builds the right
protocol, connects it to the same transport and hands it the data, in the
manner of Twisted's HAProxy wrapper.  After that it steps aside: the
transport still calls the dispatcher, but the dispatcher's C{dataReceived}
is rebound to the chosen protocol's, so each later chunk costs one call.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, IHalfCloseableProtocol, IProtocol, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(IHalfCloseableProtocol)
class FirstByteDispatcher(Protocol):
    """
    Chooses the peer or the client protocol from the first byte.

    It accepts half-closed connections (a client such as C{nc -q1} or
    C{nc -N} that shuts down its sending side after its last request): the
    chosen protocol is told with C{readConnectionLost} and may still write
    its replies; a protocol that does not support that is disconnected.
    """

    # Set by makeConnection before any callback runs, and always a TCP (or
    # TCP-like) transport: narrows Protocol's Optional[ITransport].
    transport: ITCPTransport

    def __init__(self, factory: "DispatchFactory", addr: IAddress) -> None:
        self._dispatch_factory = factory
        self._addr = addr
        self.chosen: IProtocol | None = None

    def connectionMade(self) -> None:
        # Replies and acknowledgements are small and latency-bound; Nagle's
        # algorithm would hold them back behind unacknowledged data.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)

    def dataReceived(self, data: bytes) -> None:
        if not data:
            return
        if data[:1].isdigit():
            protocol = self._dispatch_factory.peer_factory.buildProtocol(self._addr)
        elif data[:1] in (b"S", b"s") and self._dispatch_factory.snapshot_factory is not None:
            # SNAPSHOT, or STATUS: kvstore.protocols.backup tells them apart.
            protocol = self._dispatch_factory.snapshot_factory.buildProtocol(self._addr)
        else:
            protocol = self._dispatch_factory.client_factory.buildProtocol(self._addr)
        assert protocol is not None  # our two factories always build one
        self.chosen = protocol
        protocol.makeConnection(self.transport)
        self.dataReceived = protocol.dataReceived  # type: ignore[method-assign]  # the per-chunk fast path (module docstring)
        protocol.dataReceived(data)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]  # Twisted declares reason with a default; ours always gets one
        if self.chosen is not None:
            self.chosen.connectionLost(reason)

    def readConnectionLost(self) -> None:
        self._half_closed("readConnectionLost")

    def writeConnectionLost(self) -> None:
        self._half_closed("writeConnectionLost")

    def _half_closed(self, method: str) -> None:
        chosen = self.chosen
        if chosen is not None and IHalfCloseableProtocol.providedBy(chosen):
            getattr(chosen, method)()
        else:
            self.transport.loseConnection()


class DispatchFactory(Factory):
    """The factory for the node's one listening port."""

    noisy = False

    def __init__(self, client_factory: Factory, peer_factory: Factory, snapshot_factory: Factory | None = None) -> None:
        self.client_factory = client_factory
        self.peer_factory = peer_factory
        #: Builds the protocol of connections whose first byte is C{S}
        #: (L{kvstore.protocols.backup.SnapshotOrClientFactory}); without
        #: it they go to the client factory like the rest.
        self.snapshot_factory = snapshot_factory

    def buildProtocol(self, addr: IAddress | None) -> FirstByteDispatcher:
        return FirstByteDispatcher(self, addr)  # type: ignore[arg-type]  # a listening port always passes the peer's address
