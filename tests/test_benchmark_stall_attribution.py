# -*- test-case-name: tests.test_benchmark_stall_attribution -*-
"""
Tests for the reactor-stall attribution of C{benchmarks/compaction_figures.py}
(figure 6, C{--perf-sched}): reading C{perf sched timehist} and adding up
what the CPUs ran during each stall, by whose it was.  The script is loaded
from its path: C{benchmarks} is not a package.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from twisted.trial.unittest import SynchronousTestCase

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compaction_figures.py"


def load_script() -> ModuleType:
    """The figures script as a module (imported once)."""
    name = "_compaction_figures_under_test"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, SCRIPT)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


# Two CPUs; node pids 100, 200, 300 (reactor thread = pid), this script 50.
TIMEHIST = """\
           time    cpu  task name                       wait time  sch delay   run time
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------
   1000.000000 [0000]  <idle>                              0.000      0.000      0.000
   1000.010000 [0000]  python[200]                         1.000      0.100     10.000
   1000.010000 [0001]  python[777]                         0.500      0.000     10.000
   1000.016000 [0000]  python[101/100]                     0.000      0.000      6.000
   1000.020000 [0001]  python[50]                          0.000      0.000     10.000
   1000.020000 [0000]  python[100]                         0.000     14.000      4.000
"""


class ParseTimehistTests(SynchronousTestCase):
    def test_runs(self) -> None:
        """Each switch line becomes a run (start, end, task) ending at its time and lasting its run time; headers are skipped."""
        runs = load_script().parse_timehist(TIMEHIST)
        self.assertEqual(len(runs), 6)
        start, end, task = runs[-1]
        self.assertEqual(task, "python[100]")
        self.assertAlmostEqual(start, 1000.016)
        self.assertAlmostEqual(end, 1000.020)
        self.assertEqual(sorted(runs), runs)


class TaskCategoryTests(SynchronousTestCase):
    def test_categories(self) -> None:
        """A run is the stalled node's or another node's (reactor thread or not), the load's, idle, or another process's."""
        category = load_script().task_category
        pids = [100, 200, 300]
        self.assertEqual(category("python[100]", pids, 0, 50), "the stalled node: reactor thread")
        self.assertEqual(category("python[101/100]", pids, 0, 50), "the stalled node: other threads")
        self.assertEqual(category("python[200]", pids, 0, 50), "the other nodes: reactor thread")
        self.assertEqual(category("python[301/300]", pids, 0, 50), "the other nodes: other threads")
        self.assertEqual(category("python[200]", pids, 1, 50), "the stalled node: reactor thread")
        self.assertEqual(category("python[50]", pids, 0, 50), "this script (the load)")
        self.assertEqual(category("python[777]", pids, 0, 50), "other processes")
        self.assertEqual(category("<idle>", pids, 0, 50), "idle")


class CpuDuringStallsTests(SynchronousTestCase):
    def test_shares(self) -> None:
        """During a 20 ms stall of node 0 on 2 CPUs, each category's run time inside it is summed, and the rest is idle."""
        script = load_script()
        runs = script.parse_timehist(TIMEHIST)
        result = script.cpu_during_stalls(runs, [(0, 1000.000, 1000.020)], [100, 200, 300], 50, 2)
        self.assertEqual(result["stalls"], 1)
        self.assertEqual(result["stalled_ms"], 20.0)
        self.assertEqual(result["cpu_ms"], {
            "the other nodes: reactor thread": 10.0,
            "other processes": 10.0,
            "this script (the load)": 10.0,
            "the stalled node: other threads": 6.0,
            "the stalled node: reactor thread": 4.0,
            "idle": 0.0,
        })
        self.assertEqual(result["share"]["other processes"], 0.25)

    def test_clipped_to_the_stall(self) -> None:
        """Only the part of a run inside the stall counts, and stalls outside the recording are left out."""
        script = load_script()
        runs = script.parse_timehist(TIMEHIST)
        result = script.cpu_during_stalls(
            runs, [(0, 1000.005, 1000.010), (0, 999.0, 999.5)], [100, 200, 300], 50, 2)
        self.assertEqual(result["stalls"], 1)
        self.assertEqual(result["cpu_ms"]["the other nodes: reactor thread"], 5.0)
        self.assertEqual(result["cpu_ms"]["other processes"], 5.0)
        self.assertEqual(result["cpu_ms"]["idle"], 0.0)
