# -*- test-case-name: tests.test_testing_mutation -*-
"""
The mutation campaign tool (L{kvstore.testing.mutation}): its list of
mutants still matches the source, and it judges mutants correctly without
ever touching the real checkout.

The campaign itself (minutes of tests and simulation per mutant) is run by
hand, C{python -m kvstore.testing.mutation}; these tests use a fake runner.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from contextlib import redirect_stdout
from pathlib import Path
from typing import Sequence

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing import mutation
from kvstore.testing.mutation import (
    MUTANTS,
    Mutant,
    SnippetMismatch,
    apply_mutant,
    check_mutants,
    default_root,
    run_mutant,
    scratch_copy,
)

#: The mutants issue 9 names; the campaign must keep them.
ISSUE_MUTANTS = {
    "quorum-even-sizes",
    "vote-stale-term",
    "wal-skip-checksum",
    "read-index-one-short",
    "check-quorum-disabled",
    "paused-peer-unbounded",
}


class MutantListTests(SynchronousTestCase):
    """The list of mutants against the current source."""

    def test_every_snippet_matches_its_file_exactly_once(self) -> None:
        """Every mutant's snippet occurs exactly once in its file, every test
        it names exists, and names are unique: an edit of the source that
        breaks a mutant fails here, not silently in a later campaign."""
        self.assertEqual(check_mutants(default_root()), [])

    def test_the_issue_mutants_are_kept(self) -> None:
        """The campaign includes the mutants of issue 9 and at least 14 in
        all."""
        names = {m.name for m in MUTANTS}
        self.assertLessEqual(ISSUE_MUTANTS, names)
        self.assertGreaterEqual(len(MUTANTS), 14)

    def test_check_reports_a_stale_or_ambiguous_snippet(self) -> None:
        """A snippet that is missing, or present twice, is reported."""
        root = make_tree(self, {"pkg/a.py": "x = 1\ny = 2\ny = 2\n", "tests/test_a.py": ""})
        mutants = [
            Mutant("missing", "pkg/a.py", "z = 3", "z = 4", ("tests/test_a.py",), "missing"),
            Mutant("twice", "pkg/a.py", "y = 2", "y = 3", ("tests/test_a.py",), "twice"),
            Mutant("fine", "pkg/a.py", "x = 1", "x = 2", ("tests/test_a.py",), "fine"),
            Mutant("no-test", "pkg/a.py", "x = 1", "x = 2", ("tests/test_b.py",), "missing test"),
        ]
        problems = check_mutants(root, mutants)
        self.assertEqual([p.split(":")[0] for p in problems], ["missing", "twice", "no-test"])
        self.assertIn("0 times", problems[0])
        self.assertIn("2 times", problems[1])


def make_tree(case: SynchronousTestCase, files: dict[str, str]) -> Path:
    """A temporary directory (outside any git checkout) holding C{files}."""
    root = Path(tempfile.mkdtemp(prefix="kvstore-mutation-test-"))
    case.addCleanup(shutil.rmtree, root, True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


class FakeRunner:
    """Answers like pytest and kvstore-sim would, from C{statuses}, and
    records what the mutated file looked like when each command ran."""

    def __init__(self, statuses: dict[str, int | None]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[str, str]] = []
        self.cwds: list[Path] = []

    def __call__(self, argv: Sequence[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
        self.cwds.append(cwd)
        if argv[1] == "-c":  # the import check
            return 0, str(cwd / "kvstore" / "__init__.py") + "\n"
        kind = "pytest" if "pytest" in argv else "sim"
        self.calls.append((kind, (cwd / "pkg/a.py").read_text()))
        status = self.statuses[kind]
        # Exit 1 comes with the runner's own failure report (a crash is
        # given as a negative "status": exit 1 with a traceback).
        report = {"pytest": "1 failed in 0.1s", "sim": "1 FAILING seed(s); properties violated: x x1"}[kind]
        if status is not None and status < 0:
            return 1, "Traceback (most recent call last):\nSyntaxError: unmatched ')'\n"
        return status, f"{kind} output\n" + (report + "\n" if status == 1 else "")


class RunMutantTests(SynchronousTestCase):
    """L{run_mutant} with a fake runner."""

    def setUp(self) -> None:
        self.root = make_tree(self, {"pkg/a.py": "x = 1\n", "kvstore/__init__.py": "", "tests/test_a.py": ""})
        self.mutant = Mutant("m", "pkg/a.py", "x = 1", "x = 2", ("tests/test_a.py",), "x is wrong")

    def run_with(self, statuses: dict[str, int | None], mutant: Mutant | None = None, fast: bool = False):
        runner = FakeRunner(statuses)
        outcome = run_mutant(self.root, mutant or self.mutant, 10, runner=runner, fast=fast)
        # The checkout is never modified, and the scratch copy is removed.
        self.assertEqual((self.root / "pkg/a.py").read_text(), "x = 1\n")
        for cwd in runner.cwds:
            self.assertNotEqual(cwd, self.root)
            self.assertFalse(cwd.exists())
        return outcome, runner

    def test_tests_run_on_the_mutated_copy(self) -> None:
        """The tests and the simulator see the replacement, in a copy."""
        outcome, runner = self.run_with({"pytest": 0, "sim": 0})
        self.assertEqual(runner.calls, [("pytest", "x = 2\n"), ("sim", "x = 2\n")])
        self.assertEqual((outcome.tests, outcome.sim, outcome.result), ("survived", "survived", "SURVIVED"))

    def test_caught_by_tests_or_by_the_simulator(self) -> None:
        """A failing test run (exit 1) or failing seeds (exit 1) catch the
        mutant; a hang counts as caught too."""
        for statuses in ({"pytest": 1, "sim": 0}, {"pytest": 0, "sim": 1}, {"pytest": None, "sim": 0}):
            with self.subTest(statuses=statuses):
                outcome, _ = self.run_with(statuses)
                self.assertEqual(outcome.result, "CAUGHT")

    def test_a_mutant_the_simulator_must_catch_is_judged_by_it_alone(self) -> None:
        """With sim_required, failing tests do not count: only failing seeds
        catch the mutant, and the simulator runs even with fast."""
        mutant = Mutant("m", "pkg/a.py", "x = 1", "x = 2", ("tests/test_a.py",), "x", sim_required=True)
        for statuses, result in (({"pytest": 1, "sim": 0}, "SURVIVED"), ({"pytest": 0, "sim": 1}, "CAUGHT")):
            with self.subTest(statuses=statuses):
                outcome, runner = self.run_with(statuses, mutant, fast=True)
                self.assertEqual([kind for kind, _ in runner.calls], ["pytest", "sim"])
                self.assertEqual(outcome.result, result)

    def test_usage_or_collection_error_is_not_a_catch(self) -> None:
        """An exit status other than 0 or 1 (pytest could not collect, the
        simulator refused its arguments) is an error, not a catch."""
        for statuses in ({"pytest": 2, "sim": 0}, {"pytest": 0, "sim": 2}):
            with self.subTest(statuses=statuses):
                outcome, _ = self.run_with(statuses)
                self.assertEqual(outcome.result, "ERROR")

    def test_a_crash_is_not_a_catch(self) -> None:
        """Exit 1 from an uncaught exception (the copy does not even import),
        without pytest's or kvstore-sim's failure report, is an error, not a
        catch; for a mutant only the simulator may catch too."""
        required = Mutant("m", "pkg/a.py", "x = 1", "x = 2", ("tests/test_a.py",), "x", sim_required=True)
        for statuses, mutant in (({"pytest": -1, "sim": 0}, None), ({"pytest": 0, "sim": -1}, None),
                                 ({"pytest": 2, "sim": -1}, required)):
            with self.subTest(statuses=statuses):
                outcome, _ = self.run_with(statuses, mutant)
                self.assertEqual(outcome.result, "ERROR")

    def test_fast_skips_the_simulator_once_the_tests_caught_it(self) -> None:
        """With fast, a mutant the tests caught is not simulated."""
        outcome, runner = self.run_with({"pytest": 1, "sim": 0}, fast=True)
        self.assertEqual([kind for kind, _ in runner.calls], ["pytest"])
        self.assertEqual(outcome.result, "CAUGHT")

    def test_no_simulator_for_mutants_outside_it(self) -> None:
        """A mutant with sim=() runs its tests only."""
        mutant = Mutant("m", "pkg/a.py", "x = 1", "x = 2", ("tests/test_a.py",), "x", sim=())
        outcome, runner = self.run_with({"pytest": 0}, mutant)
        self.assertEqual([kind for kind, _ in runner.calls], ["pytest"])
        self.assertEqual((outcome.sim, outcome.result), ("-", "SURVIVED"))

    def test_stale_snippet(self) -> None:
        """A snippet that no longer matches runs nothing and is STALE."""
        mutant = Mutant("m", "pkg/a.py", "x = 9", "x = 2", ("tests/test_a.py",), "x")
        outcome, runner = self.run_with({}, mutant)
        self.assertEqual((runner.calls, outcome.result), ([], "STALE"))

    def test_apply_refuses_an_ambiguous_snippet(self) -> None:
        """apply_mutant refuses a snippet present twice."""
        tree = make_tree(self, {"pkg/a.py": "x = 1\nx = 1\n"})
        self.assertRaises(SnippetMismatch, apply_mutant, tree, self.mutant)


class ScratchCopyTests(SynchronousTestCase):
    """L{scratch_copy} of the real checkout."""

    def test_copy_holds_the_sources_but_not_the_environment(self) -> None:
        """The copy has the checkout's sources, identical, and none of what
        git ignores (the virtualenv, caches) nor .git itself."""
        root = default_root()
        copy = scratch_copy(root)
        self.addCleanup(shutil.rmtree, copy, True)
        for name in ("kvstore/raft/config.py", "tests/test_testing_mutation.py", "setup.py"):
            self.assertEqual((copy / name).read_bytes(), (root / name).read_bytes())
        self.assertFalse((copy / ".git").exists())
        self.assertFalse((copy / ".venv").exists())


class MainTests(SynchronousTestCase):
    """The command line's exit status."""

    def main(self, argv: list[str], statuses: dict[str, int | None]) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            status = mutation.main(argv, runner=FakeRunner(statuses))
        return status, out.getvalue()

    def setUp(self) -> None:
        self.root = make_tree(self, {"pkg/a.py": "x = 1\n", "kvstore/__init__.py": "", "tests/test_a.py": ""})
        self.patch(mutation, "MUTANTS", (
            Mutant("one", "pkg/a.py", "x = 1", "x = 2", ("tests/test_a.py",), "first"),
            Mutant("two", "pkg/a.py", "x = 1", "x = 3", ("tests/test_a.py",), "second", note="expected for now"),
        ))

    def test_all_caught_exits_zero(self) -> None:
        """Exit 0 and a table when every mutant is caught."""
        status, output = self.main(["--root", str(self.root), "--no-baseline"], {"pytest": 1, "sim": 0})
        self.assertEqual(status, 0)
        self.assertIn("2 of 2 mutants caught", output)

    def test_a_survivor_exits_non_zero(self) -> None:
        """Exit 1 when a mutant survives, with its description and note."""
        status, output = self.main(["--root", str(self.root), "--no-baseline", "--only", "two"],
                                   {"pytest": 0, "sim": 0})
        self.assertEqual(status, 1)
        self.assertIn("two SURVIVED: second", output)
        self.assertIn("note: expected for now", output)

    def test_failing_baseline_exits_two(self) -> None:
        """If the unmutated tests already fail, nothing is judged (exit 2)."""
        status, output = self.main(["--root", str(self.root)], {"pytest": 1, "sim": 0})
        self.assertEqual(status, 2)
        self.assertIn("baseline fails", output)

    def test_check_fails_on_a_stale_snippet(self) -> None:
        """--check exits 1 when a snippet no longer matches."""
        (self.root / "pkg/a.py").write_text("x = 5\n")
        status, output = self.main(["--root", str(self.root), "--check"], {})
        self.assertEqual(status, 1)
        self.assertIn("occurs 0 times", output)
