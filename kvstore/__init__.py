"""
kvstore: a Raft-replicated key-value store on Twisted.

The package is laid out by responsibility (see docs/architecture.md):
``raft`` is the I/O-free consensus core, ``storage`` the write-ahead log and
metadata, ``protocols`` the client and peer wire formats, ``statemachine`` the
key-value data, ``node`` the glue, and ``service`` the twistd wiring.
"""

__version__ = "0.1.0"
