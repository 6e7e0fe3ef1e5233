"""
A L{NodeProcess} with a command line and environment of the test's choosing
(a C{--config} file instead of C{--host}/C{--port}/C{--peers}, C{--logfile=-},
C{NOTIFY_SOCKET}): still killed after the test when made through
L{ProcessTestCase.started_nodes}.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Mapping, Sequence

from kvstore.testing.processes import NodeProcess, child_environment, twistd_command


class CustomNodeProcess(NodeProcess):
    """
    C{twistd -n <twistd_args> kvstore <kvstore_args>} with C{env} added to
    the environment; stdout and stderr go to C{out_path}.
    """

    def __init__(
        self,
        node_id: int,
        port: int,
        log_dir: Path,
        kvstore_args: Sequence[str],
        twistd_args: Sequence[str] = ("--pidfile=",),
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(node_id, port, log_dir / f"unused-{node_id}", log_dir)
        self.kvstore_args = list(kvstore_args)
        self.twistd_args = list(twistd_args)
        self.env = dict(env or {})

    def argv(self) -> list[str]:
        return [*twistd_command(), "-n", *self.twistd_args, "kvstore", *self.kvstore_args]

    def start(self) -> "CustomNodeProcess":
        assert not self.running, f"node {self.node_id} is already running"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = child_environment()
        env.update(self.env)
        with open(self.out_path, "ab") as out:
            self.process = subprocess.Popen(
                self.argv(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        return self
