"""JAX glue: data-parallel training over our collectives, on pytrees of JAX arrays.

Each rank computes gradients on its shard of the global batch; `tree_average` averages the
gradient pytree over the ranks with one fused all-reduce per fusion buffer
(`GradSync.sync`). On CPU nothing is copied on the way: the arrays are read in place through
DLPack, and the averages land in new 64-byte-aligned buffers that JAX adopts as its arrays
(JAX arrays are immutable, so results are new arrays; a bfloat16 leaf costs one bitcast).
`tree_broadcast` starts every replica from rank 0's parameters.

Example::

    comm = collectives.init()
    sync = collectives.GradSync(comm)
    params = tree_broadcast(params, comm)
    for step, batch in enumerate(shards):
        grads = tree_average(jax.grad(loss)(params, batch), sync)
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
"""
from __future__ import annotations

import jax

from ..communicator import Communicator
from ..gradsync import GradSync, broadcast_parameters

__all__ = ["tree_average", "tree_broadcast"]


def tree_average(grads, sync: GradSync):
    """`grads` (a pytree of arrays) averaged over the ranks of `sync`'s communicator, with
    its algorithm, compression and fusion; a pytree of new JAX arrays of the same structure."""
    leaves, structure = jax.tree_util.tree_flatten(grads)
    return jax.tree_util.tree_unflatten(structure, sync.sync(leaves))


def tree_broadcast(tree, comm: Communicator, *, root: int = 0):
    """Rank `root`'s pytree on every rank, bit for bit (`broadcast_parameters`)."""
    leaves, structure = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(structure, broadcast_parameters(leaves, comm, root=root))
