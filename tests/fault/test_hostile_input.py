"""
Hostile and malformed input against real node processes.

One three-node cluster serves every test of L{HostileInputTests}.  Each
test attacks it (the client side or the peer side of the one listening
port), then checks that every node is still up, that a fresh client is
still served, that every write acknowledged so far is still readable
(linearizably, on every node), and that the attacked node's resident
memory stayed bounded.  The memory
figures are printed (run with ``-s`` to see them).
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest
from twisted.trial.unittest import SynchronousTestCase

from kvstore.tools.procinfo import fd_count, rss_kib
from kvstore.testing.processes import NodeProcess, ProcessCluster, wait_until

from tests.class_fixtures import ClassFixtureTestCase, class_fixture_suite
from tests.fault.support import raise_fd_limit
from tests.support import parametrize

pytestmark = pytest.mark.integration

#: How much a node's RSS may grow across one attack, in KiB.  The largest
#: legitimate buffer is one peer message (16 MiB); everything else a hostile
#: client can make a node hold is bounded by the line limit per connection.
RSS_GROWTH_LIMIT_KIB = 48 * 1024


class _State:
    """The module's cluster and every write it has acknowledged."""

    def __init__(self, cluster: ProcessCluster) -> None:
        self.cluster = cluster
        self.acked: dict[str, str] = {}
        self.counter = 0
        self.rss_start: dict[int, int] = {}


def _write(s: _State, count: int) -> None:
    """Acknowledged, pipelined writes on the leader, remembered in C{s.acked}."""
    leader = s.cluster.wait_for_leader()
    items = {}
    for _ in range(count):
        s.counter += 1
        items[f"ack{s.counter}"] = f"value-{s.counter}"
    with leader.client() as client:
        replies = client.pipeline([f"PUT {k} {v}" for k, v in items.items()])
    assert replies == [f"{k} added successfully." for k in items]
    s.acked.update(items)


def _check_healthy(s: _State, target: NodeProcess, rss_before: int, what: str) -> None:
    """
    Every node up; new writes acknowledged; every acknowledged write
    readable on every node; the target's RSS growth bounded.
    """
    for node in s.cluster.nodes:
        assert node.running, f"node {node.node_id} died after {what}\n{node.describe()}"
    _write(s, 20)
    keys = list(s.acked)
    expected = [f"value of {k}: {s.acked[k]}" for k in keys]
    s.cluster.wait_connected()
    for node in s.cluster.nodes:
        with node.client() as client:
            assert client.request("PING") == "PONG"
            assert client.pipeline([f"GET {k}" for k in keys]) == expected, node.describe()
    rss_after = rss_kib(target.pid)
    print(f"\n[hostile] {what}: node {target.node_id} RSS {rss_before} KiB -> {rss_after} KiB "
          f"({rss_after - rss_before:+d} KiB), fds {fd_count(target.pid)}")
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_KIB, f"RSS grew by {rss_after - rss_before} KiB after {what}"


