"""
One PySyncObj node for C{benchmarks/compare.py}: a C{SyncObj} holding a
C{ReplDict} (PySyncObj's batteries), fronted by a small TCP server that speaks
the subset of kvstore's client text protocol the benchmark client needs, so
the very same client (C{kvstore.tools.bench}) drives both systems:

  - C{PUT <key> <value>} calls C{ReplDict.set(key, value, callback=...)} and
    replies C{<key> added successfully.} only when PySyncObj calls the
    callback with C{FAIL_REASON.SUCCESS}, i.e. once the entry is committed
    (replicated to a majority) and applied on this node; any other outcome
    replies C{Error: pysyncobj <reason>}.
  - C{STATUS} replies C{node=<i> role=leader|follower term=<t>} so the client
    finds the leader the way it finds kvstore's.

Replies on one connection go out in request order.

Journal modes (C{--journal}):

  - C{memory}: PySyncObj's default, C{MemoryJournal}: the log lives only in
    RAM.
  - C{file}: the most durable configuration PySyncObj itself offers:
    C{journalFile} (C{FileJournal}, the log written into an mmap'ed file) and
    C{fullDumpFile} (snapshots written at log compaction).  PySyncObj never
    calls fsync or msync on either while running (only C{_destroy} msyncs the
    journal), so an acknowledged write can be lost on power failure or
    kernel crash.
  - C{file-fsync}: C{file} plus an fsync that this harness adds (it is not a
    PySyncObj option): C{FileJournal.flush()} (msync of the journal mapping)
    before a follower acknowledges an AppendEntries message, and on the
    leader after each batch of new client commands is appended (before the
    leader can count its own copy towards a commit).  One msync per batch:
    group commit, the cheapest correct placement we could add from outside.
    Term/vote metadata (C{journalFile + '.meta'}) is still not fsynced.

This is a benchmark helper, not part of kvstore.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import threading


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--raft-ports", required=True, help="comma-separated raft ports of all nodes")
    p.add_argument("--client-port", type=int, required=True)
    p.add_argument("--journal", choices=("memory", "file", "file-fsync"), default="memory")
    p.add_argument("--dir", required=True)
    p.add_argument(
        "--batch",
        choices=("on", "off"),
        default="on",
        help="SyncObjConf.appendEntriesUseBatch (PySyncObj default: on)",
    )
    return p.parse_args(argv)


def install_fsync(syncobj_cls, journal_cls):
    """
    Add group-commit fsync to PySyncObj from outside (C{file-fsync} mode):
    journal appends mark the journal dirty; the follower path msyncs before
    C{__sendNextNodeIdx} (its AppendEntries acknowledgement) and the leader
    msyncs after C{_checkCommandsToApply} (which appends new commands, before
    the next tick computes the commit index counting the leader itself).
    """
    counter = {"fsyncs": 0}
    journals = []
    original_add = journal_cls.add

    def add(self, command, idx, term):
        original_add(self, command, idx, term)
        self._bench_dirty = True
        if not journals:
            journals.append(self)

    def sync_journal():
        for j in journals:
            if getattr(j, "_bench_dirty", False):
                j.flush()  # FileJournal.flush -> ResizableFile.flush -> mmap.flush (msync MS_SYNC)
                j._bench_dirty = False
                counter["fsyncs"] += 1

    journal_cls.add = add
    original_send_next = syncobj_cls._SyncObj__sendNextNodeIdx

    def send_next(self, *args, **kwargs):
        sync_journal()
        return original_send_next(self, *args, **kwargs)

    syncobj_cls._SyncObj__sendNextNodeIdx = send_next
    original_check = syncobj_cls._checkCommandsToApply

    def check(self):
        result = original_check(self)
        sync_journal()
        return result

    syncobj_cls._checkCommandsToApply = check
    return counter


class Frontend:
    """The text-protocol server, on an asyncio loop in the main thread;
    PySyncObj runs its own tick thread (autoTick)."""

    def __init__(self, syncobj, repl_dict, index, loop):
        self.syncobj = syncobj
        self.dict = repl_dict
        self.index = index
        self.loop = loop
        self.done = []  # (future, reply) completed by the tick thread
        self.lock = threading.Lock()
        self.scheduled = False

    def _complete(self, future, reply):
        # Called on PySyncObj's tick thread: hand over in batches.
        with self.lock:
            self.done.append((future, reply))
            if self.scheduled:
                return
            self.scheduled = True
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self):
        with self.lock:
            done, self.done = self.done, []
            self.scheduled = False
        for future, reply in done:
            if not future.done():
                future.set_result(reply)

    def status(self):
        status = self.syncobj.getStatus()
        role = "leader" if self.syncobj._isLeader() else "follower"
        return f"node={self.index} role={role} term={status.get('raft_term', 0)}\n"

    def digest(self):
        """C{applied=<last applied index> digest=<sha1 of the sorted items>}
        (run after the load stopped, to check that replicas agree)."""
        import hashlib

        for _ in range(10):
            try:
                applied = self.syncobj.raftLastApplied
                items = sorted(self.dict.rawData().items())
                break
            except RuntimeError:  # changed size during iteration: retry
                continue
        else:
            return "Error: busy\n"
        digest = hashlib.sha1(repr(items).encode()).hexdigest()
        return f"applied={applied} keys={len(items)} digest={digest}\n"

    async def handle(self, reader, writer):
        from pysyncobj import FAIL_REASON

        names = {v: k for k, v in vars(FAIL_REASON).items() if not k.startswith("_")}
        queue: asyncio.Queue = asyncio.Queue()

        async def replies():
            while True:
                item = await queue.get()
                if item is None:
                    break
                writer.write((await item).encode() if isinstance(item, asyncio.Future) else item.encode())

        sender = asyncio.ensure_future(replies())
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                text = line.decode("utf-8", "replace").rstrip("\r\n")
                word, _, rest = text.partition(" ")
                if word.upper() == "PUT":
                    key, _, value = rest.partition(" ")
                    future = self.loop.create_future()

                    def callback(result, error, future=future, key=key):
                        if error == FAIL_REASON.SUCCESS:
                            self._complete(future, f"{key} added successfully.\n")
                        else:
                            self._complete(future, f"Error: pysyncobj {names.get(error, error)}\n")

                    self.dict.set(key, value, callback=callback)
                    queue.put_nowait(future)
                elif word.upper() == "STATUS":
                    queue.put_nowait(self.status())
                elif word.upper() == "DIGEST":
                    queue.put_nowait(self.digest())
                elif word.upper() == "GET":
                    queue.put_nowait(f"{self.dict.get(rest.split(' ')[0])}\n")
                else:
                    queue.put_nowait("Error: unsupported by the pysyncobj benchmark node\n")
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)
            try:
                await sender
            except (ConnectionError, OSError):
                pass
            writer.close()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict
    from pysyncobj.journal import FileJournal

    counter = None
    if args.journal == "file-fsync":
        counter = install_fsync(SyncObj, FileJournal)
    ports = [int(p) for p in args.raft_ports.split(",")]
    me = f"127.0.0.1:{ports[args.index]}"
    partners = [f"127.0.0.1:{p}" for i, p in enumerate(ports) if i != args.index]
    os.makedirs(args.dir, exist_ok=True)
    conf = SyncObjConf(appendEntriesUseBatch=(args.batch == "on"))
    if args.journal != "memory":
        conf.journalFile = os.path.join(args.dir, "journal.bin")
        conf.fullDumpFile = os.path.join(args.dir, "dump.bin")
    repl_dict = ReplDict()
    syncobj = SyncObj(me, partners, conf=conf, consumers=[repl_dict])

    async def serve():
        loop = asyncio.get_running_loop()
        frontend = Frontend(syncobj, repl_dict, args.index, loop)
        server = await asyncio.start_server(frontend.handle, "127.0.0.1", args.client_port)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        pass
    finally:
        if counter is not None:
            sys.stderr.write(f"journal msyncs: {counter['fsyncs']}\n")
        syncobj.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main())
