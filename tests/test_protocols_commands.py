"""
Tests for L{kvstore.protocols.commands}: the pure client request parser.
"""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.protocols.commands import (
    DEFAULT_LIMITS,
    PUT_OVERHEAD_BYTES,
    Command,
    CommandError,
    Delete,
    Exit,
    Get,
    Limits,
    LineTooLong,
    Ping,
    Put,
    Status,
    encode_command,
    parse_command,
)
from tests.support import parametrize

SMALL = Limits.for_sizes(max_key_bytes=8, max_value_bytes=16)


def error_of(line: bytes, limits: Limits = DEFAULT_LIMITS) -> str:
    """Return the CommandError text for C{line}, failing if it parses."""
    try:
        parse_command(line, limits)
    except CommandError as e:
        return str(e)
    raise AssertionError(f"{line!r} parsed; expected a CommandError")


# -- properties --------------------------------------------------------------

_KEY_CHARS = st.characters(
    blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"),
)
keys = st.text(_KEY_CHARS, min_size=1, max_size=40).filter(
    lambda k: not any(c.isspace() for c in k)
)
values = st.text(
    st.characters(blacklist_categories=("Cs",)).filter(
        lambda c: c == "\t" or not (c < " " or c == "\x7f")
    ),
    max_size=200,
)
commands = st.one_of(
    st.builds(Put, keys, values),
    st.builds(Get, keys, st.booleans()),
    st.builds(Delete, keys),
    st.just(Exit()),
    st.just(Ping()),
    st.just(Status()),
)
limit_sets = st.sampled_from([DEFAULT_LIMITS, SMALL, Limits.for_sizes(1, 0)])


