"""Tests for kvstore-bench's pure parts: percentiles and the report."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.tools.bench import Results, format_table, percentile, summarize

from tests.support import parametrize


class BenchReportTests(SynchronousTestCase):
    """The pure parts of C{kvstore-bench}: nearest-rank percentiles and the summary report."""

    @parametrize(
        "count, fraction, expected",
        [(100, 0.5, 50), (100, 0.99, 99), (100, 1.0, 100), (1000, 0.999, 999), (10, 0.9, 9), (3, 0.5, 2), (1, 0.99, 1)],
    )
    def test_percentile_is_nearest_rank(self, count: int, fraction: float, expected: int) -> None:
        """The p-th percentile of 1..n is the smallest value with at least p of
        the samples at or below it."""
        assert percentile(list(range(1, count + 1)), fraction) == expected

    def test_report_counts_and_formats(self) -> None:
        """The summary reports throughput over the measured time, latencies in
        milliseconds and errors by kind, and the table shows them."""
        results = Results(started=10.0, finished=12.0, ok=4, writes=3, reads=1, latencies=[0.001, 0.002, 0.003, 0.004])
        results.record_error("Error: Not leader. Current leader is Node 1 at 127.0.0.1:5001")
        settings = {"target": "t", "fsync": "on", "connections": 1, "pipeline": 1, "writes": 1.0, "keys": 10,
                    "value_size": 100, "duration_s": 2, "requests": 0, "consistency": "linearizable"}
        report = summarize(results, settings)
        assert report["throughput_per_s"] == 2.0
        assert report["latency_ms"]["p50"] == 2.0 and report["latency_ms"]["max"] == 4.0
        assert report["errors"] == {"Not leader": 1}
        assert "Not leader: 1" in format_table(report)
