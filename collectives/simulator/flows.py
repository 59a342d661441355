"""How many flows share a node's link: the simulator's model of a NIC.

A link class marked `per_node` (LinkModel.per_node: a node's network link, as opposed to a
private link per pair of ranks) carries every inter-node flow entering or leaving the node,
so k concurrent flows get 1/k of its bandwidth each. The flows of a plan round are counted
from the plans: in round r, the distinct (sender, receiver) pairs whose messages leave
(or enter) the node. A message sent in round s from node a and received in round r at node
b then moves at 1/max(out[a][s], in[b][r]) of the link's rate. The count assumes the ranks
of a node run their rounds together, as symmetric schedules do.

Example: ring over 2 nodes of 2 ranks uses each node's link for one flow per direction
(bandwidth n per link per round pair); hierarchical puts both local ranks on it at once,
each at half the rate, for half the rounds.
"""
from __future__ import annotations

from collections.abc import Iterable

from .trace import Trace

__all__ = ["NodeFlows"]


class NodeFlows:
    """Per node and plan round, the inter-node flows leaving and entering it."""

    def __init__(self, node_of: tuple[int, ...], traces: Iterable[tuple[int, Trace]], *,
                 same_everywhere: bool):
        self._node_of = node_of
        self._same = same_everywhere
        pairs_out: dict[tuple[int, int], set] = {}
        pairs_in: dict[tuple[int, int], set] = {}
        for rank, trace in traces:
            node = node_of[rank]
            for k, peer in zip(trace.send_round, trace.send_peer):
                if node_of[peer] != node:
                    pairs_out.setdefault((node, k), set()).add((rank, peer))
            for k, peer in zip(trace.recv_round, trace.recv_peer):
                if node_of[peer] != node:
                    pairs_in.setdefault((node, k), set()).add((peer, rank))
        self._out = {key: len(pairs) for key, pairs in pairs_out.items()}
        self._in = {key: len(pairs) for key, pairs in pairs_in.items()}

    def share(self, src: int, send_round: int, dst: int, recv_round: int) -> int:
        """How many flows the message from rank `src` (its round `send_round`) to rank `dst`
        (its round `recv_round`) shares the busier of the two node links with (>= 1)."""
        a, b = (0, 0) if self._same else (self._node_of[src], self._node_of[dst])
        return max(self._out.get((a, send_round), 1), self._in.get((b, recv_round), 1), 1)
