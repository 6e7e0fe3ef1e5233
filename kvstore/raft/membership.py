# -*- test-case-name: tests.test_raft_membership_configuration -*-
"""
Cluster membership as the Raft core sees it: a L{Configuration} of voters
and learners, the single-server changes that move from one configuration to
the next, the refusals of a change, and the log entry that carries a
configuration.

A configuration maps each member's id to an opaque address string.  The
core never interprets addresses: the node uses them for its peer links and
its C{MEMBERS} reply.  Only voters count in quorums (elections, commit,
ReadIndex, check-quorum); learners are replicated to and nothing more.  Ids
are never reused: a removed id stays in C{removed} for good, so a removed
node that comes back cannot disrupt the cluster (the core ignores every
message from it) and cannot be mistaken for a new member.

Configuration entries.  Payloads are opaque to Raft, but Raft reserves
every payload whose first byte is C{0x00} (L{RAFT_PAYLOAD_MARK}) for its own
entries; state machine commands start with a letter (C{b"P"}, C{b"D"}), the
leader's no-op is empty, and a state machine must apply a C{0x00} payload
as a no-op.  The only such entry today is a configuration entry::

    b"\\x00members " + " ".join(tokens)

one token per member in id order, C{<id>@<address>/voter},
C{<id>@<address>/learner}, then C{<id>/removed} for each removed id: the
same C{<id>@<address>/<role>} tokens as the node's C{MEMBERS} reply.  The
entry holds the whole configuration that takes effect with it (not the
change), so a node finds the configuration at any index from the last
configuration entry at or before it, and a snapshot carries one too.  The
text is plain UTF-8, as every entry on the peer wire must be.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping, Union


#: The first byte of every payload that belongs to Raft rather than to the
#: state machine (which applies such an entry as a no-op).
RAFT_PAYLOAD_MARK = b"\x00"

#: The prefix of a configuration entry's payload.
CONFIGURATION_PREFIX = RAFT_PAYLOAD_MARK + b"members "


class MemberRole(enum.Enum):
    VOTER = "voter"
    LEARNER = "learner"


class MalformedConfiguration(ValueError):
    """A configuration, or the text or entry payload meant to hold one, is
    not valid."""


def _check_address(address: object) -> str:
    # Spaces separate the tokens of the encoded form; the node checks that
    # an address is a HOST:PORT it can connect to.
    if not isinstance(address, str) or any(c.isspace() for c in address):
        raise MalformedConfiguration(f"an address must be a string without whitespace, got {address!r}")
    return address


def _address_key(address: str) -> str:
    """
    C{address} in a form in which two spellings of one C{HOST:PORT} are
    equal (for the taken-address refusal only; addresses stay as given):
    host names are case-insensitive, C{05001} is port 5001 and C{[0::1]}
    is C{[::1]}.  Names that resolve alike (C{localhost}, C{127.0.0.1})
    are not told apart: the core never resolves names.
    """
    host, sep, port = address.lower().rpartition(":")
    if not sep:
        return address.lower()
    if port.isdigit():
        port = str(int(port))
    if host.startswith("[") and host.endswith("]"):
        try:
            host = "[" + ipaddress.IPv6Address(host[1:-1]).compressed + "]"
        except ValueError:
            pass
    return f"{host}:{port}"


def _check_id(node_id: object) -> int:
    if type(node_id) is not int or node_id < 0:
        raise MalformedConfiguration(f"a node id must be a non-negative integer, got {node_id!r}")
    return node_id


class Configuration:
    """
    One cluster configuration: voters and learners, each with its address,
    and the ids removed for good.  Immutable; equal when all three agree.

    @ivar voters: id -> address of the voting members (read-only mapping).
    @ivar learners: id -> address of the learners (read-only mapping).
    @ivar removed: ids removed from the cluster, never to be reused.
    @ivar voter_ids: the voters' ids.
    @ivar learner_ids: the learners' ids.
    @ivar member_ids: voters and learners.
    """

    __slots__ = ("voters", "learners", "removed", "voter_ids", "learner_ids", "member_ids")

    voters: Mapping[int, str]
    learners: Mapping[int, str]
    removed: frozenset[int]
    voter_ids: frozenset[int]
    learner_ids: frozenset[int]
    member_ids: frozenset[int]

    def __init__(
        self,
        voters: Mapping[int, str],
        learners: Mapping[int, str] | None = None,
        removed: Iterable[int] = (),
    ) -> None:
        learners = learners or {}
        voter_map = {_check_id(i): _check_address(a) for i, a in sorted(voters.items())}
        learner_map = {_check_id(i): _check_address(a) for i, a in sorted(learners.items())}
        removed_set = frozenset(_check_id(i) for i in removed)
        if voter_map.keys() & learner_map.keys():
            raise MalformedConfiguration(f"ids both voter and learner: {sorted(voter_map.keys() & learner_map.keys())}")
        members = frozenset(voter_map) | frozenset(learner_map)
        if members & removed_set:
            raise MalformedConfiguration(f"removed ids still members: {sorted(members & removed_set)}")
        set_ = object.__setattr__
        set_(self, "voters", MappingProxyType(voter_map))
        set_(self, "learners", MappingProxyType(learner_map))
        set_(self, "removed", removed_set)
        set_(self, "voter_ids", frozenset(voter_map))
        set_(self, "learner_ids", frozenset(learner_map))
        set_(self, "member_ids", members)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("a Configuration is immutable")

    @classmethod
    def bootstrap(cls, node_id: int, peers: Iterable[int], addresses: Mapping[int, str] | None = None) -> Configuration:
        """The configuration a cluster starts from: this node and its
        C{peers}, all voters (the command line of today's C{--peers}), with
        their C{addresses} where known and C{""} otherwise."""
        addresses = addresses or {}
        return cls({i: addresses.get(i, "") for i in (node_id, *peers)})

    # -- queries -------------------------------------------------------------

    @property
    def quorum(self) -> int:
        """How many voters make a majority (learners never count)."""
        return len(self.voter_ids) // 2 + 1

    def role(self, node_id: int) -> MemberRole | None:
        """C{node_id}'s role, or L{None} if it is not a member."""
        if node_id in self.voter_ids:
            return MemberRole.VOTER
        if node_id in self.learner_ids:
            return MemberRole.LEARNER
        return None

    def address(self, node_id: int) -> str | None:
        """C{node_id}'s address, or L{None} if it is not a member."""
        return self.voters.get(node_id, self.learners.get(node_id))

    def members(self) -> list[tuple[int, str, MemberRole]]:
        """C{(id, address, role)} of every member, in id order."""
        rows = [(i, a, MemberRole.VOTER) for i, a in self.voters.items()]
        rows += [(i, a, MemberRole.LEARNER) for i, a in self.learners.items()]
        return sorted(rows, key=lambda row: row[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Configuration):
            return NotImplemented
        return (self.voters, self.learners, self.removed) == (other.voters, other.learners, other.removed)

    def __hash__(self) -> int:
        return hash((tuple(self.voters.items()), tuple(self.learners.items()), self.removed))

    def __repr__(self) -> str:
        return f"Configuration({self.to_text()!r})"

    # -- changes -------------------------------------------------------------

    def after(self, change: ConfigurationChange) -> Configuration | None:
        """
        The configuration C{change} leads to, or L{None} if this
        configuration already is that (adding a learner again with the same
        address, promoting a voter, removing a removed id): an idempotent
        retry appends nothing.

        @raises ChangeRefused: the change is not allowed (see the subclasses).
        """
        voters, learners = dict(self.voters), dict(self.learners)
        node_id = change.node_id
        if isinstance(change, AddLearner):
            address = change.address
            if not isinstance(address, str) or not address or any(c.isspace() for c in address):
                raise InvalidAddress(address)
            if node_id in self.removed:
                raise IdRemoved(node_id)
            existing = self.address(node_id)
            if existing is not None:
                if existing == address:
                    return None
                raise IdTaken(node_id, existing)
            key = _address_key(address)
            for other, other_address, _ in self.members():
                if _address_key(other_address) == key:
                    # Two members at one address: the peer links of both
                    # would reach one process, which refuses one of them.
                    raise AddressTaken(address, other)
            learners[node_id] = address
            return Configuration(voters, learners, self.removed)
        if isinstance(change, PromoteLearner):
            if node_id in self.voter_ids:
                return None
            if node_id not in self.learner_ids:
                raise IdRemoved(node_id) if node_id in self.removed else UnknownMember(node_id)
            voters[node_id] = learners.pop(node_id)
            return Configuration(voters, learners, self.removed)
        if isinstance(change, RemoveMember):
            if node_id in self.removed:
                return None
            if node_id not in self.member_ids:
                raise UnknownMember(node_id)
            if self.voter_ids == {node_id}:
                raise LastVoter(node_id)
            voters.pop(node_id, None)
            learners.pop(node_id, None)
            return Configuration(voters, learners, self.removed | {node_id})
        raise TypeError(f"not a configuration change: {change!r}")

    # -- encoding ------------------------------------------------------------

    def to_text(self) -> str:
        """The space-separated tokens C{<id>@<address>/<role>} in id order,
        then C{<id>/removed}: the node's C{MEMBERS} reply is the first part."""
        tokens = [f"{i}@{a}/{role.value}" for i, a, role in self.members()]
        tokens += [f"{i}/removed" for i in sorted(self.removed)]
        return " ".join(tokens)

    def members_text(self) -> str:
        """The C{MEMBERS} reply: C{<id>@<address>/<role>} tokens in id order."""
        return " ".join(f"{i}@{a}/{role.value}" for i, a, role in self.members())

    @classmethod
    def from_text(cls, text: str) -> Configuration:
        """
        Parse L{to_text}'s form.

        @raises MalformedConfiguration: if it is not exactly that form, or
            has no voter (no change ever leads to a configuration without
            one).
        """
        voters: dict[int, str] = {}
        learners: dict[int, str] = {}
        removed: list[int] = []
        for token in text.split(" "):
            head, slash, role = token.rpartition("/")
            if not slash:
                raise MalformedConfiguration(f"token {token!r} has no role")
            if role == "removed":
                removed.append(_parse_id(head))
                continue
            id_text, at, address = head.partition("@")
            if not at:
                raise MalformedConfiguration(f"token {token!r} has no address")
            if role == "voter":
                voters[_parse_id(id_text)] = address
            elif role == "learner":
                learners[_parse_id(id_text)] = address
            else:
                raise MalformedConfiguration(f"token {token!r} has an unknown role")
        if not voters:
            raise MalformedConfiguration("a configuration needs at least one voter")
        configuration = cls(voters, learners, removed)
        # Duplicates, order and spacing: only the one canonical text of a
        # configuration is accepted, so equal configurations are equal bytes.
        if configuration.to_text() != text:
            raise MalformedConfiguration(f"not in canonical form: {text!r}")
        return configuration


def _parse_id(text: str) -> int:
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0") or len(text) > 19:
        raise MalformedConfiguration(f"bad node id {text!r}")
    return int(text)


def is_raft_payload(payload: bytes) -> bool:
    """Whether C{payload} belongs to Raft (a configuration entry), not to
    the state machine."""
    return payload[:1] == RAFT_PAYLOAD_MARK


def encode_configuration_entry(configuration: Configuration) -> bytes:
    """The payload of the log entry that makes C{configuration} current."""
    return CONFIGURATION_PREFIX + configuration.to_text().encode("utf-8")


def decode_configuration_entry(payload: bytes) -> Configuration:
    """
    The configuration a configuration entry's payload holds.

    @raises MalformedConfiguration: if C{payload} is not a valid
        configuration entry (any other payload marked as Raft's is one too).
    """
    if not payload.startswith(CONFIGURATION_PREFIX):
        raise MalformedConfiguration(f"not a configuration entry: {payload[:20]!r}")
    try:
        text = payload[len(CONFIGURATION_PREFIX):].decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedConfiguration("a configuration entry must be UTF-8") from None
    return Configuration.from_text(text)


# ---------------------------------------------------------------------------
# Changes


@dataclass(frozen=True)
class AddLearner:
    """Add C{node_id} at C{address} as a learner (the first step of adding
    a node; the leader promotes it once it has caught up)."""

    node_id: int
    address: str


@dataclass(frozen=True)
class PromoteLearner:
    """Make the learner C{node_id} a voter."""

    node_id: int


@dataclass(frozen=True)
class RemoveMember:
    """Remove the voter or learner C{node_id}, for good."""

    node_id: int


ConfigurationChange = Union[AddLearner, PromoteLearner, RemoveMember]


# ---------------------------------------------------------------------------
# Refusals: str() of each is the text after "Error: " in the node's reply.


class ChangeRefused(Exception):
    """A membership change was refused; nothing was appended."""


class ChangeInProgress(ChangeRefused):
    """Another configuration entry is not committed yet: one single-server
    change at a time (thesis chapter 4)."""

    def __init__(self) -> None:
        super().__init__("Membership change in progress")


class LeaderNotReady(ChangeRefused):
    """The leader has not committed an entry of its own term yet, so it may
    not know the latest committed configuration (the fix to the
    single-server change bug, thesis section 4.1 and its 2015 erratum)."""

    def __init__(self) -> None:
        super().__init__("Membership change refused: the leader has not committed an entry of its term yet; retry")


class UnknownMember(ChangeRefused):
    def __init__(self, node_id: int) -> None:
        super().__init__(f"Node {node_id} is not a member")
        self.node_id = node_id


class IdTaken(ChangeRefused):
    def __init__(self, node_id: int, address: str) -> None:
        super().__init__(f"Node {node_id} is already a member with address {address}")
        self.node_id = node_id
        self.address = address


class AddressTaken(ChangeRefused):
    def __init__(self, address: str, node_id: int) -> None:
        super().__init__(f"Address {address} is already in use by Node {node_id}")
        self.address = address
        self.node_id = node_id


class IdRemoved(ChangeRefused):
    def __init__(self, node_id: int) -> None:
        super().__init__(f"Node {node_id} was removed from the cluster; node ids are never reused")
        self.node_id = node_id


class LastVoter(ChangeRefused):
    def __init__(self, node_id: int) -> None:
        super().__init__(f"Cannot remove node {node_id}: it is the last voter")
        self.node_id = node_id


class InvalidAddress(ChangeRefused):
    def __init__(self, address: object) -> None:
        super().__init__(f"Invalid address {address!r}: it must be non-empty, without whitespace")
        self.address = address
