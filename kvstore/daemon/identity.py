# -*- test-case-name: tests.test_identity -*-
"""
A data directory's identity (issue 13): the cluster id, the node's own id
and the membership it started from, recorded at the first start
(C{<data-dir>/identity.json}) so that later starts take them from the data
directory and the log, never from the command line again.

Two kinds of first start:

  - B{bootstrap}: the node's command line (C{--peers}, as in the seed's
    C{--node-id 0 --port 5000 --peers 5001,5002}) is the initial membership,
    every member a voter, recorded with its addresses; the core starts from
    it and replays the log's configuration entries after it.  On empty
    storage the log starts with that membership as its first entry
    (L{kvstore.node.membership.bootstrap_entry}), so it is in the log too;
    data directories of earlier releases have none and start from this
    record alone.  A later start
    whose C{--peers} says otherwise logs a warning and uses the recorded
    membership and the log's.
  - B{join} (C{--join}): the node was added to an existing cluster by its
    leader (L{kvstore.daemon.join}); it records the cluster's id, an empty initial
    membership (the leader's entries or snapshot bring the configuration)
    and the members it joined through (C{seed}), which it links to until
    then.

A data directory of an earlier release (a log but no identity) is recorded
as a bootstrap from its command line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from twisted.logger import Logger

from kvstore.raft.membership import Configuration, MalformedConfiguration

__all__ = ["IDENTITY_FILE", "Identity", "IdentityError", "load_identity", "save_identity"]

IDENTITY_FILE = "identity.json"

_log = Logger()


class IdentityError(Exception):
    """The identity file is unreadable, or disagrees with the command line."""


@dataclass(frozen=True)
class Identity:
    """
    @ivar members: the initial membership (L{Configuration.to_text}); empty
        for a node that joined.
    @ivar seed: id -> address of the members a joining node joined through.
    """

    cluster_id: str
    node_id: int
    members: str = ""
    seed: dict[int, str] = field(default_factory=dict)

    @property
    def joined(self) -> bool:
        return not self.members

    def configuration(self) -> Configuration:
        """The membership the log starts from: the recorded bootstrap one,
        or an empty one for a node that joined."""
        return Configuration.from_text(self.members) if self.members else Configuration({})

    def encode(self) -> bytes:
        return json.dumps(
            {
                "cluster_id": self.cluster_id,
                "node_id": self.node_id,
                "members": self.members,
                "seed": {str(node): address for node, address in sorted(self.seed.items())},
            },
            sort_keys=True,
        ).encode("utf-8") + b"\n"


def load_identity(data_dir: str) -> Identity | None:
    """The identity recorded in C{data_dir}, or L{None} if there is none.

    @raises IdentityError: if the file is not a valid identity."""
    path = os.path.join(data_dir, IDENTITY_FILE)
    try:
        with open(path, "rb") as f:
            raw = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise IdentityError(f"{path}: unreadable identity ({e})") from None
    try:
        identity = Identity(
            str(raw["cluster_id"]), int(raw["node_id"]), str(raw["members"]),
            {int(node): str(address) for node, address in raw.get("seed", {}).items()},
        )
        identity.configuration()
    except (KeyError, TypeError, ValueError, AttributeError, MalformedConfiguration) as e:
        raise IdentityError(f"{path}: invalid identity ({e})") from None
    return identity


def save_identity(data_dir: str, identity: Identity, fsync: bool = True) -> None:
    """Write C{identity} into C{data_dir} atomically and durably (a
    temporary file, fsynced, renamed, the directory fsynced)."""
    path = os.path.join(data_dir, IDENTITY_FILE)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(identity.encode())
        f.flush()
        if fsync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if fsync:
        fd = os.open(data_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
