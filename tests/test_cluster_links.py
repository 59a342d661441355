"""The lab's links carry their rate each way, and a node's link is shared by all its traffic.

Three nodes at 100mbit (slow enough that two cores shared with other jobs still fill it),
measured by the lab's self-check with MPI point to point, the fastest of five runs
(bench/cluster/linkcheck.py). Without the shaper on the switch port, two nodes sending
into node 0 would get twice the rate; without the one on the node, node 0 sending to two
nodes would; without UCX_TLS=self,tcp the bytes would bypass the links through shared
memory at GB/s.
"""
import pytest

from bench.cluster import Lab
from bench.cluster.linkcheck import check

LINK = "100mbit"
LINK_PATTERNS = ("one way", "both ways", "into node 0", "out of node 0")


@pytest.fixture(scope="module")
def measured():
    with Lab(nodes=3, link=LINK) as lab:
        return lab.rate, {row["pattern"]: row for row in check(lab, repeat=5)}


@pytest.mark.parametrize("pattern", LINK_PATTERNS)
def test_bytes_between_nodes_move_at_the_link_rate(measured, pattern):
    _, rows = measured
    # TCP moves 1448 payload bytes per 1514-byte frame (0.956); the bucket adds < 4%. A
    # missing shaper shows as 2x, bytes that bypass the links as 40x; a starved CPU as < 0.9.
    assert 0.75 <= rows[pattern]["x_link"] <= 1.0, rows[pattern]


def test_bytes_inside_a_node_bypass_the_link(measured):
    rate, rows = measured
    assert rows["inside node 0"]["bytes_per_second"] > 10 * rate.bytes_per_second, rows
