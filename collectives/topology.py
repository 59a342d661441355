"""Which ranks share a node, and the 2-D grid the torus schedule runs on.

The input of every topology-aware schedule. A Topology is frozen and hashable because plans
are cached by it.
"""
from __future__ import annotations

import functools
import math
import operator
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Topology", "most_square"]


def most_square(size: int) -> tuple[int, int]:
    """(X, Y) with X * Y == size, X the largest divisor of size not above its square root.

    Example::

        >>> most_square(12), most_square(7)
        ((3, 4), (1, 7))
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    x = max(d for d in range(1, math.isqrt(size) + 1) if size % d == 0)
    return x, size // x


def _index(name: str, value) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None


def _node_numbers(node_of) -> tuple[int, ...]:
    """`node_of` as a tuple of ints numbering the nodes 0, 1, ... in order of their lowest
    rank; ValueError otherwise (gaps gave a bare IndexError in the plans; the twenty-third
    review)."""
    numbers = tuple(_index("node_of's items", n) for n in node_of)
    seen = -1
    for rank, node in enumerate(numbers):
        if node > seen + 1 or node < 0:
            raise ValueError(f"node_of must number the nodes 0, 1, ... in order of their "
                             f"lowest rank (Topology.from_node_keys makes such numbers), "
                             f"got node {node} at rank {rank} in {numbers[:16]}")
        seen = max(seen, node)
    return numbers


@dataclass(frozen=True)
class Topology:
    """Node membership of every rank (nodes numbered in order of their lowest rank), and an
    optional 2-D grid shape.

    `grid=(X, Y)` lays the ranks out as Y rows of X ranks: rows are where torus2d
    reduce-scatters, columns where it all-reduces. Left as None, `grid_shape()` chooses one.

    Example::

        >>> Topology.from_local_size(5, 2).nodes
        ((0, 1), (2, 3), (4,))
        >>> Topology.from_local_size(6, 3).grid_rows()
        ((0, 1, 2), (3, 4, 5))
    """

    node_of: tuple[int, ...]
    grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "node_of", _node_numbers(self.node_of))
        if self.grid is None:
            return
        try:
            grid = tuple(operator.index(g) for g in self.grid)
        except TypeError:
            grid = ()
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"grid must be two positive integers (X, Y), got {self.grid!r}")
        if grid[0] * grid[1] != self.size:
            raise ValueError(
                f"grid {grid[0]}x{grid[1]} holds {grid[0] * grid[1]} ranks, but there are "
                f"{self.size}; pass a grid (init's grid=, or COLLECTIVES_GRID) whose X * Y is "
                f"the world size, or none"
            )
        object.__setattr__(self, "grid", grid)

    @classmethod
    def from_node_keys(cls, keys: Sequence[object], *,
                       grid: tuple[int, int] | None = None) -> "Topology":
        """Ranks with equal keys (e.g. a host name or node leader) share a node."""
        numbering: dict[object, int] = {}
        return cls(tuple(numbering.setdefault(key, len(numbering)) for key in keys), grid)

    @classmethod
    def from_local_size(cls, size: int, local_size: int, *,
                        grid: tuple[int, int] | None = None) -> "Topology":
        """Consecutive ranks grouped into emulated nodes of `local_size` (the last may be smaller)."""
        size, local_size = _index("size", size), _index("local_size", local_size)
        if local_size < 1:
            raise ValueError(f"local_size must be >= 1, got {local_size}")
        return cls(tuple(rank // local_size for rank in range(size)), grid)

    @property
    def size(self) -> int:
        return len(self.node_of)

    @functools.cached_property  # fields are frozen, so this never goes stale
    def nodes(self) -> tuple[tuple[int, ...], ...]:
        """The ranks of each node, in node order."""
        members: dict[int, list[int]] = {}
        for rank, node in enumerate(self.node_of):
            members.setdefault(node, []).append(rank)
        return tuple(tuple(members[n]) for n in sorted(members))

    def peers(self, rank: int) -> tuple[int, ...]:
        """The ranks on `rank`'s node, itself included."""
        return self.nodes[self.node_of[rank]]

    def _node_grid(self) -> tuple[int, int] | None:
        """(ranks per node, nodes) when every node has the same number of ranks."""
        nodes = self.nodes
        if not nodes or len({len(n) for n in nodes}) != 1:
            return None
        return len(nodes[0]), len(nodes)

    def grid_shape(self) -> tuple[int, int]:
        """(X, Y): the given grid, else local ranks x nodes when every node has the same
        number of ranks and both are above 1, else the most square factorization of size."""
        if self.grid is not None:
            return self.grid
        shape = self._node_grid()
        if shape is not None and min(shape) > 1:
            return shape
        return most_square(self.size)

    def grid_rows(self) -> tuple[tuple[int, ...], ...]:
        """The Y rows of X ranks each. Rows are the nodes when the shape is local ranks x
        nodes (so rows stay on a node's fast link), else blocks of consecutive ranks."""
        x, y = self.grid_shape()
        if self._node_grid() == (x, y):
            return self.nodes
        return tuple(tuple(range(r * x, (r + 1) * x)) for r in range(y))
