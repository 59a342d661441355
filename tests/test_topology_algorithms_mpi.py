"""hierarchical, torus2d and halving_doubling under a real mpiexec, on emulated nodes.

Each launch runs all three algorithms over every dtype, op and awkward size (one size
straddles halving-doubling's recursive-doubling threshold across dtypes) and checks values
and identical bits on every rank. COLLECTIVES_LOCAL_SIZE=k groups consecutive ranks into
nodes of k, uneven where k does not divide np; the worker also checks the node sizes and
grid that init() built. The per-call agreement check is off here (it has its own tests) to
keep the matrix within a few minutes on two cores.
"""
import pytest

from collectives.topology import Topology
from tests.mpirun import run_workers

ALGORITHMS = "hierarchical,torus2d,halving_doubling"
CASES = [(1, 1)] + [(np_, k) for np_ in (2, 3, 4, 5, 6) for k in (1, 2, 3)] + [(8, 3), (8, 4)]
LARGE = {(5, 2), (6, 3)}  # plus 2^18 + 3 elements: many segments per step
ENV = {"COLLECTIVES_CHECK": "0", "COLLECTIVES_TIMEOUT": "120"}


def expected_nodes(np_: int, k: int) -> str:
    """Node sizes: np // k nodes of k, then the rest."""
    return ",".join(map(str, [k] * (np_ // k) + ([np_ % k] if np_ % k else [])))


@pytest.mark.parametrize("np_,k", CASES, ids=[f"np{n}-local{k}" for n, k in CASES])
def test_emulated_nodes(np_, k):
    x, y = Topology.from_local_size(np_, k).grid_shape()
    args = ["--medium", "--layouts", "contiguous", "--expect-nodes", expected_nodes(np_, k),
            "--expect-grid", f"{x}x{y}", *(["--large"] if (np_, k) in LARGE else [])]
    run_workers(np_, "allreduce_matrix", ALGORITHMS, *args, env={**ENV, "COLLECTIVES_LOCAL_SIZE": str(k)})


@pytest.mark.parametrize("np_,grid", [(6, "3x2"), (6, "6x1"), (4, "1x4")])
def test_explicit_grid(np_, grid):
    run_workers(np_, "allreduce_matrix", "torus2d", "--layouts", "contiguous",
                "--expect-grid", grid, env={**ENV, "COLLECTIVES_GRID": grid, "COLLECTIVES_LOCAL_SIZE": "2"})


def test_grid_that_does_not_hold_the_ranks_is_refused():
    proc = run_workers(2, "allreduce_matrix", "torus2d", env={**ENV, "COLLECTIVES_GRID": "3x1"},
                       expect_ok=False, timeout=120)
    assert proc.returncode != 0
    assert "grid 3x1 holds 3 ranks, but there are 2" in proc.stdout + proc.stderr
