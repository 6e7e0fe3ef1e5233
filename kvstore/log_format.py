# -*- test-case-name: tests.test_log_format -*-
"""
C{--log-format json}: one JSON object per line, for journald and log
shippers, instead of twistd's human-readable lines.

Each line is a JSON object with:

  - C{time}: ISO 8601 in UTC with microseconds (C{2026-11-30T12:00:00.123456+00:00});
  - C{level}: C{debug}, C{info}, C{warn}, C{error} or C{critical};
  - C{namespace}: the logger's namespace (C{kvstore.service.KVStoreService});
  - C{system}: Twisted's log system (C{-} when none);
  - C{text}: the rendered message, as the text format shows it;
  - C{fields}: the event's own structured fields (C{node}, C{term}, ...),
    values that are not JSON rendered with C{repr};
  - C{traceback}: only for an event carrying a failure.

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
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import datetime, timezone
from typing import IO, Any, Callable, Mapping

from twisted.logger import FileLogObserver, ILogObserver, formatEvent
from twisted.python import logfile
from twisted.python.usage import UsageError

__all__ = ["FORMATS", "check_twistd_options", "install", "json_line", "json_observer", "twistd_observer"]

#: The values of C{--log-format}.
FORMATS = ("text", "json")

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


def _dumps(record: Mapping[str, Any]) -> str:
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


def json_line(event: Mapping[str, Any]) -> str:
    """
    Render one log event as a line of JSON (with its newline); see the
    module docstring for the keys.  Never raises: an event that cannot be
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
        return _dumps(record) + "\n"
    except Exception as e:  # a log line must never break logging
        return json.dumps({"level": "error", "namespace": __name__, "text": f"unrenderable log event: {e!r}"}) + "\n"


def json_observer(out: IO[str]) -> FileLogObserver:
    """An observer writing L{json_line}s to C{out} (flushed after each)."""
    return FileLogObserver(out, json_line)


def check_twistd_options(log_format: str, parent: Mapping[str, Any] | None) -> None:
    """
    Refuse C{--log-format json} with twistd options that choose another log
    observer (C{--syslog}, C{--logger}), or standard output for a daemon.

    @raise UsageError: naming the conflicting option.
    """
    if log_format != "json" or parent is None:
        return
    for option in ("syslog", "logger"):
        if parent.get(option):
            raise UsageError(f"--log-format json cannot be combined with twistd's --{option}, which picks its own format")
    # twistd refuses this itself, but only when it builds its own observer.
    if parent.get("logfile") == "-" and not (parent.get("nodaemon") or parent.get("debug")):
        raise UsageError("--log-format json: a daemon cannot log to standard output (--logfile=- needs --nodaemon)")


def twistd_observer(parent: Mapping[str, Any], get_reactor: Callable[[], Any]) -> FileLogObserver:
    """
    A JSON observer writing where twistd's own text observer would for
    twistd's options C{parent} (see L{twisted.scripts._twistd_unix.UnixAppLogger}).
    C{get_reactor} returns the reactor that rotates a log file on SIGUSR1.
    """
    name = parent.get("logfile") or ""
    nodaemon = bool(parent.get("nodaemon") or parent.get("debug"))
    if name == "-" or (nodaemon and not name):
        return json_observer(sys.stdout)
    log = logfile.LogFile.fromFullPath(name or "twistd.log")
    if not signal.getsignal(signal.SIGUSR1):

        def rotate(signum: int, frame: Any) -> None:
            get_reactor().callFromThread(log.rotate)

        signal.signal(signal.SIGUSR1, rotate)
    return json_observer(log)


def install(application: Any, observer: ILogObserver) -> None:
    """
    Make C{observer} twistd's log observer, if C{application} is twistd's
    application (anything with C{setComponent}: see the module docstring).
    """
    set_component = getattr(application, "setComponent", None)
    if set_component is not None:
        set_component(ILogObserver, observer)
