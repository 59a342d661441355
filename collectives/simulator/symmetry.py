"""Relabellings of ranks that a cluster does not notice, so one rank per class is simulated.

Ranks whose plans are the same up to a relabelling that the cluster does not notice (a
shift by whole nodes, or an XOR of node bits) run identically. A candidate group is accepted
only when sample ranks' real plans and the links they use match under it (`same_up_to`);
a relabelling the samples missed shows as a message that finds no partner, and the engine
then raises SymmetryBroken (the simulator falls back to every rank).
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from ..costmodel import ClusterModel
from .trace import Trace

__all__ = ["Group", "SymmetryBroken", "identity", "pick_group"]


class SymmetryBroken(Exception):
    """A relabelling accepted from samples does not hold for some message."""


@dataclass(frozen=True)
class Group:
    """Relabellings that the cluster does not notice; `forward(q, x)` maps rank x of
    rep_of(q)'s frame to q's frame, `backward` is its inverse."""

    name: str
    reps: tuple[int, ...]
    rep_of: Callable[[int], int]
    forward: Callable[[int, int], int]
    backward: Callable[[int, int], int]
    generators: tuple[int, ...] = ()  # ranks whose relabelling generates the group from rank 0

    def probes(self) -> list[int]:
        """Every representative moved by every generator: the ranks checked before use."""
        return [self.forward(g, rep) for rep in self.reps for g in self.generators]


def identity(size: int) -> Group:
    return Group("none", tuple(range(size)), lambda q: q, lambda q, x: x, lambda q, x: x)


def candidate_groups(cluster: ClusterModel) -> list[Group]:
    """Relabellings to try, fewest classes first; each is accepted only if the probed ranks'
    plans and the links they use match (same_up_to)."""
    p = cluster.size
    local = len(cluster.topology.nodes[0])
    nodes = p // local
    # With one link class, or nodes that a shift by one rank maps onto nodes (ranks dealt
    # to the nodes round-robin), any shift of ranks goes unnoticed by the links.
    rotation = [Group("rank rotation", (0,), lambda q: 0, lambda q, x: (x + q) % p,
                       lambda q, x: (x - q) % p, (1 % p,))] \
        if cluster.intra == cluster.inter or _shift_maps_nodes_onto_nodes(cluster) else []
    if any(node != rank // local for rank, node in enumerate(cluster.topology.node_of)) or p % local:
        return rotation
    power2 = (local & (local - 1)) == 0 and (nodes & (nodes - 1)) == 0

    def rotate(q: int, x: int, sign: int) -> int:
        n = (x // local + sign * (q // local)) % nodes
        return n * local + (x % local + sign * (q % local)) % local

    bits = [1 << i for i in range(p.bit_length() - 1)]
    node_bits = [b for b in bits if b >= local]
    groups = [Group("node and local rotation", (0,), lambda q: 0, lambda q, x: rotate(q, x, 1),
                     lambda q, x: rotate(q, x, -1), (1 % p, local % p)), *rotation]
    if power2:
        groups.append(Group("xor", (0,), lambda q: 0, lambda q, x: x ^ q, lambda q, x: x ^ q,
                             tuple(bits)))
    groups.append(Group("node shift", tuple(range(local)), lambda q: q % local,
                         lambda q, x: (x + q - q % local) % p, lambda q, x: (x - q + q % local) % p,
                         (local % p,)))
    if power2:
        groups.append(Group("node xor", tuple(range(local)), lambda q: q % local,
                             lambda q, x: x ^ (q - q % local), lambda q, x: x ^ (q - q % local),
                             tuple(node_bits)))
    return groups


def _shift_maps_nodes_onto_nodes(cluster: ClusterModel) -> bool:
    """Whether rank r + 1 (mod p) shares a node with s + 1 exactly where r shares one with
    s (so does every shift): ranks dealt to nodes round-robin (`mpiexec --map-by node`),
    the 109th review's 256 ranks in 32 nodes taking 8 s per new size to simulate whole."""
    node_of, p = cluster.topology.node_of, cluster.size
    # (per-node links: a node's shared link summed its ranks' one-element differences,
    # 8.4e-3 low at 256 ranks in 4 nodes; the 111th review)
    if cluster.torus_links or cluster.intra.per_node or cluster.inter.per_node:
        return False
    image: dict[int, int] = {}
    for rank, node in enumerate(node_of):
        if image.setdefault(node, node_of[(rank + 1) % p]) != node_of[(rank + 1) % p]:
            return False
    return len(set(image.values())) == len(image)


def same_up_to(group: Group, q: int, mine: Trace, rep: Trace, itemsize: int,
                cluster: ClusterModel) -> bool:
    """Whether q's plan is its representative's with peers relabelled (lengths +-1 element),
    each over a link that costs the same (link class, torus hops)."""
    me = group.rep_of(q)
    for peer in set(rep.send_peer) | set(rep.recv_peer):
        mapped = group.forward(q, peer)
        if (cluster.link(me, peer) != cluster.link(q, mapped)
                or cluster.hops(me, peer) != cluster.hops(q, mapped)):
            return False
    if (mine.rounds, mine.prefetch, mine.gate, mine.send_round, mine.recv_round, mine.recv_reduce) != (
            rep.rounds, rep.prefetch, rep.gate, rep.send_round, rep.recv_round, rep.recv_reduce):
        return False
    forward = group.forward
    return (all(a == forward(q, b) for a, b in zip(mine.send_peer, rep.send_peer))
            and all(a == forward(q, b) for a, b in zip(mine.recv_peer, rep.recv_peer))
            and all(abs(a - b) <= itemsize for a, b in zip(mine.send_bytes, rep.send_bytes))
            and all(abs(a - b) <= itemsize for a, b in zip(mine.recv_bytes, rep.recv_bytes)))


def pick_group(cluster: ClusterModel, trace: Callable[[int], Trace], samples: int,
               itemsize: int) -> Group:
    """The symmetry with the fewest classes that the probed ranks' real plans obey: every
    representative moved by each generator of the group, and `samples` random ranks."""
    size = cluster.size
    rng = random.Random(size * 7919 + len(cluster.topology.nodes))
    randoms = [rng.randrange(size) for _ in range(samples)]
    for group in candidate_groups(cluster):
        checks = dict.fromkeys(q for q in [*group.probes(), size - 1, *randoms]
                               if group.rep_of(q) != q)
        if all(same_up_to(group, q, trace(q), trace(group.rep_of(q)), itemsize, cluster)
               for q in checks):
            return group
    return identity(size)
