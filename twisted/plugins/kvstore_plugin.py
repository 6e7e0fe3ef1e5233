# -*- test-case-name: tests.test_plugin -*-
"""
The twistd plugin for kvstore: ``twistd kvstore --help``.

Deliberately nothing but a L{ServiceMaker}: it names ``kvstore.daemon.service`` as a
string, so scanning the plugin directory imports no kvstore code and never the
reactor.  This directory must never contain an ``__init__.py``.
"""

from twisted.application.service import ServiceMaker

kvstore = ServiceMaker(
    "kvstore",
    "kvstore.daemon.service",
    "A Raft-replicated key-value store node.",
    "kvstore",
)
