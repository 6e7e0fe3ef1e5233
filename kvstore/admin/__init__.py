# -*- test-case-name: tests.test_admin_http -*-
"""
The admin HTTP endpoint (C{--admin-listen}): Prometheus metrics, health
checks and a JSON status, served with twisted.web next to the client/peer
listener, under the node's service.

  - L{kvstore.admin.metrics}: the metric definitions, one registry per node,
    and the events the node reports (L{kvstore.node.monitoring.NodeMetrics});
  - L{kvstore.admin.collector}: what is read from the node when scraped;
  - L{kvstore.admin.instruments}: the counting wrappers around the node's
    client service, peer sender and WAL file system, and the reactor-lag
    probe;
  - L{kvstore.admin.health}: the C{/livez} and C{/readyz} checks;
  - L{kvstore.admin.web}: the HTTP resources;
  - L{kvstore.admin.view}: the read-only view of the node they all read;
  - L{kvstore.admin.wiring}: where a node's builder lets them in (and, with
    the endpoint off, leaves the node untouched);
  - L{kvstore.admin.endpoint}: the instruments and HTTP site of one node.

Everything runs on the reactor thread but the fsync timer, which observes a
(thread-safe) histogram from the WAL's thread.  Scrapes render on the
reactor thread too: reading the node's state needs no lock that way, and a
rendering costs about a millisecond (docs/operations.md, "Monitoring").
"""
