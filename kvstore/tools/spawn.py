# -*- test-case-name: tests.integration.test_cluster_launcher -*-
"""
Starting local node processes, shared by everything that runs real nodes:
the cluster launcher (L{kvstore.tools.cluster}), the benchmark
(L{kvstore.tools.bench}) and the process harness
(L{kvstore.testing.processes}).

Every node process runs twistd through L{run_twistd_child} in its own
session, with this checkout first on C{PYTHONPATH}; on Linux it dies with
the process that started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Sequence

__all__ = ["ROOT", "child_environment", "node_argv", "run_twistd_child", "spawn", "twistd_command"]

_PARENT_ENV = "KVSTORE_CLUSTER_PARENT_PID"

#: The directory that contains the C{kvstore} package; first on the nodes'
#: C{PYTHONPATH} so they run this kvstore and twistd finds its plugin.
ROOT = Path(__file__).resolve().parents[2]


def run_twistd_child() -> None:  # pragma: no cover - runs in the node process
    """
    The node processes' entry point: tie this process's life to its
    launcher's, then run twistd with C{sys.argv[1:]}.

    On Linux, C{prctl(PR_SET_PDEATHSIG, SIGTERM)} makes the kernel send
    SIGTERM when the launcher dies; if it died before that call, stop now.
    Done here, after C{exec}, rather than in a C{preexec_fn}, which is unsafe
    in a threaded parent.
    """
    parent = os.environ.pop(_PARENT_ENV, None)
    if parent is not None and sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except Exception:
            pass
        if os.getppid() != int(parent):
            sys.exit("kvstore-cluster: the launcher exited before this node started")
    sys.argv[0] = "twistd"
    from twisted.scripts.twistd import run

    run()


def twistd_command() -> list[str]:
    """The command that runs L{run_twistd_child} (twistd) with this Python."""
    return [sys.executable, "-c", "from kvstore.tools.spawn import run_twistd_child; run_twistd_child()"]


def child_environment() -> dict[str, str]:
    """Our environment, with the kvstore checkout or install first on
    C{PYTHONPATH} and our pid for L{run_twistd_child}."""
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(ROOT) not in paths:
        paths.insert(0, str(ROOT))
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env[_PARENT_ENV] = str(os.getpid())
    return env


def spawn(argv: Sequence[str], *, stdout: int | IO[Any] | None, stderr: int | IO[Any] | None) -> subprocess.Popen[bytes]:
    """Start a node process in its own session; see L{run_twistd_child}."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env=child_environment(),
        start_new_session=True,
    )


def node_argv(
    node_id: int,
    ports: Sequence[int],
    host: str,
    data_dir: str,
    log_file: str,
    extra: Sequence[str] = (),
) -> list[str]:
    """The command line of node C{node_id} of a cluster on C{ports}."""
    peers = ",".join(f"{host}:{p}" for i, p in enumerate(ports) if i != node_id)
    argv = [
        *twistd_command(),
        "-n",
        f"--logfile={log_file}",
        "kvstore",
        f"--node-id={node_id}",
        f"--host={host}",
        f"--port={ports[node_id]}",
        f"--data-dir={data_dir}",
    ]
    if peers:
        argv.append(f"--peers={peers}")
    return argv + list(extra)
