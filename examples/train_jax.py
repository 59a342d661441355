"""Data-parallel training in JAX over our all-reduce: a small MLP regression (CPU).

    .venv/bin/mpiexec -n 2 .venv/bin/python examples/train_jax.py --algorithm ring
    .venv/bin/torchrun --nproc-per-node 2 examples/train_jax.py --compression bf16

Each rank computes gradients of its shard with jax.grad; `tree_average` averages the
gradient pytree over the ranks (DLPack views in, new JAX arrays out, no copies on CPU); the
learning rate, tuned for one shard, is scaled to the global batch after a linear warmup
(Goyal et al., `collectives.lr`).
"""
import argparse

import jax
import jax.numpy as jnp
import numpy as np

import collectives
from collectives.hooks.jax import tree_average, tree_broadcast
from collectives.lr import scaled_learning_rate

SHARD = 32  # samples per rank and step


def loss(params, x, y):
    hidden = jnp.tanh(x @ params["w1"] + params["b1"])
    return jnp.mean((hidden @ params["w2"] + params["b2"] - y) ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", default="auto", choices=collectives.ALGORITHMS)
    parser.add_argument("--compression", default=None, choices=["fp16", "bf16"])
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()

    comm = collectives.init()
    sync = collectives.GradSync(comm, algorithm=args.algorithm, compression=args.compression)
    keys = jax.random.split(jax.random.PRNGKey(comm.rank), 2)
    params = tree_broadcast({"w1": jax.random.normal(keys[0], (8, 64)) / 8 ** 0.5,
                             "b1": jnp.zeros(64),
                             "w2": jax.random.normal(keys[1], (64, 1)) / 8,
                             "b2": jnp.zeros(1)}, comm)  # every replica starts from rank 0's
    grad = jax.jit(jax.value_and_grad(loss))
    data = np.random.default_rng(comm.rank)  # every rank its own shard
    for step in range(args.steps):
        x = data.standard_normal((SHARD, 8)).astype(np.float32)
        y = np.sin(x.sum(axis=1, keepdims=True))
        value, grads = grad(params, x, y)
        grads = tree_average(grads, sync)
        lr = scaled_learning_rate(step, base_lr=0.05, batch=SHARD * comm.size,
                                  base_batch=SHARD, warmup_steps=10)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        if comm.rank == 0 and step % 10 == 0:
            print(f"step {step:3d}  loss {float(value):.4f}  lr {lr:.3f}", flush=True)
    if comm.rank == 0:
        print(f"final loss {float(value):.4f} on {comm.size} ranks ({comm!r})")


if __name__ == "__main__":
    main()
