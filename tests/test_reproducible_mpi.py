"""deterministic=True under a real mpiexec: every algorithm's result equals
collectives.reference_reduce bit for bit, on several world sizes, node layouts and grids;
and the reference itself (single process)."""
import re

import numpy as np
import pytest

import collectives
from tests.mpirun import run_workers


@pytest.mark.parametrize("np_, env", [
    (2, {}),
    (3, {"COLLECTIVES_LOCAL_SIZE": "2"}),
    (4, {"COLLECTIVES_LOCAL_SIZE": "3"}),
    (4, {"COLLECTIVES_LOCAL_SIZE": "2", "COLLECTIVES_GRID": "2x2"}),
    (5, {"COLLECTIVES_LOCAL_SIZE": "1"}),
    (8, {"COLLECTIVES_LOCAL_SIZE": "3", "COLLECTIVES_GRID": "4x2"}),
])
def test_every_algorithm_gives_the_reference_bits(np_, env):
    run_workers(np_, "reproducible_check", env=env, timeout=900)


def test_default_from_the_environment():
    run_workers(2, "reproducible_check", env={"COLLECTIVES_DETERMINISTIC": "1"})


def test_reference_folds_in_rank_order_and_rounds_16_bits_once():
    xs = [np.float32([1e8, 1.0]), np.float32([1.0, 1e8]), np.float32([-1e8, -1e8])]
    # (1e8 + 1) - 1e8 loses the 1 in float32; rank order decides which element keeps it
    assert collectives.reference_reduce(xs, "sum").tolist() == [0.0, 0.0]
    assert collectives.reference_reduce(xs[::-1], "sum").tolist() == [0.0, 1.0]
    halves = [np.float16([2048.0]), np.float16([1.0]), np.float16([1.0])]
    assert collectives.reference_reduce(halves, "sum").tolist() == [2050.0]  # not 2048
    ints = [np.int32([2**31 - 1]), np.int32([2**31 - 1])]
    assert collectives.reference_reduce(ints, "avg").tolist() == [2**31 - 1]


@pytest.mark.parametrize("arrays, error, text", [
    ([np.float32([1, 2]), np.float64([1, 2])], ValueError, "arrays[1] is float64 (2,)"),
    ([np.float32([1, 2]), np.float32([1, 2, 3])], ValueError, "arrays[1] is float32 (3,)"),
    ([[1.0, 2.0], [1.0, 2.0]], TypeError, "arrays[0] must be a NumPy or CuPy array"),
    ([np.uint8([200]), np.uint8([100])], TypeError, "unsupported dtype uint8"),
    ([np.ma.array(np.float32([1, 2]), mask=[0, 1])] * 2, TypeError, "masked array"),
    ([np.matrix([[1.0]])] * 2, TypeError, "np.matrix"),
    ([], ValueError, "one array per rank, got none"),
    (np.float32([1, 2]), TypeError, "reference_reduce takes a list of arrays"),
    ((np.float32([r]) for r in range(2)), None, "[1.]"),
], ids=["dtypes", "shapes", "lists", "uint8", "masked", "matrix", "none", "one array",
        "generator"])
def test_reference_refuses_what_the_collectives_refuse(arrays, error, text):
    """The sixteenth review: NumPy upcast mixed dtypes, broadcast shapes and wrapped uint8
    (200 + 100 gave 44), and ignored a mask, where the collectives refuse. One array was
    refused as its first element, a generator as having no len (the 108th review); any
    iterable of arrays is taken, as GradSync.sync takes it."""
    if error is None:
        assert str(collectives.reference_reduce(arrays, "sum")) == text
        return
    with pytest.raises(error, match=re.escape(text)):
        collectives.reference_reduce(arrays, "sum")
