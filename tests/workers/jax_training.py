"""JAX data parallelism against one-process large-batch training.

Usage: mpiexec -n P python -m tests.workers.jax_training      (or torchrun -m ...)
Every rank draws the same global batches; data-parallel training takes its shard, averages
the gradient pytree with tree_average and steps with Goyal's warmed-up, linearly scaled
learning rate; the reference trains one model on the whole global batch in this process
with the same rates. After STEPS steps they agree within TOLERANCE on every rank, and the
replicas are bit-identical.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

import collectives
from collectives.errors import rank_list
from collectives.hooks.jax import tree_average, tree_broadcast
from collectives.lr import scaled_learning_rate
from tests.workers.common import Tally

STEPS = 30
TOLERANCE = 1e-5
IN, HIDDEN, OUT, SHARD = 16, 32, 4, 8
BASE_LR, WARMUP = 0.05, 10


def init_params(seed: int) -> dict:
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return {"hidden": {"w": jax.random.normal(k1, (IN, HIDDEN)) / IN ** 0.5,
                       "b": jnp.zeros(HIDDEN)},
            "out": {"w": jax.random.normal(k2, (HIDDEN, OUT)) / HIDDEN ** 0.5,
                    "b": jnp.zeros(OUT)}}


def loss(params: dict, x, y):
    hidden = jnp.tanh(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return jnp.mean((hidden @ params["out"]["w"] + params["out"]["b"] - y) ** 2)


gradient = jax.jit(jax.grad(loss))


def global_batches(size: int):
    """STEPS batches of SHARD samples per rank, the same on every rank."""
    rng = np.random.default_rng(7)
    teacher = rng.standard_normal((IN, OUT)).astype(np.float32)
    for _ in range(STEPS):
        x = rng.standard_normal((size * SHARD, IN)).astype(np.float32)
        yield jnp.asarray(x), jnp.asarray(np.sin(x @ teacher))


def sgd(params: dict, grads: dict, lr: float) -> dict:
    return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)


def flat(params: dict) -> np.ndarray:
    return np.concatenate([np.asarray(leaf).ravel() for leaf in jax.tree_util.tree_leaves(params)])


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    sync = collectives.GradSync(comm, algorithm="ring")
    lo, hi = comm.rank * SHARD, (comm.rank + 1) * SHARD
    params = tree_broadcast(init_params(seed=comm.rank), comm)  # replicas start apart
    reference = init_params(seed=0)
    tally.check(np.array_equal(flat(params), flat(reference)), "tree_broadcast: not rank 0's")
    for step, (x, y) in enumerate(global_batches(comm.size)):
        lr = scaled_learning_rate(step, base_lr=BASE_LR, batch=comm.size * SHARD,
                                  base_batch=SHARD, warmup_steps=WARMUP)
        grads = tree_average(gradient(params, x[lo:hi], y[lo:hi]), sync)
        params = sgd(params, grads, lr)
        reference = sgd(reference, gradient(reference, x, y), lr)
    tally.check(all(isinstance(leaf, jax.Array) for leaf in jax.tree_util.tree_leaves(params)),
                "tree_average did not give JAX arrays")
    ours, one = flat(params), flat(reference)
    diff = float(np.abs(ours - one).max())
    tally.check(diff <= TOLERANCE, f"data-parallel differs from large-batch by {diff:.3g}")
    tally.check(np.array_equal(comm.allreduce(ours, op="max"), ours)
                and np.array_equal(comm.allreduce(ours, op="min"), ours), "replicas differ")
    check_other_structures(comm, sync, tally)
    check_leaves_and_devices(comm, sync, tally)
    print(f"rank {comm.rank}: size={comm.size}, max difference {diff:.3g}", flush=True)
    tally.finish()


def _apply(a, b):
    return a + b


def check_other_structures(comm, sync, tally: Tally) -> None:
    """Leaves of one shape under other keys were averaged together (the twelfth review):
    rank 0's "weight" with rank 1's "zeta". Now MismatchError on every rank."""
    same = {"weight": jnp.ones(2), "apply": jax.tree_util.Partial(_apply, jnp.ones(3))}
    try:  # a function in static data: its repr (an address) differs between processes
        got = tree_average(same, sync)
        tally.check(bool(jnp.array_equal(got["weight"], same["weight"])),
                    f"tree_average of a tree with a Partial: {got}")
    except collectives.MismatchError as error:
        tally.check(False, f"identical trees with a Partial refused: {error}")
    last = comm.rank == comm.size - 1
    tree = {"weight": jnp.ones(2), ("zeta" if last else "bias"): jnp.ones(2)}
    bare = None if last else jnp.ones(2)  # a bare leaf's key path is "": counted too
    odd_first = {"weight": jnp.ones(2), ("zeta" if comm.rank == 0 else "bias"): jnp.ones(2)}
    others = rank_list(range(comm.size - 1))
    for what, call, said in (
            ("tree_average", lambda: tree_average(tree, sync), f"rank {comm.size - 1} against "
                                                                f"{others}"),
            ("tree_broadcast", lambda: tree_broadcast(tree, comm), f"rank {comm.size - 1}"),
            ("tree_broadcast", lambda: tree_broadcast(bare, comm), f"rank {comm.size - 1}"),
            # rank 0 the odd one: the others were blamed, against rank 0 (the 65th review)
            ("tree_average", lambda: tree_average(odd_first, sync),
             "rank 0 against " + rank_list(range(1, comm.size)) if comm.size > 2 else "")):
        try:
            call()
            tally.check(comm.size == 1, f"{what} of trees with other keys: no error")
        except collectives.MismatchError as error:
            tally.check(said in str(error), f"{what}: {error} (expected {said!r})")
    # Keys JAX cannot sort on the last rank: its ValueError there, while the others waited
    # out the timeout (the fifty-eighth review); now refused on every rank.
    unsortable = {1: jnp.ones(2), ("2" if last else 2): jnp.ones(2)}
    for what, call in (("tree_average", lambda: tree_average(unsortable, sync)),
                       ("tree_broadcast", lambda: tree_broadcast(unsortable, comm))):
        start = time.monotonic()
        try:
            call()
            tally.check(comm.size == 1, f"{what} of unsortable keys: no error")
        except (ValueError, collectives.MismatchError) as error:
            expected = ValueError if last else collectives.MismatchError
            tally.check(type(error) is expected and time.monotonic() - start < 10,
                        f"{what} of unsortable keys: {error!r}")


def check_leaves_and_devices(comm, sync, tally: Tally) -> None:
    """The eighty-seventh review: a float8 leaf on one rank raised DLPack's RuntimeError
    there, which no refusal took: the ranks fell out of step and later averages paired one
    rank's step with another's, silently; leaves on a device other than the default came
    back on the default one; an array under two keys on one rank only was refused by
    tree_broadcast as a mismatch. (The test runs with two host devices.)"""
    last = comm.rank == comm.size - 1
    try:
        tree_average({"g": jnp.ones(3, jnp.float8_e4m3fn if last else jnp.float32)}, sync)
        tally.check(False, "a float8 leaf was averaged")
    except (TypeError, collectives.MismatchError) as error:
        expected = TypeError if last else collectives.MismatchError
        tally.check(type(error) is expected and "float8_e4m3fn" in str(error),
                    f"a float8 leaf on one rank: {error!r}")
    device = jax.devices()[-1]
    got = tree_average({"g": jax.device_put(jnp.full(3, float(comm.rank)), device)}, sync)["g"]
    tally.check(bool((got == (comm.size - 1) / 2).all()), f"the average after a refusal: {got}")
    tally.check(got.devices() == {device}, f"a leaf on {device} came back on {got.devices()}")
    x = jnp.full(2, float(comm.rank))
    got = tree_broadcast({"a": x, "b": x if comm.rank else jnp.full(2, 7.0)}, comm)
    tally.check(bool((got["a"] == 0).all() and (got["b"] == 7).all()),
                f"one array under two keys off the root: {got}")


if __name__ == "__main__":
    main()
