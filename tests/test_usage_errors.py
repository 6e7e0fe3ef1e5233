# -*- test-case-name: tests.test_usage_errors -*-
"""
Errors a person can read: a mistyped option or a port already in use gives
the one-line reason first (and, for options, a pointer to C{--help}) and
exit status 1, not a page of usage or a traceback.  Here in-process, and
with real C{twistd} and C{kvstore-cluster} processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.python.usage import UsageError
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.options import Options as NodeOptions
from kvstore.daemon.service import Options, build_service, makeService
from kvstore.testing.processes import ROOT, Timeout, allocate_port, allocate_port_range, wait_until

from tests.support import slow

#: Seconds a start-up refusal may take (twistd scans plugins first).
_REFUSAL_TIMEOUT = 60


def _hold_port() -> tuple[socket.socket, int]:
    """A listening socket on a free port of 127.0.0.1, and the port."""
    port = allocate_port()
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind(("127.0.0.1", port))
    holder.listen()
    return holder, port


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def _twistd(*args: str, cwd: str) -> subprocess.CompletedProcess[str]:
    """Run the twistd installed beside this interpreter, as a person would."""
    script = Path(sys.executable).parent / "twistd"
    command = [str(script)] if script.exists() else [
        sys.executable, "-c", "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()"]
    return subprocess.run(
        [*command, *args], cwd=cwd, env=_environment(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=_REFUSAL_TIMEOUT,
    )


@slow
class OptionErrorTests(SynchronousTestCase):
    """A mistyped or invalid kvstore option under twistd."""

    def test_unknown_option_reason_first(self) -> None:
        """An unknown option exits with the reason on the first line, a
        close match, and where the help is: three lines, not the help."""
        with self.assertRaises(SystemExit) as caught:
            ServerOptions().parseOptions(["-n", "kvstore", "--nodeid", "0"])
        lines = str(caught.exception.code).splitlines()
        self.assertEqual(lines, [
            "twistd kvstore: option --nodeid not recognized",
            "Did you mean --node-id?",
            "Run 'twistd kvstore --help' for the options.",
        ])

    def test_invalid_value_reason_first(self) -> None:
        """A rejected value exits with the validation message and the pointer."""
        with self.assertRaises(SystemExit) as caught:
            ServerOptions().parseOptions(["-n", "kvstore", "--node-id", "x"])
        self.assertEqual(str(caught.exception.code).splitlines(), [
            "twistd kvstore: --node-id must be an integer, not 'x'",
            "Run 'twistd kvstore --help' for the options.",
        ])

    def test_parsed_alone_raises_usage_error(self) -> None:
        """Outside twistd the options still raise UsageError (for callers and tests)."""
        self.assertRaises(UsageError, NodeOptions().parseOptions, ["--nodeid", "0"])

    def test_real_twistd_prints_reason_first(self) -> None:
        """A real `twistd -n kvstore --nodeid 0` prints the reason first on
        stderr, no usage, and exits 1."""
        cwd = self.mktemp()
        os.makedirs(cwd)
        result = _twistd("-n", "kvstore", "--nodeid", "0", cwd=cwd)
        self.assertEqual(result.returncode, 1, result)
        self.assertEqual(result.stdout, "")
        lines = result.stderr.splitlines()
        self.assertEqual(lines[0], "twistd kvstore: option --nodeid not recognized", result.stderr)
        self.assertIn("--help", lines[-1])
        self.assertLessEqual(len(lines), 3, result.stderr)
        self.assertEqual(os.listdir(cwd), [])


@slow
class PortInUseTests(SynchronousTestCase):
    """A node whose port is taken refuses to start like the other start-up refusals."""

    def test_make_service_refuses_in_one_line(self) -> None:
        """makeService exits with one line naming the address and the cause,
        and releases the data directory."""
        holder, port = _hold_port()
        self.addCleanup(holder.close)
        data_dir = self.mktemp()
        options = Options()
        options.parseOptions(["--port", str(port), "--data-dir", data_dir])
        with self.assertRaises(SystemExit) as caught:
            makeService(options)
        self.assertEqual(
            caught.exception.code,
            f"twistd kvstore: cannot listen on 127.0.0.1:{port}: Address already in use "
            f"(is another node or program using port {port}?)",
        )
        # The lock was released: the directory can be used at once.
        build_service(options.config, MemoryReactorClock())._lock.release()

    def test_early_listen_is_not_repeated(self) -> None:
        """Listening early (in makeService) means twistd's own start does not
        listen a second time."""
        reactor = MemoryReactorClock()
        options = Options()
        options.parseOptions(["--port", "24997", "--data-dir", self.mktemp()])
        service = build_service(options.config, reactor)
        self.addCleanup(service._lock.release)
        service.listener.listen_now()
        service.privilegedStartService()
        self.assertEqual([port for port, *_ in reactor.tcpServers], [24997])

    def test_real_twistd_port_in_use(self) -> None:
        """A real node whose port is taken prints one line on stderr and
        exits 1, also when its log goes to a file."""
        holder, port = _hold_port()
        self.addCleanup(holder.close)
        cwd = self.mktemp()
        os.makedirs(cwd)
        expected = (f"twistd kvstore: cannot listen on 127.0.0.1:{port}: Address already in use "
                    f"(is another node or program using port {port}?)\n")
        for twistd_options in (["-n"], ["-n", "--logfile=node.log"]):
            with self.subTest(twistd_options=twistd_options):
                result = _twistd(*twistd_options, "kvstore", "--port", str(port), cwd=cwd)
                self.assertEqual((result.returncode, result.stderr), (1, expected), result)
                self.assertNotIn("Traceback", result.stdout)

    def test_kvstore_cluster_shows_the_reason(self) -> None:
        """Under kvstore-cluster, a node's port in use is reported on the
        launcher's console, not only in a log file."""
        base = allocate_port_range(2)
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", base + 1))
        holder.listen()
        root = self.mktemp()
        launcher = subprocess.Popen(
            [sys.executable, "-m", "kvstore.tools.cluster", "--nodes", "2", "--base-port", str(base),
             "--data-dir", root],
            env=_environment(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )

        def stop() -> None:
            if launcher.poll() is None:
                launcher.terminate()  # stops its node 0 too
                launcher.communicate(timeout=30)

        self.addCleanup(stop)
        output: list[str] = []
        reader = threading.Thread(target=lambda: output.extend(launcher.stdout or ()), daemon=True)
        reader.start()
        text = lambda: "".join(output)  # noqa: E731
        wait_until(lambda: "node 1" in text() and "exited unexpectedly" in text(), _REFUSAL_TIMEOUT,
                   message=lambda: f"the launcher to report node 1's exit:\n{text()}")
        # The reason follows the report at once, or never.
        try:
            wait_until(lambda: "cannot listen" in text(), 5)
        except Timeout:
            pass
        self.assertIn(
            f"twistd kvstore: cannot listen on 127.0.0.1:{base + 1}: Address already in use",
            text(),
        )
