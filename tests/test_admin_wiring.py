"""
C{--admin-listen}: the option (command line and configuration file), and how
the service wires the admin endpoint in when it is given -- and nothing at
all when it is not.
"""

from __future__ import annotations

import socket
from pathlib import Path

from prometheus_client import generate_latest
from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kvstore import __version__
from kvstore.admin.instruments import MeteredPeers
from kvstore.admin.metrics import AdminMetrics
from kvstore.admin.requests import CountingClientFactory
from kvstore.admin.web import AdminSite
from kvstore.daemon.config_file import ConfigFileError
from kvstore.node.monitoring import NO_METRICS
from kvstore.daemon.options import Options, parse_config
from kvstore.protocols.client import ClientFactory
from kvstore.daemon.service import build_service, makeService
from kvstore.tools.ports import allocate_port
from tests.admin_support import Samples


class AdminOptionTests(SynchronousTestCase):
    """The option and its configuration-file key."""

    def test_off_by_default(self) -> None:
        """Without --admin-listen there is no admin endpoint."""
        self.assertIsNone(parse_config([]).admin_listen)

    def test_endpoint_description(self) -> None:
        """--admin-listen takes a Twisted server endpoint description."""
        config = parse_config(["--admin-listen", "tcp:9500:interface=127.0.0.1"])
        self.assertEqual(config.admin_listen, "tcp:9500:interface=127.0.0.1")

    def test_invalid_description(self) -> None:
        """A description Twisted cannot parse is refused, naming the option."""
        with self.assertRaises(UsageError) as raised:
            parse_config(["--admin-listen", "tcp:notaport"])
        self.assertIn("--admin-listen 'tcp:notaport' is not a valid endpoint description", str(raised.exception))
        with self.assertRaises(UsageError) as empty:
            parse_config(["--admin-listen", " "])
        self.assertIn("--admin-listen must not be empty", str(empty.exception))

    def test_configuration_file(self) -> None:
        """admin-listen may be set per node in the configuration file; it must be a string."""
        path = Path(self.mktemp())
        path.write_text(
            '[cluster.members]\n0 = "127.0.0.1:5000"\n1 = "127.0.0.1:5001"\n'
            '[node.1]\nadmin-listen = "tcp:9501:interface=127.0.0.1"\n'
        )
        self.assertEqual(parse_config(["--config", str(path), "--node-id", "1"]).admin_listen, "tcp:9501:interface=127.0.0.1")
        self.assertIsNone(parse_config(["--config", str(path), "--node-id", "0"]).admin_listen)
        path.write_text("admin-listen = 9500\n")
        with self.assertRaises(ConfigFileError) as raised:
            parse_config(["--config", str(path)])
        self.assertIn("admin-listen: expected a string, not an integer", str(raised.exception))


def _options(tmp_path: Path, *extra: str) -> Options:
    options = Options()
    options.parseOptions(["--data-dir", str(tmp_path / "data"), "--port", str(allocate_port()), *extra])
    return options


class AdminWiringTests(SynchronousTestCase):
    """What build_service puts in place."""

    def setUp(self) -> None:
        self.tmp_path = Path(self.mktemp())
        self.tmp_path.mkdir()

    def build(self, *extra: str):  # type: ignore[no-untyped-def]
        reactor = MemoryReactorClock()
        service = build_service(_options(self.tmp_path, *extra).config, reactor)
        self.addCleanup(service._lock.release)
        return service, reactor

    def test_without_the_option_nothing_is_instrumented(self) -> None:
        """Without --admin-listen: no admin listener, no metrics, no wrappers, no log hook."""
        service, _ = self.build()
        self.assertIsNone(service.admin_listener)
        self.assertIs(service.node.metrics, NO_METRICS)
        self.assertIs(service.node._peers, service.peer_links)
        self.assertIs(type(service.listener.factory.client_factory), ClientFactory)
        self.assertIs(service.listener.factory.client_factory.service, service.node)
        self.assertIsNone(service.wal.on_flush)

    def test_with_the_option_the_node_is_instrumented(self) -> None:
        """With --admin-listen: the node reports to its metrics, requests and peer messages are counted, the log reports its flushes, and the admin site listens on its own endpoint."""
        service, reactor = self.build("--admin-listen", "tcp:25999:interface=127.0.0.1")
        self.assertIsInstance(service.node.metrics, AdminMetrics)
        self.assertIsInstance(service.node._peers, MeteredPeers)
        self.assertIsInstance(service.listener.factory.client_factory, CountingClientFactory)
        self.assertIsNotNone(service.wal.on_flush)
        assert service.admin_listener is not None
        self.assertIsInstance(service.admin_listener.factory, AdminSite)
        service.startService()
        self.addCleanup(service.stopService)
        ports = {port for port, *_ in reactor.tcpServers}
        self.assertIn(25999, ports)
        metrics = service.admin_listener.factory.resource.children[b"metrics"]
        samples = Samples(generate_latest(metrics._registry).decode())
        self.assertEqual(
            samples.value("kvstore_node_info", node_id="0", cluster_id=service.config.cluster_id, version=__version__),
            1.0,
        )
        self.assertIn("process_cpu_seconds_total", samples.names(), "a real node exports its process' metrics")

    def test_bad_admin_endpoint_refused_before_storage(self) -> None:
        """An admin endpoint Twisted cannot make is refused before the data directory is created."""
        options = _options(self.tmp_path, "--admin-listen", "systemd:domain=INET:index=7")
        with self.assertRaises(UsageError) as raised:
            build_service(options.config, MemoryReactorClock())
        self.assertIn("--admin-listen", str(raised.exception))
        self.assertFalse((self.tmp_path / "data").exists())

    def test_admin_port_in_use(self) -> None:
        """An admin port in use stops the node at start-up with one line naming it, and releases the data directory."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        options = _options(self.tmp_path, "--admin-listen", f"tcp:{port}:interface=127.0.0.1")
        with self.assertRaises(SystemExit) as raised:
            makeService(options)
        message = str(raised.exception.code)
        self.assertEqual(len(message.splitlines()), 1, message)
        self.assertIn(f"--admin-listen: cannot listen on 127.0.0.1:{port}", message)
        from twisted.internet import reactor

        listening = [
            reader for reader in reactor.getReaders()  # type: ignore[attr-defined]  # the global reactor has readers
            if isinstance(reader, tcp.Port) and reader.getHost().port == options.config.port
        ]
        self.assertEqual(listening, [], "the node's own port was closed too")
        again = build_service(options.config, MemoryReactorClock())  # the data directory was released
        again._lock.release()
