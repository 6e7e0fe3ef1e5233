# -*- test-case-name: tests.test_statemachine -*-
"""
The replicated key-value state machine and the encoding of its commands.

Raft treats commands as opaque bytes; this module owns their meaning.  A
command is C{b"P" + key + b" " + value} (put) or C{b"D" + key} (delete),
UTF-8 encoded.  Keys never contain whitespace (the client protocol rejects
them), so the first space separates key and value, and the value may contain
anything but a line break.  The format is deliberately tiny: every write is
encoded once on the leader, stored in every node's WAL and shipped in every
AppendEntries message, so its size and parse cost are on the hot path.

Applying must be deterministic: every node applies the same committed
commands in the same order and must reach the same state.
"""

from __future__ import annotations

from dataclasses import dataclass

_PUT = 0x50  # "P"
_DELETE = 0x44  # "D"


class InvalidCommand(ValueError):
    """Committed data that is not a command of this state machine.  It means
    a bug or foreign data, never bad client input (the protocol validates
    that before proposing)."""


def encode_put(key: str, value: str) -> bytes:
    """The command that sets C{key} to C{value}."""
    return b"P" + key.encode("utf-8") + b" " + value.encode("utf-8")


def encode_delete(key: str) -> bytes:
    """The command that removes C{key}."""
    return b"D" + key.encode("utf-8")


@dataclass(frozen=True)
class ApplyResult:
    """What applying one command did.  C{found} is False for the delete of
    a missing key, which the client sees as C{Error: Key <k> not found}."""

    found: bool = True


_OK = ApplyResult(True)
_MISSING = ApplyResult(False)


class KeyValueStateMachine:
    """
    The key-value data of one node.

    @ivar applied_index: the log index of the last command applied.
    """

    def __init__(self) -> None:
        self._data: dict[str, str] = {}
        self.applied_index = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> str | None:
        """The value of C{key}, or L{None} if it has none."""
        return self._data.get(key)

    def apply(self, index: int, data: bytes) -> ApplyResult:
        """
        Apply the committed command at log C{index}.  An empty command is the
        leader's no-op entry and changes nothing.

        @raises InvalidCommand: if C{data} is not a command; the index still
            counts as applied so that one bad entry cannot wedge the node.
        """
        if index != self.applied_index + 1:
            raise AssertionError(f"apply out of order: {index} after {self.applied_index}")
        self.applied_index = index
        if not data:
            return _OK
        op = data[0]
        try:
            text = data[1:].decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCommand(f"entry {index} is not UTF-8") from None
        if op == _PUT:
            key, sep, value = text.partition(" ")
            if not sep or not key:
                raise InvalidCommand(f"entry {index} is a malformed put")
            self._data[key] = value
            return _OK
        if op == _DELETE:
            if not text:
                raise InvalidCommand(f"entry {index} is a malformed delete")
            return _OK if self._data.pop(text, None) is not None else _MISSING
        raise InvalidCommand(f"entry {index} has unknown operation {data[:1]!r}")
