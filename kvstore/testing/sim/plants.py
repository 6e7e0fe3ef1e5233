"""
The planted bugs the simulator must catch (issue 4's proof that its
checkers can fail).  Each is a switch passed as C{plants} to L{RaftCore},
L{Node} and L{KeyValueStateMachine}; they default to empty and no
production option sets them.
"""

PLANTS: dict[str, str] = {
    "commit-old-term": "the leader commits by counting replicas of an entry from an older term (Raft Figure 8)",
    "ack-before-fsync": "a node sends acknowledgements and votes before its log and vote are durable",
    "vote-without-log-check": "votes are granted without checking that the candidate's log is up to date",
    "read-without-leadership-check": "the leader answers ReadIndex without a heartbeat round confirming leadership",
    "forget-vote-on-restart": "a restarted node ignores the vote it had stored",
    "skip-checksum-on-recovery": "WAL recovery trusts records without verifying their checksums",
    "reuse-read-ids": "a node numbers its forwarded reads from 1 on every boot (issue 9, defect 1)",
    "read-index-one-ack-short": "the leader confirms a read index with one acknowledgement fewer than a quorum",
    "no-check-quorum": "a leader that has not heard from a majority keeps leading (check-quorum disabled)",
    "even-quorum-too-small": "the quorum of an even-sized cluster is half its members (peers//2+1)",
    "session-dedup-off": "the state machine applies a session write's duplicate again instead of replaying its reply",
}

#: Planted bugs in log compaction (issue 12), switched on like the others;
#: the simulator takes snapshots, compacts and installs in every seed, and
#: tests/test_sim_compaction_plants.py shows each caught.
COMPACTION_PLANTS: dict[str, str] = {
    "compact-past-applied": (
        "compaction drops every committed entry, applied (and in a snapshot) or not, and counts the dropped ones "
        "as applied"
    ),
    "keep-conflicting-suffix-after-install": (
        "a follower stepping a leader's snapshot keeps its own log, suffix included, whenever it is long enough, "
        "without checking the term at the snapshot's index (Raft Figure 13 step 6 without the term check)"
    ),
    "compact-wal-before-snapshot-durable": (
        "a node reports its snapshot to the core and drops the log prefix as soon as it starts the snapshot, "
        "before the snapshot file is durable"
    ),
}

PLANTS.update(COMPACTION_PLANTS)

#: Planted bugs in membership changes (issue 13), read by the Raft core
#: like the others; the simulator adds, removes, replaces nodes and
#: transfers leadership in its mixed profile (kvstore.testing.sim.churn),
#: and tests/test_sim_membership_plants.py shows each caught.
MEMBERSHIP_PLANTS: dict[str, str] = {
    "two-changes-at-once": (
        "the leader starts a membership change while another configuration entry is still uncommitted"
    ),
    "learner-counted-in-quorum": (
        "the leader counts learners' (and removed members') acknowledgements toward the commit quorum"
    ),
    "change-before-own-term-commit": (
        "a new leader starts a membership change before an entry of its own term is committed "
        "(the single-server change bug's fix switched off)"
    ),
}

PLANTS.update(MEMBERSHIP_PLANTS)
