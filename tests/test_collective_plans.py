"""Plans of reduce_scatter, allgather, broadcast, reduce and alltoall, every algorithm.

Two checks per plan family:

- symbolic (tests/symbolic_plans): all p ranks' plans in one process, p = 1..16, awkward
  counts, nodes of 1, 2, 3 and p ranks, every grid, roots 0, p-1 and a middle rank:
  messages match, the schedule finishes under rendezvous, and each element of the
  collective's result holds exactly what it should (every rank's contribution exactly once
  where it reduces);
- numeric: the real executor over an in-process transport, ranks as threads, against the
  NumPy closed form (np.array_split of the reduction, stacking, ...), with identical bits
  on every rank where the collective gives every rank the same values.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from collectives.algorithms import PLANNERS, plan_for
from collectives.algorithms.plan import Plan, split_bounds
from collectives.algorithms.ring import SEGMENT_BYTES
from collectives.topology import Topology
from tests import symbolic_plans
from tests.inprocess import run_plans
from tests.symbolic_plans import Values

NEW = [(c, a) for c in ("reduce_scatter", "allgather", "broadcast", "reduce", "alltoall")
       for a in sorted(PLANNERS[c])]
ROOTED = ("broadcast", "reduce")
SEG = 3  # elements per segment in the cut-up plans
CUT = SEGMENT_BYTES // SEG  # itemsize that cuts every step into segments of SEG elements


def roots(collective: str, p: int) -> list[int]:
    return sorted({0, p - 1, p // 2}) if collective in ROOTED else [0]


def topologies(p: int) -> list[Topology | None]:
    """One node, one rank per node, local sizes 2 and 3 (uneven when they do not divide p),
    ranks dealt round-robin to 3 nodes, and every explicit grid."""
    tops = {Topology.from_local_size(p, k) for k in (1, 2, 3, p)}
    tops.add(Topology.from_node_keys([r % 3 for r in range(p)]))
    tops |= {Topology.from_local_size(p, 2, grid=(x, p // x)) for x in range(1, p + 1) if p % x == 0}
    return sorted(tops, key=repr) + [None]


def all_plans(collective: str, algorithm: str, p: int, count: int, itemsize: int = 4,
              topology=None, root: int = 0) -> list[Plan]:
    return [PLANNERS[collective][algorithm](r, p, count, itemsize, topology, root) for r in range(p)]


# --- symbolic: what each element ends as ---------------------------------------------

def check_symbolic(plans: list[Plan], root: int) -> None:
    """Run `plans` on leaves and check the collective's result (see the module docstring)."""
    collective, p, count = plans[0].collective, plans[0].size, plans[0].count
    blocks = split_bounds(0, count, p)
    owner = [r for r, (lo, hi) in enumerate(blocks) for _ in range(lo, hi)]
    unset = p * p  # a leaf no rank contributes: "nothing here yet"
    values = Values(unset + 1)
    full = ((1 << p) - 1, p)
    if collective == "alltoall":  # rank r's row q is leaf r p + q
        initial = [[r * p + owner[e] for e in range(count)] for r in range(p)]
    elif collective == "allgather":
        initial = [[r if owner[e] == r else unset for e in range(count)] for r in range(p)]
    elif collective == "broadcast":
        initial = [[root if r == root else unset] * count for r in range(p)]
    else:
        initial = [[r] * count for r in range(p)]
    work = symbolic_plans.run(plans, initial, values)
    for e in range(count):
        if collective == "reduce_scatter":
            assert values.leaves[work[owner[e]][e]] == full, f"element {e} of rank {owner[e]}"
        elif collective == "reduce":
            assert values.leaves[work[root][e]] == full, f"element {e} on root {root}"
        else:
            want = {"allgather": lambda r: owner[e], "broadcast": lambda r: root,
                    "alltoall": lambda r: owner[e] * p + r}[collective]
            assert [work[r][e] for r in range(p)] == [want(r) for r in range(p)], f"element {e}"


@pytest.mark.parametrize("p", range(1, 17))
@pytest.mark.parametrize("collective, algorithm", NEW)
def test_every_element_ends_where_the_collective_puts_it(collective, algorithm, p):
    shapes = topologies(p) if algorithm in ("hierarchical", "torus2d") else [None]
    counts = sorted({0, 1, max(p - 1, 1), p, p + 1, 2 * p + 3, 61, 3 * p * p + 1})
    if collective == "alltoall":
        counts = [p * m for m in counts]  # p rows of m
    for topology, count, root in itertools.product(shapes, counts, roots(collective, p)):
        check_symbolic(all_plans(collective, algorithm, p, count, 4, topology, root), root)
    for root in roots(collective, p):  # many segments per step
        check_symbolic(all_plans(collective, algorithm, p, 4 * p * p + 5 * p, CUT, shapes[0], root), root)


@pytest.mark.parametrize("sizes", [(3, 2), (2, 3, 1), (4, 1, 2), (1, 1, 3), (5, 3), (3, 3, 3, 1)])
@pytest.mark.parametrize("collective", ["reduce_scatter", "allgather", "reduce"])
def test_hierarchical_on_arbitrary_node_sizes(collective, sizes):
    """Nodes of any sizes, members consecutive or dealt out of order."""
    p = sum(sizes)
    keys = [n for n, k in enumerate(sizes) for _ in range(k)]
    for topology in (Topology.from_node_keys(keys), Topology.from_node_keys(keys[::-1])):
        for count in (0, p - 1, p + 1, 7 * p * p + 3):
            check_symbolic(all_plans(collective, "hierarchical", p, count, 4, topology, p - 1), p - 1)


