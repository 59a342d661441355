"""Topology: node membership, the automatic and the given 2-D grid, settings plumbing."""
import numpy as np
import pytest

from collectives.algorithms import plan_for
from collectives.config import Settings
from collectives.topology import Topology, most_square


def test_emulated_nodes_group_consecutive_ranks_last_one_uneven():
    assert Topology.from_local_size(5, 2).nodes == ((0, 1), (2, 3), (4,))
    assert Topology.from_local_size(2, 3).nodes == ((0, 1),)
    assert Topology.from_local_size(3, 1).peers(1) == (1,)
    with pytest.raises(ValueError, match="local_size"):
        Topology.from_local_size(4, 0)


def test_node_keys_number_nodes_by_lowest_rank():
    topology = Topology.from_node_keys(["b", "a", "b", "a"])
    assert topology.nodes == ((0, 2), (1, 3)) and topology.peers(3) == (1, 3)


@pytest.mark.parametrize("size,shape", [(1, (1, 1)), (2, (1, 2)), (6, (2, 3)), (7, (1, 7)),
                                        (12, (3, 4)), (16, (4, 4)), (1024, (32, 32))])
def test_most_square(size, shape):
    assert most_square(size) == shape


@pytest.mark.parametrize("size,local,shape", [
    (6, 3, (3, 2)),   # even nodes: local ranks x nodes
    (6, 2, (2, 3)),
    (8, 4, (4, 2)),
    (5, 2, (1, 5)),   # uneven nodes: most square
    (8, 3, (2, 4)),
    (6, 1, (2, 3)),   # one rank per node: most square
    (6, 6, (2, 3)),   # one node: most square
])
def test_automatic_grid(size, local, shape):
    topology = Topology.from_local_size(size, local)
    assert topology.grid_shape() == shape
    rows = topology.grid_rows()
    assert len(rows) == shape[1] and all(len(r) == shape[0] for r in rows)
    assert sorted(r for row in rows for r in row) == list(range(size))


def test_rows_follow_the_nodes_when_the_grid_is_nodes_shaped():
    dealt = Topology.from_node_keys([0, 1, 0, 1, 0, 1])
    assert dealt.grid_shape() == (3, 2) and dealt.grid_rows() == ((0, 2, 4), (1, 3, 5))
    given = Topology.from_node_keys([0, 1, 0, 1, 0, 1], grid=(2, 3))
    assert given.grid_rows() == ((0, 1), (2, 3), (4, 5))


def test_given_grid_wins_and_is_validated():
    assert Topology.from_local_size(6, 3, grid=(6, 1)).grid_shape() == (6, 1)
    assert Topology.from_local_size(6, 3, grid=[2, 3]).grid == (2, 3)
    with pytest.raises(ValueError, match=r"grid 4x2 holds 8 ranks, but there are 6; pass a grid "
                                         r"\(init.s grid=, or COLLECTIVES_GRID\)"):
        Topology.from_local_size(6, 3, grid=(4, 2))
    for bad in [(0, 6), (6,), (2, 3, 1), ("a", "b")]:
        with pytest.raises(ValueError, match="two positive integers"):
            Topology.from_local_size(6, 3, grid=bad)


def test_topologies_hash_by_value_so_plans_cache():
    a, b = Topology.from_local_size(8, 3), Topology.from_node_keys([0, 0, 0, 1, 1, 1, 2, 2])
    assert a == b and hash(a) == hash(b)
    assert a != Topology.from_local_size(8, 3, grid=(2, 4))
    assert plan_for("allreduce", "torus2d", 0, 8, 100, 4, a) is plan_for("allreduce", "torus2d", 0, 8, 100, 4, b)


def test_grid_from_argument_or_environment(monkeypatch):
    monkeypatch.setenv("COLLECTIVES_GRID", "4x2")
    assert Settings.resolve().grid == (4, 2)
    assert Settings.resolve(grid=(2, 4)).grid == (2, 4)
    monkeypatch.setenv("COLLECTIVES_GRID", "4,2")
    assert Settings.resolve().grid == (4, 2)
    monkeypatch.setenv("COLLECTIVES_GRID", "8")
    with pytest.raises(ValueError, match="COLLECTIVES_GRID='8'"):
        Settings.resolve()
    monkeypatch.delenv("COLLECTIVES_GRID")
    assert Settings.resolve().grid is None


@pytest.mark.parametrize("make, error, said", [
    # the twenty-third review: gaps gave a bare IndexError in peers() and the plans, a float
    # local_size floats for node numbers (TypeError in hierarchical), a list no hash
    (lambda: Topology((0, 2, 2, 0)), ValueError, "got node 2 at rank 1"),
    (lambda: Topology((1, 0)), ValueError, "got node 1 at rank 0"),
    (lambda: Topology((0, -1)), ValueError, "got node -1 at rank 1"),
    (lambda: Topology(("a", "b")), TypeError, "node_of's items must be an int"),
    (lambda: Topology.from_local_size(4, 2.5), TypeError, "local_size must be an int"),
])
def test_node_numbers_that_plans_cannot_use_are_refused(make, error, said):
    with pytest.raises(error, match=said):
        make()


def test_node_numbers_are_kept_as_a_tuple_of_ints():
    topology = Topology([0, 1, 0, np.int64(1)])
    assert topology.node_of == (0, 1, 0, 1) and hash(topology) == hash(Topology((0, 1, 0, 1)))
    assert topology.nodes == ((0, 2), (1, 3))
