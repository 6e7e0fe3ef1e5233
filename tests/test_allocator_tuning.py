"""
Tests for L{kvstore.allocator}: glibc's mmap threshold pinned at start-up
(a logged no-op elsewhere or when the environment already chose one), and
L{kvstore.daemon.service.makeService} doing it before recovery.
"""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path
from typing import Any

from twisted.logger import capturedLogs
from twisted.python.usage import UsageError
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from kvstore import allocator
from kvstore.daemon import service
from kvstore.daemon.options import Options


class FakeGlibc:
    """Records the calls L{kvstore.allocator} makes to the C library."""

    glibc_version = "2.99"

    def __init__(self, mallopt_result: int = 1, trim_result: int = 1) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._mallopt_result = mallopt_result
        self._trim_result = trim_result

    def mallopt(self, parameter: int, value: ctypes.c_int) -> int:
        self.calls.append(("mallopt", (parameter, value.value)))
        return self._mallopt_result

    def malloc_trim(self, pad: ctypes.c_size_t) -> int:
        self.calls.append(("malloc_trim", (pad.value,)))
        return self._trim_result


class TuneAllocatorTests(SynchronousTestCase):
    """L{allocator.tune_allocator} and L{allocator.release_free_memory}."""

    def setUp(self) -> None:
        # What a test pins stays in the test: the module's state is restored.
        self.patch(allocator, "_last", None)
        self.patch(allocator, "_tuned_libc", None)

    def test_pins_the_threshold_on_glibc(self) -> None:
        """On glibc the threshold is set with mallopt(M_MMAP_THRESHOLD, 128 KiB), and logged."""
        libc = FakeGlibc()
        with capturedLogs() as events:
            result = allocator.tune_allocator(environ={}, load_libc=lambda: libc)
        self.assertEqual(libc.calls, [("mallopt", (-3, 131072))])
        self.assertEqual(result, allocator.AllocatorTuning(True, 131072, result.reason))
        self.assertIn("2.99", result.reason)
        self.assertTrue(any("pinned at 131072" in str(e.get("reason")) for e in events))
        self.assertEqual(allocator.current_settings()["mmap_threshold"], 131072)

    def test_not_glibc_changes_nothing_and_says_why(self) -> None:
        """Without glibc nothing is called, and the log says why."""
        with capturedLogs() as events:
            result = allocator.tune_allocator(environ={}, load_libc=lambda: None)
        self.assertFalse(result.applied)
        self.assertIn("not glibc", result.reason)
        self.assertTrue(any("not glibc" in str(e.get("reason")) for e in events))

    def test_the_operators_environment_wins(self) -> None:
        """A threshold chosen in the environment (either way glibc reads it) is left alone."""
        for environ in (
            {"MALLOC_MMAP_THRESHOLD_": "65536"},
            {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=65536"},
        ):
            with self.subTest(environ=environ):
                libc = FakeGlibc()
                result = allocator.tune_allocator(environ=environ, load_libc=lambda: libc)
                self.assertFalse(result.applied)
                self.assertEqual(libc.calls, [])
                self.assertIn("65536", result.reason)

    def test_other_tunables_do_not_count_as_a_choice(self) -> None:
        """GLIBC_TUNABLES that do not set the threshold do not stop the tuning."""
        libc = FakeGlibc()
        result = allocator.tune_allocator(environ={"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, load_libc=lambda: libc)
        self.assertTrue(result.applied)

    def test_a_refused_mallopt_is_reported(self) -> None:
        """mallopt returning 0 (refused) is reported as not applied."""
        result = allocator.tune_allocator(environ={}, load_libc=lambda: FakeGlibc(mallopt_result=0))
        self.assertFalse(result.applied)
        self.assertIn("refused", result.reason)

    def test_release_free_memory(self) -> None:
        """release_free_memory is malloc_trim(0) on glibc and a no-op elsewhere."""
        libc = FakeGlibc(trim_result=1)
        self.assertTrue(allocator.release_free_memory(load_libc=lambda: libc))
        self.assertEqual(libc.calls, [("malloc_trim", (0,))])
        self.assertFalse(allocator.release_free_memory(load_libc=lambda: None))

    def test_the_real_c_library(self) -> None:
        """On this machine's glibc the real mallopt accepts the threshold."""
        if platform.libc_ver()[0] != "glibc":
            raise SkipTest("not glibc")
        result = allocator.tune_allocator(environ={})
        self.assertTrue(result.applied, result.reason)
        allocator.release_free_memory()  # and malloc_trim is callable


class MakeServiceTunesTests(SynchronousTestCase):
    """L{service.makeService} tunes the allocator before recovery."""

    def test_tuned_before_build_service(self) -> None:
        """The twistd entry point tunes malloc before it opens storage and recovers."""
        order: list[str] = []
        self.patch(allocator, "tune_allocator", lambda: order.append("tune"))

        def build_service(*args: Any, **kwargs: Any) -> Any:
            order.append("build")
            raise UsageError("stop here")

        self.patch(service, "build_service", build_service)
        options = Options()
        options.parseOptions(["--data-dir", str(Path(self.mktemp()) / "data"), "--port", "24998"])
        with self.assertRaises(SystemExit):
            service.makeService(options)
        self.assertEqual(order, ["tune", "build"])


class LargeBuffersFromTheHeapTests(SynchronousTestCase):
    """L{allocator.large_buffers_from_the_heap}, around recovery."""

    def setUp(self) -> None:
        # What a test pins stays in the test: the module's state is restored.
        self.patch(allocator, "_last", None)
        self.patch(allocator, "_tuned_libc", None)

    def test_raised_then_pinned_back_and_trimmed(self) -> None:
        """With the threshold pinned, the block runs with it raised; afterwards it is pinned again and the heap trimmed."""
        libc = FakeGlibc()
        allocator.tune_allocator(environ={}, load_libc=lambda: libc)
        del libc.calls[:]
        with allocator.large_buffers_from_the_heap(1 << 26):
            self.assertEqual(libc.calls, [("mallopt", (-3, 1 << 26))])
        self.assertEqual(libc.calls[1:], [("mallopt", (-3, 131072)), ("malloc_trim", (0,))])

    def test_pinned_back_after_an_exception(self) -> None:
        """An exception in the block still pins the threshold back."""
        libc = FakeGlibc()
        allocator.tune_allocator(environ={}, load_libc=lambda: libc)
        with self.assertRaises(ZeroDivisionError):
            with allocator.large_buffers_from_the_heap():
                1 // 0
        self.assertEqual(libc.calls[-2:], [("mallopt", (-3, 131072)), ("malloc_trim", (0,))])

    def test_nothing_without_a_pinned_threshold(self) -> None:
        """If the threshold was not pinned (not glibc, or the operator's choice), nothing is called."""
        libc = FakeGlibc()
        allocator.tune_allocator(environ={"MALLOC_MMAP_THRESHOLD_": "1"}, load_libc=lambda: libc)
        with allocator.large_buffers_from_the_heap():
            pass
        self.assertEqual(libc.calls, [])

    def test_recovery_reads_the_snapshot_inside_it(self) -> None:
        """recover() chooses and decodes the snapshot inside large_buffers_from_the_heap."""
        from contextlib import contextmanager

        from kvstore.node import recovery
        from kvstore.statemachine import KeyValueStateMachine
        from kvstore.storage.memory import MemoryLog

        seen: list[str] = []

        @contextmanager
        def heap() -> Any:
            seen.append("enter")
            yield
            seen.append("exit")

        original = recovery._choose

        def choose(*args: Any) -> Any:
            seen.append("choose")
            return original(*args)

        self.patch(recovery, "large_buffers_from_the_heap", heap)
        self.patch(recovery, "_choose", choose)
        recovery.recover(MemoryLog(), None, KeyValueStateMachine())
        self.assertEqual(seen, ["enter", "choose", "exit"])
