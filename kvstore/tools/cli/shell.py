# -*- test-case-name: tests.test_tools_cli -*-
"""
C{kvstore-cli}'s interactive shell: a prompt with line editing, history
kept between sessions, and completion of command words (the standard
library's C{readline}), reading commands until C{EXIT}, C{QUIT} or Ctrl-D.

The history file lives under C{$XDG_STATE_HOME} (by default
C{~/.local/state}): C{kvstore/cli_history}.  Never in the current
directory, which may be a shared checkout or not writable.

When standard input is not a terminal (C{kvstore-cli < commands.txt}) the
same loop reads the lines without prompt, banner or history, so a file of
commands runs like a script.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, TextIO

from kvstore.tools.cli import commands
from kvstore.tools.cli.commands import ClientLike, Exit, Help, Outcome, UsageError

__all__ = ["Shell", "history_path"]

PROMPT = "kvstore> "
HISTORY_LENGTH = 1000


def history_path(environ: dict[str, str] | None = None) -> Path:
    """Where the shell keeps its history: C{$XDG_STATE_HOME/kvstore/cli_history},
    C{~/.local/state/kvstore/cli_history} if that is unset."""
    environ = dict(os.environ) if environ is None else environ
    state = environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(state) / "kvstore" / "cli_history"


class Shell:
    """
    The read-run-print loop.

    @param make_client: makes the library client; called again after a
        call interrupted with Ctrl-C, whose connection may be half-used.
    @param interactive: prompt, banner, line editing and history (standard
        input is a terminal).
    """

    def __init__(self, make_client: Callable[[], ClientLike], cluster: str, *, verbose: bool = False,
                 as_json: bool = False, interactive: bool = True, history: Path | None = None,
                 stdin: TextIO | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> None:
        self.make_client = make_client
        self.client = make_client()
        self.cluster = cluster
        self.verbose = verbose
        self.as_json = as_json
        self.interactive = interactive
        self.history = history
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._readline: Any = None

    # -- the loop --------------------------------------------------------

    def run(self) -> int:
        """
        Read and run commands until the end.  The exit status is 0 for an
        interactive session (a person has seen every answer); for a script,
        the worst of its commands' statuses.
        """
        worst = commands.OK
        if self.interactive:
            self._start_readline()
            self._say(f"kvstore-cli: cluster {self.cluster}\n"
                      "Type HELP for the commands, EXIT or Ctrl-D to leave.")
        try:
            while True:
                try:
                    line = self._read()
                except EOFError:
                    if self.interactive:
                        self._say("")
                    break
                except KeyboardInterrupt:  # Ctrl-C at the prompt: a fresh line, as in a shell
                    self._say("")
                    continue
                try:
                    status = self.handle(line)
                except _Leave:
                    break
                worst = max(worst, status)
        finally:
            self._save_history()
            self.client.close()
        return commands.OK if self.interactive else worst

    def handle(self, line: str) -> int:
        """Run one line; return its status.  @raise _Leave: on EXIT."""
        try:
            action = commands.parse_line(line)
        except UsageError as e:
            self._show(Outcome(commands.ERROR, f"Error: {e}",
                               {"ok": False, "error": "usage", "message": str(e)}))
            return commands.ERROR
        if action is None:
            return commands.OK
        if isinstance(action, Exit):
            self._say("Goodbye." if not self.as_json else json.dumps({"ok": True, "command": "exit"}))
            raise _Leave()
        if isinstance(action, Help):
            self._say(commands.help_text(action.topic))
            return commands.OK
        try:
            outcome = commands.run(action, self.client)
        except KeyboardInterrupt:
            # The connection may hold half a request: start afresh.
            self.client.close()
            self.client = self.make_client()
            self._show(Outcome(commands.ERROR, commands.INTERRUPTED, {"ok": False, "error": "interrupted"}))
            return commands.ERROR
        self._show(outcome)
        return outcome.status

    # -- output ----------------------------------------------------------

    def _say(self, text: str) -> None:
        self.stdout.write(text + "\n")
        self.stdout.flush()

    def _show(self, outcome: Outcome) -> None:
        if self.as_json:
            self._say(json.dumps(outcome.data))
        else:
            self._say(outcome.text)
        if self.verbose and outcome.node is not None:
            self.stderr.write(f"[answered by {outcome.node} in {outcome.seconds * 1000:.1f} ms]\n")
            self.stderr.flush()
        elif self.verbose:
            self.stderr.write(f"[no node answered; {outcome.seconds * 1000:.1f} ms]\n")
            self.stderr.flush()

    # -- input, editing and history -------------------------------------

    def _read(self) -> str:
        if self.interactive:
            return input(PROMPT)
        line = self.stdin.readline()
        if not line:
            raise EOFError()
        return line

    def _start_readline(self) -> None:
        try:
            import readline
        except ImportError:  # a Python without it: plain input() still works
            return
        self._readline = readline
        readline.set_history_length(HISTORY_LENGTH)
        if self.history is not None:
            try:
                readline.read_history_file(self.history)
            except OSError:
                pass  # no history yet
        readline.set_completer(_complete)
        readline.set_completer_delims(" ")
        if "libedit" in (readline.__doc__ or ""):
            readline.parse_and_bind("bind ^I rl_complete")
        else:
            readline.parse_and_bind("tab: complete")

    def _save_history(self) -> None:
        if self._readline is None or self.history is None:
            return
        try:
            self.history.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(self.history)
        except OSError as e:
            self.stderr.write(f"kvstore-cli: history not saved: {e}\n")


def _complete(text: str, state: int) -> str | None:
    """readline's completer: command words, when the first word is typed."""
    import readline

    if readline.get_line_buffer()[: readline.get_begidx()].strip():
        return None  # not the first word: keys are not known here
    matches = [w + " " for w in (*commands.COMMAND_WORDS, "QUIT") if w.startswith(text.upper())]
    return matches[state] if state < len(matches) else None


class _Leave(Exception):
    """EXIT was typed."""


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False

