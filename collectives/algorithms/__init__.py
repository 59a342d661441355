"""Algorithms as plan builders: pure schedules over ranks and element ranges.

Each module exposes `build(rank, size, count, itemsize, topology) -> Plan`. Nothing here
imports MPI or CuPy; `executor.run_plan` runs a plan over any transport.
"""
from __future__ import annotations

import functools
from typing import Callable

from . import halving_doubling, hierarchical, ring, torus2d
from .plan import Plan

__all__ = ["PLANNERS", "plan_for", "Plan"]

PLANNERS: dict[str, Callable[..., Plan]] = {
    "ring": ring.build,
    "hierarchical": hierarchical.build,
    "torus2d": torus2d.build,
    "halving_doubling": halving_doubling.build,
}


@functools.lru_cache(maxsize=512)
def plan_for(algorithm: str, rank: int, size: int, count: int, itemsize: int, topology=None) -> Plan:
    """The cached plan of `algorithm` for one rank; built once per distinct arguments."""
    return PLANNERS[algorithm](rank, size, count, itemsize, topology)
