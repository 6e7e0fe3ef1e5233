# -*- test-case-name: tests.test_config_file -*-
"""
C{--config FILE}: kvstore's options in a TOML file, one file for a whole
cluster, deployed unchanged to every machine.

The file's keys are the command-line options without their dashes
(C{heartbeat-interval = 100}, C{unsafe-no-fsync = true}).  Where they go::

    # Options at the top level (or in [cluster]) apply to every node.
    log-format = "json"

    [cluster]
    id = "prod-eu-1"                  # --cluster-id
    heartbeat-interval = 100          # any option, for every node

    [cluster.members]                 # node id = "HOST:PORT" (or "[IPV6]:PORT")
    0 = "10.0.0.1:5000"
    1 = "10.0.0.2:5000"
    2 = "10.0.0.3:5000"

    [node.1]                          # options for node 1 only
    listen = "tcp:5000:interface=0.0.0.0"

    [node.3]                          # a node added later (issue 13)
    join = ["10.0.0.1:5000", "10.0.0.2:5000"]   # --join

C{--node-id} (on the command line, or C{node-id} at the top level of a
per-machine file) picks the node: with C{[cluster.members]} its C{--host},
C{--port} and C{--peers} come from the members, so C{host}, C{port} and
C{peers} may not be set anywhere in such a file.  A node's value is, from
strongest to weakest: the command line, its C{[node.<id>]} section, then the
top level or C{[cluster]} (one key may not be in both).  A flag set to
C{true} in the file cannot be turned off on the command line.

C{join} (C{--join}: an array of C{"HOST:PORT"} strings, or one
comma-separated string) starts a node added to a running cluster.  With
C{[cluster.members]} it goes in the node's own C{[node.<id>]} section (at
the top level or in C{[cluster]} it would make every member join) or on
the command line; the joining node takes its C{--host} and C{--port} from
its C{[cluster.members]} entry if it has one (and no C{--peers}: a joining
node learns them from the cluster), otherwise from its section
(C{host}, C{port}) or the command line.  C{[cluster.members]} stays the
membership the cluster was bootstrapped with: once it runs, membership
comes from the log, so a node added later need not be listed there.

This module is pure: L{load} turns TOML text into option values, checked as
far as the file's own structure goes -- unknown keys, wrong types,
inconsistent members -- with errors naming the file, the line (found by a
best-effort scan, since TOML parsers do not report it) and the key.  The
values are then handed to the option parser as if typed before the command
line's own options (L{as_arguments}), so they are validated exactly as
command-line options are, and the command line overrides them.

TOML is read with the standard library's C{tomllib} (Python 3.11+) or its
backport C{tomli}.
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from twisted.python.usage import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["ConfigFileError", "FileOptions", "as_arguments", "load"]

# The file's own structure: tables and the keys that are not options.
_CLUSTER = "cluster"
_NODE = "node"
_MEMBERS = "members"
#: Options a [cluster.members] table derives, so the file may not set them.
_FROM_MEMBERS = ("host", "port", "peers")
#: --join: a node added to a running cluster.
_JOIN = "join"

# Expected TOML types of the options kvstore has today; any other option
# (added later) accepts a string, an integer or a float, and its own parser
# checks the value.
_INTEGER = frozenset({"node-id", "port", "snapshot-entries", "snapshot-catchup-entries"})
_NUMBER = frozenset({"heartbeat-interval", "commit-timeout", "read-timeout"})
_SIZE = frozenset({"max-key-bytes", "max-value-bytes", "max-line-bytes", "segment-bytes", "snapshot-bytes"})
_STRING = frozenset({"host", "listen", "cluster-id", "data-dir", "log-format", "admin-listen"})

_HEADER_RE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_KEY_RE = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*=""")


class ConfigFileError(UsageError):
    """The configuration file is unreadable, not TOML, or not a valid
    kvstore configuration; the message names the file and the key."""


