# -*- test-case-name: tests.test_raft_core -*-
"""
Tunable parameters of the Raft core, with defaults chosen for a small,
shared, noisy machine (2 cores, loopback network).

Times are in seconds.  The relations between them are checked by
L{RaftConfig.validate} because a wrong relation (an election timeout shorter
than a few heartbeats) does not fail loudly: it produces a cluster that
keeps re-electing under load.
"""

from __future__ import annotations

from dataclasses import dataclass, field


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms"


@dataclass(frozen=True)
class RaftConfig:
    """
    @ivar node_id: this member's id.
    @ivar peers: the ids of the other members (empty for a one-node cluster).
    @ivar heartbeat_interval: how often a leader asserts itself.
    @ivar election_timeout_min: lower bound of the randomized election
        timeout; also how long a follower that heard from a leader ignores
        vote requests (leader stickiness, thesis section 4.2.3).
    @ivar election_timeout_max: upper bound of the election timeout; also
        the period after which a leader that has not heard from a majority
        steps down (check-quorum).
    @ivar max_append_bytes: soft budget for the entries of one
        AppendEntries message, in the units of the core's C{entry_size}
        (the composition root passes the peer protocol's encoded size): a
        message holds entries up to this budget, or a single entry if that
        entry alone is larger.
    @ivar max_entries_bytes: hard limit on the entries of one AppendEntries,
        in the same units: the peer message limit minus the largest header.
        No message ever exceeds it (a follower would have to refuse the
        message and drop the connection, forever), and the core refuses to
        propose an entry that could not fit in a message on its own.
    @ivar max_append_entries: upper bound on entries in one message.
    @ivar max_inflight: AppendEntries messages with entries that may be
        unacknowledged per follower (pipelining window); bounds the memory
        a slow follower can make the leader spend on it.
    @ivar max_apply_batch: committed entries handed out for applying in one
        L{Ready}, so a long catch-up never stalls the reactor.
    @ivar pre_vote: run the Pre-Vote round before real elections.
    @ivar auto_promote_learners: the leader promotes a learner to voter once
        it has caught up (see the next two).
    @ivar learner_promotion_lag: a learner counts as caught up while its
        last acknowledged entry is at most this many entries behind the
        leader's last entry...
    @ivar learner_promotion_heartbeats: ...and it is promoted once it has
        been caught up (and answering) at this many heartbeats in a row.
    @ivar commit_notify_delay: how long a leader waits, after its commit
        index moves, before it sends followers a message only to tell them
        (seconds; 0 sends one at once, as before issue 16).  Every
        AppendEntries carries the commit index, so under a steady stream of
        writes the next write's entries tell them for free; the message is
        sent only if none went out meanwhile.  Sending it at once doubled
        the messages of a sequential write (a notice and its acknowledgement
        per follower) and put two sends between the commit and the client's
        reply.  Followers' stale reads and applies lag by at most this
        much while messages arrive and the leader keeps leading (a lost
        message waits for the next heartbeat, a leader that loses its term
        for its successor's first commit; a leader that removes itself
        tells them before it steps down); linearizable reads do not depend
        on it (the read-index round carries the commit index).
    """

    node_id: int
    peers: tuple[int, ...] = field(default_factory=tuple)
    heartbeat_interval: float = 0.1
    election_timeout_min: float = 1.0
    election_timeout_max: float = 2.0
    max_append_bytes: int = 1024 * 1024
    max_entries_bytes: int = 15 * 1024 * 1024
    max_append_entries: int = 4096
    max_inflight: int = 32
    max_apply_batch: int = 4096
    pre_vote: bool = True
    auto_promote_learners: bool = True
    learner_promotion_lag: int = 1000
    learner_promotion_heartbeats: int = 3
    commit_notify_delay: float = 0.002

    def validate(self) -> None:
        """
        The one check of these parameters: the core runs it when it starts,
        and C{twistd kvstore}'s options run it to refuse a bad command line
        (L{kvstore.daemon.options}, which names the options in place of the field
        names of the messages).

        @raises ValueError: if a parameter or a relation between parameters
            is unreasonable.
        """
        if self.node_id in self.peers:
            raise ValueError("a node cannot be its own peer")
        if len(set(self.peers)) != len(self.peers):
            raise ValueError("duplicate peer ids")
        if not self.heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be positive")
        # Compared in whole microseconds: in float seconds, 0.027 > 3 * 0.009
        # (0.026999999999999996) would let exactly 3x through for some values.
        if not round(self.election_timeout_min * 1_000_000) > 3 * round(self.heartbeat_interval * 1_000_000):
            raise ValueError(
                f"election_timeout_min ({_ms(self.election_timeout_min)}) must be more than "
                f"3 x heartbeat_interval ({_ms(self.heartbeat_interval)}), or followers "
                f"start elections while the leader is healthy"
            )
        if not self.election_timeout_max > self.election_timeout_min:
            raise ValueError(
                f"election_timeout_max ({_ms(self.election_timeout_max)}) must be more "
                f"than its minimum ({_ms(self.election_timeout_min)}); the range is what "
                f"keeps candidates from splitting votes forever"
            )
        if self.learner_promotion_lag < 0:
            raise ValueError("learner_promotion_lag must not be negative")
        if not self.commit_notify_delay >= 0:
            raise ValueError("commit_notify_delay must not be negative")
        for name in (
            "max_append_bytes", "max_append_entries", "max_inflight", "max_apply_batch", "learner_promotion_heartbeats"
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_append_bytes > self.max_entries_bytes:
            raise ValueError(
                f"max_append_bytes ({self.max_append_bytes}) must not exceed max_entries_bytes "
                f"({self.max_entries_bytes}), the hard per-message limit"
            )

    @property
    def members(self) -> tuple[int, ...]:
        """All member ids, this node included, sorted: the bootstrap
        configuration's (the core's current one is
        L{RaftCore.configuration<kvstore.raft.core.RaftCore.configuration>})."""
        return tuple(sorted((self.node_id, *self.peers)))

    @property
    def quorum(self) -> int:
        """How many members of the bootstrap configuration make a majority
        (the core counts the voters of its current configuration:
        L{kvstore.raft.membership.Configuration.quorum})."""
        return (len(self.peers) + 1) // 2 + 1
