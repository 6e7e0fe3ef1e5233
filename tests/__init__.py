"""
The kvstore test suite.  A package so that trial can import it by name
(C{trial tests}, C{trial tests.test_raft_core}); pytest runs the same
classes (C{python -m pytest}).
"""

from hypothesis import HealthCheck, settings

# Property tests check behaviour, not speed: Hypothesis' default 200 ms
# deadline per example and its too-slow health check measure wall-clock
# time, which a loaded machine stretches (a round trip of configuration
# entries once failed the full run that way).  Loaded here, before any test
# module is imported, so that every @settings(...) inherits it.
settings.register_profile("kvstore-tests", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("kvstore-tests")
