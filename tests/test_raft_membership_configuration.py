# -*- test-case-name: tests.test_raft_membership_configuration -*-
"""
L{kvstore.raft.membership}: configurations and their quorums, the
single-server changes and their refusals, the configuration entry's
encoding, its validation on the peer wire, the messages that carry
membership (InstallSnapshot's configuration, TimeoutNow, the transfer flag
of RequestVote), and the state machine applying configuration entries as
no-ops.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.membership import (
    AddLearner,
    ChangeInProgress,
    Configuration,
    IdRemoved,
    IdTaken,
    InvalidAddress,
    LastVoter,
    MalformedConfiguration,
    MemberRole,
    PromoteLearner,
    RemoveMember,
    UnknownMember,
    decode_configuration_entry,
    encode_configuration_entry,
    is_raft_payload,
)
from kvstore.raft.messages import (
    MESSAGE_TYPES,
    InstallSnapshot,
    MalformedMessage,
    Message,
    RequestVote,
    TimeoutNow,
    from_dict,
    to_dict,
)
from kvstore.statemachine import KeyValueStateMachine, encode_put

from tests.raft_membership_support import address, configuration


class ConfigurationTests(SynchronousTestCase):
    """What a configuration holds and how its quorum counts."""

    def test_quorum_counts_voters_only(self) -> None:
        """The quorum is a majority of the voters, however many learners there are."""
        for voters, learners, quorum in [(1, 0, 1), (1, 3, 1), (2, 0, 2), (3, 2, 2), (4, 1, 3), (5, 0, 3), (7, 6, 4)]:
            with self.subTest(voters=voters, learners=learners):
                members = configuration(range(voters), range(10, 10 + learners))
                self.assertEqual(members.quorum, quorum)

    def test_roles_and_addresses(self) -> None:
        """Each member has its role and address; others have none."""
        members = configuration([1, 2], [3], removed=[4])
        self.assertEqual([members.role(i) for i in (1, 3, 4, 5)], [MemberRole.VOTER, MemberRole.LEARNER, None, None])
        self.assertEqual((members.address(3), members.address(4)), (address(3), None))
        self.assertEqual(members.member_ids, {1, 2, 3})

    def test_bootstrap_from_todays_command_line(self) -> None:
        """The bootstrap configuration is the node and its --peers, all voters, addresses where known."""
        members = Configuration.bootstrap(0, (1, 2), {1: "h:5001"})
        self.assertEqual(dict(members.voters), {0: "", 1: "h:5001", 2: ""})
        self.assertEqual(members.learner_ids, frozenset())

    def test_invalid_configurations_are_refused(self) -> None:
        """An id both voter and learner, a removed id still a member, a bad id or an address with a space is refused."""
        for voters, learners, removed in [
            ({1: "a"}, {1: "a"}, ()),
            ({1: "a"}, {}, (1,)),
            ({-1: "a"}, {}, ()),
            ({1: "a b"}, {}, ()),
        ]:
            with self.subTest(voters=voters, learners=learners, removed=removed):
                self.assertRaises(MalformedConfiguration, Configuration, voters, learners, removed)

    def test_immutable_and_hashable(self) -> None:
        """A configuration cannot be changed in place, and equal ones hash alike."""
        members = configuration([1, 2])
        with self.assertRaises(AttributeError):
            members.quorum = 5  # type: ignore[misc]
        with self.assertRaises(TypeError):
            members.voters[3] = "x"  # type: ignore[index]
        self.assertEqual(hash(members), hash(configuration([2, 1])))
        self.assertEqual(members, configuration([2, 1]))
        self.assertNotEqual(members, configuration([1, 2], [3]))


class ChangeTests(SynchronousTestCase):
    """Configuration.after: where each change leads, and its refusals."""

    def test_add_promote_remove(self) -> None:
        """A learner is added, promoted to voter, and removed for good."""
        members = configuration([1, 2, 3])
        added = members.after(AddLearner(4, address(4)))
        self.assertEqual(added, configuration([1, 2, 3], [4]))
        promoted = added.after(PromoteLearner(4))  # type: ignore[union-attr]
        self.assertEqual(promoted, configuration([1, 2, 3, 4]))
        removed = promoted.after(RemoveMember(2))  # type: ignore[union-attr]
        self.assertEqual(removed, configuration([1, 3, 4], removed=[2]))
        self.assertEqual(configuration([1], [2]).after(RemoveMember(2)), configuration([1], removed=[2]))

    def test_retries_change_nothing(self) -> None:
        """Adding a member again at the same address, promoting a voter or removing a removed id is no change (None)."""
        members = configuration([1, 2], [3], removed=[4])
        self.assertIsNone(members.after(AddLearner(3, address(3))))
        self.assertIsNone(members.after(AddLearner(1, address(1))))
        self.assertIsNone(members.after(PromoteLearner(1)))
        self.assertIsNone(members.after(RemoveMember(4)))

    def test_refusals(self) -> None:
        """Each refused change raises its own exception, whose text the node replies after 'Error: '."""
        members = configuration([1, 2], [3], removed=[4])
        cases = [
            (AddLearner(3, "10.0.0.1:1"), IdTaken, f"Node 3 is already a member with address {address(3)}"),
            (AddLearner(1, "10.0.0.1:1"), IdTaken, f"Node 1 is already a member with address {address(1)}"),
            (AddLearner(4, address(4)), IdRemoved, "Node 4 was removed from the cluster; node ids are never reused"),
            (AddLearner(5, ""), InvalidAddress, "Invalid address '': it must be non-empty, without whitespace"),
            (AddLearner(5, "a b:1"), InvalidAddress, "Invalid address 'a b:1': it must be non-empty, without whitespace"),
            (PromoteLearner(5), UnknownMember, "Node 5 is not a member"),
            (PromoteLearner(4), IdRemoved, "Node 4 was removed from the cluster; node ids are never reused"),
            (RemoveMember(5), UnknownMember, "Node 5 is not a member"),
        ]
        for change, refusal, text in cases:
            with self.subTest(change=change):
                with self.assertRaises(refusal) as caught:
                    members.after(change)
                self.assertEqual(str(caught.exception), text)

    def test_the_last_voter_cannot_be_removed(self) -> None:
        """Removing the only voter is refused even with learners left; removing one of two is not."""
        with self.assertRaises(LastVoter) as caught:
            configuration([1], [2, 3]).after(RemoveMember(1))
        self.assertEqual(str(caught.exception), "Cannot remove node 1: it is the last voter")
        self.assertEqual(configuration([1, 2]).after(RemoveMember(1)), configuration([2], removed=[1]))

    def test_change_in_progress_text(self) -> None:
        """The refusal of a second change reads exactly as the issue's reply."""
        self.assertEqual(str(ChangeInProgress()), "Membership change in progress")


