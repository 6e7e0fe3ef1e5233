"""
One real node process: durability of acknowledged writes across SIGKILL,
and the data directory lock.
"""

from __future__ import annotations

import signal

import pytest

from kvstore.testing.processes import NodeProcess, wait_until

from tests.integration.support import ProcessTestCase

pytestmark = pytest.mark.integration


def _wait_leader(node: NodeProcess, timeout: float = 15.0) -> None:
    node.wait_ready(timeout)
    wait_until(lambda: node.status()["role"] == "leader", timeout, message=lambda: "leadership\n" + node.describe())


class SingleNodeProcessTests(ProcessTestCase):
    """
    One real node process: durability across SIGKILL and the data directory lock.
    """

    def test_acknowledged_writes_survive_kill9(self) -> None:
        """
        Every write the node acknowledged -- one at a time or pipelined, puts,
        overwrites and deletes -- is there after SIGKILL and a restart on the
        same data directory.
        """
        node = self.make_node().start()
        _wait_leader(node)
        expected: dict[str, str] = {}
        deleted: list[str] = []
        with node.client() as client:
            for i in range(50):
                assert client.request(f"PUT k{i} v{i}") == f"k{i} added successfully."
                expected[f"k{i}"] = f"v{i}"
            keys = [f"p{i}" for i in range(1000)]
            replies = client.pipeline([f"PUT {k} value of {k} with  spaces" for k in keys])
            assert replies == [f"{k} added successfully." for k in keys]
            expected.update({k: f"value of {k} with  spaces" for k in keys})
            replies = client.pipeline(["PUT k0 overwritten", "DELETE k1", "DELETE p7", "PUT k1 back", "DELETE k2"])
            assert replies == [
                "k0 added successfully.",
                "k1 deleted successfully.",
                "p7 deleted successfully.",
                "k1 added successfully.",
                "k2 deleted successfully.",
            ]
            expected.update(k0="overwritten", k1="back")
            del expected["p7"], expected["k2"]
            deleted = ["p7", "k2"]
        # Kill at once after the last acknowledgement: nothing gets a chance to
        # flush anything that was not already durable.
        assert node.kill() == -signal.SIGKILL

        node.start()
        _wait_leader(node)
        with node.client() as client:
            keys = sorted(expected)
            replies = client.pipeline([f"GET {k}" for k in keys] + [f"GET {k}" for k in deleted])
        assert replies[: len(keys)] == [f"value of {k}: {expected[k]}" for k in keys]
        assert replies[len(keys):] == [f"Error: Key {k} not found" for k in deleted]
        assert node.status()["keys"] == str(len(expected))

    def test_second_node_on_same_data_dir_is_refused(self) -> None:
        """
        A second process on a data directory in use exits non-zero with a
        message saying so, and the first keeps serving.
        """
        first = self.make_node("first").start()
        _wait_leader(first)
        second = self.make_node("second", data_dir=first.data_dir).start()
        wait_until(lambda: not second.running, 15, message=lambda: "the second node to exit\n" + second.describe())
        assert second.process is not None and second.process.returncode != 0
        assert "in use" in second.output() + second.log(), second.describe()
        assert first.request("PUT still alive") == "still added successfully."
        assert first.request("GET still") == "value of still: alive"