# --- numeric: the executor against NumPy ---------------------------------------------

SIZES = [*range(1, 10), 12, 16]
OPS = {"sum": np.add, "max": np.maximum, "min": np.minimum}
DTYPES = (np.float32, np.float64, np.int32)
MODES = ("in-place", "src", "src+out")


def inputs_for(collective: str, p: int, count: int, dtype, seed: int) -> list[np.ndarray]:
    """Each rank's input as the plan's work buffer holds it (count elements); values whose
    sums are exact in every dtype, so any reduction order gives NumPy's bits."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "i":
        return [rng.integers(-1000, 1000, count).astype(dtype) for _ in range(p)]
    return [rng.choice(np.array([0.0, -0.0, 1.5, -2.0, 0.25], dtype), count) for _ in range(p)]


def expected(collective: str, inputs: list[np.ndarray], op: str, root: int) -> list:
    """Per rank, (element range, values) the result must hold there; None: nothing."""
    p, count = len(inputs), inputs[0].size
    blocks = split_bounds(0, count, p)
    if collective in ("reduce_scatter", "reduce"):
        reduced = OPS[op].reduce(np.stack(inputs), axis=0)
        if collective == "reduce":
            return [((0, count), reduced) if r == root else None for r in range(p)]
        return [(blocks[r], reduced[slice(*blocks[r])]) for r in range(p)]
    if collective == "allgather":
        gathered = np.concatenate([x[slice(*blocks[r])] for r, x in enumerate(inputs)])
        return [((0, count), gathered)] * p
    if collective == "broadcast":
        return [((0, count), inputs[root])] * p
    return [((0, count), np.concatenate([inputs[q][slice(*blocks[r])] for q in range(p)]))
            for r in range(p)]  # alltoall


def run_case(collective: str, algorithm: str, p: int, count: int, *, dtype=np.float32,
             op: str = "sum", root: int = 0, local_size: int = 2, mode: str = "src",
             itemsize: int | None = None) -> None:
    """Run every rank's plan in `mode` and check the result, the input and shared bits."""
    topology = Topology.from_local_size(p, local_size)
    itemsize = np.dtype(dtype).itemsize if itemsize is None else itemsize
    case = (f"{collective}/{algorithm} p={p} n={count} {np.dtype(dtype).name} {op} root={root} "
            f"local={local_size} {mode} itemsize={itemsize}")
    plans = [plan_for(collective, algorithm, r, p, count, itemsize, topology, root) for r in range(p)]
    inputs = inputs_for(collective, p, count, dtype, seed=p * 7919 + count)
    kept = [x.copy() for x in inputs]
    if collective == "alltoall":
        mode = mode if mode != "in-place" else "src"  # its plans read src: no in-place run
    works = [x.copy() if mode == "in-place" else np.full_like(x, 7) for x in inputs]
    outs = [np.full_like(x, 9) for x in inputs] if mode == "src+out" else None
    results = run_plans(plans, works, op, srcs=None if mode == "in-place" else inputs, outs=outs)
    shared = None
    for rank, (got, want) in enumerate(zip(results, expected(collective, inputs, op, root))):
        assert not isinstance(got, BaseException), f"{case} rank {rank}: {got!r}"
        assert inputs[rank].tobytes() == kept[rank].tobytes(), f"{case}: rank {rank} input modified"
        if want is None:
            continue
        (lo, hi), values = want
        np.testing.assert_array_equal(got[lo:hi], values, err_msg=f"{case} rank {rank}")
        if collective in ("allgather", "broadcast"):
            shared = got[lo:hi].tobytes() if shared is None else shared
            assert got[lo:hi].tobytes() == shared, f"{case}: rank {rank} bits differ from rank 0"


def counts(p: int) -> list[int]:
    return sorted({0, 1, max(p - 1, 1), p, p + 1, 7, 1000})


@pytest.mark.parametrize("p", SIZES)
@pytest.mark.parametrize("collective, algorithm", NEW)
def test_executor_matches_numpy(collective, algorithm, p):
    """Every count, root and local size once; ops, dtypes and io modes rotate through the
    cases so each meets every collective, algorithm and size."""
    combos = itertools.product(counts(p), roots(collective, p), (1, 2, 3))
    for i, (count, root, local_size) in enumerate(combos):
        op = ("sum", "max", "min")[i % 3]
        dtype = DTYPES[(i // 3) % 3]
        mode = MODES[i % len(MODES)]
        count = p * count if collective in ("allgather", "alltoall") else count  # m per row
        run_case(collective, algorithm, p, count, dtype=dtype, op=op, root=root,
                 local_size=local_size, mode=mode, itemsize=CUT if i % 2 and count < 100 else None)


@pytest.mark.parametrize("collective, algorithm", NEW)
def test_executor_on_a_prime_count_over_one_mib(collective, algorithm):
    """A prime count of more than 2^20 elements: many real 1 MiB segments, uneven blocks."""
    p, count = 5, 1_048_583
    count = p * 209_717 if collective in ("allgather", "alltoall") else count  # rows of a prime
    run_case(collective, algorithm, p, count, dtype=np.float32, op="sum", root=3, local_size=2)


@pytest.mark.parametrize("collective, algorithm", [(c, a) for c, a in NEW if c != "alltoall"])
def test_executor_with_float16_and_float64(collective, algorithm):
    for p, dtype in ((3, np.float16), (6, np.float16), (7, np.float64)):
        run_case(collective, algorithm, p, 4 * p + 1, dtype=dtype, op="sum", root=p - 1,
                 local_size=3, mode="in-place", itemsize=CUT)