def _connect(node: NodeProcess, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((node.host, node.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed_by_node(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """
    Read until the node closes the connection; return what it sent.  Fails
    if the node keeps the connection open for C{timeout} seconds.
    """
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
    except ConnectionResetError:
        return received
    except socket.timeout:
        pass
    raise AssertionError(f"the node kept the connection open; it sent {received[:200]!r}")


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send, ignoring the node closing the connection part-way."""
    try:
        sock.sendall(data)
    except OSError:
        pass


def _netstring(payload: bytes) -> bytes:
    return str(len(payload)).encode() + b":" + payload + b","


def _hello(sender: object, cluster: object, version: object = 1) -> bytes:
    return _netstring(json.dumps({"type": "hello", "version": version, "cluster": cluster, "from": sender}).encode())


def _cluster_id(node: NodeProcess) -> str:
    return node.status()["cluster"]


def _peer_payload_cases(leader: int, peer: int) -> list[tuple[str, bytes]]:
    def msg(**fields: object) -> bytes:
        return json.dumps(fields).encode()

    return [
        ("invalid JSON", b"{not json"),
        ("invalid UTF-8", b'{"type": "\xff\xfe"}'),
        ("JSON nested 100000 deep", b"[" * 100000 + b"]" * 100000),
        ("JSON number 100000 digits", b"1" * 100000),
        ("a JSON list", b"[1, 2, 3]"),
        ("a JSON string", b'"hello"'),
        ("null", b"null"),
        ("missing term", msg(type="append_resp", **{"from": peer}, to=leader, success=True)),
        ("term as string", msg(type="vote", **{"from": peer}, to=leader, term="7", last_index=0, last_term=0,
                               pre_vote=False)),
        ("negative index", msg(type="read", **{"from": peer}, to=leader, term=0, id=-1)),
        ("bool as int", msg(type="read", **{"from": peer}, to=leader, term=True, id=1)),
        ("float", msg(type="read", **{"from": peer}, to=leader, term=0.5, id=1)),
        ("entries not a list", msg(type="append", **{"from": peer}, to=leader, term=0, prev_index=0, prev_term=0,
                                   commit=0, round=0, entries={"a": 1})),
        ("entry of wrong shape", msg(type="append", **{"from": peer}, to=leader, term=0, prev_index=0,
                                     prev_term=0, commit=0, round=0, entries=[[1, 0]])),
        ("entries out of sequence", msg(type="append", **{"from": peer}, to=leader, term=0, prev_index=0,
                                        prev_term=0, commit=0, round=0, entries=[[5, 0, "x"]])),
        ("lone surrogate in entry", b'{"type":"append","from":%d,"to":%d,"term":0,"prev_index":0,"prev_term":0,'
                                    b'"commit":0,"round":0,"entries":[[1,0,"\\ud800"]]}' % (peer, leader)),
        ("unknown type", msg(type="install_snapshot", **{"from": peer}, to=leader, term=0)),
        ("no type", msg(**{"from": peer}, to=leader, term=0)),
        ("type not a string", msg(type=["vote"], **{"from": peer}, to=leader, term=0)),
        ("another sender", msg(type="read", **{"from": leader}, to=leader, term=0, id=1)),
        ("another receiver", msg(type="read", **{"from": peer}, to=peer, term=0, id=1)),
        ("a second hello", msg(type="hello", version=1, cluster="x", **{"from": peer})),
    ]


class HostileInputTests(ClassFixtureTestCase):
    """
    Attacks on one three-node cluster shared by the class (set up once, as
    the module-scoped fixture did): after each, the cluster is healthy and
    every write acknowledged so far is still there.
    """

    state: _State

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        raise_fd_limit()
        directory = Path(tempfile.mkdtemp(prefix="kvstore-hostile-"))
        cluster = ProcessCluster(directory, 3)
        try:
            cluster.start()
            cluster.wait_for_leader(timeout=20)
            cluster.wait_connected()
            s = _State(cluster)
            _write(s, 50)
            s.rss_start = {n.node_id: rss_kib(n.pid) for n in cluster.nodes}
        except BaseException:
            cluster.stop()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        cls.state = s
        cls._directory = directory

    @classmethod
    def tearDownClass(cls) -> None:
        s = cls.state
        try:
            rss_end = {n.node_id: rss_kib(n.pid) for n in s.cluster.running}
            print("\n[hostile] RSS over the whole module (KiB): " + ", ".join(
                f"node {i}: {s.rss_start[i]} -> {rss_end.get(i)}" for i in sorted(s.rss_start)))
        finally:
            s.cluster.stop()
            shutil.rmtree(cls._directory, ignore_errors=True)
            del cls.state
            super().tearDownClass()

    # ---------------------------------------------------------------------------
    # The client side

    def test_random_binary_data(self) -> None:
        """
        Connections sending random bytes (some starting with a digit, so the
        node takes them for a peer) get error replies or are dropped; the node
        stays up and keeps serving.
        """
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        rng = random.Random(5)
        for i in range(40):
            data = rng.randbytes(rng.randint(1, 256 * 1024))
            if i % 2 == 0 and data[:1].isdigit():
                data = b"X" + data  # half of them go to the client protocol
            sock = _connect(leader)
            sent = threading.Thread(target=_send_quietly, args=(sock, data), daemon=True)
            sent.start()
            # Drain replies so the node's backpressure never stalls the sender.
            sock.settimeout(0.5)
            try:
                while sent.is_alive():
                    if not sock.recv(65536):
                        break
            except OSError:
                pass
            sent.join(5)
            sock.close()
        _check_healthy(state, leader, before, "40 connections of random binary data")

    def test_invalid_utf8_lines(self) -> None:
        """Invalid UTF-8 is an error reply, and the connection stays usable."""
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        sock = _connect(leader)
        lines = [b"PUT k \xff\xfe", b"GET \xc3\x28", b"\xed\xa0\x80", b"PUT bad \xf4\x90\x80\x80", b"DELETE \x80"]
        sock.sendall(b"".join(line + b"\n" for line in lines) + b"PING\n")
        with sock.makefile("rb") as replies:
            got = [replies.readline() for _ in range(len(lines) + 1)]
        sock.close()
        assert all(r.startswith(b"Error: Invalid UTF-8 at byte ") for r in got[:-1]), got
        assert got[-1] == b"PONG\n"
        with leader.client() as client:
            assert client.request("GET k") == "Error: Key k not found"
        _check_healthy(state, leader, before, "invalid UTF-8 lines")

    @parametrize("size_mib", [8])
    def test_multi_megabyte_line(self, size_mib: int) -> None:
        """
        A line of several MiB is refused with one error reply and the connection
        closes; the node never buffers more than its line limit of it.
        """
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        # The prefix is a valid PUT, so nothing but the length is wrong.
        data = b"PUT huge " + b"v" * (size_mib * 1024 * 1024) + b"\n"
        sock = _connect(leader)
        sender = threading.Thread(target=_send_quietly, args=(sock, data), daemon=True)
        sender.start()
        received = _closed_by_node(sock)
        sender.join(10)
        sock.close()
        # The reply may be lost to the reset the node's close causes while our
        # data is still arriving; when it arrives, it is the right one.
        assert received == b"" or re.fullmatch(rb"Error: Line too long \(maximum \d+ bytes\)\n", received), received[:200]
        with leader.client() as client:
            assert client.request("GET huge") == "Error: Key huge not found"
        _check_healthy(state, leader, before, f"a {size_mib} MiB line")

    def test_thousands_of_idle_connections(self) -> None:
        """
        2,000 idle connections (silent, half a client line, half a netstring
        length) on the leader: other clients are still served promptly, and
        closing them gives back every file descriptor.
        """
        state = self.state
        count = 2000
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        fds_before = fd_count(leader.pid)
        socks: list[socket.socket] = []
        try:
            opening = time.monotonic()
            for i in range(count):
                if i % 40 == 0:
                    # Stay within the node's listen backlog: a SYN it drops is
                    # retried only after a second.
                    wait_until(lambda: fd_count(leader.pid) >= fds_before + i - 10, 10,
                               message=lambda: f"the node to accept {i} connections")
                sock = socket.create_connection((leader.host, leader.port), timeout=10)
                socks.append(sock)
                if i % 3 == 1:
                    sock.sendall(b"GET ")
                elif i % 3 == 2:
                    sock.sendall(b"12")
            wait_until(lambda: fd_count(leader.pid) >= fds_before + count - 10, 20,
                       message=lambda: f"the node to accept {count} connections (fds {fd_count(leader.pid)})")
            held = rss_kib(leader.pid)
            opened = time.monotonic() - opening
            started = time.monotonic()
            for node in state.cluster.nodes:
                with node.client() as client:
                    assert client.request("PING") == "PONG"
            _write(state, 20)
            latency = time.monotonic() - started
            print(f"\n[hostile] {count} idle connections: node fds {fds_before} -> {fd_count(leader.pid)}, "
                  f"RSS {before} -> {held} KiB ({(held - before) / count:.1f} KiB per connection), opened in "
                  f"{opened:.1f} s; "
                  f"served 3 PINGs and 20 writes in {latency * 1000:.0f} ms meanwhile")
            assert latency < 5.0
        finally:
            for sock in socks:
                sock.close()
        wait_until(lambda: fd_count(leader.pid) <= fds_before + 5, 20,
                   message=lambda: f"the node to close the idle connections (fds {fd_count(leader.pid)}, "
                                   f"before {fds_before})")
        _check_healthy(state, leader, before, f"{count} idle connections")

    def test_half_line_then_disconnect(self) -> None:
        """
        A client that sends half a request and disappears (FIN, or RST) has
        executed nothing; a complete request before the half line was.
        """
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        for abort in (False, True):
            sock = _connect(leader)
            sock.sendall(f"PUT whole-{abort} yes\nPUT half-{abort} no".encode())
            sock.recv(100)  # the first reply: the complete request was done
            if abort:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            sock.close()
        # And in the middle of a pipelined burst, without reading the replies.
        sock = _connect(leader)
        sock.sendall(b"".join(f"PUT burst{i} x\n".encode() for i in range(500)) + b"PUT burst-half ")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()
        with leader.client() as client:
            replies = client.pipeline(["GET whole-False", "GET half-False", "GET whole-True", "GET half-True",
                                       "GET burst-half"])
        assert replies == ["value of whole-False: yes", "Error: Key half-False not found",
                           "value of whole-True: yes", "Error: Key half-True not found",
                           "Error: Key burst-half not found"]
        state.acked.update({"whole-False": "yes", "whole-True": "yes"})
        _check_healthy(state, leader, before, "half lines then disconnects")

    def test_client_that_never_reads_replies(self) -> None:
        """
        A client pipelining requests but never reading a reply is stopped by
        backpressure: the node's memory stays bounded, other clients are served.
        """
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        sock = _connect(leader)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(3.0)
        request = b"STATUS\n" * 4096
        sent = 0
        try:
            while sent < 400 * 1024 * 1024:
                sock.sendall(request)
                sent += len(request)
        except (socket.timeout, OSError):
            pass  # the node stopped reading: that is the point
        mid = rss_kib(leader.pid)
        with leader.client() as client:
            assert client.request("PING") == "PONG"
        print(f"\n[hostile] non-reading client: sent {sent // 1024} KiB before the node stopped reading; "
              f"RSS {before} -> {mid} KiB")
        assert sent < 400 * 1024 * 1024, "the node never applied backpressure"
        sock.close()
        _check_healthy(state, leader, before, "a client that never reads")

    # ---------------------------------------------------------------------------
    # The peer side

    @parametrize("prefix", [b"99999999999999999999999999:", b"16777217:", b"4294967296:"])
    def test_peer_absurd_length(self, prefix: bytes) -> None:
        """A netstring announcing an absurd length is refused at once, before
        a byte of it is buffered, with or without a hello first."""
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        for hello in (b"", _hello(1 if leader.node_id != 1 else 2, _cluster_id(leader))):
            sock = _connect(leader)
            sock.sendall(hello + prefix)
            assert _closed_by_node(sock) == b""
            sock.close()
        assert rss_kib(leader.pid) - before < 4 * 1024
        _check_healthy(state, leader, before, f"netstring length {prefix[:-1].decode()}")

    def test_peer_large_message_within_limit(self) -> None:
        """A 12 MiB netstring of junk after a valid hello is buffered (it is
        within the limit), rejected as invalid JSON, and its memory released."""
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        peer = next(n.node_id for n in state.cluster.nodes if n is not leader)
        sock = _connect(leader)
        sender = threading.Thread(
            target=_send_quietly,
            args=(sock, _hello(peer, _cluster_id(leader)) + _netstring(b"{" * (12 * 1024 * 1024))),
            daemon=True)
        sender.start()
        assert _closed_by_node(sock, 20) == b""
        sender.join(10)
        sock.close()
        _check_healthy(state, leader, before, "a 12 MiB peer message of junk")

    def test_peer_truncated_netstrings(self) -> None:
        """Netstrings cut short (in the length, the payload, or the comma) and
        a connection that then vanishes deliver nothing."""
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        peer = next(n.node_id for n in state.cluster.nodes if n is not leader)
        hello = _hello(peer, _cluster_id(leader))
        vote = json.dumps({"type": "vote", "from": peer, "to": leader.node_id, "term": 10**6,
                           "last_index": 10**6, "last_term": 10**6, "pre_vote": False}).encode()
        whole = _netstring(vote)
        for data in (b"12", hello[:10], hello + whole[:3], hello + whole[:-1], hello + whole[:-10]):
            sock = _connect(leader)
            sock.sendall(data)
            sock.close()
        term = int(leader.status()["term"])
        assert term < 10**6, "a truncated vote request was acted upon"
        _check_healthy(state, leader, before, "truncated netstrings")

    def test_peer_malformed_messages(self) -> None:
        """
        After a valid hello, every kind of malformed message (invalid JSON,
        wrong shape, missing fields, wrong types, unknown types, wrong
        addressing) closes that connection and changes nothing.
        """
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        term_before = leader.status()["term"]
        peer = next(n.node_id for n in state.cluster.nodes if n is not leader)
        hello = _hello(peer, _cluster_id(leader))
        for name, payload in _peer_payload_cases(leader.node_id, peer):
            sock = _connect(leader)
            sock.sendall(hello + _netstring(payload))
            try:
                assert _closed_by_node(sock) == b"", name
            except AssertionError as e:
                raise AssertionError(f"{name}: {e}") from None
            finally:
                sock.close()
        assert leader.status()["term"] == term_before
        assert "rejected peer connection" in leader.log()
        _check_healthy(state, leader, before, "malformed peer messages")

    def test_peer_absurd_numbers(self) -> None:
        """
        Well-formed messages from a member carrying integers beyond what the
        log format can store (terms of 2**63, 2**64, 10**400) must not crash
        the node nor leave it in such a term.
        """
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        follower = state.cluster.followers(leader)[0]
        for target, sender in ((follower, leader.node_id), (leader, follower.node_id)):
            for term in (2**63, 2**64, 10**400):
                sock = _connect(target)
                body = {"type": "append", "from": sender, "to": target.node_id, "term": term, "prev_index": 0,
                        "prev_term": 0, "commit": 0, "round": 0, "entries": []}
                read = {"type": "read", "from": sender, "to": target.node_id, "term": 0, "id": term}
                _send_quietly(sock, _hello(sender, _cluster_id(target)) + _netstring(json.dumps(read).encode())
                              + _netstring(json.dumps(body).encode()))
                sock.close()
        wait_until(lambda: state.cluster.stable_leader(), 10, message="a stable leader")
        for node in state.cluster.nodes:
            assert node.running, node.describe()
            assert int(node.status()["term"]) < 2**63, node.describe()
        _check_healthy(state, leader, before, "absurd numbers from a member")

    def test_peer_refused_hellos(self) -> None:
        """
        A hello from a non-member id, from another cluster, of another version,
        or of the wrong shape, and a Raft message without a hello, are refused;
        the messages that follow on that connection are never acted upon.
        """
        state = self.state
        leader = state.cluster.wait_for_leader()
        before = rss_kib(leader.pid)
        term_before = int(leader.status()["term"])
        cluster = _cluster_id(leader)
        peer = next(n.node_id for n in state.cluster.nodes if n is not leader)
        # A vote request that would depose the leader if it were accepted.
        vote = _netstring(json.dumps({"type": "vote", "from": 7, "to": leader.node_id, "term": term_before + 100,
                                      "last_index": 10**9, "last_term": 10**9, "pre_vote": False}).encode())
        cases = [
            # A non-member id that no committed configuration removed is
            # accepted (a member behind must hear a leader it does not
            # know yet, issue 13); its vote is still checked below.
            ("own id", _hello(leader.node_id, cluster)),
            ("negative id", _hello(-1, cluster)),
            ("id as string", _hello(str(peer), cluster)),
            ("id as bool", _hello(True, cluster)),
            ("another cluster", _hello(peer, "another-cluster")),
            ("cluster id missing", _hello(peer, None)),
            ("version 2", _hello(peer, cluster, version=2)),
            ("not a hello", vote),
            ("hello as a list", _netstring(b'["hello", 1]')),
        ]
        for name, first in cases:
            sock = _connect(leader)
            _send_quietly(sock, first + vote)
            try:
                assert _closed_by_node(sock) == b"", name
            finally:
                sock.close()
        sock = _connect(leader)
        _send_quietly(sock, _hello(7, cluster) + vote)
        sock.close()
        assert int(leader.status()["term"]) == term_before, "a refused peer changed the leader's term"
        assert leader.status()["role"] == "leader"
        _check_healthy(state, leader, before, "refused hellos")

    def test_attacks_on_a_follower(self) -> None:
        """The same attacks, in brief, against a follower."""
        state = self.state
        leader = state.cluster.wait_for_leader()
        follower = state.cluster.followers(leader)[0]
        before = rss_kib(follower.pid)
        peer = leader.node_id
        hello = _hello(peer, _cluster_id(follower))
        for name, payload in _peer_payload_cases(follower.node_id, peer):
            sock = _connect(follower)
            sock.sendall(hello + _netstring(payload))
            assert _closed_by_node(sock) == b"", name
            sock.close()
        for data in (b"99999999999:", os.urandom(100_000), b"GET \xff\n" * 1000):
            sock = _connect(follower)
            _send_quietly(sock, data)
            sock.close()
        _check_healthy(state, follower, before, "attacks on a follower")


# ---------------------------------------------------------------------------
# File descriptor exhaustion (its own node: it lowers that node's limit)


class FileDescriptorExhaustionTests(SynchronousTestCase):
    """A node of its own, whose file descriptor limit the test lowers."""

    def setUp(self) -> None:
        raise_fd_limit()
        self.tmp_path = Path(self.mktemp()).resolve()
        self.tmp_path.mkdir()

    def make_single_node(self) -> NodeProcess:
        """A started single-node cluster that leads, stopped after the test."""
        from kvstore.testing.processes import allocate_port

        node = NodeProcess(0, allocate_port(), self.tmp_path / "data", self.tmp_path / "logs")
        self.addCleanup(node.stop)
        node.start()
        node.wait_ready()
        wait_until(lambda: node.status()["role"] == "leader", 10, message="the single node to lead")
        return node

    def test_file_descriptor_exhaustion(self) -> None:
        """
        With its file descriptor limit lowered to 128, a node flooded with 400
        connections cannot accept them all; once they go away it serves again,
        with its data intact.
        """
        node = self.make_single_node()
        with node.client() as client:
            assert client.request("PUT before flood") == "before added successfully."
        resource.prlimit(node.pid, resource.RLIMIT_NOFILE, (128, 128))
        socks = []
        try:
            # Connect until the node holds what it can (at most 400 tries): a
            # connect that times out only means the listen backlog is full
            # while the node catches up with accepting, so it is not a reason
            # to stop flooding (stopping there made the test depend on how
            # fast a loaded machine let the node accept).
            for _ in range(400):
                if fd_count(node.pid) >= 120:
                    break
                try:
                    socks.append(socket.create_connection((node.host, node.port), timeout=1))
                except OSError:
                    pass
            # Let it try (and fail) to accept: wait until it holds what it can.
            # The message says how far it got: this once timed out in a full run on a loaded machine
            # (cause not found; the test alone passed under the same load).
            wait_until(lambda: fd_count(node.pid) >= 120, 10, message=lambda: (
                f"the node to run out of descriptors (it holds {fd_count(node.pid)}; "
                f"{len(socks)} of the connects succeeded)"))
            print(f"\n[hostile] fd exhaustion: opened {len(socks)} connections, node holds {fd_count(node.pid)} fds "
                  f"of 128")
            assert node.running
        finally:
            for sock in socks:
                sock.close()
        assert node.running, node.describe()

        def serving_again() -> bool:
            # A connect alone can succeed while the node still has no descriptor
            # to accept it with (the kernel queues it, the node then drops it):
            # only a reply shows the node has recovered.
            try:
                with node.client(timeout=2) as probe:
                    return probe.request("PING") == "PONG"
            except OSError:
                return False

        wait_until(serving_again, 20, message="the node to serve again")
        with node.client(timeout=5) as client:
            assert client.request("GET before") == "value of before: flood"
            assert client.request("PUT after flood") == "after added successfully."


testSuite = class_fixture_suite(__name__)
