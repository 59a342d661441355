"""JAX glue: data-parallel training over our collectives, on pytrees of JAX arrays.

Each rank computes gradients on its shard of the global batch; `tree_average` averages the
gradient pytree over the ranks with one fused all-reduce per fusion buffer
(`GradSync.sync`). On CPU nothing is copied on the way: the arrays are read in place through
DLPack, and the averages land in new 64-byte-aligned buffers that JAX adopts as its arrays
(JAX arrays are immutable, so results are new arrays, on their leaves' devices; a bfloat16
leaf costs two bitcast copies, in and out).
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

import hashlib

import jax
import numpy as np

from ..communicator import Communicator
from ..errors import MismatchError, outliers
from ..gradsync import GradSync, broadcast_parameters, check_communicator

__all__ = ["tree_average", "tree_broadcast"]


def tree_average(grads, sync: GradSync):
    """`grads` (a pytree of arrays) averaged over the ranks of `sync`'s communicator, with
    its algorithm, compression and fusion; a pytree of the same structure, its JAX leaves
    new JAX arrays (NumPy leaves are averaged in place and returned, as by GradSync.sync).
    MismatchError on every rank where the ranks' leaves differ in their paths (see
    `_flattened`). Not inside jax.jit: traced leaves are refused by name."""
    if not isinstance(sync, GradSync):  # (no communicator to refuse with: this rank only)
        raise TypeError(f"tree_average takes a collectives.GradSync, got "
                        f"{type(sync).__module__}.{type(sync).__qualname__}")
    leaves, structure = _flattened(grads, sync.comm, "tree_average")
    return jax.tree_util.tree_unflatten(structure, sync.sync(leaves))


def tree_broadcast(tree, comm: Communicator, *, root: int = 0):
    """Rank `root`'s pytree on every rank, bit for bit (`broadcast_parameters`); the ranks'
    leaves must have the same paths (MismatchError on every rank otherwise)."""
    check_communicator(comm)  # (this rank only: there is no communicator to refuse with)
    leaves, structure = _flattened(tree, comm, "tree_broadcast")
    return jax.tree_util.tree_unflatten(structure, broadcast_parameters(leaves, comm, root=root))


def _flattened(tree, comm: Communicator, what: str) -> tuple:
    """(leaves, treedef) of `tree` once every rank's has one structure. The agreement
    compares leaves' shapes and dtypes, not where they hang: leaves of the same shapes
    under other keys would be combined. One small all-gather of a digest of the leaves'
    count and key paths tells every rank (paths, not the treedef's text, which holds
    addresses of functions in static fields). The containers' types and None nodes are not
    compared: a tuple and a list of the same leaves pass, as do {"w": x, "opt": None} and
    {"w": x}, {0: x} and [x], two namedtuples of one field name; each rank gets its own
    structure back. A tree JAX cannot flatten on one rank (dict keys it cannot sort)
    is refused there, MismatchError on the others (they waited out the timeout; the
    fifty-eighth review)."""
    with comm.refusing("allgather"):
        leaves, structure = jax.tree_util.tree_flatten(tree)
        paths = [jax.tree_util.keystr(path)
                 for path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    text = f"{len(paths)}\0" + "\0".join(paths)  # (a bare leaf's path is "": count them)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    digests = comm.allgather(np.frombuffer(digest, np.int64))
    if not (digests == digests[0]).all():
        shown = ", ".join(paths[:8]) + (", ..." if len(paths) > 8 else "")
        raise MismatchError(f"{what}: the ranks' pytrees differ in structure: "
                            f"{outliers(digests)} (rank {comm.rank} has leaves {shown})")
    return leaves, structure
