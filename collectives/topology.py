"""Which ranks share a node: the input of every topology-aware schedule."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["Topology"]


@dataclass(frozen=True)
class Topology:
    """Node membership of every rank; nodes are numbered in order of their lowest rank.

    Example::

        >>> Topology.from_local_size(5, 2).nodes
        ((0, 1), (2, 3), (4,))
    """

    node_of: tuple[int, ...]

    @classmethod
    def from_node_keys(cls, keys: Sequence[object]) -> "Topology":
        """Ranks with equal keys (e.g. a host name or node leader) share a node."""
        numbering: dict[object, int] = {}
        return cls(tuple(numbering.setdefault(key, len(numbering)) for key in keys))

    @classmethod
    def from_local_size(cls, size: int, local_size: int) -> "Topology":
        """Consecutive ranks grouped into emulated nodes of `local_size` (the last may be smaller)."""
        if local_size < 1:
            raise ValueError(f"local_size must be >= 1, got {local_size}")
        return cls(tuple(rank // local_size for rank in range(size)))

    @property
    def size(self) -> int:
        return len(self.node_of)

    @property
    def nodes(self) -> tuple[tuple[int, ...], ...]:
        """The ranks of each node, in node order."""
        members: dict[int, list[int]] = {}
        for rank, node in enumerate(self.node_of):
            members.setdefault(node, []).append(rank)
        return tuple(tuple(members[n]) for n in sorted(members))

    def peers(self, rank: int) -> tuple[int, ...]:
        """The ranks on `rank`'s node, itself included."""
        return self.nodes[self.node_of[rank]]
