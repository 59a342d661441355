"""Sharded data parallelism in a few lines: each rank updates 1/size of the weights.

Run: mpiexec -n 4 python examples/sharded_sgd.py

Every rank computes gradients on its own batch; `ShardedSync.reduce` reduce-scatters their
average, the rank updates only its shard of the weights (its optimizer state would be 1/4
of the whole), and `ShardedSync.gather` all-gathers the updated shards into everyone's
weights.
"""
import numpy as np

import collectives

comm = collectives.init()
rng = np.random.default_rng(comm.rank)
truth = rng.standard_normal(32) if comm.rank == 0 else np.empty(32)
truth = comm.broadcast(truth, root=0)
w = np.zeros(32)
sync = collectives.ShardedSync(comm, [w])
for step in range(100):
    x = rng.standard_normal((64, 32))
    y = x @ truth
    grad = x.T @ (x @ w - y) / len(x)
    shard = sync.shard()
    shard -= 0.1 * sync.reduce([grad])
    sync.gather(shard)
if comm.rank == 0:
    print(f"distance to the truth after 100 steps: {np.linalg.norm(w - truth):.2e}")
