# -*- test-case-name: tests.test_protocols_commands_incr_cas -*-
"""
The request language of issue 14: C{INCR}, C{CAS}, C{SESSION} and the
C{@<session>:<seq>} tag, parsed strictly (every malformed form is an
C{Error:} with a fixed text) and re-encoded to lines that parse back to the
same command.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.commands import (
    DEFAULT_LIMITS,
    Cas,
    CommandError,
    Delete,
    Get,
    Incr,
    Limits,
    LineTooLong,
    OpenSession,
    Put,
    Tagged,
    encode_command,
    parse_command,
)

SMALL = Limits.for_sizes(max_key_bytes=8, max_value_bytes=16)
MAX = 2**63 - 1
DELTA_RANGE = "Delta must be an integer from -9223372036854775808 to 9223372036854775807"
TAG_RANGE = "Session and sequence numbers must be integers from 1 to 9223372036854775807"
TAG_USAGE = "Usage: @<session>:<sequence> PUT|DELETE|INCR|CAS ..."


def error_of(line: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    try:
        command = parse_command(line, limits)
    except CommandError as e:
        return str(e)
    raise AssertionError(f"{line!r} parsed as {command!r}; expected a CommandError")


class IncrParseTests(SynchronousTestCase):
    """INCR <key> [<delta>]."""

    def test_valid_forms(self) -> None:
        """INCR takes a key and an optional signed 64-bit delta (default 1); the word is case-insensitive."""
        cases = {
            b"INCR k": Incr("k", 1),
            b"incr k 5": Incr("k", 5),
            b"Incr k -5": Incr("k", -5),
            b"INCR k 0": Incr("k", 0),
            b"INCR k -0": Incr("k", 0),
            b"INCR k 007": Incr("k", 7),
            b"INCR k 9223372036854775807": Incr("k", MAX),
            b"INCR k -9223372036854775808": Incr("k", -MAX - 1),
            b"INCR k\r": Incr("k", 1),
            "INCR ключ 2".encode(): Incr("ключ", 2),
        }
        for line, command in cases.items():
            with self.subTest(line=line):
                self.assertEqual(parse_command(line), command)

    def test_errors(self) -> None:
        """Every malformed INCR gets its usage or the delta's range, never a Python error."""
        usage = "Usage: INCR <key> [<delta>]"
        cases = {
            b"INCR": usage,
            b"INCR ": usage,
            b"INCR k ": usage,
            b"INCR k 1 2": usage,
            b"INCR  5": usage,
            b"INCR k x": DELTA_RANGE,
            b"INCR k +5": DELTA_RANGE,
            b"INCR k 1.0": DELTA_RANGE,
            b"INCR k 1e3": DELTA_RANGE,
            b"INCR k -": DELTA_RANGE,
            b"INCR k 9223372036854775808": DELTA_RANGE,
            b"INCR k -9223372036854775809": DELTA_RANGE,
            b"INCR k 99999999999999999999": DELTA_RANGE,
            b"INCR k 1_000": DELTA_RANGE,
            "INCR k ٣".encode(): DELTA_RANGE,
            b"INCR k\t5": "Key must not contain whitespace",
            b"INCR " + b"k" * 9: "Key too long (maximum 8 bytes)",
        }
        for line, text in cases.items():
            with self.subTest(line=line):
                self.assertEqual(error_of(line, SMALL), text)


class CasParseTests(SynchronousTestCase):
    """CAS <key> <expected> <new value>."""

    def test_valid_forms(self) -> None:
        """The new value is the rest of the line, spaces and TABs included, possibly empty."""
        cases = {
            b"CAS k a b": Cas("k", "a", "b"),
            b"cas k a b c ": Cas("k", "a", "b c "),
            b"CAS k a ": Cas("k", "a", ""),
            b"CAS k a  b": Cas("k", "a", " b"),
            b"CAS k a b\tc": Cas("k", "a", "b\tc"),
            b"CAS k a b\r": Cas("k", "a", "b"),
        }
        for line, command in cases.items():
            with self.subTest(line=line):
                self.assertEqual(parse_command(line), command)

    def test_errors(self) -> None:
        """A missing argument, whitespace in the key or the expected value, or a value over the limit
        are refused with fixed texts."""
        usage = "Usage: CAS <key> <expected> <new value>"
        cases = {
            b"CAS": usage,
            b"CAS k": usage,
            b"CAS k a": usage,
            b"CAS k  b": usage,
            b"CAS  a b": usage,
            b"CAS k a\tb c": "Expected value must not contain whitespace",
            "CAS k a\u00a0b c".encode(): "Expected value must not contain whitespace",
            b"CAS k " + b"e" * 17 + b" v": "Expected value too long (maximum 16 bytes)",
            b"CAS k e " + b"v" * 17: "Value too long (maximum 16 bytes)",
            b"CAS k\tx a b": "Key must not contain whitespace",
            b"CAS k a b\x01": "Control character 0x01 not allowed",
        }
        for line, text in cases.items():
            with self.subTest(line=line):
                self.assertEqual(error_of(line, SMALL), text)

    def test_limits_are_the_value_limit_each(self) -> None:
        """An expected value and a new value may each be as long as the value limit."""
        line = b"CAS k " + b"e" * 16 + b" " + b"v" * 16
        limits = Limits(max_key_bytes=8, max_value_bytes=16, max_line_bytes=64)
        self.assertEqual(parse_command(line, limits), Cas("k", "e" * 16, "v" * 16))


