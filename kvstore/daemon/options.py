# -*- test-case-name: tests.test_options -*-
"""
Command-line options for ``twistd kvstore``, validated into a L{NodeConfig}.

This module is pure: it parses and checks strings and builds a frozen
configuration object, and never imports the reactor, opens a file (but the
C{--config} file, through L{kvstore.daemon.config_file}) or touches the network.  Everything a node needs to know about itself and its cluster is
decided here, once, so that the rest of the program receives values that are
already known to be consistent (for example, election timeouts that are long
enough compared with the heartbeat interval, and a membership in which every
node id and every address is unique).

Peer ids follow a documented convention so that the seed's command lines keep
working: when ids are not written explicitly, the full membership (this node
plus its peers) is sorted by ``(host, port)`` and the ids are the positions
``0..N-1`` in that order.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import sys
import textwrap
from dataclasses import dataclass
from typing import Sequence

from twisted.python import usage

from kvstore.daemon.config_file import CommandLineConfig, from_command_line, with_absolute_config
from kvstore.daemon.log_format import parse_level
from kvstore.daemon.socket_activation import is_systemd_description, parse_description
from kvstore.protocols.commands import PUT_OVERHEAD_BYTES
from kvstore.raft.config import RaftConfig
from kvstore.protocols.peer import (
    CLIENT_TEXT_EXPANSION,
    MAX_ENTRIES_BYTES,
    MAX_MESSAGE_BYTES,
    largest_put_entry_bytes,
)

__all__ = [
    "NodeConfig",
    "Options",
    "PeerAddress",
    "parse_config",
    "parse_peers",
]

_DEFAULT_HOST = "127.0.0.1"
_DEFAULT_PORT = 5000
_DEFAULT_HEARTBEAT_MS = 100.0
_DEFAULT_ELECTION_MS = "1000-2000"
_DEFAULT_TIMEOUT_S = 5.0
_DEFAULT_KEY_BYTES = 1024
_DEFAULT_VALUE_BYTES = 65536
_LINE_OVERHEAD_BYTES = 64
_DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
#: The Raft core's defaults, which the options keep.
_RAFT_DEFAULTS = RaftConfig(node_id=0)
#: How RaftConfig's messages name its fields, as options.
_RAFT_FIELD_OPTIONS = (
    ("election_timeout_min", "--election-timeout minimum"),
    ("election_timeout_max", "--election-timeout maximum"),
    ("heartbeat_interval", "--heartbeat-interval"),
    ("max_append_bytes", "--max-append-bytes"),
    ("max_entries_bytes", "the largest peer message's entries"),
    ("max_append_entries", "--max-append-entries"),
    ("max_inflight", "--max-inflight"),
    ("max_apply_batch", "--max-apply-batch"),
)
_MIN_SEGMENT_BYTES = 4096
#: When a node snapshots its state machine and how much log it keeps after
#: (issue 12): every 10,000 applied entries or 64 MiB of log, whichever
#: comes first, keeping 5,000 entries for followers that lag briefly.
_DEFAULT_SNAPSHOT_ENTRIES = 10_000
_DEFAULT_SNAPSHOT_BYTES = 64 * 1024 * 1024
_DEFAULT_SNAPSHOT_CATCHUP_ENTRIES = 5_000
_MIN_SNAPSHOT_BYTES = 4096

# Hosts that can be bound but never advertised: a peer cannot connect to them.
_WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", "[::]", "*"})
_HOST_RE = re.compile(r"^[A-Za-z0-9._:%-]+$")
_CLUSTER_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgG](?:i?[bB])?|[bB])?\s*$")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def format_address(host: str, port: int) -> str:
    """
    Format C{host} and C{port} as C{"host:port"}, bracketing IPv6 literals
    (C{"[::1]:5000"}) so that the result parses back unambiguously.
    """
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host}:{port}"


@dataclass(frozen=True, order=True)
class PeerAddress:
    """
    One member of the cluster: its Raft node id and the address that clients
    and peers use to reach it.
    """

    node_id: int
    host: str
    port: int

    @property
    def address(self) -> str:
        """
        The advertised address, C{"host:port"} (IPv6 in brackets).
        """
        return format_address(self.host, self.port)

    def __str__(self) -> str:
        return f"{self.node_id}@{self.address}"


@dataclass(frozen=True)
class NodeConfig:
    """
    The validated configuration of one node.

    Durations are in seconds.  C{peers} excludes this node and is sorted by
    node id; C{members} is the full membership.  C{listen} is a Twisted
    server endpoint description, resolved by the service with
    C{serverFromString}.  C{raft} holds the Raft core's timers and
    replication limits, validated by L{RaftConfig.validate}.
    C{admin_listen} is the admin HTTP endpoint's description (metrics and
    health, L{kvstore.admin}), or L{None} when it is off (the default).
    """

    node_id: int
    host: str
    port: int
    listen: str
    peers: tuple[PeerAddress, ...]
    cluster_id: str
    data_dir: str
    raft: RaftConfig
    commit_timeout: float
    read_timeout: float
    max_line_bytes: int
    max_key_bytes: int
    max_value_bytes: int
    segment_bytes: int
    fsync: bool
    snapshot_entries: int = _DEFAULT_SNAPSHOT_ENTRIES
    snapshot_bytes: int = _DEFAULT_SNAPSHOT_BYTES
    snapshot_catchup_entries: int = _DEFAULT_SNAPSHOT_CATCHUP_ENTRIES
    admin_listen: str | None = None
    #: --join: members of an existing cluster to ask to add this node
    #: (issue 13), as (host, port); empty for a node that bootstraps.
    join: tuple[tuple[str, int], ...] = ()
    #: Whether cluster_id was derived from the membership (no --cluster-id):
    #: a data directory's recorded cluster id, or the one a joined cluster
    #: has, then takes its place.
    cluster_id_derived: bool = False
    forward_writes: bool = False

    @property
    def address(self) -> str:
        """
        The address this node advertises, C{"host:port"}.
        """
        return format_address(self.host, self.port)

    @property
    def me(self) -> PeerAddress:
        """
        This node as a L{PeerAddress}.
        """
        return PeerAddress(self.node_id, self.host, self.port)

    @property
    def members(self) -> tuple[PeerAddress, ...]:
        """
        The full membership (this node and its peers), sorted by node id.
        """
        return tuple(sorted(self.peers + (self.me,)))


# ---------------------------------------------------------------------------
# Parsing helpers.  Each raises usage.UsageError with a message that names the
# option and the offending value.


def _parse_int(option: str, text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise usage.UsageError(f"--{option} must be an integer, not {text!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise usage.UsageError(f"--{option} must be {bound}, not {value}")
    return value


def _parse_positive_float(option: str, text: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise usage.UsageError(f"--{option} must be a number, not {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise usage.UsageError(f"--{option} must be a positive finite number, not {text!r}")
    return value


def _parse_size(option: str, text: str, minimum: int) -> int:
    """
    Parse a byte count: a plain integer or one with a binary unit suffix
    (C{k}/C{KiB}, C{M}/C{MiB}, C{G}/C{GiB}; all powers of 1024).
    """
    match = _SIZE_RE.match(str(text))
    if match is None:
        raise usage.UsageError(
            f"--{option} must be a byte count such as 65536 or 64MiB, not {text!r}"
        )
    number, unit = match.groups()
    value = int(number) * _SIZE_UNITS[(unit or "")[:1].lower()]
    if value < minimum:
        raise usage.UsageError(f"--{option} must be at least {minimum} bytes, not {value}")
    return value


def _parse_port(what: str, text: str) -> int:
    text = text.strip()
    if not text.isdigit():
        raise usage.UsageError(f"{what}: port must be a number, not {text!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise usage.UsageError(f"{what}: port must be between 1 and 65535, not {port}")
    return port


def _check_host(what: str, host: str) -> str:
    if not host or not _HOST_RE.match(host):
        raise usage.UsageError(f"{what}: invalid host {host!r}")
    if host in _WILDCARD_HOSTS:
        raise usage.UsageError(
            f"{what}: {host!r} is a wildcard address that peers and clients "
            f"cannot connect to; give a reachable address, and use "
            f"--listen (e.g. tcp:5000:interface=0.0.0.0) to bind all interfaces"
        )
    return host


def _parse_hostport(item: str, option: str = "--peers") -> tuple[str, int]:
    """
    Parse C{PORT}, C{HOST:PORT} or C{[IPV6]:PORT}, an item of C{option}.
    A bare port means 127.0.0.1, as in the seed's C{--peers 5001,5002}.
    """
    what = f"{option} item {item!r}"
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise usage.UsageError(f"{what}: expected [IPV6]:PORT")
        return _check_host(what, host), _parse_port(what, rest[1:])
    if ":" not in item:
        return _DEFAULT_HOST, _parse_port(what, item)
    if item.count(":") > 1:
        raise usage.UsageError(f"{what}: write IPv6 addresses in brackets, [::1]:5000")
    host, _, port = item.partition(":")
    return _check_host(what, host), _parse_port(what, port)


def parse_peers(
    text: str, node_id: int, host: str, port: int
) -> tuple[PeerAddress, ...]:
    """
    Parse a C{--peers} value for the node C{node_id} at C{host:port}.

    Items are separated by commas and are each C{PORT}, C{HOST:PORT},
    C{ID@PORT} or C{ID@HOST:PORT}.  Either every item has an explicit id or
    none has; in the latter case ids are assigned by the sorted-membership
    convention described in the module docstring, and this node's position
    must equal C{node_id}.

    @return: the peers (not including this node), sorted by node id.

    @raise usage.UsageError: on syntax errors, mixed explicit and implicit
        ids, duplicate ids or addresses, or a position that does not match
        C{node_id}.
    """
    items = [item.strip() for item in text.split(",")] if text.strip() else []
    parsed: list[tuple[int | None, str, int]] = []
    for item in items:
        if not item:
            raise usage.UsageError(f"--peers {text!r} contains an empty item")
        explicit_id: int | None = None
        if "@" in item:
            id_text, _, rest = item.partition("@")
            explicit_id = _parse_int(f"peers item {item!r}: id", id_text, 0)
            item = rest
        peer_host, peer_port = _parse_hostport(item)
        parsed.append((explicit_id, peer_host, peer_port))

    addresses = [(host, port)] + [(h, p) for _, h, p in parsed]
    seen: set[tuple[str, int]] = set()
    for address in addresses:
        if address in seen:
            raise usage.UsageError(
                f"address {format_address(*address)} appears more than once "
                f"in --host/--port and --peers"
            )
        seen.add(address)

    explicit = [peer_id is not None for peer_id, _, _ in parsed]
    if any(explicit) and not all(explicit):
        raise usage.UsageError(
            "--peers mixes explicit ids (ID@HOST:PORT) with implicit ones; "
            "give an id for every peer or for none"
        )

    if all(explicit):  # also true when there are no peers at all
        peers = [PeerAddress(i, h, p) for i, h, p in parsed if i is not None]
        ids = [node_id] + [peer.node_id for peer in peers]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise usage.UsageError(
                f"node id {duplicates[0]} is used more than once in --node-id and --peers"
            )
        return tuple(sorted(peers))

    ordered = sorted(addresses)
    position = ordered.index((host, port))
    if position != node_id:
        raise usage.UsageError(
            f"--node-id {node_id} does not match this node's position {position} "
            f"in the membership sorted by (host, port) "
            f"({', '.join(format_address(*a) for a in ordered)}); "
            f"use --node-id {position}, or give every peer an explicit id "
            f"with ID@HOST:PORT"
        )
    return tuple(
        PeerAddress(index, h, p)
        for index, (h, p) in enumerate(ordered)
        if (h, p) != (host, port)
    )


def derive_cluster_id(members: Sequence[PeerAddress]) -> str:
    """
    Derive a cluster id from the membership: the first 16 hex digits of the
    SHA-256 of the C{id@host:port} items, sorted by id and joined by commas.

    Every node of a cluster computes the same value from its own command line,
    and two clusters with different members get different ids, so their
    nodes refuse to talk to each other.
    """
    canonical = ",".join(str(member) for member in sorted(members))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _check_entry_fits_a_message(max_key: int, max_value: int) -> None:
    """
    Refuse key and value limits that would accept a write too large to
    replicate: its log entry, JSON-escaped (up to twice the size of the
    text), must fit in one peer message, or every AppendEntries carrying it
    is refused by the followers and the cluster stalls on that entry.
    """
    if largest_put_entry_bytes(max_key, max_value) <= MAX_ENTRIES_BYTES:
        return
    room = MAX_ENTRIES_BYTES - largest_put_entry_bytes(max_key, 0)
    largest_value = room // CLIENT_TEXT_EXPANSION
    advice = (
        f"use --max-value-bytes {largest_value} or less"
        if largest_value >= 1
        else "use a smaller --max-key-bytes"
    )
    raise usage.UsageError(
        f"--max-key-bytes {max_key} and --max-value-bytes {max_value} allow a write "
        f"whose replicated entry, JSON-escaped, can exceed the peer message limit "
        f"({MAX_MESSAGE_BYTES} bytes) and could never be replicated; {advice}"
    )


def _parse_election_timeout(text: str) -> tuple[float, float]:
    low, sep, high = str(text).partition("-")
    if not sep:
        raise usage.UsageError(
            f"--election-timeout must be MIN-MAX in milliseconds (e.g. 1000-2000), not {text!r}"
        )
    return (
        _parse_positive_float("election-timeout (minimum)", low),
        _parse_positive_float("election-timeout (maximum)", high),
    )


def _raft_config(**fields: object) -> RaftConfig:
    """
    The Raft core's configuration, checked by L{RaftConfig.validate} (the
    one place its rules live), its messages naming the options.
    """
    config = RaftConfig(**fields)  # type: ignore[arg-type]  # the callers pass RaftConfig's own fields; **object hides their types
    try:
        config.validate()
    except ValueError as e:
        message = str(e)
        for field_name, option in _RAFT_FIELD_OPTIONS:
            message = message.replace(field_name, option)
        raise usage.UsageError(message) from None
    return config


def _default_listen(host: str, port: int) -> str:
    if ":" in host:
        return "tcp6:{}:interface={}".format(port, host.replace(":", "\\:"))
    return f"tcp:{port}:interface={host}"


def _check_listen(description: str, option: str = "--listen") -> str:
    """
    Check that C{description} parses as a Twisted server endpoint
    description, without a reactor.

    This uses Twisted's own description parser (a private helper of
    L{twisted.internet.endpoints}).  It checks the syntax, the endpoint type
    (including plugin types) and, for C{tcp}, C{unix} and C{ssl}, the
    arguments; the service builds the real endpoint with C{serverFromString}
    and reports anything left.  C{systemd} descriptions are kvstore's own
    (L{kvstore.daemon.socket_activation}): checked here, and whether systemd passed
    the socket is checked by the service.
    """
    if not description.strip():
        raise usage.UsageError(f"{option} must not be empty")
    if is_systemd_description(description):  # kvstore's own (kvstore.daemon.socket_activation)
        try:
            parse_description(description)
        except ValueError as e:
            raise usage.UsageError(f"{option} {description!r}: {e}") from None
        return description
    from twisted.internet import endpoints

    parse = getattr(endpoints, "_parseServer", None)
    if parse is None:  # pragma: no cover - Twisted changed its internals
        return description
    try:
        parse(description, None)
    except Exception as e:
        raise usage.UsageError(
            f"{option} {description!r} is not a valid endpoint description: {e}"
        )
    return description


def _format_paragraphs(text: str, width: int) -> str:
    """
    Wrap each paragraph of C{text} (separated by blank lines) to C{width},
    leaving indented lines, such as examples, as they are.
    """
    out: list[str] = []
    for paragraph in text.strip().split("\n\n"):
        prose: list[str] = []
        for line in paragraph.splitlines():
            if line.startswith(" "):
                out.extend(textwrap.wrap(" ".join(prose), width))
                prose = []
                out.append(line)
            else:
                prose.append(line)
        out.extend(textwrap.wrap(" ".join(prose), width))
        out.append("")
    return "\n".join(out)


class Options(usage.Options):
    """
    Options of the C{kvstore} twistd plugin.  After parsing, C{self.config}
    holds the validated L{NodeConfig}.
    """

    synopsis = "[options]"

    longdesc = """\
