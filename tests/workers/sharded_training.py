"""Sharded data parallelism (collectives.ShardedSync) against plain data parallelism.

Usage: mpiexec -n P python -m tests.workers.sharded_training
A least-squares model (two weight arrays whose total size no rank count divides) trained
STEPS steps with SGD on every rank's own batch: once with the gradients all-reduced (plain
data parallelism), once sharded (reduce-scatter, update the shard, all-gather). The weights
must agree within 1e-5 and be identical on every rank.
"""
from __future__ import annotations

import threading

import numpy as np

import collectives
from collectives import ShardedSync
from tests.workers.common import Tally, check_refused_on_one_rank, digest, everyone

STEPS = 30
LR = 0.05
FEATURES = (7, 3)  # weights of shape (7, 3) and a bias of 3: 24 values
OTHERS_FP16 = "has algorithm='auto', compression='fp16', deterministic=False"


def batch(rank: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1000 * step + rank)
    x = rng.standard_normal((16, FEATURES[0]))
    truth = np.arange(FEATURES[0] * FEATURES[1]).reshape(FEATURES) / 10.0
    return x, x @ truth + 0.5 + 0.01 * rng.standard_normal((16, FEATURES[1]))


def gradients(w: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    error = x @ w + b - y
    return [x.T @ error / len(x), error.mean(axis=0)]


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    plain = [np.zeros(FEATURES), np.zeros(FEATURES[1])]
    sharded = [np.zeros(FEATURES), np.zeros(FEATURES[1])]
    sync = ShardedSync(comm, sharded)
    for step in range(STEPS):
        x, y = batch(comm.rank, step)
        averaged = comm.allreduce_many(gradients(*plain, x, y), op="avg")
        for p, g in zip(plain, averaged):
            p -= LR * g
        shard = sync.shard()
        shard -= LR * sync.reduce(gradients(*sharded, x, y))
        sync.gather(shard)
    difference = max(float(np.abs(a - b).max()) for a, b in zip(plain, sharded))
    tally.check(difference <= 1e-5, f"sharded differs from plain by {difference:.2e}")
    tally.check(len(set(everyone(tuple(digest(a) for a in sharded)))) == 1,
                "the sharded weights differ between ranks")
    loss = float(np.mean((batch(0, STEPS)[0] @ sharded[0] + sharded[1] - batch(0, STEPS)[1]) ** 2))
    tally.check(loss < 1.0, f"the model did not learn: loss {loss:.3f}")
    check_refusals(comm, sync, tally)
    check_review_21(comm, tally)
    check_shard_from_another_thread(comm, tally)
    check_reduce_beside_gather(comm, tally)
    tally.finish()


def check_review_21(comm, tally) -> None:
    """The twenty-first review: compression rounded the parameters themselves to 16 bits
    at every gather (1e-4 steps on 1.0 never moved it); ranks whose parameters had one
    total size in other shapes or order mixed them silently; a read-only parameter failed
    in gather with NumPy's message, half of the update written."""
    for compression in ("fp16", "bf16"):
        w = np.ones(10, np.float32)
        sync = ShardedSync(comm, [w], compression=compression)
        shard = sync.shard()
        shard -= 1e-4
        sync.gather(shard)
        tally.check(bool((w == np.float32(1) - np.float32(1e-4)).all()),
                    f"{compression}: a gather rounded the parameters: {w[:3]}")
    last = comm.rank == comm.size - 1
    weight, bias = np.zeros(6), np.zeros(4)
    try:
        ShardedSync(comm, [bias, weight] if last else [weight, bias])
        tally.check(comm.size == 1, "parameters in another order on one rank were taken")
    except collectives.MismatchError as error:
        tally.check("differ in shapes, order or dtype" in str(error), f"order: {error}")
    # Two layouts of one crc32 (found by brute force; the fifty-eighth review): rank 0's
    # bias took another rank's weights, both said OK.
    sizes = (22492, 277508) if comm.rank == 0 else (206236, 93764)
    try:
        ShardedSync(comm, [np.zeros(n, np.float32) for n in sizes])
        tally.check(comm.size == 1, "layouts of one crc32 were taken as one")
    except collectives.MismatchError as error:
        tally.check("differ in shapes, order or dtype" in str(error), f"crc32 twins: {error}")
    frozen = np.zeros(4)
    frozen.flags.writeable = not last
    try:
        ShardedSync(comm, [np.zeros(6), frozen])
        tally.check(not last, "a read-only parameter was taken")
    except (ValueError, collectives.MismatchError) as error:
        expected = ValueError if last else collectives.MismatchError
        tally.check(isinstance(error, expected) and "params[1] is read-only" in str(error),
                    f"read-only: {error!r}")
    for options, said in ((dict(algorithm="bogus" if last else "ring"), "unknown algorithm"),
                          (dict(algorithm="native", compression="fp16"), "needs a plan"),
                          (dict(algorithm="ring", compression="fp16", dtype=np.int32),
                           "needs floating-point arrays"),
                          # (every rank is told every rank's options: the 102nd review)
                          (dict(compression="fp16" if last else None), OTHERS_FP16),
                          # the same options, spelled otherwise: refused by repr (101st review)
                          (dict(algorithm="auto" if last else None), "no error"),
                          (dict(algorithm=np.str_("ring") if last else "ring"), "no error")):
        dtype = options.pop("dtype", np.float64)
        try:  # were taken, and refused at the first reduce, after a step's work
            ShardedSync(comm, [np.zeros(4, dtype)], **options)
            alone = comm.size == 1 and said == OTHERS_FP16
            ring_here = not last and options == {"algorithm": "ring"}
            tally.check(alone or said == "no error" or ring_here, f"{options} taken")
        except (TypeError, ValueError, collectives.MismatchError) as error:
            tally.check(said in str(error), f"{options}: {error!r}")
    tied = np.ones((2, 2))  # an embedding and its head: the first use's update was lost
    try:
        ShardedSync(comm, [tied, tied.T if last else np.ones((2, 2))])
        tally.check(not last, "tied parameters were taken")
    except (ValueError, collectives.MismatchError) as error:
        expected = ValueError if last else collectives.MismatchError
        tally.check(isinstance(error, expected) and "params[0] and params[1] share memory"
                    in str(error), f"tied: {error!r}")
    y = comm.allreduce(np.ones(2))
    tally.check(bool((y == comm.size).all()), "a collective after the refusals")


def check_refusals(comm, sync, tally) -> None:
    """Gradients or a shard of another dtype were cast silently (float64 into float16
    overflows); a non-array, one array or a dict gave an unrelated TypeError. Refused by
    name, on every rank."""
    lo, hi = sync.bounds
    for what, call, said in (
            ("float32 grads", lambda: sync.reduce([g.astype(np.float32) for g in sync.params]),
             "grads must have the parameters' dtype float64, got ['float32']"),
            ("float32 shard", lambda: sync.gather(np.zeros(hi - lo, np.float32)),
             "shard must have the parameters' dtype float64, got float32"),
            ("list params", lambda: ShardedSync(comm, [[1.0, 2.0]]),
             "params[0] must be a NumPy or CuPy array"),
            # (said "grads[0] must be a NumPy or CuPy array ... wrap it with np.asarray")
            ("one array", lambda: sync.reduce(sync.params[1]),
             "ShardedSync.reduce takes a list of arrays, got numpy.ndarray: pass [x]"),
            ("a dict", lambda: ShardedSync(comm, {"w": np.zeros(3)}),
             "ShardedSync takes a list of arrays, got builtins.dict")):
        try:
            call()
            tally.check(False, f"{what}: accepted")
        except TypeError as error:
            tally.check(said in str(error), f"{what}: {error}")
    # Wrong on one rank only: refused there, MismatchError at once on the others (they
    # waited out the timeout, and the communicator broke), which stay usable.
    last = comm.rank == comm.size - 1
    for what, call in (
            ("float32 grads on one rank", lambda: sync.reduce(
                [g.astype(np.float32 if last else g.dtype) for g in sync.params])),
            ("short shard on one rank", lambda: sync.gather(
                np.zeros(hi - lo - last, np.float64))),
            ("None on one rank", lambda: sync.reduce(None if last else sync.params))):
        check_refused_on_one_rank(tally, what, call, last)
    shard = sync.reduce(sync.params)
    tally.check(shard.shape == (hi - lo,), f"a reduce after the refusals: {shard.shape}")
    before = [p.copy() for p in sync.params]  # a parameter made read-only since, on one
    sync.params[1].flags.writeable = not last  # rank: it wrote params[0] there, then raised
    check_refused_on_one_rank(tally, "a parameter made read-only on one rank",
                              lambda: sync.gather(np.zeros(hi - lo)), last)
    sync.params[1].flags.writeable = True
    tally.check(all(map(np.array_equal, before, sync.params)), "a refused gather wrote")


def check_shard_from_another_thread(comm, tally) -> None:
    """shard() packed into the buffer reduce() and gather() send from and unpack: called
    on another thread, it gave wrong gradients (the parameters' values) and lost updates
    (the eighty-second review)."""
    w = np.full(100_000, -1.0)
    sync = ShardedSync(comm, [w])
    lo, hi = sync.bounds
    stop = threading.Event()
    reader = threading.Thread(target=lambda: [sync.shard() for _ in iter(stop.is_set, True)])
    reader.start()
    try:
        for i in range(20):
            g = sync.reduce([np.full(w.size, float(comm.rank + i))])
            tally.check(bool((g == (comm.size - 1) / 2 + i).all()), f"reduce {i} beside shard()")
            sync.gather(np.full(hi - lo, float(i)))
            tally.check(bool((w == i).all()), f"gather {i} beside shard()")
    finally:
        stop.set()
        reader.join()


def check_reduce_beside_gather(comm, tally) -> None:
    """One step's gather on one thread beside the next step's reduce on another: both
    packed into one buffer of the ShardedSync, and returned each other's data (the 98th
    review: 5-23 of 60 reduces wrong). A call may raise MismatchError where the threads
    pair differently; a call that returns is right."""
    w = np.zeros(1 << 16, np.float32)
    sync = ShardedSync(comm, [w])
    lo, hi = sync.bounds
    want = np.float32(1000 + (comm.size - 1) / 2)
    wrong = []

    def reduces():
        for i in range(30):
            try:
                g = sync.reduce([np.full(w.size, 1000.0 + comm.rank, np.float32)])
            except collectives.MismatchError:
                continue
            if not (g == want).all():
                wrong.append(f"reduce {i}: {np.unique(g)[:3]}")

    def gathers():
        for i in range(30):
            try:
                sync.gather(np.full(hi - lo, 7.0, np.float32))
            except collectives.MismatchError:
                continue
            if not (w == 7).all():
                wrong.append(f"gather {i}: {np.unique(w)[:3]}")

    threads = [threading.Thread(target=f, name=f.__name__) for f in (reduces, gathers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    tally.check(not wrong, lambda: f"reduce beside gather: {wrong[:4]}")
    tally.check(len(sync._idle) <= 1, f"{len(sync._idle)} buffers kept")  # (101st review)


if __name__ == "__main__":
    main()
