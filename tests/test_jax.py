"""JAX: zero-copy views of JAX arrays, pytree averaging, and data parallelism that equals
one-process large-batch training (tests/workers/jax_training.py)."""
import os
import subprocess
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="the jax extra is not installed")

import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402

import collectives  # noqa: E402
from collectives.gradsync import as_array  # noqa: E402
from collectives.hooks.jax import tree_average, tree_broadcast  # noqa: E402
from tests.mpirun import ROOT, mpiexec, run_workers  # noqa: E402
from tests.test_hooks_torch import comm  # noqa: E402,F401  a one-rank communicator
from tests.test_torchrun import torchrun  # noqa: E402


def test_float0_leaves_are_refused_by_name(comm):  # noqa: F811
    """jax.grad(..., allow_int=True) gives float0 leaves for integer inputs: a NumPy error
    about changing to a smaller dtype named neither the leaf nor its dtype."""
    grads = jax.grad(lambda x, i: (x * i).sum(), argnums=(0, 1), allow_int=True)(
        jnp.ones(3), jnp.arange(3))
    with pytest.raises(TypeError, match=r"unsupported dtype \[\('float0', 'V'\)\]: a leaf "
                                        "with no values"):
        tree_average(grads, collectives.GradSync(comm))
    assert as_array(grads[0]).dtype == np.float32 and as_array(jnp.ones(2, jnp.bfloat16)).size == 2


def test_a_deleted_or_donated_leaf_is_refused_by_name(comm):  # noqa: F811
    """JAX's own error was "object of type 'NoneType' has no len()" (twenty-first review)."""
    gone = jnp.ones(3)
    gone.delete()
    with pytest.raises(TypeError, match="a JAX array that was deleted or donated"):
        tree_average({"w": gone}, collectives.GradSync(comm))


def test_a_traced_leaf_is_refused_by_name(comm):  # noqa: F811
    """Inside jax.jit the leaves are tracers: the error was DLPack's generic "expected an
    array that supports DLPack ... got DynamicJaxprTracer" (the forty-fourth review)."""
    sync = collectives.GradSync(comm)
    with pytest.raises(TypeError, match=r"a traced JAX value \(inside jax.jit, grad or vmap"):
        jax.jit(lambda g: tree_average(g, sync))({"w": jnp.ones(3)})


def test_arguments_that_are_not_what_they_take_are_refused_by_name(comm):  # noqa: F811
    """The eighty-seventh review: one array gave a list of its rows, a dict its keys; an
    array twice was "out[0] and out[1] share memory" (no out passed); tree_average(tree,
    comm) and tree_broadcast(tree, sync) raised AttributeError."""
    sync, a = collectives.GradSync(comm), np.ones(4, np.float32)
    for grads in (jnp.ones((3, 4)), a, {"w": a}):
        with pytest.raises(TypeError, match="GradSync.sync takes a list of arrays"):
            sync.sync(grads)
    with pytest.raises(ValueError, match=r"grads\[0\] and grads\[1\] share memory"):
        sync.sync([a, a])
    x = jnp.ones(2)
    assert [float(g[0]) for g in sync.sync([x, x])] == [1.0, 1.0]  # immutable: not tied
    with pytest.raises(TypeError, match="tree_average takes a collectives.GradSync"):
        tree_average({"w": x}, comm)
    with pytest.raises(TypeError, match="comm must be a collectives.Communicator"):
        tree_broadcast({"w": x}, sync)


def test_jax_arrays_are_read_in_place():
    x = jnp.arange(12, dtype=jnp.float32).reshape(3, 4)
    view = as_array(x)
    assert isinstance(view, np.ndarray) and view.shape == (3, 4) and not view.flags.writeable
    assert view.ctypes.data == x.unsafe_buffer_pointer()


def test_bfloat16_jax_arrays_are_viewed_as_bfloat16():
    view = as_array(jnp.full(5, 1.5, jnp.bfloat16))
    assert view.dtype == ml_dtypes.bfloat16 and view.tolist() == [1.5] * 5


def test_tree_average_gives_new_jax_arrays_of_the_same_structure(comm):  # noqa: F811
    grads = {"w": jnp.ones((2, 3)), "layers": [jnp.full(4, 2.0, jnp.bfloat16), jnp.zeros(1)]}
    averaged = tree_average(grads, collectives.GradSync(comm))
    assert jax.tree_util.tree_structure(averaged) == jax.tree_util.tree_structure(grads)
    for got, given in zip(jax.tree_util.tree_leaves(averaged), jax.tree_util.tree_leaves(grads)):
        assert isinstance(got, jax.Array) and got is not given and got.dtype == given.dtype
        assert bool(jnp.array_equal(got, given))  # one rank: the average is the input
        assert got.unsafe_buffer_pointer() % 64 == 0


def test_tree_broadcast_keeps_the_structure(comm):  # noqa: F811
    params = {"b": jnp.arange(3.0), "a": (jnp.ones(2, jnp.int32),)}
    got = tree_broadcast(params, comm)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(params)
    assert bool(jnp.array_equal(got["b"], params["b"])) and got["a"][0].dtype == jnp.int32


@pytest.mark.parametrize("np_", [2, 4])
def test_data_parallel_equals_large_batch_under_mpiexec(np_):
    proc = run_workers(np_, "jax_training", env={
        "OMP_NUM_THREADS": "1", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert proc.stdout.count("15/15 checks passed") == np_


def test_data_parallel_equals_large_batch_under_torchrun():
    proc = torchrun(2, "jax_training")
    assert proc.stdout.count("15/15 checks passed") == 2


def test_example_trains_under_mpiexec():
    command = [mpiexec(), "-n", "2", sys.executable, "examples/train_jax.py", "--steps", "3",
               "--compression", "bf16"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "final loss" in proc.stdout and "size=2" in proc.stdout
