# -*- test-case-name: tests.test_tools_cli -*-
"""
C{kvstore-cli}: a shell and a one-shot command for a kvstore cluster, on
top of the client library (L{kvstore.client.Client}), so that it finds and
follows the leader by itself.

    kvstore-cli --cluster 127.0.0.1:5000,127.0.0.1:5001,127.0.0.1:5002
    kvstore> PUT greeting hello world
    greeting added successfully.

    kvstore-cli put greeting hello world      # one-shot: exit status 0
    kvstore-cli --json get greeting           # {"ok": true, ..., "value": "hello world"}
    kvstore-cli get missing                   # exit status 1: not found

Exit statuses: 0 done, 1 the answer is no (key not found, a CAS that found
another value), 2 anything else (usage, cluster unreachable, unknown
outcome, ...).  The cluster comes from C{--cluster}, else
C{$KVSTORE_CLUSTER}, else the seed's three local nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Sequence

from kvstore.client import Client
from kvstore.client.blocking import parse_address
from kvstore.tools.cli import commands
from kvstore.tools.cli.commands import Exit, Help, UsageError
from kvstore.tools.cli.shell import Shell, history_path, is_terminal

__all__ = ["main", "DEFAULT_CLUSTER", "ENVIRONMENT_VARIABLE"]

#: The seed's local cluster (what C{kvstore} starts).
DEFAULT_CLUSTER = "127.0.0.1:5000,127.0.0.1:5001,127.0.0.1:5002"
ENVIRONMENT_VARIABLE = "KVSTORE_CLUSTER"


def parse_args(argv: Sequence[str] | None, environ: dict[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="kvstore-cli",
        description="Talk to a kvstore cluster: an interactive shell without COMMAND, one command with it.",
        epilog=(
            "Commands: put KEY VALUE..., get KEY [stale], delete KEY, incr KEY [DELTA], cas KEY EXPECTED NEW..., "
            "status, and anything else the server understands (members, ...) passed through as typed. "
            "Exit status: 0 done, 1 not found (or CAS failed), 2 error. "
            f"The cluster comes from --cluster, else ${ENVIRONMENT_VARIABLE}, else {DEFAULT_CLUSTER}."
        ),
    )
    parser.add_argument("--cluster", "-C", default=environ.get(ENVIRONMENT_VARIABLE) or DEFAULT_CLUSTER,
                        help="comma-separated host:port of some or all nodes "
                             f"(default: ${ENVIRONMENT_VARIABLE}, else {DEFAULT_CLUSTER})")
    parser.add_argument("--timeout", type=float, default=5.0,
                        help="seconds one command may take, failovers included (default 5)")
    parser.add_argument("--json", action="store_true", help="print each answer as one JSON object")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="say on standard error which node answered each command, and how fast")
    parser.add_argument("--history-file", type=Path, default=None,
                        help="the shell's history (default: $XDG_STATE_HOME/kvstore/cli_history, "
                             "or ~/.local/state/kvstore/cli_history)")
    parser.add_argument("command", nargs="*", metavar="COMMAND",
                        help="one command to run, e.g. 'put k v' (options may follow it; use -- before "
                             "a value that starts with -)")
    args = parser.parse_intermixed_args(argv)
    args.nodes = [a.strip() for a in args.cluster.split(",") if a.strip()]
    try:
        if not args.nodes:
            raise ValueError("no node address")
        for address in args.nodes:
            parse_address(address)
    except ValueError as e:
        parser.error(f"--cluster: {e}")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    return args


def one_shot(args: argparse.Namespace) -> int:
    """Run the command of the command line; print its answer; return its status."""
    try:
        action = commands.parse_argv(args.command)
    except UsageError as e:
        if args.json:
            print(json.dumps({"ok": False, "error": "usage", "message": str(e)}))
        print(f"kvstore-cli: {e}", file=sys.stderr)
        return commands.ERROR
    if isinstance(action, Help):
        print(commands.help_text(action.topic))
        return commands.OK
    if isinstance(action, Exit):
        return commands.OK
    try:
        with Client(args.nodes, timeout=args.timeout) as client:
            outcome = commands.run(action, client)
    except KeyboardInterrupt:  # Ctrl-C: a failure like any other (status 2, JSON with --json), no traceback
        outcome = commands.Outcome(commands.ERROR, commands.INTERRUPTED, {"ok": False, "error": "interrupted"})
    if args.json:
        print(json.dumps(outcome.data))
    elif outcome.status == commands.OK:
        # A value alone, so that v=$(kvstore-cli get k) works; other answers as the server's line.
        print(outcome.data["value"] if "value" in outcome.data else outcome.text)
    else:
        print(outcome.text, file=sys.stderr)
    if args.verbose:
        where = outcome.node or "no node"
        print(f"[answered by {where} in {outcome.seconds * 1000:.1f} ms]", file=sys.stderr)
    return outcome.status


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv, dict(os.environ))
    if args.command:
        return one_shot(args)
    interactive = is_terminal(sys.stdin) and is_terminal(sys.stdout)
    shell = Shell(lambda: Client(args.nodes, timeout=args.timeout), ",".join(args.nodes), verbose=args.verbose,
                  as_json=args.json, interactive=interactive,
                  history=args.history_file or history_path())
    return shell.run()


if __name__ == "__main__":
    sys.exit(main())
