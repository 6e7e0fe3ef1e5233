# -*- test-case-name: tests.test_testing_mutation -*-
"""
The mutation campaign: plant small, realistic bugs one at a time and check
that the test suite or the simulator catches each.

    python -m kvstore.testing.mutation [--only NAME ...] [--jobs N] [--seeds N]
    python -m kvstore.testing.mutation --check      # every snippet still matches
    python -m kvstore.testing.mutation --list

Why: a test suite is only as good as the bugs it can catch.  Each
L{Mutant} names a file, an exact snippet of it and its replacement (a bug
someone could plausibly write), the tests that should notice, and the
simulator arguments to try.  For each mutant the campaign copies the
checkout into a scratch directory (the real checkout is never modified),
applies the replacement there, runs the tests and C{kvstore-sim --seeds N}
in that copy, and prints a table: a mutant is I{caught} if the tests or
the simulator fail.  The exit status is non-zero if any mutant survived,
if a snippet no longer matches its file exactly once (the list has rotted:
fix the mutant, don't delete it), or if the unmutated baseline does not
pass (then "caught" would mean nothing).

How to add a mutant: append a L{Mutant} to L{MUTANTS}; copy C{original}
verbatim from the source (whitespace included, enough of it to be unique),
list the test files that I{should} catch it, and leave C{sim} at its
default unless the bug lives outside what the simulator runs (then
C{sim=()}).  C{tests/test_testing_mutation.py} checks that every snippet
matches exactly once, so the list cannot rot silently.  See
C{docs/testing.md}.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

__all__ = ["Mutant", "MUTANTS", "Outcome", "check_mutants", "apply_mutant", "scratch_copy", "run_mutant", "main"]

#: The simulator arguments a mutant gets unless it says otherwise: the
#: default fault profile (which decides cluster sizes and schedules).
DEFAULT_SIM: tuple[tuple[str, ...], ...] = ((),)

CORE = "kvstore/raft/core.py"


@dataclass(frozen=True)
class Mutant:
    """
    One planted bug.

    @ivar name: short, unique, used with C{--only}.
    @ivar path: the file, relative to the checkout root.
    @ivar original: an exact snippet of C{path}, present exactly once.
    @ivar replacement: what the snippet becomes.
    @ivar tests: pytest arguments (files or node ids) that should catch it.
    @ivar sim: argument lists for C{kvstore-sim --seeds N}, each run in
        turn until one fails; C{()} to skip the simulator.
    @ivar description: the bug, in words.
    @ivar sim_required: the simulator itself must catch it, not only the
        tests (issue 9: a bug only unit tests catch is a blind spot of the
        whole-cluster checks).
    @ivar note: why it may survive for now (printed with the table).
    """

    name: str
    path: str
    original: str
    replacement: str
    tests: tuple[str, ...]
    description: str
    sim: tuple[tuple[str, ...], ...] = DEFAULT_SIM
    sim_required: bool = False
    note: str = ""


MUTANTS: tuple[Mutant, ...] = (
    # -- quorum and votes --------------------------------------------------
    Mutant(
        "quorum-even-sizes",
        "kvstore/raft/membership.py",
        "return len(self.voter_ids) // 2 + 1",
        "return (len(self.voter_ids) - 1) // 2 + 1",
        ("tests/test_raft_quorum.py", "tests/test_raft_core.py", "tests/test_raft_cluster.py"),
        "the quorum is one too small for even cluster sizes (2 of 4 make a 'majority')",
        sim_required=True,
        note="the simulator catches it once its default profile runs even cluster sizes (simulator-side work)",
    ),
    Mutant(
        "vote-stale-term",
        CORE,
        "        elif body.term < self.term:",
        "        elif body.term < self.term and not isinstance(body, RequestVote):",
        ("tests/test_raft_votes_stale.py", "tests/test_raft_core.py"),
        "a RequestVote from an older term is not refused and can record a vote",
    ),
    Mutant(
        "vote-granted-twice",
        CORE,
        "granted = up_to_date and self.voted_for in (None, sender) and self.role is not Role.LEADER",
        "granted = up_to_date and self.role is not Role.LEADER",
        ("tests/test_raft_core.py",),
        "a node votes for a second candidate in the same term",
    ),
    Mutant(
        "vote-reply-before-persist",
        CORE,
        "self._send(sender, RequestVoteResponse(self.term, granted, False), after_persist=True)",
        "self._send(sender, RequestVoteResponse(self.term, granted, False), after_persist=False)",
        ("tests/test_raft_core.py",),
        "a vote is sent before the vote is durable (a crash can then vote twice)",
    ),
    # -- replication and commit ---------------------------------------------
    Mutant(
        "commit-without-majority",
        CORE,
        "candidate = matches[self._quorum - 1]",
        "candidate = matches[self._quorum - 2]",
        ("tests/test_raft_core.py", "tests/test_raft_quorum.py"),
        "the leader advances the commit index one replica short of a majority",
    ),
    Mutant(
        "follower-ack-before-fsync",
        CORE,
        "AppendEntriesResponse(self.term, True, last_new, 0, 0, append.round),\n            after_persist=True,",
        "AppendEntriesResponse(self.term, True, last_new, 0, 0, append.round),\n            after_persist=False,",
        ("tests/test_raft_core.py", "tests/test_node.py"),
        "a follower acknowledges entries before they are durable",
    ),
    Mutant(
        "follower-commit-unverified",
        CORE,
        "self.commit_index = max(self.commit_index, min(append.leader_commit, last_new))",
        "self.commit_index = max(self.commit_index, append.leader_commit)",
        ("tests/test_raft_core.py",),
        "a follower commits up to the leader's commit index beyond the entries it verified",
    ),
    # -- reads and leadership --------------------------------------------------
    Mutant(
        "read-index-one-short",
        CORE,
        # A phantom acknowledgement at the head of the list: every confirmation
        # then needs one real acknowledgement fewer.
        "acked = sorted((self._progress[p].acked_round for p in self._voter_peers), reverse=True)",
        "acked = [self._round] + sorted((self._progress[p].acked_round for p in self._voter_peers), reverse=True)",
        ("tests/test_raft_core.py", "tests/test_raft_reads.py", "tests/test_raft_quorum.py"),
        "a read index is confirmed with one acknowledgement too few",
        sim_required=True,
        sim=((), ("--nodes", "5")),
        note="the simulator catches it once its schedules and read checks are strengthened (simulator-side work)",
    ),
    Mutant(
        "check-quorum-disabled",
        CORE,
        "if now >= self._quorum_check_at and not self._check_quorum():",
        "if False:  # check-quorum disabled",
        ("tests/test_raft_core.py", "tests/test_raft_quorum.py"),
        "a leader cut off from the majority never steps down",
        sim_required=True,
        note="the simulator catches it once its schedules are strengthened (simulator-side work)",
    ),
    # -- membership (issue 13; the simulator does not change membership yet) ----
    Mutant(
        "membership-change-before-own-term-commit",
        CORE,
        'if not self._committed_in_current_term() and "change-before-own-term-commit" not in self._plants:',
        "if False:",
        ("tests/test_raft_membership_changes.py",),
        "a new leader changes the membership before an entry of its own term commits (the single-server bug)",
        sim=(),
    ),
    Mutant(
        "membership-two-changes-at-once",
        CORE,
        'if self.configuration_change_pending and "two-changes-at-once" not in self._plants:',
        "if False:",
        ("tests/test_raft_membership_changes.py", "tests/test_raft_membership_churn.py"),
        "a second configuration change starts while another is uncommitted",
        sim=(),
    ),
    Mutant(
        "membership-learner-in-commit-quorum",
        CORE,
        'voters = self._voter_peers if "learner-counted-in-quorum" not in self._plants else progress',
        "voters = progress",
        ("tests/test_raft_membership_changes.py", "tests/test_raft_membership_churn.py"),
        "learners' acknowledgements count toward the commit quorum",
        sim=(),
    ),
    Mutant(
        "membership-effective-on-commit",
        CORE,
        "                found = True\n        if found:\n            self._use_configuration()",
        "                found = True\n        if False:\n            self._use_configuration()",
        ("tests/test_raft_membership_changes.py",),
        "an appended configuration entry does not take effect (only a later rebuild would see it)",
        sim=(),
    ),
    Mutant(
        "node-read-before-apply",
        "kvstore/node/node.py",
        "if read_state.index <= self.state_machine.applied_index:",
        "if read_state.index <= self.state_machine.applied_index + 1:",
        ("tests/test_node_commit_rules.py", "tests/test_node.py", "tests/test_raft_reads.py"),
        "a read is answered one entry before its read index is applied (a stale read)",
    ),
    # -- the node ----------------------------------------------------------------
    Mutant(
        "node-ack-replaced-write",
        "kvstore/node/node.py",
        "if write.term != term:",
        "if False:",
        ("tests/test_node_commit_rules.py", "tests/test_node.py"),
        "a write whose log index was taken by another leader's entry is acknowledged",
    ),
    Mutant(
        "apply-out-of-order",
        "kvstore/node/node.py",
        "for index, term, payload in ready.committed:",
        "for index, term, payload in reversed(ready.committed):",
        ("tests/test_node.py", "tests/test_raft_cluster.py"),
        "committed entries of one batch are applied in reverse order",
    ),
    # -- the WAL and the metadata ---------------------------------------------
    Mutant(
        "wal-skip-checksum",
        "kvstore/storage/records.py",
        "    if actual != crc:",
        "    if False:",
        ("tests/test_storage_records.py", "tests/test_storage_wal.py"),
        "recovery accepts records whose checksum does not match",
        sim_required=True,
        note="the simulator catches it once its disk model damages fsynced data (simulator-side work)",
    ),
    Mutant(
        "wal-truncate-off-by-one",
        "kvstore/storage/wal.py",
        "length = segment.offsets[position] if position < len(segment.offsets) else segment.size",
        "length = segment.offsets[position + 1] if position + 1 < len(segment.offsets) else segment.size",
        ("tests/test_storage_wal.py",),
        "a suffix truncation keeps the first conflicting record on disk",
    ),
    Mutant(
        "metadata-no-fsync",
        "kvstore/storage/metadata.py",
        "            fs.pwrite_all(fd, content, 0)\n            fs.fsync(fd)\n",
        "            fs.pwrite_all(fd, content, 0)\n",
        ("tests/test_storage_metadata.py",),
        "the term and vote are renamed into place without an fsync of the new file",
    ),
    Mutant(
        "metadata-skip-checksum",
        "kvstore/storage/metadata.py",
        "if len(parts[2]) != 8 or zlib.crc32(body) != expected:",
        "if len(parts[2]) != 8:",
        ("tests/test_storage_metadata.py",),
        "a damaged metadata file is loaded (a forgotten vote)",
    ),
    # -- network and client protocol ---------------------------------------------
    Mutant(
        "paused-peer-unbounded",
        "kvstore/protocols/peer_links.py",
        "if protocol.buffered_while_paused > MAX_BUFFERED_WHILE_PAUSED:",
        "if False:",
        ("tests/test_peers.py",),
        "data queued for a paused (backed-up) peer is unbounded",
        sim=(),
    ),
    Mutant(
        "client-read-overtakes-write",
        "kvstore/protocols/client.py",
        "return self._writes_in_flight == 0",
        "return True",
        ("tests/test_protocols_client.py",),
        "a pipelined read starts before the same connection's earlier write finished",
        sim=(),
    ),
)


# ---------------------------------------------------------------------------
# Checking and applying


class SnippetMismatch(Exception):
    """A mutant's snippet is not present exactly once in its file."""


