"""
Running a node as a process: the C{twistd kvstore} service, its command-line
options and TOML configuration file, the data directory and its identity,
joining an existing cluster, SIGHUP reload, systemd socket activation and
notification, and log formatting.  Everything here is about the process
around a node (L{kvstore.node}); nothing here takes part in Raft.
"""
