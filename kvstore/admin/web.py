# -*- test-case-name: tests.test_admin_http -*-
"""
The admin endpoint's HTTP resources (twisted.web):

  - C{/metrics}: the node's registry in Prometheus' text format (or
    OpenMetrics, if the scraper asks for it), rendered on the reactor
    thread.  prometheus_client's own Twisted resource renders in a thread
    pool, where reading the node's state would race with the reactor; a
    rendering costs about a millisecond, which the reactor can spare every
    few seconds.
  - C{/livez}, C{/readyz}: C{200 ok} or C{503} listing the failed checks;
    with C{?verbose}, every check as C{[+]name ok} or C{[-]name failed:
    reason}, as Kubernetes and etcd do; C{?exclude=NAME} (repeatable) skips
    a check.
  - C{/status}: the C{STATUS} fields and the membership, as JSON.
"""

from __future__ import annotations

import json
from typing import Callable
from urllib.parse import parse_qs, urlsplit

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Site

from kvstore import __version__
from kvstore.admin.health import Check, HealthChecks
from kvstore.admin.view import NodeView

__all__ = ["AdminSite", "HealthPage", "MetricsPage", "StatusPage", "admin_root"]

_TEXT = b"text/plain; charset=utf-8"


class MetricsPage(Resource):
    """C{/metrics}: C{registry}, rendered on the reactor thread."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request: Request) -> bytes:
        accept = request.getHeader("accept") or ""
        encoder, content_type = choose_encoder(accept)
        request.setHeader(b"content-type", content_type.encode("ascii"))
        return encoder(self._registry)


def query_arguments(request: Request) -> dict[str, list[str]]:
    """
    The request's query arguments, bare names included (C{?verbose} gives
    C{{"verbose": [""]}}): twisted.web's own C{request.args} drops a name
    without C{=}.
    """
    query = urlsplit(request.uri.decode("utf-8", "replace")).query
    return parse_qs(query, keep_blank_values=True)


def format_checks(kind: str, checks: list[Check], verbose: bool, excluded: frozenset[str] = frozenset()) -> str:
    """
    The body of a health page: C{ok} when every check passed and not
    C{verbose}; otherwise one line per check (only the failed ones unless
    C{verbose}) and a last line saying whether the whole passed.
    """
    passed = all(check.ok for check in checks if check.name not in excluded)
    if passed and not verbose:
        return "ok\n"
    lines = []
    for check in checks:
        if check.name in excluded:
            lines.append(f"[+]{check.name} excluded: ok")
        elif check.ok:
            if verbose:
                lines.append(f"[+]{check.name} ok")
        else:
            lines.append(f"[-]{check.name} failed: {check.reason}")
    lines.append(f"{kind} check {'passed' if passed else 'failed'}")
    return "\n".join(lines) + "\n"


class HealthPage(Resource):
    """C{/livez} or C{/readyz}: C{checks()} as C{200} or C{503}."""

    isLeaf = True

    def __init__(self, kind: str, checks: Callable[[], Deferred[list[Check]]]) -> None:
        super().__init__()
        self._kind = kind
        self._checks = checks

    def render_GET(self, request: Request) -> int:
        arguments = query_arguments(request)
        verbose = "verbose" in arguments
        excluded = frozenset(arguments.get("exclude", ()))
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def respond(checks: list[Check]) -> None:
            if gone:
                return  # the client went away
            passed = all(check.ok for check in checks if check.name not in excluded)
            request.setResponseCode(200 if passed else 503)
            request.setHeader(b"content-type", _TEXT)
            request.write(format_checks(self._kind, checks, verbose, excluded).encode("utf-8"))
            request.finish()

        def failed(failure: Failure) -> None:
            if gone:
                return
            request.setResponseCode(500)
            request.setHeader(b"content-type", _TEXT)
            request.write(f"{self._kind} check could not run: {failure.getErrorMessage()}\n".encode("utf-8"))
            request.finish()

        self._checks().addCallbacks(respond, failed)
        return NOT_DONE_YET


def status_document(view: NodeView) -> dict[str, object]:
    """
    C{/status}: the C{STATUS} fields with JSON types (C{leader} a number or
    C{null}), the kvstore version, and C{members} as a list of
    C{{id, address, voter, self, connected}} (C{connected}: this node's
    outbound link to that member; C{null} for itself).
    """
    document = dict(view.status())
    leader = view.leader_id
    document["leader"] = leader
    document["version"] = __version__
    members = []
    # The current configuration's members (issue 13), not the command
    # line's; a joining node's configuration is empty until it is told.
    configuration = view.node.core.configuration
    voters = configuration.voter_ids
    current = {
        node: address or view.members.get(node, "") for node, address, _ in configuration.members()
    } or dict(view.members)
    for member_id, address in sorted(current.items()):
        link = view.links.get(member_id)
        members.append(
            {
                "id": member_id,
                "address": address,
                "voter": member_id in voters,
                "self": member_id == view.node_id,
                "connected": None if link is None else link.protocol is not None,
            }
        )
    document["members"] = members
    return document


class StatusPage(Resource):
    """C{/status}: L{status_document} as JSON."""

    isLeaf = True

    def __init__(self, view: NodeView) -> None:
        super().__init__()
        self._view = view

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        return json.dumps(status_document(self._view), indent=2, default=str).encode("utf-8") + b"\n"


class _Index(Resource):
    """C{/}: what this endpoint serves."""

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"":
            return self
        return notFound()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", _TEXT)
        return (
            b"kvstore admin endpoint\n"
            b"/metrics  Prometheus metrics\n"
            b"/livez    liveness (?verbose)\n"
            b"/readyz   readiness (?verbose, ?exclude=CHECK)\n"
            b"/status   node status and membership (JSON)\n"
        )


def admin_root(registry: CollectorRegistry, checks: HealthChecks, view: NodeView) -> Resource:
    """The resource tree of the admin endpoint."""
    root = _Index()
    root.putChild(b"metrics", MetricsPage(registry))
    root.putChild(b"livez", HealthPage("livez", checks.livez))
    root.putChild(b"readyz", HealthPage("readyz", checks.readyz))
    root.putChild(b"status", StatusPage(view))
    return root


class AdminSite(Site):
    """
    A L{Site} that writes no access log (a scraper every few seconds would
    fill the node's log) and says nothing when it starts or stops.
    """

    noisy = False
    displayTracebacks = False

    def log(self, request: Request) -> None:
        pass
