"""Reduce-scatter in two levels: inside groups of ranks, then across them.

The groups are nodes (hierarchical) or torus rows (torus2d); rank r ends with its block
split_bounds(0, n, p)[r] (ring.blocks).

1. Inside each group, a ring reduce-scatter leaves each member with its *share* reduced
   over the group: its own block and an equal part of the other groups' blocks.
2. Across groups, the members holding a piece after step 1 (one per group; on the block's
   own group that is the block's rank) reduce-scatter it around a ring, so each piece ends
   at its block's rank. All these rings run at once.

Shares. Number the blocks in *column order*: by position in their group, then by group.
Group j lists the other groups' blocks in that order and cuts the list into len(group)
parts of equal block count (a cut may fall inside a block, at the element the fraction
gives); member l takes part l besides its own block. With groups of equal size k, part l
is exactly the blocks at position l of the other groups, so the step-2 rings are the
columns (member l of every group) and carry whole blocks. With uneven groups the pieces
are finer and a rank may sit in several rings; each member of a group of k_j still holds
n / k_j after step 1.

Bytes sent per rank, p = N k ranks in N groups of k: (k-1)/k n inside the group and
(N-1)/N n/k across, (p-1)/p n in all (the ring's lower bound). Latency terms:
(k-1) + (N-1) alpha. A share of N blocks lies in N separate ranges, so a step-1 message is
N messages where the all-reduce's is one.
"""
from __future__ import annotations

import bisect
import functools
from typing import Sequence

from . import ring
from .plan import Region, Round, merge_rounds, split_bounds, union

__all__ = ["reduce_scatter"]

Piece = tuple[int, int, int]  # (block, first element, end), elements counted in the block


def reduce_scatter(groups: Sequence[Sequence[int]], rank: int, count: int, seg: int) -> list[Round]:
    """Rounds after which `rank` holds its block reduced over every rank of `groups`."""
    layout = _Layout.of(tuple(map(tuple, groups)), count)
    group = layout.groups[layout.group_of[rank]]
    inside = ring.reduce_scatter(group, rank, layout.shares(group), seg)
    across = merge_rounds([ring.reduce_scatter(members, rank, owned, seg)
                           for members, owned in layout.rings(rank)])
    return inside + across


class _Layout:
    """Blocks of `count` elements over the ranks of `groups` (rank r: block r), in column
    order, and each group's cut of the other groups' blocks into its members' parts."""

    def __init__(self, groups: tuple[tuple[int, ...], ...], count: int):
        self.groups = groups
        self.block = split_bounds(0, count, sum(map(len, groups)))
        self.group_of = {rank: j for j, group in enumerate(groups) for rank in group}
        deepest = max(map(len, groups))
        self.order = [group[l] for l in range(deepest) for group in groups if l < len(group)]
        self.column = {rank: i for i, rank in enumerate(self.order)}
        self.own_columns = [sorted(self.column[rank] for rank in group) for group in groups]
        self._foreign: dict[int, list[int]] = {}

    @classmethod
    @functools.lru_cache(maxsize=64)
    def of(cls, groups: tuple[tuple[int, ...], ...], count: int) -> "_Layout":
        return cls(groups, count)

    def shares(self, group: tuple[int, ...]) -> list[Region]:
        """Each member's share of `group`, in group order."""
        return [union([[self._range(piece) for piece in self._share(rank)]]) for rank in group]

    def rings(self, rank: int) -> list[tuple[tuple[int, ...], list[Region]]]:
        """(members, region ending at each member) of every step-2 ring `rank` sits in,
        in one order on all ranks (by members)."""
        rings: dict[tuple[int, ...], dict[int, list[tuple[int, int]]]] = {}
        for block, lo, hi in self._share(rank):
            for start, end in self._refine(block, lo, hi):
                members = tuple(self._owner(j, block, start) for j in range(len(self.groups)))
                rings.setdefault(members, {}).setdefault(block, []).append(
                    self._range((block, start, end)))
        return [(members, [union([final.get(member, ())]) for member in members])
                for members, final in sorted(rings.items())]

    def _range(self, piece: Piece) -> tuple[int, int]:
        block, lo, hi = piece
        start = self.block[block][0]
        return start + lo, start + hi

    def _size(self, block: int) -> int:
        lo, hi = self.block[block]
        return hi - lo

    def _foreign_blocks(self, j: int) -> list[int]:
        """The blocks of the groups other than j, in column order."""
        if j not in self._foreign:
            self._foreign[j] = [b for b in self.order if self.group_of[b] != j]
        return self._foreign[j]

    def _foreign_index(self, j: int, block: int) -> int:
        """Where `block` (not group j's) stands in _foreign_blocks(j), without listing them."""
        column = self.column[block]
        return column - bisect.bisect_left(self.own_columns[j], column)

    def _share(self, rank: int) -> list[Piece]:
        """`rank`'s share: its own block, then its part of the other groups' blocks."""
        j = self.group_of[rank]
        member = self.groups[j].index(rank)
        pieces = [(rank, 0, self._size(rank))]
        foreign = self._foreign_blocks(j)
        if not foreign:
            return pieces
        (first, lo), (last, hi) = self._part_start(j, member), self._part_start(j, member + 1)
        for index in range(first, min(last + 1, len(foreign))):
            block = foreign[index]
            start = lo if index == first else 0
            end = hi if index == last else self._size(block)
            if end > start:
                pieces.append((block, start, end))
        return pieces

    def _part_start(self, j: int, t: int) -> tuple[int, int]:
        """(index in _foreign_blocks(j), element) where member t's part starts: block
        coordinate t * F / k for F foreign blocks and k members (t = k: the end)."""
        foreign, k = self._foreign_blocks(j), len(self.groups[j])
        index, rest = divmod(t * len(foreign), k)
        if index == len(foreign):
            return index, 0
        return index, -(-rest * self._size(foreign[index]) // k)

    def _cut_terms(self, j: int, block: int) -> tuple[int, int, int]:
        """(members of group j, blocks foreign to it, elements of `block`)."""
        return len(self.groups[j]), len(self.order) - len(self.groups[j]), self._size(block)

    def _owner(self, j: int, block: int, offset: int) -> int:
        """The member of group j whose share holds element `offset` of `block` (the
        element's block coordinate, times k / F, rounded down, as _part_start cuts)."""
        if self.group_of[block] == j:
            return block
        k, foreign, size = self._cut_terms(j, block)
        index = self._foreign_index(j, block)
        return self.groups[j][k * (index * size + offset) // (foreign * size)]

    def _cuts(self, j: int, block: int) -> list[int]:
        """Elements inside `block` (not group j's) where a part of group j starts."""
        k, foreign, size = self._cut_terms(j, block)
        index = self._foreign_index(j, block)
        return [-(-(t * foreign - index * k) * size // k)
                for t in range(index * k // foreign + 1, -(-(index + 1) * k // foreign))]

    def _refine(self, block: int, lo: int, hi: int) -> list[tuple[int, int]]:
        """[lo, hi) of `block` cut wherever some group's parts change."""
        cuts = {lo, hi}
        for j in range(len(self.groups)):
            if self.group_of[block] != j:
                cuts.update(c for c in self._cuts(j, block) if lo < c < hi)
        edges = sorted(cuts)
        return list(zip(edges, edges[1:]))
