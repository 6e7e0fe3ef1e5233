"""
Real node processes negotiate the peer protocol version over real sockets:
the hello, the first-byte dispatch and the welcome, end to end.
"""

from __future__ import annotations

import pytest

from kvstore.protocols.peer import MAX_PROTOCOL_VERSION
from kvstore.testing.processes import wait_until

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


class PeerVersionProcessTests(ProcessTestCase):
    """A three-node cluster of this release speaks the highest version on every link."""

    def test_every_link_negotiates_the_highest_version(self) -> None:
        """Each node logs, for each peer, the version agreed on its outbound
        link and on each inbound one: this release's highest."""
        cluster = self.make_cluster().start()
        cluster.wait_for_leader()
        cluster.wait_connected()

        def negotiated() -> bool:
            for node in cluster.nodes:
                log = node.log()
                for peer in cluster.nodes:
                    if peer is node:
                        continue
                    if f"peer node {peer.node_id} speaks peer protocol version {MAX_PROTOCOL_VERSION}" not in log:
                        return False
                    if f"peer node {peer.node_id} connected from" not in log:
                        return False
            return True

        wait_until(negotiated, 15, message=lambda: "\n".join(n.describe() for n in cluster.nodes))
        for node in cluster.nodes:
            log = node.log()
            assert "rejected peer connection" not in log, node.describe()
            assert "invalid answer to the hello" not in log, node.describe()
            assert f"peer protocol version {MAX_PROTOCOL_VERSION}" in log
