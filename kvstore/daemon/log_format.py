# -*- test-case-name: tests.test_log_format -*-
"""
C{--log-format json}: one JSON object per line, for journald and log
shippers, instead of twistd's human-readable lines.

Each line is a JSON object with:

  - C{time}: ISO 8601 in UTC with microseconds (C{2026-11-30T12:00:00.123456+00:00});
  - C{level}: C{debug}, C{info}, C{warn}, C{error} or C{critical};
  - C{namespace}: the logger's namespace (C{kvstore.daemon.service.KVStoreService});
  - C{system}: Twisted's log system (C{-} when none);
  - C{text}: the rendered message, as the text format shows it;
  - C{fields}: the event's own structured fields (C{node}, C{term}, ...),
    values that are not JSON rendered with C{repr};
  - C{traceback}: only for an event carrying a failure;
  - C{truncated}: C{true}, only on a line that was shortened (below).

Every line, its newline included, is at most L{MAX_LINE_BYTES} bytes of
UTF-8.  journald cuts a line longer than its C{LineMax} (48K by default)
into several records, which would leave a log shipper with pieces that are
not JSON; so an event that would render longer (a huge value in a field, a
very long traceback) has its longest strings cut, each ending in a marker
C{"... [truncated N more characters]"}, until the line fits, and carries
C{"truncated": true}.  An event that cannot be made to fit that way (thousands
of fields) keeps its time, level, namespace, system and the start of its
text, with C{"fields_dropped": N}.

C{--log-level} (L{LevelFilter}) drops events below a level before either
format sees them; a reload (SIGHUP, L{kvstore.daemon.reload}) changes it.

Why not L{twisted.logger.jsonFileLogObserver}: it writes a serialization of
the event meant to be read back by L{twisted.logger.eventsFromJSONLogFile}
(each record prefixed with an RS character, C{\\x1e}, as RFC 7464 JSON text
sequences are; the level as an object C{{"name": "info", "__class_uuid__":
...}}; the message as its unrendered format string), which journald and
log shippers would have to undo.  This module uses the same
L{twisted.logger.FileLogObserver} with a formatter of its own.

How twistd is made to use it: twistd's C{AppLogger.start} takes the log
observer from, in order, C{--logger}, the application's L{ILogObserver}
component (the mechanism a C{.tac} file uses), and finally C{--logfile} /
C{--syslog}.  A plugin's service is added to twistd's application just
after C{makeService} returns and before logging starts, so the kvstore
service registers its JSON observer as that component when it joins the
application (L{install}).  The observer writes where twistd's text observer
would have: standard output under C{--nodaemon} without C{--logfile} or
with C{--logfile=-}; otherwise the C{--logfile} file (twistd's default
C{twistd.log}), rotated on SIGUSR1 as twistd does.  C{--syslog} and
C{--logger} choose their own format, so they are refused with C{--log-format
json}.

The text format goes the same way (L{twistd_observer} builds the observer
twistd would, C{textFileLogObserver} on the same file), so that both can be
wrapped in the L{LevelFilter}.  With C{--syslog} or C{--logger}, twistd's
observer is left alone and C{--log-level} is refused.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime, timezone
from typing import IO, Any, Callable, Mapping

from twisted.logger import FileLogObserver, ILogObserver, LogEvent, LogLevel, formatEvent, textFileLogObserver
from twisted.python import logfile
from twisted.python.usage import UsageError
from zope.interface import implementer

__all__ = [
    "FORMATS",
    "LEVELS",
    "MAX_LINE_BYTES",
    "LevelFilter",
    "check_twistd_options",
    "install",
    "json_line",
    "json_observer",
    "kvstore_observes",
    "parse_level",
    "twistd_observer",
]

#: The values of C{--log-format}.
FORMATS = ("text", "json")

#: The values of C{--log-level}, lowest first (twisted.logger's level names).
LEVELS = tuple(level.name for level in LogLevel.iterconstants())

#: The longest JSON line written, its newline included, in bytes of UTF-8:
#: well under journald's default C{LineMax} of 48K (49,152 bytes, past which
#: it splits a line into several records), so that a C{LineMax} lowered to
#: 32K still keeps every line whole.
MAX_LINE_BYTES = 32 * 1024

#: A cut string keeps at least this many bytes of its start, so that many
#: medium fields lose a little each rather than one losing everything.
_MIN_KEPT_BYTES = 256
#: Non-string field values longer than this (as JSON) become their JSON
#: text when a line is too long, so that they can be cut like strings.
_STRINGIFY_BYTES = 1024

# Keys of legacy (twisted.python.log) events that are not structured fields.
_LEGACY_KEYS = frozenset({"message", "time", "system", "isError", "format", "why", "failure", "printed"})


def _field_value(value: Any) -> Any:
    try:
        # allow_nan=False: NaN and Infinity are not JSON (RFC 8259), and
        # json.dumps would otherwise write them as bare words.
        json.dumps(value, allow_nan=False)
    except Exception:  # not JSON: TypeError, ValueError, RecursionError
        try:
            return repr(value)
        except Exception as e:  # one bad field must not cost the event its line
            return f"<unrepresentable {type(value).__name__}: {e!r}>"
    return value


def _dumps(record: Any) -> str:
    """C{record} as strict JSON: readable non-ASCII text, but escapes when
    some text holds a lone surrogate (a non-UTF-8 file name decoded with
    surrogateescape), which the observer could not encode as UTF-8 and
    would drop the whole line."""
    line = json.dumps(record, ensure_ascii=False, allow_nan=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(record, ensure_ascii=True, allow_nan=False)
    return line


def _size(text: str) -> int:
    """Bytes of C{text} in UTF-8 (L{_dumps} output is always encodable)."""
    return len(text.encode("utf-8", "surrogatepass"))


def _marker(removed: int) -> str:
    return f"... [truncated {removed} more characters]"


def _cut(text: str, budget: int) -> str:
    """
    The longest start of C{text}, followed by the truncation marker, whose
    JSON encoding takes at most C{budget} bytes (the marker alone if even
    an empty start does not fit).
    """
    # Every character takes at least one byte: no longer start can fit,
    # which keeps each trial short however long the text is.
    low, high = 0, min(len(text), max(budget, 0))
    while low < high:  # the largest prefix length that fits
        middle = (low + high + 1) // 2
        if _size(_dumps(text[:middle] + _marker(len(text) - middle))) <= budget:
            low = middle
        else:
            high = middle - 1
    return text[:low] + _marker(len(text) - low)


def _cuttable_strings(record: dict[str, Any]) -> list[tuple[dict[str, Any], str, int]]:
    """The container, key and encoded size of every string of C{record}
    still worth cutting."""
    candidates: list[tuple[dict[str, Any], str]] = [(record, key) for key in ("text", "traceback") if key in record]
    candidates += [(record["fields"], key) for key in record.get("fields", {})]
    found = []
    for container, key in candidates:
        value = container[key]
        if not isinstance(value, str):
            continue
        size = _size(_dumps(value))
        if size > _MIN_KEPT_BYTES:
            found.append((container, key, size))
    return found


def _longest_string(record: dict[str, Any]) -> tuple[dict[str, Any], str, int] | None:
    """The container, key and encoded size of the longest string of
    C{record} still worth cutting, or L{None}."""
    return max(_cuttable_strings(record), key=lambda found: found[2], default=None)


def _cut_all_to_one_size(record: dict[str, Any], excess: int) -> bool:
    """
    Cut every string of C{record} longer than some size to that size, the
    largest that removes C{excess} bytes (not below L{_MIN_KEPT_BYTES}):
    one rendering of each string, where cutting the longest one at a time
    re-rendered the whole event once per string (seconds of the reactor's
    time for an event of a thousand fields).  Returns C{False}, changing
    nothing, when cutting every string to L{_MIN_KEPT_BYTES} would not
    remove C{excess} bytes.
    """
    strings = _cuttable_strings(record)

    def removed(size: int) -> int:
        return sum(found - size for _, _, found in strings if found > size)

    if removed(_MIN_KEPT_BYTES) < excess:
        return False
    low, high = _MIN_KEPT_BYTES, max(found for _, _, found in strings)
    while low < high:  # the largest size that removes enough
        middle = (low + high + 1) // 2
        if removed(middle) >= excess:
            low = middle
        else:
            high = middle - 1
    for container, key, found in strings:
        if found > low:
            container[key] = _cut(container[key], low)
    return True


def _fit(record: dict[str, Any], max_bytes: int) -> str:
    """
    C{record} as one JSON line of at most C{max_bytes} bytes with its
    newline: as it is if it fits, else with its longest strings cut (see
    the module docstring).
    """
    line = _dumps(record)
    # A character of JSON text takes at most 4 bytes of UTF-8.
    if len(line) * 4 < max_bytes or _size(line) < max_bytes:
        return line
    record = dict(record, truncated=True)
    if "fields" in record:
        record["fields"] = {
            key: value if isinstance(value, str) or _size(_dumps(value)) <= _STRINGIFY_BYTES else _dumps(value)
            for key, value in record["fields"].items()
        }
    excess = _size(_dumps(record)) + 1 - max_bytes
    if excess > 0 and not _cut_all_to_one_size(record, excess):
        return _minimal(record, max_bytes)
    # What is left over (a line written with ASCII escapes, because of a
    # lone surrogate somewhere, is longer than its strings alone): each pass
    # cuts the longest string by the whole excess (or to its minimum).
    for _ in range(2 * len(record.get("fields", ())) + 6):
        line = _dumps(record)
        excess = _size(line) + 1 - max_bytes
        if excess <= 0:
            return line
        longest = _longest_string(record)
        if longest is None:
            break
        container, key, size = longest
        container[key] = _cut(container[key], max(size - excess, _MIN_KEPT_BYTES))
    return _minimal(record, max_bytes)


def _minimal(record: dict[str, Any], max_bytes: int) -> str:
    """The last resort for a record that cutting strings cannot shorten
    enough: its fixed keys and the start of its text, fields dropped."""
    minimal: dict[str, Any] = {key: record[key] for key in ("time", "level", "namespace", "system") if key in record}
    minimal["namespace"] = str(minimal.get("namespace", "-"))[:200]
    minimal["system"] = str(minimal.get("system", "-"))[:200]
    minimal["text"] = text = str(record.get("text", ""))
    minimal["truncated"] = True
    minimal["fields_dropped"] = len(record.get("fields", ()))
    line = _dumps(minimal)
    excess = _size(line) + 1 - max_bytes
    if excess > 0:
        minimal["text"] = _cut(text, max(_size(_dumps(text)) - excess, 0))
        line = _dumps(minimal)
    if _size(line) >= max_bytes:  # a limit too small for any event: say so, briefly
        line = _dumps({"truncated": True})
    return line


def json_line(event: Mapping[str, Any], max_bytes: int = MAX_LINE_BYTES) -> str:
    """
    Render one log event as a line of JSON (with its newline) of at most
    C{max_bytes} bytes; see the module docstring for the keys and how a
    long event is shortened.  Never raises: an event that cannot be
    rendered yields a line saying so.
    """
    try:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time") or 0, timezone.utc).isoformat(timespec="microseconds"),
            "level": getattr(level, "name", "info"),
            "namespace": event.get("log_namespace", "-"),
            "system": event.get("log_system", "-"),
            "text": formatEvent(dict(event)),
        }
        fields = {
            key: _field_value(value)
            for key, value in event.items()
            if not key.startswith("log_") and key not in _LEGACY_KEYS
        }
        if fields:
            record["fields"] = fields
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        return _fit(record, max_bytes) + "\n"
    except Exception as e:  # a log line must never break logging
        return json.dumps({"level": "error", "namespace": __name__, "text": f"unrenderable log event: {e!r}"}) + "\n"


def json_observer(out: IO[str]) -> FileLogObserver:
    """An observer writing L{json_line}s to C{out} (flushed after each)."""
    return FileLogObserver(out, json_line)


def parse_level(name: str) -> LogLevel:
    """
    The L{LogLevel} named C{name} (C{debug}, C{info}, C{warn}, C{error},
    C{critical}; C{warning} is taken for C{warn}).

    @raise UsageError: naming the levels, for any other name.
    """
    text = name.strip().lower()
    text = "warn" if text == "warning" else text
    if text not in LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(LEVELS)}, not {name!r}")
    level: LogLevel = LogLevel.levelWithName(text)
    return level


@implementer(ILogObserver)
class LevelFilter:
    """
    Passes to C{observer} the events at or above C{level}, which a reload
    may change at any time (on the reactor thread, as logging itself).
    An event without a level (none of kvstore's, but a foreign observer's
    might be) is passed on.
    """

    def __init__(self, observer: ILogObserver, level: LogLevel = LogLevel.info) -> None:
        self.observer = observer
        self.level = level

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level")
        if level is not None and level < self.level:
            return
        self.observer(event)


def check_twistd_options(log_format: str, parent: Mapping[str, Any] | None, log_level: str | None = None) -> None:
    """
    Refuse C{--log-format json} with twistd options that choose another log
    observer (C{--syslog}, C{--logger}), or standard output for a daemon;
    and C{--log-level} (C{log_level}, L{None} when not given) with those
    two, whose observers kvstore cannot filter.

    @raise UsageError: naming the conflicting option.
    """
    if parent is None:
        return
    if log_level is not None:
        for option in ("syslog", "logger"):
            if parent.get(option):
                raise UsageError(f"--log-level cannot be combined with twistd's --{option}, whose observer kvstore does not wrap")
    if log_format != "json":
        return
    for option in ("syslog", "logger"):
        if parent.get(option):
            raise UsageError(f"--log-format json cannot be combined with twistd's --{option}, which picks its own format")
    # twistd refuses this itself, but only when it builds its own observer.
    if parent.get("logfile") == "-" and not (parent.get("nodaemon") or parent.get("debug")):
        raise UsageError("--log-format json: a daemon cannot log to standard output (--logfile=- needs --nodaemon)")


def kvstore_observes(parent: Mapping[str, Any]) -> bool:
    """
    Whether kvstore makes twistd's observer (L{twistd_observer}) for
    twistd's options C{parent}: not with C{--syslog} or C{--logger}, nor for
    a daemon told to log to standard output, which twistd refuses itself.
    """
    if parent.get("syslog") or parent.get("logger"):
        return False
    return not (parent.get("logfile") == "-" and not (parent.get("nodaemon") or parent.get("debug")))


def twistd_observer(parent: Mapping[str, Any], get_reactor: Callable[[], Any], log_format: str = "json") -> FileLogObserver:
    """
    An observer writing C{log_format} lines (L{json_line}, or twistd's own
    text lines) where twistd's own text observer would for twistd's options
    C{parent} (see L{twisted.scripts._twistd_unix.UnixAppLogger}).
    C{get_reactor} returns the reactor that rotates a log file on SIGUSR1.
    """
    make = json_observer if log_format == "json" else textFileLogObserver
    name = parent.get("logfile") or ""
    nodaemon = bool(parent.get("nodaemon") or parent.get("debug"))
    if name == "-" or (nodaemon and not name):
        return make(sys.stdout)
    log = logfile.LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: Any) -> None:
            get_reactor().callFromThread(log.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return make(log)


def install(application: Any, observer: ILogObserver) -> None:
    """
    Make C{observer} twistd's log observer, if C{application} is twistd's
    application (anything with C{setComponent}: see the module docstring).
    """
    set_component = getattr(application, "setComponent", None)
    if set_component is not None:
        set_component(ILogObserver, observer)
