"""
Tests for L{kvstore.daemon.sd_notify.notify_address} on names that are not UTF-8:
the environment holds them as lone surrogates (surrogateescape), and an
abstract name must become the original bytes rather than raise, since a
notifier must never stop the node.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SynchronousTestCase

from kvstore.daemon.sd_notify import notify_address


class NonUTF8AddressTests(SynchronousTestCase):
    """Addresses are the environment's bytes, whatever they are."""

    def test_abstract_name_with_non_utf8_bytes(self) -> None:
        """'@' followed by non-UTF-8 bytes is the abstract name of those bytes, not an exception."""
        value = os.fsdecode(b"@notify-\xff")
        self.assertEqual(notify_address(value), b"\0notify-\xff")

    def test_ascii_abstract_name_unchanged(self) -> None:
        """An ordinary abstract name is unchanged by the fix."""
        self.assertEqual(notify_address("@/org/freedesktop/systemd1/notify/1"), b"\0/org/freedesktop/systemd1/notify/1")
