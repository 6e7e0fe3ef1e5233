"""
The node: what runs the Raft core (L{kvstore.raft}) against real storage
(L{kvstore.storage}) and the network (L{kvstore.protocols}).

L{kvstore.node.node.Node} turns the core's L{Ready} batches into disk
writes, messages and applied commands; the other modules here are the parts
it delegates to: membership and peer links, snapshots and their transfer,
recovery at start-up, write forwarding, and the monitoring hook.
L{kvstore.node.build} is the one place a node is wired from these parts.
"""
