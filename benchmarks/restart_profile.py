"""
Where a node's restart goes: the phases of start-up, in CPU seconds and
wall seconds, on a copy of a real data directory (issue 12, figure 3:
restart to serving with 1,000,000 keys, target 3 s).

    python benchmarks/restart_profile.py DATA_DIR [--repeat 3] [--profile OUT.prof]

DATA_DIR is a node's data directory (for example one kept by
C{benchmarks/compaction_figures.py --figures 3,5 --keep --workdir W}:
C{W/big/node-1}).  Each run copies it to a temporary directory, then starts
a fresh Python process that does what C{twistd kvstore} does up to serving,
without peers: imports, opens the storage, recovers (snapshot decoded and
hashed, log reconciled), builds the core, starts the node, and runs the
reactor until the state machine has applied everything known committed
(the moment the node logs "recovered N keys ..."; a real restart then
still has to hear from the leader).  It prints one JSON line per run:

  - C{phases}: per phase, wall seconds and the process's CPU seconds (all
    threads: hashing runs on a thread) -- C{import}, C{open_storage},
    C{recover}, C{core_and_node} (the rest of C{build_node}),
    C{apply_committed};
  - C{cpu_total_s}, C{wall_total_s}: from interpreter start (the process's
    own clock: C{time.process_time} counts from exec) to applied;
  - the node's own report line, and the load average.

CPU seconds are what to compare across runs on a shared machine: the wall
times move with the load.  C{--profile} writes a cProfile of the child's
start-up (everything after the imports) to the given file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def child(data_dir: str, profile: str | None) -> None:
    cpu0, wall_import = time.process_time(), time.monotonic()
    phases: dict[str, list[float]] = {}
    sys.path.insert(0, str(HERE.parent))
    import kvstore.node.build
    import kvstore.node.recovery
    import kvstore.daemon.service as service
    from kvstore.daemon.options import Options
    from twisted.internet import reactor
    from twisted.logger import globalLogPublisher

    phases["import"] = [time.monotonic() - wall_import, time.process_time() - cpu0]
    reports: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if "report" in event and str(event.get("report", "")).startswith("recovered "):
            reports.append(str(event["report"]))

    globalLogPublisher.addObserver(observer)

    def timed(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            w, c = time.monotonic(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                phases[name] = [time.monotonic() - w, time.process_time() - c]
        return wrapper

    service._open_storage = timed("open_storage", service._open_storage)  # type: ignore[assignment]
    kvstore.node.build.recover = timed("recover", kvstore.node.build.recover)  # type: ignore[assignment]
    service.build_node = timed("build_node", service.build_node)  # type: ignore[assignment]

    identity = json.loads((Path(data_dir) / "identity.json").read_text())
    node_id = identity["node_id"]
    ports = {}
    for member in identity["members"].split():
        member_id, rest = member.split("@")
        ports[int(member_id)] = int(rest.split("/")[0].rsplit(":", 1)[1])
    try:  # as makeService does, where this checkout has it
        from kvstore import allocator

        allocator.tune_allocator()
    except ImportError:
        pass
    options = Options()
    options.parseOptions([
        "--node-id", str(node_id), "--port", str(ports[node_id]), "--data-dir", data_dir,
        "--peers", ",".join(f"{i}@127.0.0.1:{p}" for i, p in sorted(ports.items()) if i != node_id),
    ])
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    w, c = time.monotonic(), time.process_time()
    built = service.build_service(options.config)
    phases["build_service"] = [time.monotonic() - w, time.process_time() - c]
    build_node = phases.pop("build_node")
    recover = phases["recover"]
    phases["core_and_node"] = [build_node[0] - recover[0], build_node[1] - recover[1]]
    node = built.node
    target = node._recovered.commit_index if node._recovered is not None else 0
    w, c = time.monotonic(), time.process_time()

    def check() -> None:
        if node.state_machine.applied_index >= target:
            phases["apply_committed"] = [time.monotonic() - w, time.process_time() - c]
            reactor.stop()
        else:
            reactor.callLater(0.001, check)

    node.start()
    reactor.callWhenRunning(check)
    reactor.run()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    result = {
        "phases": {k: {"wall_s": round(v[0], 3), "cpu_s": round(v[1], 3)} for k, v in phases.items()},
        "cpu_total_s": round(time.process_time(), 3),
        "keys": len(node.state_machine),
        "applied": node.state_machine.applied_index,
        "report": reports[-1] if reports else None,
    }
    print(json.dumps(result))
    built._lock.release()
    os._exit(0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of the (last) child's start-up here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.data_dir, args.profile)
        return 0
    for run in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="kvstore-restart-") as tmp:
            copy = os.path.join(tmp, "node")
            shutil.copytree(args.data_dir, copy)
            os.unlink(os.path.join(copy, "LOCK")) if os.path.exists(os.path.join(copy, "LOCK")) else None
            load = loadavg()
            started = time.monotonic()
            out = subprocess.run(
                [sys.executable, __file__, copy, "--child", *(["--profile", args.profile] if args.profile else [])],
                capture_output=True, text=True, check=False,
            )
            wall = time.monotonic() - started
            if out.returncode != 0:
                sys.stderr.write(out.stdout + out.stderr)
                return 1
            result = json.loads(out.stdout.strip().splitlines()[-1])
            result["wall_total_s"] = round(wall, 3)
            result["load"] = [load, loadavg()]
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