class CommandParserTests(SynchronousTestCase):
    """
    L{parse_command} and L{encode_command}: every command, its errors, the
    limits, and properties over arbitrary input.
    """

    # -- each command ------------------------------------------------------------

    @parametrize(
        "line, expected",
        [
            (b"PUT k v", Put("k", "v")),
            (b"GET k", Get("k", False)),
            (b"GET k STALE", Get("k", True)),
            (b"DELETE k", Delete("k")),
            (b"EXIT", Exit()),
            (b"PING", Ping()),
            (b"STATUS", Status()),
        ],
    )
    def test_each_command(self, line: bytes, expected: Command) -> None:
        """Every command in the protocol parses to its dataclass."""
        assert parse_command(line) == expected

    @parametrize(
        "line, expected",
        [
            (b"put k v", Put("k", "v")),
            (b"pUt k v", Put("k", "v")),
            (b"get k", Get("k")),
            (b"Get k stale", Get("k", True)),
            (b"GET k StAlE", Get("k", True)),
            (b"delete k", Delete("k")),
            (b"exit", Exit()),
            (b"Ping", Ping()),
            (b"status", Status()),
        ],
    )
    def test_command_words_case_insensitive(self, line: bytes, expected: Command) -> None:
        """Command words and STALE are matched without regard to ASCII case."""
        assert parse_command(line) == expected

    def test_keys_and_values_keep_case(self) -> None:
        """Case folding applies to command words only, never to keys or values."""
        assert parse_command(b"put MyKey MyValue") == Put("MyKey", "MyValue")

    def test_non_ascii_lookalike_command_rejected(self) -> None:
        """A command word only matches in ASCII; Unicode case mappings such as long s do not."""
        assert error_of("ſtatus".encode()) == "Unknown command 'ſtatus'"

    # -- PUT values --------------------------------------------------------------

    def test_put_value_is_rest_of_line(self) -> None:
        """The PUT value is everything after the key and one space, spaces included."""
        assert parse_command(b"PUT k  hello  world ") == Put("k", " hello  world ")

    def test_put_trailing_space_is_empty_value(self) -> None:
        """A PUT with a key followed by one space stores the empty string."""
        assert parse_command(b"PUT k ") == Put("k", "")

    def test_put_without_value_is_usage_error(self) -> None:
        """A PUT with a key but no separating space for a value is a usage error."""
        assert error_of(b"PUT k") == "Usage: PUT <key> <value>"

    @parametrize("line", [b"PUT", b"PUT ", b"PUT  v", b"PUT  "])
    def test_put_without_key_is_usage_error(self, line: bytes) -> None:
        """A PUT without a key (including an empty key from doubled spaces) is a usage error."""
        assert error_of(line) == "Usage: PUT <key> <value>"

    def test_put_value_may_contain_tab_and_unicode(self) -> None:
        """Values may contain TAB and any non-control Unicode text."""
        line = "PUT k a\tb é 💾 \u200d".encode()
        assert parse_command(line) == Put("k", "a\tb é 💾 \u200d")

    # -- argument errors ---------------------------------------------------------

    @parametrize(
        "line, message",
        [
            (b"GET", "Usage: GET <key> [STALE]"),
            (b"GET ", "Usage: GET <key> [STALE]"),
            (b"GET k ", "Usage: GET <key> [STALE]"),
            (b"GET k extra", "Usage: GET <key> [STALE]"),
            (b"GET k STALE x", "Usage: GET <key> [STALE]"),
            (b"GET  STALE", "Usage: GET <key> [STALE]"),
            (b"DELETE", "Usage: DELETE <key>"),
            (b"DELETE k x", "Usage: DELETE <key>"),
            (b"DELETE ", "Usage: DELETE <key>"),
            (b"EXIT now", "Usage: EXIT"),
            (b"PING ", "Usage: PING"),
            (b"STATUS all", "Usage: STATUS"),
        ],
    )
    def test_usage_errors(self, line: bytes, message: str) -> None:
        """Wrong arguments produce the command's usage message."""
        assert error_of(line) == message

    def test_unknown_command_named(self) -> None:
        """An unknown command word is named in the error."""
        assert error_of(b"FOO bar baz") == "Unknown command 'FOO'"

    def test_unknown_command_long_word_truncated(self) -> None:
        """A long unknown command word is shortened so the reply stays small."""
        assert error_of(b"X" * 1000) == "Unknown command '" + "X" * 32 + "...'"

    def test_unknown_command_tab_escaped(self) -> None:
        """A TAB in an unknown command word is shown escaped."""
        assert error_of(b"GET\tk") == "Unknown command 'GET\\tk'"

    @parametrize("line", [b"", b"\r", b"   ", b" \t "])
    def test_empty_command(self, line: bytes) -> None:
        """An empty or all-blank line is reported as an empty command."""
        assert error_of(line) == "Empty command"

    def test_leading_space_is_unknown_command(self) -> None:
        """Words are separated by exactly one space, so a leading space makes an empty command word."""
        assert error_of(b" GET k") == "Unknown command ''"

    def test_error_text_has_no_prefix(self) -> None:
        """CommandError text leaves the C{Error: } prefix to the protocol."""
        assert not error_of(b"FOO").startswith("Error")

    # -- line endings and bad bytes ----------------------------------------------

    def test_trailing_cr_ignored(self) -> None:
        """One CR before the (already removed) LF is ignored."""
        assert parse_command(b"PUT k v\r") == Put("k", "v")

    def test_second_cr_rejected(self) -> None:
        """Only one trailing CR is ignored; another one is a control character."""
        assert error_of(b"PUT k v\r\r") == "Control character 0x0d not allowed"

    @parametrize(
        "line, offset",
        [
            (b"\xff", 0),
            (b"PUT k \xc3", 6),
            (b"PUT \xe9 v", 4),
            (b"PUT k \xed\xa0\x80", 6),  # encoded surrogate
            (b"PUT k \xc0\xaf", 6),  # overlong encoding of '/'
        ],
    )
    def test_invalid_utf8(self, line: bytes, offset: int) -> None:
        """Bytes that are not strict UTF-8 are rejected, naming the offset."""
        assert error_of(line) == f"Invalid UTF-8 at byte {offset}"

    @parametrize(
        "line, code",
        [
            (b"PUT k\x00 v", 0),
            (b"PUT k a\x1bb", 0x1B),
            (b"GET k\x7f", 0x7F),
            (b"PUT k a\rb", 0x0D),
            (b"\x01", 1),
        ],
    )
    def test_control_characters_rejected(self, line: bytes, code: int) -> None:
        """ASCII control characters other than TAB are rejected anywhere in the line."""
        assert error_of(line) == f"Control character 0x{code:02x} not allowed"

    @parametrize("key", ["a\tb", "a\u00a0b", "a\u3000b", "a\u2028b"])
    def test_key_with_whitespace_rejected(self, key: str) -> None:
        """Keys may not contain TAB or Unicode whitespace."""
        assert error_of(f"PUT {key} v".encode()) == "Key must not contain whitespace"
        assert error_of(f"GET {key}".encode()) == "Key must not contain whitespace"

    # -- limits ------------------------------------------------------------------

    def test_default_limits(self) -> None:
        """The documented defaults are 1 KiB keys, 64 KiB values, and room for both."""
        assert DEFAULT_LIMITS.max_key_bytes == 1024
        assert DEFAULT_LIMITS.max_value_bytes == 65536
        assert DEFAULT_LIMITS.max_line_bytes == 1024 + 65536 + 16

    def test_largest_put_fits_default_line(self) -> None:
        """A PUT with a maximal key and value, sent with CRLF, parses under the defaults."""
        key = "k" * DEFAULT_LIMITS.max_key_bytes
        value = "v" * DEFAULT_LIMITS.max_value_bytes
        line = f"PUT {key} {value}\r".encode()
        assert parse_command(line) == Put(key, value)

    def test_key_at_limit_accepted(self) -> None:
        """A key of exactly max_key_bytes is accepted."""
        assert parse_command(b"GET " + b"k" * 8, SMALL) == Get("k" * 8)

    def test_key_over_limit_rejected(self) -> None:
        """A key one byte over max_key_bytes is rejected, for every keyed command."""
        for line in [b"GET kkkkkkkkk", b"PUT kkkkkkkkk v", b"DELETE kkkkkkkkk"]:
            assert error_of(line, SMALL) == "Key too long (maximum 8 bytes)"

    def test_key_limit_counts_utf8_bytes(self) -> None:
        """Key size is measured in UTF-8 bytes, not characters."""
        assert parse_command("GET éééé".encode(), SMALL) == Get("éééé")
        assert error_of("GET éééék".encode(), SMALL) == "Key too long (maximum 8 bytes)"

    def test_value_at_limit_accepted(self) -> None:
        """A value of exactly max_value_bytes is accepted."""
        assert parse_command(b"PUT k " + b"v" * 16, SMALL) == Put("k", "v" * 16)

    def test_value_over_limit_rejected(self) -> None:
        """A value one byte over max_value_bytes is rejected."""
        assert error_of(b"PUT k " + b"v" * 17, SMALL) == "Value too long (maximum 16 bytes)"

    def test_value_limit_counts_utf8_bytes(self) -> None:
        """Value size is measured in UTF-8 bytes, not characters."""
        assert parse_command("PUT k ".encode() + "é".encode() * 8, SMALL) == Put("k", "é" * 8)
        assert (
            error_of("PUT k ".encode() + "é".encode() * 8 + b"v", SMALL)
            == "Value too long (maximum 16 bytes)"
        )

    def test_line_at_limit_accepted(self) -> None:
        """A line of exactly max_line_bytes (CR included) is parsed, one more byte is not."""
        limits = Limits(max_key_bytes=8, max_value_bytes=16, max_line_bytes=30)
        line = b"PUT kkkkkkkk " + b"v" * 16 + b"\r"
        assert len(line) == 30
        assert parse_command(line, limits) == Put("kkkkkkkk", "v" * 16)
        with self.assertRaises(LineTooLong):
            parse_command(b"PUT kkkkkkkk " + b"v" * 17 + b"\r", limits)

    def test_line_over_limit_raises_line_too_long(self) -> None:
        """A line over max_line_bytes raises LineTooLong, a CommandError."""
        with self.assertRaises(LineTooLong) as info:
            parse_command(b"PING" + b" " * 100, SMALL)
        assert str(info.exception) == f"Line too long (maximum {SMALL.max_line_bytes} bytes)"
        assert isinstance(info.exception, CommandError)

    def test_limits_reject_line_too_small_for_put(self) -> None:
        """Limits refuse a line limit that could not carry the largest allowed PUT."""
        with self.assertRaises(ValueError):
            Limits(max_key_bytes=10, max_value_bytes=10, max_line_bytes=10 + 10 + PUT_OVERHEAD_BYTES - 1)
        Limits(max_key_bytes=10, max_value_bytes=10, max_line_bytes=10 + 10 + PUT_OVERHEAD_BYTES)

    def test_limits_reject_nonsense(self) -> None:
        """Limits refuse a zero key limit and a negative value limit."""
        with self.assertRaises(ValueError):
            Limits.for_sizes(0, 10)
        with self.assertRaises(ValueError):
            Limits.for_sizes(10, -1)

    def test_limits_for_sizes(self) -> None:
        """Limits.for_sizes derives a line limit with 16 bytes of slack."""
        assert Limits.for_sizes(100, 1000) == Limits(100, 1000, 1116)

    # -- value objects and encoding ----------------------------------------------

    def test_commands_are_frozen(self) -> None:
        """Commands are immutable value objects."""
        with self.assertRaises(dataclasses.FrozenInstanceError):
            Put("k", "v").key = "x"  # type: ignore[misc]

    @parametrize(
        "command, line",
        [
            (Put("k", "a b"), b"PUT k a b\n"),
            (Get("k"), b"GET k\n"),
            (Get("k", True), b"GET k STALE\n"),
            (Delete("k"), b"DELETE k\n"),
            (Exit(), b"EXIT\n"),
            (Ping(), b"PING\n"),
            (Status(), b"STATUS\n"),
        ],
    )
    def test_encode_command(self, command: Command, line: bytes) -> None:
        """encode_command writes the canonical request line with its LF."""
        assert encode_command(command) == line

    def test_encode_rejects_non_command(self) -> None:
        """encode_command refuses objects that are not commands."""
        with self.assertRaises(TypeError):
            encode_command("PING")  # type: ignore[arg-type]

    @settings(max_examples=500)
    @given(st.binary(max_size=300), limit_sets)
    def test_arbitrary_bytes_only_raise_command_error(self, line: bytes, limits: Limits) -> None:
        """For any bytes, parse_command returns a command or raises CommandError, nothing else."""
        try:
            command = parse_command(line, limits)
        except CommandError as e:
            assert str(e)
            assert "\n" not in str(e) and "\r" not in str(e)
        else:
            assert isinstance(command, (Put, Get, Delete, Exit, Ping, Status))

    @settings(max_examples=300)
    @given(
        st.lists(
            st.sampled_from(
                [b"PUT", b"get", b"DELETE", b"STALE", b" ", b"  ", b"\t", b"\r", b"k", b"\xff", b"\x00", "é".encode()]
            ),
            max_size=12,
        ),
        limit_sets,
    )
    def test_near_valid_lines_only_raise_command_error(self, tokens: list[bytes], limits: Limits) -> None:
        """Lines assembled from protocol tokens parse or raise CommandError, nothing else."""
        try:
            parse_command(b"".join(tokens), limits)
        except CommandError:
            pass

    @given(keys, values, st.sampled_from([b"", b"\r"]))
    def test_put_round_trip(self, key: str, value: str, ending: bytes) -> None:
        """A PUT line built from any valid key and value parses back to exactly them."""
        line = b"PUT " + key.encode() + b" " + value.encode() + ending
        assert parse_command(line) == Put(key, value)

    @given(commands)
    def test_encode_parse_round_trip(self, command: Command) -> None:
        """parse_command inverts encode_command for every valid command."""
        line = encode_command(command)
        assert line.endswith(b"\n")
        assert parse_command(line[:-1]) == command
