"""
The kvstore test suite.  A package so that trial can import it by name
(C{trial tests}, C{trial tests.test_raft_core}); pytest runs the same
classes (C{python -m pytest}).
"""
