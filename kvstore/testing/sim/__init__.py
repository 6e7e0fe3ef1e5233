"""
Deterministic simulation testing (issue 4): whole clusters of production
nodes on simulated time, disk and network, driven by one seed, with Raft
safety, linearizability and liveness checked on every run.  See
C{docs/simulation.md}.
"""
