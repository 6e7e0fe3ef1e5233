"""
Test doubles shared by the test suite and the simulator: an in-memory
network and a whole cluster on simulated time.  Never used by a production
node.
"""