Run one node of a kvstore cluster: a Raft-replicated key-value store.

Members and ids.  --peers lists the other members, separated by commas, as
PORT (meaning 127.0.0.1:PORT), HOST:PORT or [IPV6]:PORT, optionally prefixed
by an explicit node id: ID@HOST:PORT or ID@PORT.  Give an id for every peer or
for none.  Without ids, the full membership (this node plus its peers) is
sorted by (host, port) and the ids are the positions 0..N-1 in that order;
this node's position must then equal --node-id.  Every node of a cluster
must list the same members with the same hosts (do not mix "localhost" and
"127.0.0.1").

Examples, a three-node cluster on one machine:
  twistd -n kvstore --node-id 0 --port 5000 --peers 5001,5002
  twistd -n kvstore --node-id 1 --port 5001 --peers 5000,5002
  twistd -n kvstore --node-id 2 --port 5002 --peers 5000,5001
and on three machines, with explicit ids:
  twistd -n kvstore --node-id 1 --host 10.0.0.2 --port 5000 \\
         --peers 0@10.0.0.1:5000,2@10.0.0.3:5000

Byte counts accept binary suffixes: 64k, 64KiB, 8M, 1GiB.
"""

    optFlags = [
        [
            "unsafe-no-fsync",
            None,
            "UNSAFE, for benchmark comparison only: never fsync the log or "
            "the metadata.  A power failure or kernel crash can lose "
            "acknowledged writes or let a node vote twice in one term, "
            "which breaks Raft's safety for the whole cluster.",
        ],
        [
            "no-pre-vote",
            None,
            "Start real elections at once, without the Pre-Vote round (which "
            "keeps a node that was cut off from disrupting a healthy leader "
            "with a higher term when it returns).",
        ],
        [
            "forward-writes",
            None,
            "On a follower, forward a write it would refuse with 'Not leader' "
            "(PUT, DELETE, and any other replicated command) to the leader "
            "over the peer link and reply with the leader's answer, so "
            "clients may send writes to any node.  Default: off (the "
            "follower replies 'Error: Not leader. ...').",
        ],
    ]

    optParameters = [
        ["node-id", None, "0", "This node's Raft id, an integer >= 0."],
        [
            "host",
            None,
            _DEFAULT_HOST,
            "Address this node binds to (unless --listen is given) and "
            "advertises to peers and clients; must be reachable by them.",
        ],
        [
            "port",
            None,
            str(_DEFAULT_PORT),
            "TCP port for clients and peers (both use one port); also advertised.",
        ],
        [
            "listen",
            None,
            None,
            "Twisted server endpoint description to listen on, replacing the "
            "default tcp:<port>:interface=<host>; e.g. "
            "tcp:5000:interface=0.0.0.0, or systemd to adopt the socket "
            "passed by a systemd .socket unit (systemd:name=NAME if several). "
            "--host and --port are still what is advertised.",
        ],
        [
            "admin-listen",
            None,
            None,
            "Serve the admin HTTP endpoint (Prometheus /metrics, /livez, "
            "/readyz, /status) on this Twisted server endpoint, e.g. "
            "tcp:9500:interface=127.0.0.1.  Default: off.  It has no "
            "authentication: bind it to an interface only your monitoring "
            "can reach.",
        ],
        [
            "peers",
            None,
            None,
            "Comma-separated other members: PORT, HOST:PORT, ID@PORT or "
            "ID@HOST:PORT (see below for how ids are assigned without ID@). "
            "Default: none, a single-node cluster.",
        ],
        [
            "join",
            None,
            None,
            "Join an existing cluster: comma-separated HOST:PORT of some of its "
            "members.  With an empty data directory the node asks them to add it "
            "(ADDNODE, following Not leader), takes the cluster id from them, and "
            "starts as a learner that the leader promotes once caught up; with a "
            "data directory that already joined, it is ignored.  Refused (exit "
            "status 1) when the id is taken by another address, the cluster id "
            "differs from --cluster-id, or no member answers.",
        ],
        [
            "cluster-id",
            None,
            None,
            "Cluster name checked on every peer connection (letters, digits, "
            "'.', '_', '-'; at most 64).  Default: derived from the membership "
            "(first 16 hex digits of the SHA-256 of the sorted id@host:port "
            "list), so clusters with different members never mix.",
        ],
        [
            "data-dir",
            None,
            None,
            "Directory for this node's log and metadata; one process per "
            "directory.  Default: kvstore-data/node-<node-id>, relative to "
            "the working directory.",
        ],
        [
            "heartbeat-interval",
            None,
            str(_DEFAULT_HEARTBEAT_MS),
            "Leader heartbeat interval, in milliseconds.",
        ],
        [
            "election-timeout",
            None,
            _DEFAULT_ELECTION_MS,
            "Randomized election timeout range MIN-MAX, in milliseconds; MIN "
            "must exceed 3 x the heartbeat interval and MAX must exceed MIN.",
        ],
        [
            "commit-timeout",
            None,
            str(_DEFAULT_TIMEOUT_S),
            "Seconds a write may wait for commit before the client is told "
            "its outcome is unknown (it may still be applied).",
        ],
        [
            "read-timeout",
            None,
            str(_DEFAULT_TIMEOUT_S),
            "Seconds a linearizable read may wait for leadership confirmation "
            "before it fails.",
        ],
        [
            "max-key-bytes",
            None,
            str(_DEFAULT_KEY_BYTES),
            "Largest accepted key, in bytes.",
        ],
        [
            "max-value-bytes",
            None,
            str(_DEFAULT_VALUE_BYTES),
            "Largest accepted value, in bytes.  A write must fit in one peer "
            "message (16 MiB) even when every character is escaped (2 bytes "
            "each), so key + value may total at most about 8 MiB.",
        ],
        [
            "max-line-bytes",
            None,
            None,
            "Longest accepted client line, in bytes; a longer line closes the "
            "connection.  Default: max-key-bytes + max-value-bytes + "
            f"{_LINE_OVERHEAD_BYTES}; must be at least max-key-bytes + max-value-bytes + 6 (the largest PUT).",
        ],
        [
            "max-append-bytes",
            None,
            "1MiB",
            "Soft budget for the entries of one AppendEntries message (a "
            "single larger entry is still sent alone); at most the peer "
            "message limit.",
        ],
        [
            "max-append-entries",
            None,
            str(_RAFT_DEFAULTS.max_append_entries),
            "Most entries in one AppendEntries message.",
        ],
        [
            "max-inflight",
            None,
            str(_RAFT_DEFAULTS.max_inflight),
            "AppendEntries messages with entries a leader keeps unacknowledged "
            "per follower (the pipelining window); bounds the memory a slow "
            "follower costs the leader.",
        ],
        [
            "max-apply-batch",
            None,
            str(_RAFT_DEFAULTS.max_apply_batch),
            "Most committed entries applied in one pass, so that a long "
            "catch-up never stalls the node.",
        ],
        [
            "segment-bytes",
            None,
            "64MiB",
            "Size at which the write-ahead log starts a new segment file "
            f"(at least {_MIN_SEGMENT_BYTES}).",
        ],
        [
            "snapshot-entries",
            None,
            str(_DEFAULT_SNAPSHOT_ENTRIES),
            "Snapshot the state machine once this many entries have been "
            "applied since the last snapshot (or --snapshot-bytes of log, "
            "whichever comes first), then drop the log it covers.",
        ],
        [
            "snapshot-bytes",
            None,
            "64MiB",
            "Snapshot once the log applied since the last snapshot exceeds "
            f"this many bytes (at least {_MIN_SNAPSHOT_BYTES}).",
        ],
        [
            "snapshot-catchup-entries",
            None,
            str(_DEFAULT_SNAPSHOT_CATCHUP_ENTRIES),
            "Log entries kept before each snapshot's index, so that a "
            "follower that lags by fewer catches up from the log rather "
            "than by receiving the whole snapshot.",
        ],
    ]

    config: NodeConfig

    #: --log-format (kvstore.daemon.log_format): "text" or "json".
    log_format: str = "text"

    def opt_log_format(self, value: str) -> None:
        """How the log is written: text (twistd's human-readable lines, the default) or json (one JSON object per line, for journald and log shippers)."""
        if value not in ("text", "json"):
            raise usage.UsageError(f"--log-format must be text or json, not {value!r}")
        self.log_format = value

    #: --log-level (kvstore.daemon.log_format.LEVELS), or None when not given: info.
    log_level: str | None = None

    def opt_log_level(self, value: str) -> None:
        """Lowest level logged: debug, info (the default), warn, error or critical.  A reload (SIGHUP) can change it."""
        self.log_level = parse_level(value).name

    #: The --config file's path and what it sets (kvstore.daemon.config_file).
    config_file: CommandLineConfig = CommandLineConfig()

    #: The command line as parsed, its --config path absolute: a reload
    #: (kvstore.daemon.reload) parses it again, with the file as it is then.
    arguments: tuple[str, ...] = ()

    def opt_config(self, path: str) -> None:
        """Read options from this TOML file (see docs/operations.md): one file can describe the whole cluster, and --node-id picks this node.  Options given on the command line override the file's."""
        # Read before parsing, in parseOptions: the file's values go first.

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse as L{usage.Options} does; but as twistd's subcommand, turn a
        L{usage.UsageError} into L{SystemExit} with L{usage_error_message}:
        twistd itself would print the whole help, about 75 lines, and the
        reason after it, where nobody looks.  Parsed on their own (tests,
        L{parse_config}) the options raise L{usage.UsageError} as usual.

        With C{--config FILE}, the file's options are parsed as if given
        before the command line's, which therefore override them.
        """
        try:
            arguments = list(sys.argv[1:] if options is None else options)
            self.arguments = tuple(with_absolute_config(arguments, self.shortOpt, self.longOpt))
            self.config_file = from_command_line(
                arguments, self.shortOpt, self.longOpt, lambda text: _parse_int("node-id", text, 0)
            )
            try:
                super().parseOptions(self.config_file.arguments() + arguments)
            except usage.UsageError as e:
                raise usage.UsageError(self.config_file.explain(str(e))) from None
        except usage.UsageError as e:
            if getattr(self, "parent", None) is None:
                raise
            raise SystemExit(usage_error_message(e, self)) from None

    def getUsage(self, width: int | None = None) -> str:
        """
        Render the help as L{usage.Options} does, but keep the paragraphs and
        indented example lines of C{longdesc} (the base class would wrap it
        into a single paragraph).
        """
        longdesc = self.longdesc
        self.longdesc = ""
        try:
            text = super().getUsage(width)
        finally:
            del self.longdesc
        return text + "\n" + _format_paragraphs(longdesc, width or 80)

    def postOptions(self) -> None:
        """
        Validate every option and store the result as C{self.config}.

        @raise usage.UsageError: if any value is malformed or the values are
            inconsistent with each other.
        """
        node_id = _parse_int("node-id", self["node-id"], 0)
        host = self["host"].strip()
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        host = _check_host("--host", host)
        port = _parse_port("--port", self["port"])
        peers = parse_peers(self["peers"] or "", node_id, host, port)

        listen = self["listen"]
        listen = _default_listen(host, port) if listen is None else _check_listen(listen)

        members = tuple(sorted(peers + (PeerAddress(node_id, host, port),)))
        join: tuple[tuple[str, int], ...] = ()
        if self["join"] is not None:
            if peers:
                raise usage.UsageError("--join and --peers exclude each other: a joining node learns its peers from the cluster")
            items = [item.strip() for item in self["join"].split(",")]
            if not all(items):
                raise usage.UsageError(f"--join {self['join']!r} contains an empty item")
            join = tuple(_parse_hostport(item, "--join") for item in items)
        cluster_id = self["cluster-id"]
        cluster_id_derived = cluster_id is None
        if cluster_id is None:
            cluster_id = derive_cluster_id(members)
        elif not _CLUSTER_ID_RE.match(cluster_id):
            raise usage.UsageError(
                f"--cluster-id must be 1 to 64 letters, digits, '.', '_' or '-', "
                f"not {cluster_id!r}"
            )

        data_dir = self["data-dir"]
        if data_dir is None:
            data_dir = f"kvstore-data/node-{node_id}"
        elif not data_dir.strip():
            raise usage.UsageError("--data-dir must not be empty")

        heartbeat_ms = _parse_positive_float("heartbeat-interval", self["heartbeat-interval"])
        election_min_ms, election_max_ms = _parse_election_timeout(self["election-timeout"])
        raft = _raft_config(
            node_id=node_id,
            peers=tuple(p.node_id for p in peers),
            heartbeat_interval=heartbeat_ms / 1000.0,
            election_timeout_min=election_min_ms / 1000.0,
            election_timeout_max=election_max_ms / 1000.0,
            max_append_bytes=_parse_size("max-append-bytes", self["max-append-bytes"], 1),
            max_entries_bytes=MAX_ENTRIES_BYTES,
            max_append_entries=_parse_int("max-append-entries", self["max-append-entries"], 1),
            max_inflight=_parse_int("max-inflight", self["max-inflight"], 1),
            max_apply_batch=_parse_int("max-apply-batch", self["max-apply-batch"], 1),
            pre_vote=not self["no-pre-vote"],
        )

        max_key = _parse_size("max-key-bytes", self["max-key-bytes"], 1)
        max_value = _parse_size("max-value-bytes", self["max-value-bytes"], 1)
        _check_entry_fits_a_message(max_key, max_value)
        if self["max-line-bytes"] is None:
            max_line = max_key + max_value + _LINE_OVERHEAD_BYTES
        else:
            max_line = _parse_size("max-line-bytes", self["max-line-bytes"], 1)
            needed = max_key + max_value + PUT_OVERHEAD_BYTES
            if max_line < needed:
                raise usage.UsageError(
                    f"--max-line-bytes ({max_line}) must be at least "
                    f"--max-key-bytes + --max-value-bytes + {PUT_OVERHEAD_BYTES} ({needed}), "
                    f"or the largest allowed write cannot be sent"
                )

        self.config = NodeConfig(
            node_id=node_id,
            host=host,
            port=port,
            listen=listen,
            peers=peers,
            cluster_id=cluster_id,
            data_dir=data_dir,
            raft=raft,
            commit_timeout=_parse_positive_float("commit-timeout", self["commit-timeout"]),
            read_timeout=_parse_positive_float("read-timeout", self["read-timeout"]),
            max_line_bytes=max_line,
            max_key_bytes=max_key,
            max_value_bytes=max_value,
            segment_bytes=_parse_size("segment-bytes", self["segment-bytes"], _MIN_SEGMENT_BYTES),
            fsync=not self["unsafe-no-fsync"],
            snapshot_entries=_parse_int("snapshot-entries", self["snapshot-entries"], 1),
            snapshot_bytes=_parse_size("snapshot-bytes", self["snapshot-bytes"], _MIN_SNAPSHOT_BYTES),
            snapshot_catchup_entries=_parse_int("snapshot-catchup-entries", self["snapshot-catchup-entries"], 0),
            admin_listen=None if self["admin-listen"] is None else _check_listen(self["admin-listen"], "--admin-listen"),
            join=join,
            cluster_id_derived=cluster_id_derived,
            forward_writes=bool(self["forward-writes"]),
        )


def usage_error_message(error: usage.UsageError, options: usage.Options, command: str = "twistd kvstore") -> str:
    """
    What to print for a usage error: the reason on the first line, a close
    match for a mistyped option name if there is one, then where the full
    help is.
    """
    reason = str(error)
    lines = [f"{command}: {reason}"]
    unknown = re.match(r"option (--[\w-]+) not recognized", reason)
    if unknown is not None:
        names = [f"--{name.rstrip('=')}" for name in options.longOpt]
        close = difflib.get_close_matches(unknown.group(1), names, n=1)
        if close:
            lines.append(f"Did you mean {close[0]}?")
    lines.append(f"Run '{command} --help' for the options.")
    return "\n".join(lines)


def parse_config(argv: Sequence[str]) -> NodeConfig:
    """
    Parse C{argv} (the arguments after C{kvstore}) into a L{NodeConfig}.

    @raise usage.UsageError: as L{Options.postOptions} does.
    """
    options = Options()
    options.parseOptions(list(argv))
    return options.config