def _occurrences(root: Path, mutant: Mutant) -> int:
    return (root / mutant.path).read_text(encoding="utf-8").count(mutant.original)


def check_mutants(root: Path, mutants: Sequence[Mutant] = MUTANTS) -> list[str]:
    """
    Problems that would make the campaign meaningless, as sentences: a
    snippet that does not occur exactly once, a replacement equal to the
    original, a missing file or test file, a duplicate name.
    """
    problems = []
    seen: set[str] = set()
    for m in mutants:
        if m.name in seen:
            problems.append(f"{m.name}: duplicate name")
        seen.add(m.name)
        if m.original == m.replacement:
            problems.append(f"{m.name}: the replacement equals the original")
        if not (root / m.path).is_file():
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        count = _occurrences(root, m)
        if count != 1:
            problems.append(f"{m.name}: the snippet occurs {count} times in {m.path} (must be exactly once): "
                            f"{m.original!r}")
        if not m.tests:
            problems.append(f"{m.name}: no tests listed")
        if m.sim_required and not m.sim:
            problems.append(f"{m.name}: the simulator must catch it but no simulator run is listed")
        for test in m.tests:
            if not (root / test.split("::")[0]).exists():
                problems.append(f"{m.name}: test {test} does not exist")
    return problems


def _files_to_copy(root: Path) -> list[str]:
    """The checkout's files as the developer sees them: tracked and new
    files, minus what git ignores (.venv, caches); or, outside git, every
    file but those."""
    try:
        listed = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=True, capture_output=True,
        ).stdout
        return [name for name in listed.decode("utf-8").split("\0") if name and (root / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", "_trial_temp", ".hypothesis", "build", "dist"}
        names = []
        for directory, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
            names += [os.path.relpath(os.path.join(directory, f), root) for f in files]
        return names


def scratch_copy(root: Path, parent: Path | None = None) -> Path:
    """A copy of the checkout in a new temporary directory (in C{parent})."""
    scratch = Path(tempfile.mkdtemp(prefix="kvstore-mutant-", dir=parent))
    for name in _files_to_copy(root):
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    return scratch


def apply_mutant(tree: Path, mutant: Mutant) -> None:
    """Replace the snippet in C{tree} (a scratch copy, never the checkout).

    @raise SnippetMismatch: if the snippet is not there exactly once."""
    path = tree / mutant.path
    text = path.read_text(encoding="utf-8")
    count = text.count(mutant.original)
    if count != 1:
        raise SnippetMismatch(f"the snippet occurs {count} times in {mutant.path}")
    path.write_text(text.replace(mutant.original, mutant.replacement), encoding="utf-8")


# ---------------------------------------------------------------------------
# Running

#: C{runner(argv, cwd, timeout) -> (exit status, output)}; the status is
#: None on a timeout.
Runner = Callable[[Sequence[str], Path, float], "tuple[int | None, str]"]


#: Commands running now, so that an interrupted campaign can stop them;
#: once C{_stopping} is set no new command starts.
_running: set[subprocess.Popen] = set()
_running_lock = threading.Lock()
_stopping = threading.Event()


def run_command(argv: Sequence[str], cwd: Path, timeout: float) -> tuple[int | None, str]:
    """Run C{argv} in C{cwd} so that it imports kvstore from C{cwd}, in its
    own session; on timeout kill its process group (only what it started)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(cwd), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("PYTEST_ADDOPTS", None)
    with _running_lock:
        if _stopping.is_set():
            return -1, "the campaign was interrupted"
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        _running.add(process)
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output.decode("utf-8", "replace")
    except subprocess.TimeoutExpired:
        _kill(process)
        output, _ = process.communicate()
        return None, output.decode("utf-8", "replace")
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): leave nothing running
        _kill(process)
        raise
    finally:
        with _running_lock:
            _running.discard(process)


def _kill(process: subprocess.Popen) -> None:
    """Kill the process group of a command this module started."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _stop_all() -> None:
    with _running_lock:
        _stopping.set()
        for process in list(_running):
            _kill(process)


def pytest_argv(tests: Iterable[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]


def sim_argv(seeds: int, args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "kvstore.testing.sim.cli", "--seeds", str(seeds), "--jobs", "1", *args]


CAUGHT, SURVIVED, ERROR, TIMEOUT, SKIPPED = "caught", "survived", "error", "timeout", "-"


#: What pytest and kvstore-sim print when a test or a seed failed.  Python
#: exits 1 on an uncaught exception too (a SyntaxError or ImportError in the
#: scratch copy, before a single seed ran): exit 1 without this report is a
#: crash, not a catch.
PYTEST_FAILED = re.compile(r"\b\d+ failed\b")
SIM_FAILED = re.compile(r"FAILING seed\(s\)|FAILED: too many inconclusive")


def _verdict(status: int | None, output: str, failed: re.Pattern[str]) -> str:
    """pytest and kvstore-sim both exit 1 when a test or seed fails, and say
    so in C{output} (matched by C{failed}); any other failure (a usage or
    collection error, a traceback) is not a catch."""
    if status is None:
        return TIMEOUT
    if status == 1 and not failed.search(output):
        return ERROR
    return {0: SURVIVED, 1: CAUGHT}.get(status, ERROR)


@dataclass
class Outcome:
    """What happened to one mutant."""

    mutant: Mutant
    tests: str = SKIPPED
    sim: str = SKIPPED
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)

    @property
    def result(self) -> str:
        """CAUGHT, SURVIVED, or STALE/ERROR when the run proves nothing.
        A mutant the simulator is required to catch is caught only by the
        simulator."""
        if self.tests == "stale":
            return "STALE"
        judges = (self.sim,) if self.mutant.sim_required else (self.tests, self.sim)
        if CAUGHT in judges or TIMEOUT in judges:
            return "CAUGHT"
        if ERROR in (self.tests, self.sim):
            return "ERROR"
        return "SURVIVED"


def _import_check(tree: Path, runner: Runner) -> str | None:
    """Make sure the copy, not the checkout, is what gets imported."""
    status, output = runner([sys.executable, "-c", "import kvstore; print(kvstore.__file__)"], tree, 60)
    where = output.strip().splitlines()[-1] if output.strip() else ""
    if status != 0 or not Path(where).resolve().is_relative_to(tree.resolve()):
        return f"the scratch copy imports kvstore from {where!r}, not from {tree}"
    return None


def run_mutant(root: Path, mutant: Mutant, seeds: int, *, runner: Runner = run_command, keep: bool = False,
               fast: bool = False, timeout: float = 900.0, workdir: Path | None = None) -> Outcome:
    """Apply C{mutant} in a scratch copy of C{root} (made in C{workdir}),
    run its tests and the simulator there, and say whether either caught
    it."""
    outcome = Outcome(mutant)
    started = time.monotonic()
    tree = scratch_copy(root, workdir)
    try:
        try:
            apply_mutant(tree, mutant)
        except SnippetMismatch as e:
            outcome.tests = "stale"
            outcome.details.append(str(e))
            return outcome
        problem = _import_check(tree, runner)
        if problem:
            outcome.tests = ERROR
            outcome.details.append(problem)
            return outcome
        status, output = runner(pytest_argv(mutant.tests), tree, timeout)
        outcome.tests = _verdict(status, output, PYTEST_FAILED)
        if outcome.tests != SURVIVED:
            outcome.details.append("tests: " + _tail(output))
        if mutant.sim and not (fast and outcome.tests == CAUGHT and not mutant.sim_required):
            for args in mutant.sim:
                status, output = runner(sim_argv(seeds, args), tree, timeout)
                outcome.sim = _verdict(status, output, SIM_FAILED)
                if outcome.sim != SURVIVED:
                    outcome.details.append(f"kvstore-sim {' '.join(args)}: " + _tail(output))
                    break
        return outcome
    finally:
        outcome.seconds = time.monotonic() - started
        if keep:
            outcome.details.append(f"scratch copy kept in {tree}")
        else:
            shutil.rmtree(tree, ignore_errors=True)


def run_baseline(root: Path, mutants: Sequence[Mutant], seeds: int, *, runner: Runner = run_command,
                 timeout: float = 1800.0, workdir: Path | None = None) -> list[str]:
    """Run every selected mutant's tests and simulator arguments on an
    unmutated copy; return what failed (a mutant 'caught' by an already
    failing check proves nothing)."""
    tree = scratch_copy(root, workdir)
    try:
        problem = _import_check(tree, runner)
        if problem:
            return [problem]
        failures = []
        tests = list(dict.fromkeys(t for m in mutants for t in m.tests))
        status, output = runner(pytest_argv(tests), tree, timeout)
        if status != 0:
            failures.append(f"tests failed without any mutant (exit {status}): {_tail(output)}")
        for args in dict.fromkeys(a for m in mutants for a in m.sim):
            status, output = runner(sim_argv(seeds, args), tree, timeout)
            if status != 0:
                failures.append(f"kvstore-sim --seeds {seeds} {' '.join(args)} failed without any mutant "
                                f"(exit {status}): {_tail(output)}")
        return failures
    finally:
        shutil.rmtree(tree, ignore_errors=True)


def _tail(output: str, lines: int = 3) -> str:
    return " | ".join(line.strip() for line in output.strip().splitlines()[-lines:])


def format_table(outcomes: Sequence[Outcome]) -> str:
    """The caught/survived table, one mutant a line, then the notes."""
    rows = [("mutant", "file", "tests", "sim", "result", "seconds")]
    rows += [(o.mutant.name, o.mutant.path, o.tests, o.sim + ("*" if o.mutant.sim_required else ""), o.result,
              f"{o.seconds:.0f}") for o in outcomes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    caught = sum(o.result == "CAUGHT" for o in outcomes)
    lines.append(f"{caught} of {len(outcomes)} mutants caught (*: only the simulator's verdict counts)")
    for o in outcomes:
        if o.result != "CAUGHT":
            required = " (the simulator must catch this one)" if o.mutant.sim_required else ""
            lines.append(f"{o.mutant.name} {o.result}{required}: {o.mutant.description}")
            lines += [f"    {d}" for d in o.details]
            if o.mutant.note:
                lines.append(f"    note: {o.mutant.note}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# Command line


def default_root() -> Path:
    """The checkout this module lives in."""
    return Path(__file__).resolve().parents[2]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m kvstore.testing.mutation",
                                description="Plant each mutant in a scratch copy; report caught/survived.")
    p.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this mutant (repeatable)")
    p.add_argument("--jobs", type=int, default=1, help="mutants run in parallel (default 1)")
    p.add_argument("--seeds", type=int, default=100, help="simulator seeds per run (default 100)")
    p.add_argument("--root", type=Path, default=None, help="the checkout (default: the one holding this module)")
    p.add_argument("--fast", action="store_true", help="skip the simulator for mutants the tests caught")
    p.add_argument("--no-baseline", action="store_true", help="skip the unmutated baseline run")
    p.add_argument("--keep", action="store_true", help="keep the scratch copies")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per test or simulator run")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--check", action="store_true", help="only check that every snippet matches exactly once")
    which.add_argument("--list", action="store_true", help="list the mutants")
    return p


def main(argv: Sequence[str] | None = None, runner: Runner = run_command) -> int:
    args = _parser().parse_args(argv)
    root = (args.root or default_root()).resolve()
    out = sys.stdout
    if args.list:
        for m in MUTANTS:
            print(f"{m.name}: {m.description} ({m.path})", file=out)
        return 0
    unknown = sorted(set(args.only) - {m.name for m in MUTANTS})
    if unknown:
        _parser().error(f"unknown mutant(s): {', '.join(unknown)}")
    if args.jobs < 1:
        _parser().error("--jobs must be at least 1")
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    problems = check_mutants(root, mutants)
    if args.check:
        for problem in problems:
            print(problem, file=out)
        print(f"{len(mutants) - len({p.split(':')[0] for p in problems})} of {len(mutants)} mutants match", file=out)
        return 1 if problems else 0
    # One snapshot of the checkout, taken now, is what every run copies: an
    # edit made while the campaign runs must not leak into some mutants.
    workdir = Path(tempfile.mkdtemp(prefix="kvstore-mutation-"))
    # SIGTERM unwinds like Ctrl-C, so the commands started are killed and
    # the scratch copies removed.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)) if in_main_thread else None
    pool = ThreadPoolExecutor(args.jobs)
    try:
        snapshot = scratch_copy(root, workdir)
        if not args.no_baseline:
            print(f"baseline: the mutants' tests and kvstore-sim --seeds {args.seeds} without any mutant...",
                  file=out, flush=True)
            failures = run_baseline(snapshot, mutants, args.seeds, runner=runner, timeout=2 * args.timeout,
                                    workdir=workdir)
            if failures:
                print("the baseline fails, so no mutant can be judged:\n" + "\n".join(failures), file=out)
                return 2

        def one(mutant: Mutant) -> Outcome:
            outcome = run_mutant(snapshot, mutant, args.seeds, runner=runner, keep=args.keep, fast=args.fast,
                                 timeout=args.timeout, workdir=workdir)
            print(f"{mutant.name}: {outcome.result} (tests {outcome.tests}, sim {outcome.sim}, "
                  f"{outcome.seconds:.0f}s)", file=out, flush=True)
            return outcome

        outcomes = list(pool.map(one, mutants))
    finally:
        _stop_all()
        pool.shutdown(wait=False, cancel_futures=True)
        _stopping.clear()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
        if args.keep:
            print(f"scratch copies kept in {workdir}", file=out)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(file=out)
    print(format_table(outcomes), file=out)
    return 0 if all(o.result == "CAUGHT" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