_ids = st.integers(min_value=0, max_value=10**6)
_addresses = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), max_size=30)


@st.composite
def configurations(draw: st.DrawFn) -> Configuration:
    ids = draw(st.lists(_ids, min_size=1, max_size=12, unique=True))
    roles = draw(st.lists(st.sampled_from(["voter", "learner", "removed"]), min_size=len(ids), max_size=len(ids)))
    roles[0] = "voter"
    voters = {i: draw(_addresses) for i, r in zip(ids, roles) if r == "voter"}
    learners = {i: draw(_addresses) for i, r in zip(ids, roles) if r == "learner"}
    return Configuration(voters, learners, [i for i, r in zip(ids, roles) if r == "removed"])


class EncodingTests(SynchronousTestCase):
    """The configuration entry: its payload, text form and strict decoding."""

    def test_text_form_is_the_members_reply(self) -> None:
        """Voters and learners as id@address/role in id order, then removed ids."""
        members = configuration([0, 1], [3], removed=[2])
        self.assertEqual(members.members_text(), "0@127.0.0.1:5000/voter 1@127.0.0.1:5001/voter 3@127.0.0.1:5003/learner")
        self.assertEqual(members.to_text(), members.members_text() + " 2/removed")
        self.assertEqual(
            encode_configuration_entry(members), b"\x00members " + members.to_text().encode("utf-8")
        )

    @given(configurations())
    def test_entry_round_trip(self, members: Configuration) -> None:
        """Every configuration survives its entry's encoding, which is marked as Raft's."""
        payload = encode_configuration_entry(members)
        self.assertTrue(is_raft_payload(payload))
        self.assertEqual(decode_configuration_entry(payload), members)
        self.assertEqual(Configuration.from_text(members.to_text()), members)

    def test_malformed_entries_are_refused(self) -> None:
        """Anything but the canonical form of a configuration with a voter is malformed."""
        for payload in [
            b"\x00members ",
            b"\x00members 1@a/learner",
            b"\x00members 1@a/voter 1@b/voter",
            b"\x00members 2@a/voter 1@b/voter",
            b"\x00members 1@a/voter  2@b/voter",
            b"\x00members 1@a/voter 2@b/observer",
            b"\x00members 1/voter",
            b"\x00members 01@a/voter",
            b"\x00members x@a/voter",
            b"\x00members 1@a/voter 1/removed",
            b"\x00members 1@a/voter \xff",
            b"\x00other 1@a/voter",
            b"Pkey value",
        ]:
            with self.subTest(payload=payload):
                self.assertRaises(MalformedConfiguration, decode_configuration_entry, payload)

    def test_state_machine_commands_are_not_raft_payloads(self) -> None:
        """Commands start with a letter and the no-op is empty: neither is marked as Raft's."""
        self.assertFalse(is_raft_payload(encode_put("k", "v")))
        self.assertFalse(is_raft_payload(b""))

    def test_state_machine_applies_a_configuration_entry_as_a_no_op(self) -> None:
        """A committed configuration entry advances the applied index and changes no data."""
        machine = KeyValueStateMachine()
        machine.apply(1, encode_put("k", "v"))
        result = machine.apply(2, encode_configuration_entry(configuration([1, 2, 3])))
        self.assertTrue(result.found)
        self.assertEqual((machine.applied_index, dict(machine.items())), (2, {"k": "v"}))


