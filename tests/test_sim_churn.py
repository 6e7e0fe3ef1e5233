"""
Membership churn in the simulator (issue 13): the mixed profile adds,
removes and replaces nodes and transfers leadership through the node's
admin methods; peer links follow each node's configuration; the checkers
work out the configuration in force from the committed entries.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.raft.membership import Configuration, encode_configuration_entry
from kvstore.raft.messages import Message, TimeoutNow
from kvstore.protocols.peer import Membership
from kvstore.testing.sim.churn import COVERAGE, PeerLinkModel, _Links, _Server
from kvstore.testing.sim.membership_checks import ConfigurationHistory, change_problems, quorum_candidates
from kvstore.testing.sim.world import run_seed

from tests.support import slow

THREE = Configuration({0: "a:1", 1: "b:1", 2: "c:1"})


def _message(sender: int, receiver: int) -> Message:
    return Message(sender, receiver, TimeoutNow(1))


class ConfigurationHistoryTests(SynchronousTestCase):
    """The checkers' own record of the configuration in force at each index."""

    def test_configuration_at_an_index_is_the_last_committed_at_or_before_it(self) -> None:
        """Committed configuration entries, recorded in any order, decide the configuration at every index."""
        history = ConfigurationHistory(THREE)
        four = Configuration({0: "a:1", 1: "b:1", 2: "c:1"}, {3: "d:1"})
        five = Configuration({0: "a:1", 1: "b:1", 2: "c:1", 3: "d:1"})
        self.assertEqual(history.record(20, encode_configuration_entry(five)), five)
        self.assertEqual(history.record(10, encode_configuration_entry(four)), four)
        self.assertIsNone(history.record(10, encode_configuration_entry(four)))
        self.assertIsNone(history.record(11, b"Pkey value"))
        self.assertEqual(history.at(9), THREE)
        self.assertEqual(history.at(10), four)
        self.assertEqual(history.at(19), four)
        self.assertEqual(history.before(20), four)
        self.assertEqual(history.latest, (20, five))

    def test_quorum_candidates_are_the_latest_committed_and_newer_ones(self) -> None:
        """A leader may be elected under the latest committed configuration or a newer one some node holds."""
        history = ConfigurationHistory(THREE)
        removed = Configuration({0: "a:1", 1: "b:1"}, removed=[2])
        self.assertEqual(quorum_candidates(history, [(0, THREE), (5, removed)]), [THREE, removed])

    def test_single_server_changes_pass_and_others_are_named(self) -> None:
        """Adding, promoting or removing one server is one change; two at once, or bringing back a removed id, is not."""
        learner = Configuration({0: "a:1", 1: "b:1", 2: "c:1"}, {3: "d:1"})
        self.assertEqual(change_problems(THREE, learner), [])
        self.assertEqual(change_problems(learner, Configuration({0: "a:1", 1: "b:1", 2: "c:1", 3: "d:1"})), [])
        self.assertEqual(change_problems(THREE, Configuration({0: "a:1", 1: "b:1"}, removed=[2])), [])
        two = Configuration({0: "a:1", 1: "b:1", 3: "d:1"}, removed=[2])
        self.assertIn("more than one server", change_problems(THREE, two)[0])
        back = Configuration({0: "a:1", 1: "b:1", 2: "c:1"})
        self.assertIn("brings back", change_problems(Configuration({0: "a:1", 1: "b:1"}, removed=[2]), back)[-1])


class PeerLinkModelTests(SynchronousTestCase):
    """Messages pass only over a link the sender keeps, established while the receiver accepted the sender."""

    def _model(self) -> PeerLinkModel:
        model = PeerLinkModel("sim")
        for node, peers in ((0, {1}), (1, {0})):
            model.links[node] = set(peers)
            model.servers[node] = _Server(Membership(node, "sim", frozenset(peers)))
        return model

    def test_linked_and_accepted_messages_pass(self) -> None:
        """Members linked both ways talk; a sender without a link to the receiver is refused."""
        model = self._model()
        self.assertFalse(model.refuses(_message(0, 1)))
        self.assertTrue(model.refuses(_message(0, 2)))
        self.assertTrue(model.reachable(1, 0))

    def test_handshake_checks_membership_and_connections_persist(self) -> None:
        """A receiver that does not accept the sender refuses a new connection; one established earlier stays
        until the sender drops its link or either end stops."""
        model = self._model()
        self.assertFalse(model.refuses(_message(0, 1)))  # connected
        model.servers[1].membership = Membership(1, "sim", frozenset())
        self.assertFalse(model.refuses(_message(0, 1)))  # the established connection stays
        model.links[2] = {1}
        self.assertTrue(model.refuses(_message(2, 1)))  # a new one is refused at the handshake
        _Links(model, 0).remove(1)
        self.assertTrue(model.refuses(_message(0, 1)))
        model.links[0].add(1)
        model.servers[1].membership = Membership(1, "sim", frozenset({0}))
        self.assertFalse(model.refuses(_message(0, 1)))
        model.detach(1)
        self.assertNotIn((0, 1), model.connected)


@slow
class ChurnRunTests(SynchronousTestCase):
    """Whole runs with membership churn."""

    def test_mixed_seed_adds_promotes_removes_and_transfers(self) -> None:
        """A mixed-profile seed commits additions, promotions and removals and completes a transfer, and passes
        every checker, liveness included."""
        result = run_seed(33)
        self.assertEqual(result.config.fault_profile, "mixed")
        self.assertTrue(result.ok, result.report())
        for counter in ("membership_changes", "members_added", "learners_promoted", "members_removed",
                        "transfers_done"):
            self.assertGreater(result.stats[counter], 0, counter)
        self.assertTrue(any(" churn-add " in f for f in result.faults), result.faults)

    def test_no_churn_outside_the_mixed_profile(self) -> None:
        """The figure8 and reads profiles keep their fixed membership."""
        for seed in (0, 2):
            result = run_seed(seed, 3)
            self.assertTrue(result.ok, result.report())
            self.assertEqual({k: result.stats[k] for k in COVERAGE}, {k: 0 for k in COVERAGE})
