"""Algorithms as plan builders: pure schedules over ranks and element ranges.

`PLANNERS[collective][algorithm]` is a builder
`build(rank, size, count, itemsize, topology, root=0) -> Plan`; `plan_for` caches its plans.
Nothing here imports MPI or CuPy; `execution.run_plan` runs a plan over any transport.

Work-buffer conventions (one flat buffer of `count` elements per rank; rank r's block is
split_bounds(0, count, size)[r], as np.array_split cuts):

- allreduce: every rank's work ends with the reduction;
- reduce_scatter: rank r's block of work ends with its block of the reduction;
- allgather: count = p m; rank r's input lies in its block; every block ends everywhere;
- broadcast: root's work holds the message; every rank's ends with it;
- reduce: root's work ends with the reduction;
- alltoall: count = p m; the input (the executor's src) holds p rows of m; work ends with
  rank q's row r in row q (Plan.sends_input).
Elsewhere the work buffer ends undefined.
"""
from __future__ import annotations

import functools
from typing import Callable

from . import (binomial, compose, halving_doubling, hierarchical, pairwise, ring,
               scatter_allgather, torus2d)
from .plan import Plan

__all__ = ["PLANNERS", "plan_for", "Plan"]

Builder = Callable[..., Plan]

_REDUCE_SCATTERS: dict[str, compose.Phase] = {
    "ring": ring.reduce_scatter_rounds,
    "hierarchical": hierarchical.reduce_scatter_rounds,
    "torus2d": torus2d.reduce_scatter_rounds,
    "halving_doubling": halving_doubling.reduce_scatter_rounds,
}


def _from_reduce_scatters(build: Builder) -> dict[str, Builder]:
    return {name: functools.partial(build, name, phase) for name, phase in _REDUCE_SCATTERS.items()}


PLANNERS: dict[str, dict[str, Builder]] = {
    "allreduce": {
        "ring": ring.build,
        "hierarchical": hierarchical.build,
        "torus2d": torus2d.build,
        "halving_doubling": halving_doubling.build,
    },
    "reduce_scatter": _from_reduce_scatters(compose.build_reduce_scatter),
    "allgather": _from_reduce_scatters(compose.build_allgather),
    "broadcast": {"tree": binomial.build_broadcast, "scatter_allgather": scatter_allgather.build},
    "reduce": {**_from_reduce_scatters(compose.build_reduce), "tree": binomial.build_reduce},
    "alltoall": {"pairwise": pairwise.build},
}


@functools.lru_cache(maxsize=512)
def plan_for(collective: str, algorithm: str, rank: int, size: int, count: int, itemsize: int,
             topology=None, root: int = 0) -> Plan:
    """The cached plan of `collective` by `algorithm` for one rank; built once per distinct
    arguments."""
    return PLANNERS[collective][algorithm](rank, size, count, itemsize, topology, root)