def _append_with(payload: str) -> dict[str, object]:
    return {
        "type": "append", "from": 1, "to": 2, "term": 2, "prev_index": 0, "prev_term": 0, "commit": 0, "round": 0,
        "entries": [[1, 2, payload]],
    }


class MessageTests(SynchronousTestCase):
    """The messages membership adds to, on the dictionary form (the peer wire's validation point)."""

    def test_append_with_a_valid_configuration_entry_is_accepted(self) -> None:
        """A configuration entry in AppendEntries decodes to the same bytes."""
        payload = encode_configuration_entry(configuration([1, 2]))
        message = from_dict(_append_with(payload.decode("utf-8")))
        self.assertEqual(message.body.entries[0][2], payload)  # type: ignore[union-attr]

    def test_append_with_a_bad_raft_entry_is_malformed(self) -> None:
        """A peer cannot slip an invalid Raft entry into a log: anything marked 0x00 must be a valid configuration."""
        for text in ["\x00members 1@a/learner", "\x00", "\x00whatever"]:
            with self.subTest(text=text):
                self.assertRaises(MalformedMessage, from_dict, _append_with(text))

    def test_request_vote_transfer_flag(self) -> None:
        """The transfer flag travels only when set, so an ordinary vote is unchanged on the wire."""
        plain = Message(1, 2, RequestVote(3, 4, 2))
        self.assertNotIn("transfer", to_dict(plain))
        self.assertEqual(from_dict(to_dict(plain)), plain)
        flagged = Message(1, 2, RequestVote(3, 4, 2, False, True))
        self.assertIs(to_dict(flagged)["transfer"], True)
        self.assertEqual(from_dict(to_dict(flagged)), flagged)
        bad = dict(to_dict(flagged), transfer=1)
        self.assertRaises(MalformedMessage, from_dict, bad)

    def test_timeout_now_round_trip(self) -> None:
        """TimeoutNow has a dictionary form, but is not yet a type a peer may send (no protocol version yet)."""
        message = Message(1, 2, TimeoutNow(7))
        self.assertEqual(to_dict(message), {"type": "timeout_now", "from": 1, "to": 2, "term": 7})
        self.assertEqual(from_dict(to_dict(message)), message)
        self.assertNotIn("timeout_now", MESSAGE_TYPES)

    def test_install_snapshot_carries_the_configuration(self) -> None:
        """InstallSnapshot's configuration survives the dictionary form; without one the field is absent."""
        members = configuration([1, 2], [3], removed=[4])
        message = Message(1, 2, InstallSnapshot(5, 100, 4, members))
        self.assertEqual(to_dict(message)["configuration"], members.to_text())
        self.assertEqual(from_dict(to_dict(message)), message)
        bare = Message(1, 2, InstallSnapshot(5, 100, 4))
        self.assertNotIn("configuration", to_dict(bare))
        self.assertEqual(from_dict(to_dict(bare)), bare)
        for bad in ["1@a/learner", 7, ""]:
            with self.subTest(bad=bad):
                self.assertRaises(MalformedMessage, from_dict, dict(to_dict(message), configuration=bad))
