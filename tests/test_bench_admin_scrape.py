"""
kvstore-bench's measurement of the admin endpoint's cost: C{--admin-scrape}
(scraping every node's /metrics during the run) and the nodes' CPU per
request in the report.
"""

from __future__ import annotations

import asyncio
import os
import time

from twisted.trial.unittest import SynchronousTestCase

from kvstore.tools.bench import Results, format_table, parse_args, scrape_metrics, summarize
from kvstore.tools.procinfo import cpu_seconds

SETTINGS = {"target": "t", "fsync": "on", "connections": 50, "pipeline": 10, "writes": 1.0, "keys": 10,
            "value_size": 100, "duration_s": 2, "requests": 0, "consistency": "linearizable", "admin_scrape": 1.0}


class AdminScrapeOptionTests(SynchronousTestCase):
    """The option and the report."""

    def test_option(self) -> None:
        """--admin-scrape is off by default, and needs the cluster the tool starts itself."""
        self.assertEqual(parse_args([]).admin_scrape, 0.0)
        self.assertEqual(parse_args(["--admin-scrape", "1"]).admin_scrape, 1.0)
        for refused in (["--admin-scrape", "1", "--nodes", "127.0.0.1:5000"], ["--admin-scrape", "-1"]):
            with self.assertRaises(SystemExit):
                parse_args(refused)

    def test_report(self) -> None:
        """The report has the scrapes' count and durations and the nodes' CPU per request, and the table shows both."""
        results = Results(started=10.0, finished=12.0, ok=1000, writes=1000, latencies=[0.01] * 1000)
        results.scrapes = [0.002, 0.004]
        results.scrape_errors = 1
        results.server_cpu = [0.01, 0.005, 0.005]
        report = summarize(results, SETTINGS)
        self.assertEqual(
            report["admin_scrapes"], {"interval_s": 1.0, "count": 2, "errors": 1, "mean_ms": 3.0, "max_ms": 4.0}
        )
        self.assertEqual(report["server_cpu_us_per_request"], 20.0)
        table = format_table(report)
        self.assertIn("2 scrapes (1 failed), mean 3.0 ms, max 4.0 ms", table)
        self.assertIn("server CPU   20.0 us per request", table)

    def test_no_scrapes_no_line(self) -> None:
        """Without --admin-scrape the report has no scrape entry."""
        report = summarize(Results(started=0.0, finished=1.0, ok=1), SETTINGS)
        self.assertNotIn("admin_scrapes", report)
        self.assertNotIn("server_cpu_us_per_request", report)


class ScrapeTests(SynchronousTestCase):
    """The scraper against a small HTTP server."""

    def test_scrapes_and_failures(self) -> None:
        """A /metrics answer with kvstore metrics counts as a scrape; anything else (or no server) as a failure."""

        async def run() -> Results:
            answers = iter([b"HTTP/1.0 200 OK\r\n\r\nkvstore_is_leader 1\n", b"HTTP/1.0 404 Not Found\r\n\r\n"])

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(next(answers))
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            results = Results()
            task = asyncio.ensure_future(scrape_metrics([port], 0.01, results))
            deadline = asyncio.get_running_loop().time() + 10
            while len(results.scrapes) + results.scrape_errors < 2:
                assert asyncio.get_running_loop().time() < deadline, "no two scrapes within 10 s"
                await asyncio.sleep(0.01)  # poll, bounded by the deadline
            task.cancel()
            server.close()
            return results

        results = asyncio.run(run())
        self.assertEqual((len(results.scrapes), results.scrape_errors), (1, 1))


class CpuSecondsTests(SynchronousTestCase):
    """Reading a process' CPU time from /proc."""

    def test_own_cpu_time(self) -> None:
        """This process' CPU time is positive and grows as it works."""
        if not os.path.exists("/proc/self/stat"):
            self.skipTest("no /proc (not Linux)")
        before = cpu_seconds(os.getpid())
        started = time.process_time()
        while time.process_time() - started < 0.05:  # 50 ms of CPU: five clock ticks
            pass
        self.assertGreater(cpu_seconds(os.getpid()), before)
