# -*- test-case-name: tests.test_sim_linearizability_search_order -*-
"""
The linearizability search tries the earliest-invoked candidate first, so
that a linearizable history with many unknown writes is decided in a few
states rather than hitting the bound (an inconclusive key, which a soak
tolerates up to a share of its seeds: a place for a violation to hide).
The history below is key 'a' of simulator seed 28 (3 nodes, figure8
profile, commit 3059261): 90 operations, 25 of unknown outcome; searching
latest-invoked first took about a million states.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kvstore.testing.sim.linearizability import Operation, check_key

# (client, kind, value, result, invoke, complete)
_SEED_28_KEY_A = [
    (3, 'put', '3.1', None, 0.201159, None),
    (4, 'delete', None, None, 0.204197, None),
    (5, 'delete', None, None, 0.31442, None),
    (1, 'put', '1.1', None, 0.394911, None),
    (5, 'delete', None, None, 0.43177, None),
    (1, 'delete', None, None, 0.43731, None),
    (4, 'put', '4.1', None, 0.417519, None),
    (2, 'put', '2.1', None, 0.66879, None),
    (7, 'put', '7.2', 'ok', 0.982109, 1.013789),
    (3, 'put', '3.2', None, 0.775615, None),
    (1, 'put', '1.3', None, 0.782911, None),
    (4, 'put', '4.3', None, 0.778003, None),
    (5, 'put', '5.2', None, 0.795694, None),
    (2, 'put', '2.2', None, 0.813171, None),
    (3, 'get', None, '7.2', 1.14265, 1.146168),
    (3, 'get', None, '7.2', 1.183769, 1.189397),
    (0, 'put', '0.3', 'ok', 1.269838, 1.27341),
    (1, 'put', '1.4', None, 1.089885, None),
    (2, 'delete', None, None, 1.126352, None),
    (4, 'put', '4.5', 'ok', 1.341277, 1.35591),
    (0, 'put', '0.5', 'ok', 1.356397, 1.361888),
    (7, 'get', None, '0.5', 1.116957, 1.377738),
    (1, 'get', None, '0.5', 1.364698, 1.401475),
    (5, 'get', None, '0.5', 1.39714, 1.403908),
    (7, 'get', None, '0.5', 1.431468, 1.43406),
    (2, 'put', '2.5', 'ok', 1.424482, 1.436915),
    (6, 'put', '6.6', 'ok', 1.446709, 1.453223),
    (7, 'get', None, '6.6', 1.455358, 1.45761),
    (6, 'put', '6.7', 'ok', 1.458058, 1.465698),
    (5, 'get', None, '6.7', 1.474391, 1.476943),
    (3, 'put', '3.9', 'ok', 1.498961, 1.501901),
    (5, 'put', '5.7', 'ok', 1.50543, 1.507994),
    (1, 'get', None, '5.7', 1.521798, 1.524066),
    (6, 'get', None, '5.7', 1.509063, 1.529014),
    (0, 'put', '0.8', 'ok', 1.532717, 1.537235),
    (5, 'get', None, '0.8', 1.53878, 1.540981),
    (2, 'delete', None, 'ok', 1.533141, 1.545904),
    (7, 'get', None, None, 1.55513, 1.557006),
    (0, 'put', '0.9', 'ok', 1.558285, 1.561157),
    (2, 'put', '2.8', 'ok', 1.564838, 1.568545),
    (4, 'get', None, '2.8', 1.565639, 1.571307),
    (1, 'get', None, '2.8', 1.567905, 1.572251),
    (7, 'put', '7.7', 'ok', 1.578034, 1.585312),
    (1, 'put', '1.6', 'ok', 1.578281, 1.585922),
    (1, 'put', '1.7', 'ok', 1.61889, 1.622731),
    (4, 'put', '4.7', 'ok', 1.640798, 1.644919),
    (5, 'get', None, '4.7', 1.644525, 1.648588),
    (2, 'put', '2.9', 'ok', 1.656915, 1.66087),
    (1, 'put', '1.8', 'ok', 1.668877, 1.673602),
    (7, 'get', None, '1.8', 1.678861, 1.683556),
    (3, 'put', '3.13', 'ok', 1.688883, 1.711026),
    (7, 'get', None, '3.13', 1.724165, 1.725994),
    (5, 'get', None, '3.13', 1.738054, 1.740233),
    (5, 'put', '5.9', 'ok', 1.766678, 1.811372),
    (6, 'get', None, '5.9', 1.776595, 1.81187),
    (4, 'get', None, '5.9', 1.806548, 1.81526),
    (0, 'get', None, '5.9', 1.812992, 1.817943),
    (7, 'get', None, '5.9', 1.827283, 1.829854),
    (3, 'put', '3.16', 'ok', 1.839005, 1.843006),
    (5, 'delete', None, 'ok', 1.857869, 1.862857),
    (1, 'put', '1.14', 'ok', 1.872072, 1.874686),
    (7, 'put', '7.10', 'ok', 1.880675, 1.884937),
    (2, 'put', '2.14', 'ok', 1.883871, 1.887167),
    (1, 'put', '1.15', 'ok', 1.884859, 1.890224),
    (7, 'put', '7.11', 'ok', 1.887806, 1.892253),
    (4, 'get', None, '2.14', 1.887928, 1.901807),
    (7, 'get', None, '7.11', 1.900613, 1.911314),
    (4, 'get', None, '7.11', 1.937844, 1.942086),
    (1, 'get', None, '7.11', 1.900862, 1.949392),
    (2, 'get', None, '7.11', 1.953603, 1.956012),
    (4, 'put', '4.9', 'ok', 1.950076, 1.960959),
    (3, 'get', None, '4.9', 1.966267, 1.969136),
    (6, 'put', '6.14', 'ok', 1.966758, 1.970173),
    (5, 'get', None, '6.14', 1.986297, 1.988686),
    (0, 'get', None, None, 1.989864, None),
    (6, 'put', '6.15', None, 2.002314, None),
    (3, 'get', None, None, 2.005721, None),
    (4, 'get', None, None, 2.00783, None),
    (7, 'put', '7.13', None, 2.033392, None),
    (1, 'put', '1.16', None, 2.317122, None),
    (2, 'put', '2.17', None, 2.346223, None),
    (7, 'delete', None, None, 2.508638, None),
    (2, 'put', '2.18', None, 2.536433, None),
    (7, 'put', '7.15', None, 2.71788, None),
    (3, 'put', '3.18', 'ok', 3.111604, 3.175712),
    (3, 'get', None, '3.18', 3.176712, 3.182365),
    (0, 'put', '0.17', 'ok', 3.181925, 3.189687),
    (6, 'put', '6.16', 'ok', 3.282671, 3.293669),
    (0, 'get', None, '0.17', 3.190687, 3.293696),
    (6, 'get', None, '6.16', 3.294669, 3.298188),
]


class SearchOrderTests(SynchronousTestCase):
    def test_simulator_history_decided_quickly(self) -> None:
        """A linearizable 90-operation history with 25 unknown writes is
        shown linearizable within 10,000 states."""
        history = [Operation(c, kind, "a", value, result, invoke, complete)
                   for c, kind, value, result, invoke, complete in _SEED_28_KEY_A]
        result = check_key("a", history, max_states=10_000)
        self.assertEqual((result.ok, result.inconclusive), (True, []), result.details)