class SessionParseTests(SynchronousTestCase):
    """SESSION and the @<session>:<seq> tag."""

    def test_session(self) -> None:
        """SESSION takes no argument."""
        self.assertEqual(parse_command(b"SESSION"), OpenSession())
        self.assertEqual(parse_command(b"session\r"), OpenSession())
        self.assertEqual(error_of(b"SESSION 1"), "Usage: SESSION")

    def test_tagged_writes(self) -> None:
        """Each write may carry the tag; the rest of the line is parsed as without it."""
        cases = {
            b"@1:1 PUT k v w": Tagged(1, 1, Put("k", "v w")),
            b"@12:345 delete k": Tagged(12, 345, Delete("k")),
            b"@7:2 INCR n": Tagged(7, 2, Incr("n", 1)),
            b"@7:3 INCR n -4": Tagged(7, 3, Incr("n", -4)),
            b"@9223372036854775807:9223372036854775807 CAS k a b":
                Tagged(MAX, MAX, Cas("k", "a", "b")),
            b"@1:1 PUT k \r": Tagged(1, 1, Put("k", "")),
        }
        for line, command in cases.items():
            with self.subTest(line=line):
                self.assertEqual(parse_command(line), command)

    def test_tag_errors(self) -> None:
        """A malformed tag, numbers out of range or not canonical, a tagged read or control command, and
        an error in the tagged command itself each get a fixed text."""
        cases = {
            b"@": TAG_USAGE,
            b"@1": TAG_USAGE,
            b"@1 PUT k v": TAG_USAGE,
            b"@1:2": TAG_USAGE,
            b"@1:2 ": TAG_USAGE,
            b"@1:2  ": TAG_USAGE,
            b"@:2 PUT k v": TAG_RANGE,
            b"@1: PUT k v": TAG_RANGE,
            b"@0:1 PUT k v": TAG_RANGE,
            b"@1:0 PUT k v": TAG_RANGE,
            b"@01:1 PUT k v": TAG_RANGE,
            b"@-1:1 PUT k v": TAG_RANGE,
            b"@+1:1 PUT k v": TAG_RANGE,
            b"@1:1:1 PUT k v": TAG_RANGE,
            b"@9223372036854775808:1 PUT k v": TAG_RANGE,
            b"@1:99999999999999999999 PUT k v": TAG_RANGE,
            "@١:1 PUT k v".encode(): TAG_RANGE,
            b"@1:1 GET k": "Only PUT, DELETE, INCR and CAS take a session tag",
            b"@1:1 SESSION": "Only PUT, DELETE, INCR and CAS take a session tag",
            b"@1:1 PING": "Only PUT, DELETE, INCR and CAS take a session tag",
            b"@1:1 EXIT": "Only PUT, DELETE, INCR and CAS take a session tag",
            b"@1:1 @2:2 PUT k v": "Unknown command '@2:2'",
            b"@1:1 PUT k": "Usage: PUT <key> <value>",
            b"@1:1 INCR k x": DELTA_RANGE,
            b"@1:1 FOO": "Unknown command 'FOO'",
        }
        for line, text in cases.items():
            with self.subTest(line=line):
                self.assertEqual(error_of(line), text)

    def test_tag_counts_against_the_line_limit(self) -> None:
        """The tag is part of the line, so a tagged line over the line limit is refused like any."""
        limits = Limits(max_key_bytes=1, max_value_bytes=4, max_line_bytes=20)
        self.assertEqual(parse_command(b"@1:1 PUT k " + b"v" * 4, limits), Tagged(1, 1, Put("k", "vvvv")))
        self.assertRaises(LineTooLong, parse_command, b"@100:100 PUT k " + b"v" * 4 + b"xxx", limits)

    def test_untagged_syntax_unchanged(self) -> None:
        """The plain commands parse exactly as before: the tag is only a prefix."""
        self.assertEqual(parse_command(b"PUT @1:1 v"), Put("@1:1", "v"))
        self.assertEqual(parse_command(b"GET @1:1"), Get("@1:1"))


_KEY = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=10).filter(
    lambda k: not any(c.isspace() for c in k))
_VALUE = st.text(st.characters(blacklist_categories=("Cs",)).filter(lambda c: c == "\t" or not (c < " " or c == "\x7f")),
                 max_size=20)
_WRITES = st.one_of(
    st.builds(Put, _KEY, _VALUE),
    st.builds(Delete, _KEY),
    st.builds(Incr, _KEY, st.integers(-MAX - 1, MAX)),
    st.builds(Cas, _KEY, _KEY, _VALUE),
)
_COMMANDS = st.one_of(_WRITES, st.just(OpenSession()), st.builds(Tagged, st.integers(1, MAX), st.integers(1, MAX), _WRITES))


class RoundTripTests(SynchronousTestCase):
    """encode_command is the inverse of parse_command for the new commands."""

    @settings(max_examples=300, deadline=None)
    @given(_COMMANDS)
    def test_round_trip(self, command: object) -> None:
        """Every valid INCR, CAS, SESSION or tagged write encodes to one line that parses back to it."""
        line = encode_command(command)  # type: ignore[arg-type]
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(line.count(b"\n"), 1)
        self.assertEqual(parse_command(line[:-1]), command)

    def test_exact_encodings(self) -> None:
        """The encodings are the documented request lines."""
        self.assertEqual(encode_command(Incr("n", -3)), b"INCR n -3\n")
        self.assertEqual(encode_command(Cas("k", "a", "b c")), b"CAS k a b c\n")
        self.assertEqual(encode_command(OpenSession()), b"SESSION\n")
        self.assertEqual(encode_command(Tagged(4, 9, Put("k", "v"))), b"@4:9 PUT k v\n")
