# -*- test-case-name: tests.test_reload_plan,tests.test_reload_service -*-
"""
Reloading the configuration while the node runs (SIGHUP, C{systemctl
reload}).

A reload parses the node's command line again, with its C{--config} file as
the file is now (the command line still overrides the file), and compares
the result with the configuration the node runs.  Every option the new
configuration changes is either applied at once or reported as needing a
restart; nothing else happens, and a file that does not parse, or sets a
value an option refuses, changes nothing (the error is logged).

What changes at run time (L{RELOADABLE}), and why each is safe:

  - C{log-level}: only which events the log observer writes.
  - C{commit-timeout}, C{read-timeout}: how long the node waits for a
    request before telling its client the outcome is unknown or the read
    unavailable.  Either answer is always allowed, so no timeout can break
    consistency; requests already waiting keep their deadlines, capped at
    the new timeout from the reload (L{kvstore.node.node.Node.set_timeouts}).
  - C{max-key-bytes}, C{max-value-bytes}, C{max-line-bytes}: the limits
    the client protocol enforces, for connections accepted after the
    reload (an open connection keeps the limits it was accepted with).  The
    option parser has checked the new values against each other and
    against the peer message limit, as at start-up; a follower does not
    check replicated entries against its own limits, so the nodes of a
    cluster may differ while a reload reaches them one by one, as they may
    between restarts.

Everything else needs a restart, in particular the Raft timers
(C{heartbeat-interval}, C{election-timeout}): the Raft core takes them once,
at construction; the rule that an election timeout exceeds three heartbeats
is checked within one node only, and the core's leader stickiness and
check-quorum windows are measured with them, so changing them under a
running core is not something this module could show to be safe.  The
replication limits (C{max-append-*}, C{max-inflight}, C{max-apply-batch}),
the members and addresses, the data directory, C{segment-bytes}, fsync and
C{log-format} are likewise fixed at start-up.  A reload names each such
change, with its old and new value, on every reload until the node is
restarted.

This module holds the comparison (L{settings}, L{plan}) and the
L{Reloader}, which parses, compares, logs and hands the values to apply to
a callback; L{kvstore.daemon.service} wires the signal and the callback.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from twisted.logger import Logger
from twisted.python.usage import UsageError

from kvstore.daemon.log_format import LEVELS
from kvstore.daemon.options import NodeConfig, Options

__all__ = ["RELOADABLE", "Change", "ReloadPlan", "Reloader", "RunningConfig", "parse_arguments", "plan", "settings"]

#: The options a reload applies without a restart (see the module docstring).
RELOADABLE = frozenset({"log-level", "commit-timeout", "read-timeout", "max-key-bytes", "max-value-bytes", "max-line-bytes"})

#: Settings in seconds, shown with their unit.
_SECONDS = frozenset({"heartbeat-interval", "election-timeout-min", "election-timeout-max", "commit-timeout", "read-timeout"})
#: Raft settings that repeat the node's own (node-id, peers).
_RAFT_DUPLICATES = frozenset({"node_id", "peers"})


@dataclass(frozen=True)
class RunningConfig:
    """
    Everything a reload compares: the validated options, and the two log
    options kept outside L{NodeConfig}.
    """

    config: NodeConfig
    log_format: str = "text"
    log_level: str = "info"


def _render(name: str, value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value) or "none"
    if name in _SECONDS and isinstance(value, float):
        # Short when exact ("5s", "0.1s"), else every digit: the plan
        # compares these texts, and a rounded one would hide a change.
        short = f"{value:g}"
        return f"{short if float(short) == value else repr(value)}s"
    return str(value)


def settings(running: RunningConfig) -> dict[str, str]:
    """
    Every setting of C{running}, by name, rendered for the log: the fields
    of L{NodeConfig} and of its Raft configuration with C{-} for C{_}
    (durations in seconds, as C{"0.1s"}), plus C{log-format} and
    C{log-level}.  Fields added to either class later appear here without
    a change to this module, and need a restart unless named in
    L{RELOADABLE}.
    """
    values: dict[str, str] = {}
    config = running.config
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for inner in dataclasses.fields(value):
                if inner.name not in _RAFT_DUPLICATES:
                    name = inner.name.replace("_", "-")
                    values[name] = _render(name, getattr(value, inner.name))
            continue
        name = field.name.replace("_", "-")
        values[name] = _render(name, value)
    values["log-format"] = running.log_format
    values["log-level"] = running.log_level
    return values


@dataclass(frozen=True)
class Change:
    """One setting a reload changes."""

    name: str
    old: str
    new: str

    def __str__(self) -> str:
        return f"{self.name} {self.old} -> {self.new}"


@dataclass(frozen=True)
class ReloadPlan:
    """
    What a reload does: the changes it applies, and those that need a
    restart (reported, not applied).
    """

    applied: tuple[Change, ...]
    restart: tuple[Change, ...]


def plan(old: Mapping[str, str], new: Mapping[str, str], reloadable: frozenset[str] = RELOADABLE) -> ReloadPlan:
    """The changes from C{old} to C{new} (L{settings}), split into those
    in C{reloadable} and the others."""
    names = sorted(old.keys() | new.keys())
    changes = [Change(name, old.get(name, "unset"), new.get(name, "unset")) for name in names if old.get(name) != new.get(name)]
    return ReloadPlan(
        applied=tuple(c for c in changes if c.name in reloadable),
        restart=tuple(c for c in changes if c.name not in reloadable),
    )


def parse_arguments(arguments: Sequence[str]) -> RunningConfig:
    """
    Parse a node's command line (L{Options.arguments}) as at start-up,
    reading its C{--config} file again.

    @raise UsageError: as the option parser does, the configuration file's
        errors included.
    """
    options = Options()  # type: ignore[no-untyped-call]  # usage.Options.__init__ is unannotated
    options.parseOptions(list(arguments))
    return RunningConfig(options.config, options.log_format, options.log_level or "info")


class Reloader:
    """
    Reloads a running node's configuration: L{reload} parses (C{parse}),
    compares with the running configuration, logs what changes and what
    needs a restart, and calls C{apply} with the running configuration
    updated by the changes it applies (the C{reloadable} settings: by
    default L{RELOADABLE}; without C{log-level} when the node's log
    observer is twistd's own, which it cannot filter).  The running
    configuration then has the applied settings; those needing a restart
    are reported again by every later reload.

    @ivar running: the configuration the node runs.
    """

    log = Logger()

    def __init__(
        self,
        running: RunningConfig,
        parse: Callable[[], RunningConfig],
        apply: Callable[[RunningConfig], None],
        source: str = "the command line",
        reloadable: frozenset[str] = RELOADABLE,
    ) -> None:
        self.running = running
        self.reloadable = reloadable
        self._parse = parse
        self._apply = apply
        self._source = source

    def reload(self) -> ReloadPlan | None:
        """
        Reload once.  Returns the plan carried out, or L{None} when the new
        configuration was refused (the running one is kept).
        """
        try:
            new = self._parse()
        except UsageError as e:
            self.log.error(
                "configuration reload refused, the running configuration is unchanged: {error}",
                error=str(e),
            )
            return None
        except Exception:
            self.log.failure("configuration reload failed, the running configuration is unchanged")
            return None
        result = plan(settings(self.running), settings(new), self.reloadable)
        merged = self._merge(new, result)
        # The summary is logged at info under the more verbose of the two
        # levels: before a level raised to "error" takes effect, after one
        # lowered to "debug" does; so the line saying so is never hidden.
        more_verbose = LEVELS.index(merged.log_level) < LEVELS.index(self.running.log_level)
        if not more_verbose:
            self._report(result)
        if result.applied:
            try:
                self._apply(merged)
            except Exception:
                self.log.failure("applying the reloaded configuration failed; the running configuration is unchanged")
                return None
            self.running = merged
        if more_verbose:
            self._report(result)
        return result

    def _report(self, result: ReloadPlan) -> None:
        """Log what a reload applies and what needs a restart."""
        self.log.info(
            "configuration reloaded from {source}: {applied}; {restart}",
            source=self._source,
            applied=("applied " + ", ".join(map(str, result.applied)) if result.applied else "nothing to apply"),
            restart=(
                "needs a restart to take effect: " + ", ".join(map(str, result.restart))
                if result.restart
                else "nothing needs a restart"
            ),
            changed=[str(c) for c in result.applied],
            needs_restart=[str(c) for c in result.restart],
        )

    def _merge(self, new: RunningConfig, result: ReloadPlan) -> RunningConfig:
        """The running configuration with the applied changes of C{new}
        only (the others wait for a restart)."""
        applied = {c.name for c in result.applied}
        config = dataclasses.replace(
            self.running.config,
            **{
                field: getattr(new.config, field)
                for field, name in (
                    ("commit_timeout", "commit-timeout"),
                    ("read_timeout", "read-timeout"),
                    ("max_key_bytes", "max-key-bytes"),
                    ("max_value_bytes", "max-value-bytes"),
                    ("max_line_bytes", "max-line-bytes"),
                )
                if name in applied
            },
        )
        level = new.log_level if "log-level" in applied else self.running.log_level
        return RunningConfig(config, self.running.log_format, level)
