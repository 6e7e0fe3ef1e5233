# -*- test-case-name: tests.test_client_blocking -*-
"""
kvstore's client library.

    from kvstore.client import Client, KeyNotFound

    with Client(["127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5002"], timeout=5) as kv:
        kv.put("greeting", "hello world")
        print(kv.get("greeting"))

L{Client} blocks and may be shared by threads (their calls are pipelined
on one connection); L{kvstore.client.deferred.DeferredClient} has the same
methods returning Deferreds.  Both find the leader from any listed node,
follow C{Not leader} replies, and retry only what is known not to have been
applied.  See C{docs/client.md}.
"""

from kvstore.client import errors
from kvstore.client.blocking import Client
from kvstore.client.errors import (
    BadRequest,
    CasFailed,
    ClientError,
    ConnectionFailed,
    KeyNotFound,
    NoLeader,
    NotApplied,
    OutcomeUnknown,
    ProtocolError,
    Unavailable,
)

# The client and every error class, listed once (in errors.__all__).
__all__ = ["Client", *errors.__all__]