@dataclass
class FileOptions:
    """
    What a configuration file sets for one node.

    @ivar values: option name to its value as the command line would give
        it (a string), or C{True} for a flag.
    @ivar origins: option name to where the file sets it
        (C{"kvstore.toml, line 7: [node.1] port"}), for error messages.
    """

    values: dict[str, str | bool] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def _key_lines(text: str) -> dict[tuple[str, ...], int]:
    """
    The line of each key, C{(table..., key) -> line}, found by scanning for
    table headers and C{key =} lines (best effort: enough for the files this
    module documents; a key it cannot place gets no line).
    """
    lines: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER_RE.match(line)
        if header is not None and not line.lstrip().startswith("[["):
            table = tuple(part.strip().strip("\"'") for part in header.group(1).split("."))
            for length in range(1, len(table) + 1):  # [node.1] also places "node"
                lines.setdefault(table[:length], number)
            continue
        key = _KEY_RE.match(line)
        if key is not None:
            lines.setdefault(table + (key.group(1).strip("\"'"),), number)
    return lines


class _Reader:
    """Checks one file's values against the known options."""

    def __init__(self, path: str, text: str, parameters: Iterable[str], flags: Iterable[str]) -> None:
        self.path = path
        self.lines = _key_lines(text)
        self.parameters = frozenset(parameters)
        self.flags = frozenset(flags)

    def where(self, table: tuple[str, ...], key: str | None = None) -> str:
        """C{"FILE, line N: [table] key"} (parts omitted when unknown)."""
        location = table + ((key,) if key is not None else ())
        line = self.lines.get(location)
        if line is None and key is not None:
            line = self.lines.get(table)
        prefix = self.path if line is None else f"{self.path}, line {line}"
        section = f"[{'.'.join(table)}]" if table else ""
        name = " ".join(part for part in (section, key or "") if part)
        return f"{prefix}: {name}" if name else prefix

    def error(self, table: tuple[str, ...], key: str | None, reason: str) -> ConfigFileError:
        return ConfigFileError(f"{self.where(table, key)}: {reason}")

    def unknown(self, table: tuple[str, ...], key: str, allowed: Iterable[str]) -> ConfigFileError:
        close = difflib.get_close_matches(key.replace("_", "-"), sorted(allowed), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return self.error(table, key, f"unknown option{hint}")

    def option_value(self, table: tuple[str, ...], key: str, value: Any) -> str | bool:
        """C{value} as the command line would give option C{key}, or an error."""
        if key in self.flags:
            if not isinstance(value, bool):
                raise self.error(table, key, f"expected true or false, not {_type_name(value)}")
            return value
        if key in ("peers", _JOIN) and isinstance(value, list) and all(isinstance(v, str) for v in value):
            if not value:
                raise self.error(table, key, "expected at least one \"HOST:PORT\"")
            return ",".join(value)
        if key == "election-timeout" and isinstance(value, list):
            if len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                return f"{value[0]}-{value[1]}"
            raise self.error(table, key, "expected [MIN, MAX] in milliseconds or \"MIN-MAX\"")
        if key in _INTEGER:
            expected, ok = "an integer", isinstance(value, int)
        elif key in _NUMBER:
            expected, ok = "a number", isinstance(value, (int, float))
        elif key in _SIZE:
            expected, ok = "an integer or a size string such as \"64MiB\"", isinstance(value, (int, str))
        elif key in _STRING or key in ("peers", "election-timeout", _JOIN):
            expected, ok = "a string", isinstance(value, str)
        else:
            expected, ok = "a string or a number", isinstance(value, (str, int, float))
        if isinstance(value, bool) or not ok:
            raise self.error(table, key, f"expected {expected}, not {_type_name(value)}")
        return str(value)

    def options(
        self, table: tuple[str, ...], items: Mapping[str, Any], skip: Iterable[str] = (), suggest: Iterable[str] = ()
    ) -> dict[str, tuple[str | bool, str]]:
        """The options of one table: name -> (value, origin)."""
        result: dict[str, tuple[str | bool, str]] = {}
        allowed = self.parameters | self.flags
        for key, value in items.items():
            if key in skip:
                continue
            if key not in allowed:
                raise self.unknown(table, key, allowed | set(skip) | set(suggest))
            result[key] = (self.option_value(table, key, value), self.where(table, key))
        return result


def _parse_member_address(reader: _Reader, key: str, value: Any) -> tuple[str, int]:
    table = (_CLUSTER, _MEMBERS)
    if not isinstance(value, str):
        raise reader.error(table, key, f"expected \"HOST:PORT\", not {_type_name(value)}")
    # Only the characters of a hostname or an IP address: the address goes
    # into the comma-separated --peers list as ID@HOST:PORT, where a ',' or
    # an '@' would add members of its own.
    match = re.fullmatch(r"\[([0-9A-Za-z:.%_-]+)\]:(\d+)|([A-Za-z0-9._-]+):(\d+)", value.strip())
    if match is None:
        raise reader.error(table, key, f"expected \"HOST:PORT\" or \"[IPV6]:PORT\", not {value!r}")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise reader.error(table, key, f"port must be between 1 and 65535, not {port}")
    if host in ("0.0.0.0", "::", "*"):
        raise reader.error(table, key, f"{host!r} is a wildcard address peers cannot connect to; use listen to bind all interfaces")
    return host, port


def _check_id_once(
    reader: _Reader, table: tuple[str, ...], key: str | None, node_id: int, seen: Mapping[int, Any], names: Iterable[str]
) -> None:
    """Refuse a node id already named by another key of the same table
    (C{1} and C{01}): TOML sees two keys, so one would silently win."""
    if node_id in seen:
        other = next(n for n in names if re.fullmatch(r"\d+", n) and int(n) == node_id)
        raise reader.error(table, key, f"node id {node_id} is also written {other!r}; write each node id once")


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def load(
    text: str,
    path: str,
    *,
    parameters: Iterable[str],
    flags: Iterable[str],
    node_id: int | None,
    joining: bool = False,
) -> FileOptions:
    """
    Read the options a configuration file sets for node C{node_id} (the
    command line's C{--node-id}, or L{None} if it gave none).

    @param parameters: the names of the options that take a value.
    @param flags: the names of the options that take none.
    @param joining: the command line gives C{--join}: with
        C{[cluster.members]}, the node takes no C{--peers} from them and
        need not be one of them (as with C{join} in its section).

    @raise ConfigFileError: if the text is not TOML, or has unknown keys,
        values of the wrong type, inconsistent members, or no way to tell
        which node this is.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigFileError(f"{path}: not valid TOML: {e}") from None
    reader = _Reader(path, text, parameters, flags)

    top = {k: v for k, v in document.items() if k not in (_CLUSTER, _NODE)}
    cluster = document.get(_CLUSTER, {})
    nodes = document.get(_NODE, {})
    for name, table in ((_CLUSTER, cluster), (_NODE, nodes)):
        if not isinstance(table, dict):
            raise reader.error((), name, f"expected a table ([{name}]), not {_type_name(table)}")

    shared = reader.options((), top, suggest=(_CLUSTER, _NODE))
    cluster_options = reader.options((_CLUSTER,), cluster, skip=("id", _MEMBERS))
    if "node-id" in cluster_options:
        raise reader.error((_CLUSTER,), "node-id", "--node-id picks one node; it cannot be shared by the cluster")
    if "id" in cluster:  # [cluster] id is --cluster-id
        if not isinstance(cluster["id"], str):
            raise reader.error((_CLUSTER,), "id", f"expected a string, not {_type_name(cluster['id'])}")
        cluster_options["cluster-id"] = (cluster["id"], reader.where((_CLUSTER,), "id"))
    twice = sorted(shared.keys() & cluster_options.keys())
    if twice:
        raise ConfigFileError(f"{shared[twice[0]][1]}: also set in {cluster_options[twice[0]][1]}; set it once")
    shared.update(cluster_options)

    # The node sections: [node.<id>].
    sections: dict[int, dict[str, Any]] = {}
    for name, section in nodes.items():
        if not re.fullmatch(r"\d+", name):
            raise reader.error((_NODE, name), None, "node sections are named by node id, an integer >= 0: [node.0]")
        if not isinstance(section, dict):
            raise reader.error((_NODE,), name, f"expected a table, not {_type_name(section)}")
        _check_id_once(reader, (_NODE, name), None, int(name), sections, nodes)
        # Every node's section, not only this node's: the same file is
        # deployed to every machine, so a mistake is found on the first.
        if "node-id" in reader.options((_NODE, name), section):
            raise reader.error((_NODE, name), "node-id", "the section's name is the node id; remove it")
        sections[int(name)] = section

    if node_id is None and "node-id" in shared:
        node_id = int(shared["node-id"][0])

    # A node joining a running cluster (--join): its own section's join, or
    # the command line's.
    joiners = {number for number, section in sections.items() if _JOIN in section}
    if node_id is not None and (joining or node_id in joiners):
        joining = True

    # The members: [cluster.members].
    members_table = cluster.get(_MEMBERS)
    members: dict[int, tuple[str, int]] = {}
    if members_table is not None:
        if not isinstance(members_table, dict) or not members_table:
            raise reader.error((_CLUSTER,), _MEMBERS, "expected a table of node id = \"HOST:PORT\" ([cluster.members])")
        for key, value in members_table.items():
            if not re.fullmatch(r"\d+", key):
                raise reader.error((_CLUSTER, _MEMBERS), key, "member keys are node ids, integers >= 0")
            _check_id_once(reader, (_CLUSTER, _MEMBERS), key, int(key), members, members_table)
            address = _parse_member_address(reader, key, value)
            for other, other_address in members.items():
                if other_address == address:
                    raise reader.error((_CLUSTER, _MEMBERS), key, f"address {_format_address(*address)} is also member {other}'s")
            members[int(key)] = address
        for option in _FROM_MEMBERS:
            if option in shared:
                raise ConfigFileError(f"{shared[option][1]}: the members' addresses come from [cluster.members]; remove it")
        if _JOIN in shared:
            raise ConfigFileError(
                f"{shared[_JOIN][1]}: every member would join; set join in the joining node's [node.<id>] section"
            )
        for number, section in sorted(sections.items()):
            if number not in members:
                if number in joiners:
                    # Added to the running cluster: not a bootstrap member,
                    # so its section gives its address.
                    if "peers" in section:
                        raise reader.error((_NODE, str(number)), "peers", "a joining node learns its peers from the cluster; remove it")
                    continue
                raise reader.error((_NODE, str(number)), None, f"node {number} is not in [cluster.members] ({', '.join(map(str, sorted(members)))})")
            for option in _FROM_MEMBERS:
                if option in section:
                    raise reader.error((_NODE, str(number)), option, "the members' addresses come from [cluster.members]; remove it")
        if node_id is None:
            raise ConfigFileError(f"{path} describes a cluster of members {', '.join(map(str, sorted(members)))}: choose this node with --node-id")
        if node_id not in members and not joining:
            raise ConfigFileError(f"{path}: --node-id {node_id} is not in [cluster.members] ({', '.join(map(str, sorted(members)))})")
    elif sections and node_id is None:
        raise ConfigFileError(f"{path} has [node.<id>] sections: choose this node with --node-id")

    result = FileOptions()
    for name, (value, origin) in shared.items():
        result.values[name] = value
        result.origins[name] = origin
    if node_id is not None and node_id in sections:
        table = (_NODE, str(node_id))
        own = reader.options(table, sections[node_id])
        if "node-id" in own:
            raise reader.error(table, "node-id", "the section's name is the node id; remove it")
        for name, (value, origin) in own.items():
            result.values[name] = value
            result.origins[name] = origin
    if members and node_id in members:
        origin = reader.where((_CLUSTER, _MEMBERS), str(node_id))
        host, port = members[node_id]
        derived = {"node-id": str(node_id), "host": host, "port": str(port)}
        if not joining:
            # A joining node learns its peers from the cluster (--join and
            # --peers exclude each other).
            derived["peers"] = ",".join(f"{i}@{_format_address(*a)}" for i, a in sorted(members.items()) if i != node_id)
        result.values.update(derived)
        for name in derived:
            result.origins[name] = origin

    return result


def as_arguments(options: FileOptions) -> list[str]:
    """
    The command-line arguments equivalent to C{options}: C{--name=value}
    for each set value, C{--flag} for each flag set to true.
    """
    arguments = []
    for name, value in options.values.items():
        if value is True:
            arguments.append(f"--{name}")
        elif value is not False:
            arguments.append(f"--{name}={value}")
    return arguments


# ---------------------------------------------------------------------------
# The glue the option parser calls: it reads the file (the one part of this
# module that does I/O) and explains errors in values that came from it.


@dataclass
class CommandLineConfig:
    """
    The configuration file named on a command line, and what it sets.

    @ivar path: the C{--config} file, or L{None}.
    @ivar file_options: what it sets for this node.
    @ivar given: the options the command line itself gives.
    """

    path: str | None = None
    file_options: FileOptions = field(default_factory=FileOptions)
    given: frozenset[str] = frozenset()

    def arguments(self) -> list[str]:
        """The file's options as arguments, to go before the command line's."""
        return as_arguments(self.file_options)

    def explain(self, message: str) -> str:
        """
        C{message} (an option error) followed by where the file sets each
        option it names that the command line did not give.
        """
        origins = self.file_options.origins
        named = dict.fromkeys(re.findall(r"--([a-z][a-z0-9-]*)", message))
        notes = [f"--{name} comes from {origins[name]}" for name in named if name in origins and name not in self.given]
        return message if not notes else f"{message} ({'; '.join(notes)})"


def from_command_line(arguments: list[str], short: str, long: list[str], parse_node_id: Any) -> CommandLineConfig:
    """
    Find C{--config} and C{--node-id} in C{arguments} (parsed with the same
    C{getopt} tables as the option parser, C{short} and C{long}) and load
    the file, if any.  C{parse_node_id} turns the C{--node-id} text into an
    int (raising the parser's error).  Arguments that do not parse are left
    to the option parser to report.

    @raise ConfigFileError: if the file cannot be read or is invalid.
    """
    import getopt

    try:
        parsed, _ = getopt.getopt(arguments, short, long)
    except getopt.GetoptError:
        return CommandLineConfig()
    given = frozenset(name[2:] for name, _ in parsed if name.startswith("--"))
    node_text = None
    paths = []
    for name, value in parsed:
        if name == "--config":
            paths.append(value)
        elif name == "--node-id":
            node_text = value
    if len(paths) > 1:
        # Options given twice usually mean the last wins; for files that
        # would silently skip the first (even a mistyped, missing one).
        raise ConfigFileError(f"--config given {len(paths)} times ({', '.join(paths)}); give one file")
    path = paths[0] if paths else None
    if path is None:
        return CommandLineConfig(given=given)
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise ConfigFileError(f"--config {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigFileError(f"--config {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    parameters = [o[:-1] for o in long if o.endswith("=") and o != "config="]
    flags = [o for o in long if not o.endswith("=") and o not in ("help", "version")]
    node_id = None if node_text is None else parse_node_id(node_text)
    joining = "join" in given
    return CommandLineConfig(
        path, load(text, path, parameters=parameters, flags=flags, node_id=node_id, joining=joining), given
    )


def with_absolute_config(arguments: list[str], short: str, long: list[str]) -> list[str]:
    """
    C{arguments} (parsed with the option parser's C{getopt} tables C{short}
    and C{long}), rewritten one option per argument with the C{--config}
    path made absolute: what a reload parses again later, when twistd may
    have changed directory (C{--rundir}).  Arguments that do not parse are
    returned as they are (the option parser reports them).
    """
    import getopt
    import os

    try:
        parsed, rest = getopt.getopt(arguments, short, long)
    except getopt.GetoptError:
        return list(arguments)
    rewritten: list[str] = []
    for name, value in parsed:
        if name.startswith("--"):
            if name == "--config":
                value = os.path.abspath(value)
            rewritten.append(f"{name}={value}" if f"{name[2:]}=" in long else name)
        else:
            rewritten.extend([name, value] if f"{name[1:]}:" in short else [name])
    return rewritten + rest
