"""Data-parallel training four ways, compared: DDP's own all-reduce, DDP + our hook,
GradSync.attach, DistributedOptimizer; then fp16 compression and GradSync.sync/broadcast.

Usage: mpiexec -n P python -m tests.workers.torch_training      (or torchrun -m ...)
Each way trains the same MLP from the same start on per-rank synthetic data for STEPS steps;
parameters must match DDP's within TOLERANCE and be bit-identical on every rank.
"""
from __future__ import annotations

import itertools
import os
import time

import ml_dtypes
import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

import collectives
from collectives import CollectiveError, gradsync
from collectives.hooks.torch import (DistributedOptimizer, HookState, allreduce_hook,
                                     init_process_group)
from tests.workers.common import Tally, check_refused_on_one_rank, interrupted_after

STEPS = 30
TOLERANCE = 1e-5
BUCKET_BYTES = 16 << 10  # several buckets per step, so hooks fire while backward runs
IN, HIDDEN, OUT, BATCH = 32, 64, 8, 16


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.ReLU(),
                               torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.ReLU(),
                               torch.nn.Linear(HIDDEN, OUT))


def batches(rank: int):
    """STEPS batches of a learnable regression, different on every rank."""
    teacher = torch.Generator().manual_seed(1)
    weights = torch.randn(IN, OUT, generator=teacher)
    data = torch.Generator().manual_seed(100 + rank)
    for _ in range(STEPS):
        x = torch.randn(BATCH, IN, generator=data)
        yield x, x @ weights


def train(comm, way: str, compression: str | None = None) -> tuple[np.ndarray, list[float]]:
    """Flat final parameters and the per-step losses of one way of training."""
    model = make_model()
    if comm.rank != 0:  # replicas start different; DDP and the wrappers must broadcast
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)
    step_model, sync = model, None
    if way in ("ddp", "hook"):
        step_model = DistributedDataParallel(model, bucket_cap_mb=BUCKET_BYTES / 2**20)
        if way == "hook":
            step_model.register_comm_hook(
                HookState(comm, algorithm="ring", compression=compression,
                          error_feedback=compression is not None), allreduce_hook)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    if way == "optimizer":
        optimizer = DistributedOptimizer(optimizer, model, comm, algorithm="halving_doubling",
                                         fusion_bytes=BUCKET_BYTES)
    elif way == "gradsync":
        collectives.broadcast_parameters(model.state_dict(), comm)
        sync = collectives.GradSync(comm, fusion_bytes=BUCKET_BYTES).attach(model)
    losses = []
    for x, y in batches(comm.rank):
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(step_model(x), y)
        loss.backward()
        if sync is not None:
            sync.wait()
        optimizer.step()
        losses.append(loss.item())
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    return flat, losses


class Branches(torch.nn.Module):
    """A layer used on even steps only, and one never used (a conditional branch)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.first, self.last = torch.nn.Linear(IN, HIDDEN), torch.nn.Linear(HIDDEN, OUT)
        self.even, self.never = torch.nn.Linear(HIDDEN, HIDDEN), torch.nn.Linear(HIDDEN, HIDDEN)
        self.step = 0

    def forward(self, x, never: bool = False):
        h = torch.tanh(self.first(x))
        if self.step % 2 == 0:
            h = h + self.even(h)
        if never:  # (then it is used after all)
            h = h + self.never(h)
        self.step += 1
        return self.last(h)


def check_unused_everywhere(comm, tally: Tally) -> None:
    """A gradient no rank made stays None after GradSync.wait(), as under DDP: zeros moved
    the weights through momentum and weight decay (6e-2 from DDP after 4 steps; the
    fifty-fourth review)."""
    results = {}
    for way in ("ddp", "gradsync", "optimizer"):
        model = Branches()
        step_model, sync = model, None
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1)
        if way == "ddp":
            step_model = DistributedDataParallel(model, find_unused_parameters=True)
        elif way == "gradsync":
            sync = collectives.GradSync(comm).attach(model)
        else:
            optimizer = DistributedOptimizer(optimizer, model, comm)
        for x, y in itertools.islice(batches(comm.rank), 6):
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(step_model(x), y).backward()
            if sync is not None:
                sync.wait()
                tally.check(model.never.weight.grad is None, "gradsync: a gradient no rank "
                            f"made is {model.never.weight.grad}")
            optimizer.step()
        results[way] = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).numpy()
    for way in ("gradsync", "optimizer"):
        diff = float(np.abs(results[way] - results["ddp"]).max())
        tally.check(diff <= TOLERANCE, f"{way}, unused layers: {diff:.3g} from DDP")
    # Accumulated while detached, on rank 0 only: a gradient held anywhere is averaged on
    # every rank (counting the hooks' gradients only, the others set theirs back to None:
    # replicas 2.0 apart in 3 steps; the fifty-sixth review).
    model, (x, y) = Branches(), next(batches(comm.rank))
    sync = collectives.GradSync(comm)
    torch.nn.functional.mse_loss(model(x, never=comm.rank == 0), y).backward()
    sync.attach(model)
    torch.nn.functional.mse_loss(model(x), y).backward()
    sync.wait()
    sync.detach()
    grad = model.never.weight.grad
    same = identical(comm, np.full(3, np.nan, np.float32) if grad is None else grad.numpy().ravel()[:3])
    tally.check(grad is not None and same, f"a gradient accumulated on rank 0 only: "
                f"{None if grad is None else 'differs between ranks'}")


def identical(comm, array: np.ndarray) -> bool:
    """Bit-identical on every rank: the max and the min over ranks are both ours."""
    high = comm.allreduce(array, op="max")
    low = comm.allreduce(array, op="min")
    return bool(np.array_equal(high, array) and np.array_equal(low, array))


def check_training(comm, tally: Tally) -> None:
    reference, ddp_losses = train(comm, "ddp")
    tally.check(identical(comm, reference), "DDP's own replicas differ")
    for way in ("hook", "gradsync", "optimizer"):
        before = comm.stats()
        got, losses = train(comm, way)
        calls = sum(s.calls for s in comm.stats().values()) - sum(s.calls for s in before.values())
        tally.check(calls >= STEPS, f"{way}: only {calls} collectives ran in {STEPS} steps")
        diff = float(np.abs(got - reference).max())
        tally.check(diff <= TOLERANCE, f"{way}: parameters differ from DDP's by {diff:.3g}")
        tally.check(identical(comm, got), f"{way}: replicas differ")
    for compression in ("fp16", "bf16"):
        before = comm.stats().get(f"ring+{compression}")
        got, losses = train(comm, "hook", compression)
        calls = comm.stats()[f"ring+{compression}"].calls - (before.calls if before else 0)
        tally.check(calls >= STEPS, f"hook+{compression}: {calls} compressed all-reduces")
        last, ddp_last = np.mean(losses[-5:]), np.mean(ddp_losses[-5:])
        tally.check(last < 1.05 * ddp_last,  # (one rank's data alone trains slower: not 0.7x)
                    f"hook+{compression}: last loss {last:.4g}, DDP's {ddp_last:.4g}")
        tally.check(identical(comm, got), f"hook+{compression}: replicas differ")


def check_sync(comm, tally: Tally) -> None:
    """GradSync.sync over torch (float32, bfloat16), NumPy and a read-only array."""
    r, p = comm.rank, comm.size
    mean = sum(range(p)) / p
    t32 = torch.full((5, 3), float(r))
    t16 = torch.full((7,), float(r), dtype=torch.bfloat16)
    npa = np.full(4, r, np.float64)
    frozen = np.full(3, r, np.float32)
    frozen.flags.writeable = False
    out = collectives.GradSync(comm, algorithm="ring").sync([t32, t16, npa, frozen])
    tally.check(out[0] is t32 and bool((t32 == mean).all()), f"sync torch float32: {t32}")
    tally.check(out[1] is t16 and bool((t16.float() == mean).all()), f"sync bfloat16: {t16}")
    tally.check(out[2] is npa and bool((npa == mean).all()), f"sync numpy: {npa}")
    tally.check(out[3] is not frozen and bool((out[3] == mean).all()) and bool((frozen == r).all()),
                f"sync read-only: returned {out[3]}, input now {frozen}")
    # error feedback names its residuals alike on every rank (it once used id(self): every
    # call raised MismatchError); two GradSyncs keep residuals of their own
    for sync in (collectives.GradSync(comm, compression="fp16", error_feedback=True),
                 collectives.GradSync(comm, compression="bf16", error_feedback=True)):
        for step in range(2):
            grads = [torch.full((6,), r + 0.1 * step), np.full(3, float(r), np.float32)]
            done = sync.sync(grads)
            tally.check(all(bool(np.allclose(np.asarray(g), mean + 0.1 * step * (i == 0),
                                             rtol=1e-2)) for i, g in enumerate(done)),
                        f"sync with error feedback, step {step}: {done}")
    # a leaf that is no array on one rank: refused there, MismatchError on the others (they
    # waited out the timeout), the communicator still usable
    leaf = 1.5 if r == p - 1 else torch.ones(3)
    try:
        collectives.GradSync(comm).sync([leaf])
        tally.check(p == 1 and False, "a float leaf was averaged")
    except (TypeError, collectives.MismatchError) as error:
        expected = TypeError if r == p - 1 else collectives.MismatchError
        tally.check(type(error) is expected and "DLPack" in str(error), f"float leaf: {error!r}")
    tally.check(bool((comm.allreduce(np.ones(2)) == p).all()), "a call after the refusal")
    # a sparse tensor on one rank is refused the same way, by name
    leaf = torch.ones(3).to_sparse() if r == p - 1 else torch.ones(3)
    try:
        collectives.GradSync(comm).sync([leaf])
        tally.check(p == 1 and False, "a sparse leaf was averaged")
    except (TypeError, collectives.MismatchError) as error:
        expected = TypeError if r == p - 1 else collectives.MismatchError
        tally.check(type(error) is expected and "sparse" in str(error),
                    f"sparse leaf: {error!r}")
    tally.check(bool((comm.allreduce(np.ones(2)) == p).all()), "a call after the sparse leaf")
    view = collectives.gradsync.as_array(t16)
    shared = np.shares_memory(view, t16.view(torch.int16).numpy())
    tally.check(view.dtype == ml_dtypes.bfloat16 and shared,
                "as_array(bfloat16 tensor) is not a zero-copy bfloat16 view")
    values = torch.tensor([-0.0, 1.5, float("inf")]) if r == 0 else torch.full((3,), 7.0)
    ints = torch.arange(4) * (10 if r == 0 else -1)
    collectives.broadcast_parameters({"w": values, "n": ints}, comm)
    tally.check(np.array_equal(values.numpy().view(np.uint32),
                               np.array([-0.0, 1.5, np.inf], np.float32).view(np.uint32)),
                f"broadcast floats: {values}")
    tally.check(bool((ints == torch.arange(4) * 10).all()), f"broadcast ints: {ints}")
    # a NumPy integer root, as comm.broadcast takes; a root out of range on one rank only:
    # refused there, MismatchError on the others, the communicator still usable
    last = torch.full((2,), float(r))
    collectives.broadcast_parameters([last], comm, root=np.int64(p - 1))
    tally.check(bool((last == p - 1).all()), f"np.int64 root: {last}")
    try:
        collectives.broadcast_parameters([last], comm, root=p if r == p - 1 else 0)
        tally.check(False, "a root out of range was taken")
    except (ValueError, collectives.MismatchError) as error:
        expected = ValueError if r == p - 1 else collectives.MismatchError
        tally.check(type(error) is expected and "root" in str(error), f"bad root: {error!r}")
    tally.check(bool((comm.allreduce(np.ones(2)) == p).all()), "a call after the bad root")
    # any dtype, bit for bit (a fused sum refused bool masks and quieted signalling NaNs,
    # the root's too)
    mask = torch.tensor([True, False, True]) if r == 0 else torch.zeros(3, dtype=torch.bool)
    bits = np.array([0x7F800001, 0x7FA00000, 0x80000000], np.uint32)
    snan = torch.from_numpy(bits.view(np.float32).copy()) if r == 0 else torch.zeros(3)
    collectives.broadcast_parameters({"mask": mask, "snan": snan}, comm)
    tally.check(mask.tolist() == [True, False, True], f"bool buffer: {mask}")
    tally.check(np.array_equal(snan.numpy().view(np.uint32), bits),
                f"signalling NaN bits: {[hex(b) for b in snan.numpy().view(np.uint32)]}")
    # tied weights (GPT-2's embedding and head): one tensor under two state_dict keys was
    # refused as two outs sharing memory; it is broadcast once
    tied = torch.full((2, 3), float(r + 1))
    both = collectives.broadcast_parameters({"emb.weight": tied, "head.weight": tied}, comm)
    tally.check(bool((tied == 1).all()) and both[0] is tied and both[1] is tied,
                f"tied weights: {tied}")
    # layouts of the root's byte count in other dtypes, keys or ties: float32 bits landed
    # in int32, one mapping's "b" in the other's "a" (the forty-fourth review)
    for what, mine in (
            ("dtype", [np.ones(2, np.float32) if r == 0 else np.zeros(2, np.int32)]),
            ("key order", {"a": np.ones(2), "b": np.ones(2)} if r == 0 else
             {"b": np.zeros(2), "a": np.zeros(2)}),
            ("bytes of one word", [np.full(5 if r == 0 else 6, 7, np.uint8)]),
            ("ties", [tied, tied] if r == 0 else [tied, tied.clone()]),
            # keys other than str and int were compared by type name (the forty-fifth
            # review): flax's tuple keys in another order were swapped silently
            ("tuple key order", {("enc", "w"): np.ones(2), ("dec", "w"): np.ones(2)}
             if r == 0 else {("dec", "w"): np.zeros(2), ("enc", "w"): np.zeros(2)}),
            ("np.int64 key order", {np.int64(0): np.ones(2), np.int64(1): np.ones(2)}
             if r == 0 else {np.int64(1): np.zeros(2), np.int64(0): np.zeros(2)})):
        before = [np.array(a, copy=True) for a in (mine.values() if isinstance(mine, dict)
                                                    else mine)]
        try:
            collectives.broadcast_parameters(mine, comm)
            tally.check(p == 1, f"broadcast_parameters of another {what} accepted")
        except collectives.MismatchError as error:
            after = mine.values() if isinstance(mine, dict) else mine
            tally.check("differ from the root's (rank 0)" in str(error)
                        and all(np.array_equal(b, np.asarray(a)) for b, a in zip(before, after)),
                        f"broadcast_parameters of another {what}: {error}")
    # one key as int and as np.int64 (nested too); a set of strings, whose repr's order
    # follows each process's hash seed: the same keys
    for same in ({0: np.full(2, float(r))} if r == 0 else {np.int64(0): np.full(2, float(r))},
                 {("layer", 0 if r == 0 else np.int64(0)): np.full(2, float(r))},
                 {frozenset(f"w{i}" for i in range(9)): np.full(2, float(r))}):
        collectives.broadcast_parameters(same, comm)
        tally.check(all((v == 0).all() for v in same.values()), f"the same keys: {same}")
    # keys the ranks cannot compare (a repr with an address, or an order of its own):
    # tuples holding functions in another order were swapped silently (the forty-seventh
    # and forty-ninth reviews); refused on every rank
    odd_keys = {("enc", main): np.ones(2), ("dec", main): np.ones(2)}
    try:
        collectives.broadcast_parameters(odd_keys if r == 0 else dict(reversed(
            odd_keys.items())), comm)
        tally.check(False, "keys holding functions accepted")
    except TypeError as error:
        tally.check("cannot compare a key of type function" in str(error),
                    f"keys holding functions: {error}")
    class Shown(str):  # its own repr: keys that differed passed as one (the fiftieth review)
        def __repr__(self) -> str:
            return "K"

    class Missing(dict):  # a lookup that fails on one rank left the others waiting
        def __getitem__(self, key):
            raise KeyError(key)

    for what, mine, refused in (
            ("a str subclass's key", {Shown("a"): np.ones(2)}, TypeError),
            ("a mapping whose lookup fails on one rank",
             Missing(a=np.ones(2)) if r == p - 1 else {"a": np.ones(2)}, ValueError)):
        try:
            collectives.broadcast_parameters(mine, comm)
            tally.check(False, f"{what}: accepted")
        except (TypeError, ValueError, collectives.MismatchError) as error:
            expected = refused if r == p - 1 or refused is TypeError else \
                collectives.MismatchError
            tally.check(type(error) is expected, f"{what}: {error!r}")
    w = np.zeros((2, 2))  # w and w.T on one rank: the root's second array landed over w
    try:
        collectives.broadcast_parameters([w, w.T] if r == p - 1 else [w, np.zeros((2, 2))],
                                         comm)
        tally.check(False, "arrays sharing memory accepted")
    except (ValueError, collectives.MismatchError) as error:
        expected = ValueError if r == p - 1 else collectives.MismatchError
        tally.check(type(error) is expected and "share memory" in str(error),
                    f"arrays sharing memory: {error!r}")


def check_two_hooks(comm, tally: Tally) -> None:
    """Two DDP models, each with its HookState(error_feedback=True): both named their
    residuals "ddp-bucket-0", so model A's fp16 rounding error went into model B's
    gradients (exact zeros came back as 9.3e-06)."""
    torch.manual_seed(0)
    a, b = (DistributedDataParallel(torch.nn.Linear(8, 1, bias=False)) for _ in range(2))
    for model in (a, b):
        model.register_comm_hook(HookState(comm, compression="fp16", error_feedback=True),
                                 allreduce_hook)
    x = torch.ones(1, 8)
    for step in range(2):
        for q in (*a.parameters(), *b.parameters()):
            q.grad = None
        (a(x).sum() * (1.0 / 3.0 + 1e-4 * comm.rank)).backward()  # not exact in fp16
        (b(x).sum() * 0.0).backward()
        grad = b.module.weight.grad
        tally.check(bool((grad == 0).all()), f"step {step}: model B's zero gradients: {grad}")
    comm.clear_error_feedback()


def check_hook_deterministic(tally: Tally) -> None:
    """Deterministic and compressed, the hook scaled its whole bucket by one factor: a
    gradient's bits depended on DDP's bucketing, a 1e-6 one beside a 1e4 one 29% off (the
    eighty-fifth review). Each gradient now gives reference_reduce's bits."""
    os.environ["COLLECTIVES_DETERMINISTIC"] = "1"
    try:
        comm = collectives.init()
    finally:
        del os.environ["COLLECTIVES_DETERMINISTIC"]

    def gradients(rank: int) -> list[torch.Tensor]:
        rng = np.random.default_rng(rank)
        return [torch.from_numpy((rng.standard_normal(16) * scale).astype(np.float32))
                for scale in (1e-6, 1e4)]

    class Weighted(torch.nn.Module):  # each parameter's gradient is its factor: one bucket
        def __init__(self):
            super().__init__()
            self.weights = torch.nn.ParameterList([torch.zeros(16), torch.zeros(16)])

        def forward(self, factors):
            return sum((w * f).sum() for w, f in zip(self.weights, factors))

    model = Weighted()
    ddp = DistributedDataParallel(model)
    ddp.register_comm_hook(HookState(comm, compression="fp16"), allreduce_hook)
    ddp(gradients(comm.rank)).backward()
    for i, q in enumerate(model.weights):
        want = collectives.reference_reduce([gradients(r)[i].numpy() for r in range(comm.size)],
                                            "avg", compression="fp16")
        tally.check(np.array_equal(q.grad.numpy(), want),
                    f"the hook, deterministic, gradient {i}: {q.grad[:2]} against {want[:2]}")
    comm.close()


def check_sync_feedback_per_layout(comm, tally: Tally) -> None:
    """GradSync.sync kept one residual for all its calls: a call of another size between
    two calls of one tree dropped that tree's residual (the twenty-first review, D5).
    Each layout now has its own: the interrupted sequence gives the uninterrupted's bits."""
    # contributions of about +-1000 round by up to 0.25 in fp16; they cancel in pairs (an
    # odd rank out adds 0.1) so the mean is small enough for fp16 to show the feedback
    r, paired = comm.rank, comm.size - comm.size % 2
    a = np.full(1000, 1000.3 * (-1) ** r + 0.1 * r if r < paired else 0.1, np.float32)
    alone = collectives.GradSync(comm, compression="fp16", error_feedback=True)
    mixed = collectives.GradSync(comm, compression="fp16", error_feedback=True)
    want = [alone.sync([a.copy()])[0] for _ in range(2)]
    first = mixed.sync([a.copy()])[0]
    mixed.sync([np.ones(10, np.float32)])
    second = mixed.sync([a.copy()])[0]
    tally.check(np.array_equal(first, want[0]) and np.array_equal(second, want[1]),
                f"another layout between two syncs: {second[:2]} against {want[1][:2]}")
    tally.check(comm.size == 1 or not np.array_equal(want[0], want[1]),
                "error feedback changed nothing")
    comm.clear_error_feedback()


def check_wait_settles_every_bucket(comm, tally: Tally) -> None:
    """GradSync.wait raised the first bucket's MismatchError and left the later buckets'
    all-reduces running: they wrote p.grad after it raised (the twenty-first review, D1)."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(1000, 1000) for _ in range(4)]
    head = torch.nn.Linear(1000, 4)
    sync = collectives.GradSync(comm, fusion_bytes=4 << 20).attach(
        torch.nn.Sequential(*layers, head))
    if comm.rank == comm.size - 1:
        head.double()  # after attach: its bucket, the first launched, disagrees
    body = torch.nn.Sequential(*layers)(torch.randn(8, 1000))
    head(body.to(head.weight.dtype)).sum().backward()
    try:
        sync.wait()
        tally.check(comm.size == 1, "wait returned although the ranks' buckets disagree")
    except collectives.MismatchError:
        pass
    for layer in layers:
        layer.weight.grad.fill_(100.0 + comm.rank)
    time.sleep(0.5)
    touched = [float((layer.weight.grad != 100.0 + comm.rank).sum()) for layer in layers]
    tally.check(touched == [0.0] * len(layers), f"written after wait raised: {touched}")
    sync.detach()
    y = comm.allreduce(np.ones(2, np.float32))
    tally.check(bool((y == comm.size).all()), "a collective after wait raised")


def check_interrupted_wait(comm, tally: Tally) -> None:
    """An interrupt in GradSync.wait() (the last rank late), then wait() again: the retry
    issued the step's all-reduces a second time, and every later step paired one rank's
    calls with the next step's of the others (wrong gradients on every rank; the
    seventy-sixth review). The retry now finishes the interrupted step."""
    r, p = comm.rank, comm.size
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    sync = collectives.GradSync(comm, fusion_bytes=64).attach(model)
    for step in range(3):
        want = _averaged_here(comm, sync, model, step)
        _backward(model, r, step)
        if step == 0 and r == p - 1 and p > 1:
            time.sleep(1.0)
        if step == 0 and r == 0 and p > 1:
            tally.check(interrupted_after(0.3, sync.wait),
                        "wait() returned before the late rank came")
            try:
                model(torch.ones(1, 4)).sum().backward()
                tally.check(False, "a backward after an interrupted wait() went through")
            except CollectiveError as error:
                tally.check("a wait() was interrupted" in str(error), f"backward: {error}")
        if step == 1 and r == 0:  # an interrupt as the finished step ends (the 79th review:
            real = gradsync._Step  # the retry launched every bucket again)

            class Interrupted(real):
                def __init__(self, buckets: int):
                    gradsync._Step = real
                    raise KeyboardInterrupt("as the step ends")

            gradsync._Step = Interrupted
            try:
                sync.wait()
                tally.check(False, "the interrupt as the step ends did not land")
            except KeyboardInterrupt:
                pass
        sync.wait()
        got = [q.grad for q in model.parameters()]
        tally.check(all(torch.allclose(g, w) for g, w in zip(got, want)),
                    f"step {step} after an interrupted wait(): {got} against {want}")
    sync.detach()


def _backward(model: torch.nn.Module, rank: int, step: int) -> None:
    model.zero_grad(set_to_none=True)
    model(torch.full((1, 4), 10.0 * step + rank + 1)).sum().backward()


def _averaged_here(comm, sync, model: torch.nn.Module, step: int) -> list[torch.Tensor]:
    """The gradients `sync` must give at `step`, the average of every rank's `_backward`,
    made here with the hooks off (detach; attach again after)."""
    sync.detach()
    each = []
    for rank in range(comm.size):
        _backward(model, rank, step)
        each.append([q.grad.clone() for q in model.parameters()])
    sync.attach(model)
    return [sum(grads) / comm.size for grads in zip(*each)]


def check_refused_bucket(comm, tally: Tally) -> None:
    """A gradient set by hand that no all-reduce takes (sparse), on one rank, in the second
    of three buckets: that rank stopped launching, the others' surplus buckets paired with
    its next step's (silently), and every later step raised MismatchError (the seventy-sixth
    review). It now refuses the rest of its step: every rank raises, and stays in step."""
    r, p = comm.rank, comm.size
    model = torch.nn.Sequential(*(torch.nn.Linear(4, 4, bias=False) for _ in range(3)))
    sync = collectives.GradSync(comm, fusion_bytes=64).attach(model)  # a bucket per layer
    refused_here = r == p - 1
    for step in range(2):
        want = _averaged_here(comm, sync, model, step)
        if step == 0 and refused_here:
            model.zero_grad(set_to_none=True)
            model[1].weight.grad = torch.eye(4).to_sparse()
        else:
            _backward(model, r, step)
        try:
            sync.wait()
            tally.check(step == 1 or p == 1, f"step {step}: wait() took a sparse gradient")
        except (TypeError, collectives.MismatchError) as error:
            expected = TypeError if refused_here else collectives.MismatchError
            tally.check(step == 0 and type(error) is expected, f"step {step}: {error!r}")
    got = [q.grad for q in model.parameters()]
    tally.check(all(torch.allclose(g, w) for g, w in zip(got, want)),
                f"the step after a refused one: {got} against {want}")
    sync.detach()


def check_hook_failure(comm, tally: Tally) -> None:
    """A failed all-reduce in the DDP hook reaches backward() as an error naming it (the
    ranks disagree on compression: MismatchError everywhere, the communicator usable). It
    came as "Unable to cast <the message> to Tensor": DDP's reducer took the exception set
    on the hook's future for a value (the eighteenth review)."""
    if comm.size == 1:
        return  # one rank cannot disagree
    model = DistributedDataParallel(torch.nn.Linear(4, 2))
    state = HookState(comm, compression="fp16" if comm.rank == 0 else None)
    model.register_comm_hook(state, allreduce_hook)
    try:
        model(torch.ones(2, 4)).sum().backward()
        tally.check(False, "backward returned although the ranks' hooks disagree")
    except RuntimeError as error:
        tally.check("MismatchError" in str(error) and "Unable to cast" not in str(error),
                    f"the hook's failure reached backward as {str(error)[:300]}")
    y = comm.allreduce(np.ones(2, np.float32))
    tally.check(bool((y == comm.size).all()), "a collective after the hook's failure")


class _Chain(torch.nn.Module):
    """b(a(x)): a registered first, b's gradient ready first."""

    def __init__(self):
        super().__init__()
        self.a, self.b = (torch.nn.Linear(64, 64, bias=False) for _ in range(2))

    def forward(self, x):
        return self.b(self.a(x))


def check_rebuilt_buckets(comm, tally: Tally) -> None:
    """DDP rebuilds its buckets after the first step: bucket 0 held [a, b], then [b, a] (the
    order gradients came in), the same size. The residual named by the bucket's index
    alone carried a's rounding error into b's gradient, which is exactly zero here."""
    torch.manual_seed(0)
    chain = _Chain()
    a, b = chain.a, chain.b
    with torch.no_grad():
        a.weight.zero_()  # b's gradient, d/dW_b of sum(W_b a(x)), is then exactly zero
    model = DistributedDataParallel(chain, bucket_cap_mb=0.02)
    model.register_comm_hook(HookState(comm, compression="fp16", error_feedback=True),
                             allreduce_hook)
    x = torch.ones(1, 64)
    for step in range(3):
        for q in (a.weight, b.weight):
            q.grad = None
        (model(x).sum() * (1.0 / 3.0 + 1e-4 * comm.rank)).backward()  # a's: not exact in fp16
        tally.check(bool((b.weight.grad == 0).all()),
                    f"step {step}: b's zero gradient got {b.weight.grad.abs().max()}")
    comm.clear_error_feedback()


def check_attach_refusals(comm, tally: Tally) -> None:
    """A layer frozen on one rank only: attach bucketed each rank's own parameters, so a
    rank averaged its gradients with another parameter's (or waited for buckets no one
    sent). And a gradient accumulated twice in one backward launched its bucket at the
    first, then blamed a missing wait()."""
    r, p = comm.rank, comm.size
    model = torch.nn.Sequential(*(torch.nn.Linear(3, 3) for _ in range(3)))
    if r == p - 1:
        model[1].requires_grad_(False)
    try:
        collectives.GradSync(comm, fusion_bytes=64).attach(model)
        tally.check(p == 1, "attach with a layer frozen on one rank only went through")
    except ValueError as error:
        tally.check("parameters that require grad differ" in str(error), f"attach: {error}")
    # The seventy-sixth review: each rank froze another layer of the same shape; the layouts
    # matched and the ranks averaged unrelated gradients. Names are compared too.
    swapped = torch.nn.Sequential(*(torch.nn.Linear(4, 4, bias=False) for _ in range(2)))
    swapped[r % 2].requires_grad_(False)
    try:
        collectives.GradSync(comm).attach(swapped).detach()
        tally.check(p == 1, "attach with other layers frozen on other ranks went through")
    except ValueError as error:
        tally.check(f"parameter #0 in bucket order (the reverse of registration): on rank {r} "
                    f"{1 - r % 2}.weight (4, 4) torch.float32" in str(error),
                    f"attach, other layers frozen: {error}")
    # another fusion_bytes on one rank was said to be parameters that differ, naming one
    # that did not (the seventy-ninth review)
    try:
        collectives.GradSync(comm, fusion_bytes=64 if r == 0 else 1 << 20).attach(
            torch.nn.Sequential(*(torch.nn.Linear(4, 4) for _ in range(3)))).detach()
        tally.check(p == 1, "attach with another fusion_bytes on rank 0 went through")
    except ValueError as error:
        tally.check("the ranks' fusion_bytes differ (it makes the buckets, and every "
                    "bucket's call carries it): rank 0 has fusion_bytes 64" in str(error),
                    f"attach, fusion_bytes: {error}")
    # Refused on one rank only: the others waited out the timeout in attach's all-gather,
    # and the communicator broke (the twenty-first review, D4)
    refused_here = comm.rank == p - 1
    one = torch.nn.Embedding(5, 3, sparse=refused_here)
    try:
        collectives.GradSync(comm).attach(one).detach()
        tally.check(p == 1, "attach with a module refused on one rank went through")
    except (ValueError, collectives.MismatchError) as error:
        expected = ValueError if refused_here else collectives.MismatchError
        tally.check(type(error) is expected, f"refused on one rank: {error!r}")
    y = comm.allreduce(np.ones(2, np.float32))
    tally.check(bool((y == p).all()), "a collective after attach was refused on one rank")
    # The sixty-fifth review: these raised on one rank before the refusal, so the others
    # waited out the timeout (a call the user never made, for DistributedOptimizer).
    model = torch.nn.Linear(3, 2)
    for what, call in (
            ("sync(None)", lambda: collectives.GradSync(comm).sync(
                None if refused_here else [np.ones(2, np.float32)])),
            ("attach(None)", lambda: collectives.GradSync(comm).attach(
                None if refused_here else model).detach()),
            ("DistributedOptimizer(compression='fp61')", lambda: DistributedOptimizer(
                torch.optim.SGD(model.parameters(), lr=0.1), model, comm,
                compression="fp61" if refused_here else None).sync.detach())):
        check_refused_on_one_rank(tally, f"{what} on one rank", call, refused_here)
    y = comm.allreduce(np.ones(2, np.float32))
    tally.check(bool((y == p).all()), "a collective after the refusals on one rank")
    # the eighteenth review: a raw BufferError in backward; "unsupported dtype" at wait()
    for refused, said in ((torch.nn.Embedding(5, 3, sparse=True), "makes sparse gradients"),
                          (torch.nn.Linear(3, 3, dtype=torch.complex64),
                           "parameter weight is torch.complex64")):
        try:
            collectives.GradSync(comm).attach(refused)
            tally.check(False, f"attach took {refused}")
        except (TypeError, ValueError) as error:
            tally.check(said in str(error), f"attach({refused}): {error}")
    frozen = torch.nn.Embedding(5, 3, sparse=True).requires_grad_(False)
    flagged = torch.nn.Linear(3, 3)
    flagged.sparse = True  # an attribute of another meaning: no sparse gradients
    for accepted in (torch.nn.Sequential(frozen, torch.nn.Linear(3, 3)), flagged):
        try:
            collectives.GradSync(comm).attach(accepted).detach()
        except (TypeError, ValueError) as error:
            tally.check(False, f"attach refused {accepted}: {error}")
    layer = torch.nn.Linear(3, 3)
    sync = collectives.GradSync(comm, fusion_bytes=1 << 20).attach(layer)
    x = torch.ones(2, 3)
    try:  # a second backward before wait()
        layer(x).sum().backward()
        layer(x).sum().backward()
        tally.check(False, "a second backward into a launched bucket went unnoticed")
    except CollectiveError as error:
        tally.check("call GradSync.wait() after every backward" in str(error),
                    f"second backward: {error}")
    sync.wait()  # refused before autograd wrote: the first backward's average, every rank
    first = [torch.full((3, 3), 2.0), torch.full((3,), 2.0)]  # d sum(Wx + b) over 2 rows
    tally.check(all(torch.equal(q.grad, want) for q, want in zip(layer.parameters(), first)),
                f"gradients after a refused second backward: {[q.grad for q in layer.parameters()]}")
    for q in layer.parameters():
        q.grad = None

    class Twice(torch.autograd.Function):  # a backward that accumulates into w twice
        @staticmethod
        def forward(ctx, w):
            return w * 1.0

        @staticmethod
        def backward(ctx, grad):
            with torch.enable_grad():  # a backward inside, as reentrant checkpointing runs
                (layer.weight * 2.0).sum().backward()
            return grad

    try:
        (Twice.apply(layer.weight) + layer.bias.sum()).sum().backward()
        tally.check(False, "a gradient accumulated twice in one backward went unnoticed")
    except CollectiveError as error:
        tally.check("twice within one backward" in str(error), f"twice: {error}")
    sync.wait()
    sync.detach()


def check_attach_lifecycle(comm, tally: Tally) -> None:
    """The ninety-first review: detach() while a step's all-reduces ran let them write the
    gradients after it returned (and into the next backward's); a second GradSync on the
    same parameters (a DistributedOptimizer made again) was taken, and every later step
    failed as a missing wait(); a parameter that became trainable after attach was never
    averaged (silently); a lazy parameter on one rank left the others waiting, a float8 one
    failed in every wait(), a sparse gradient set by hand was refused naming no parameter."""
    r, p = comm.rank, comm.size
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    model[0].requires_grad_(False)
    sync = collectives.GradSync(comm, fusion_bytes=64).attach(model)
    _backward(model, r, 0)
    try:
        sync.detach()
        tally.check(False, "detach() while the step's all-reduces ran")
    except CollectiveError as error:
        tally.check("call wait() first" in str(error), f"detach mid-step: {error}")
    sync.wait()
    try:
        collectives.GradSync(comm).attach(model)
        tally.check(False, "a second GradSync attached to the same parameters")
    except ValueError as error:
        tally.check("parameter 1.weight is attached to another GradSync" in str(error),
                    f"second attach: {error}")
    model[0].requires_grad_(True)  # unfrozen after attach, on every rank
    model.zero_grad(set_to_none=True)
    _backward(model, r, 1)
    try:
        sync.wait()
        tally.check(False, "a parameter trainable after attach went unaveraged, silently")
    except CollectiveError as error:
        tally.check("parameter 0.weight has a gradient but was not attached" in str(error),
                    f"unfrozen after attach: {error}")
    sync.detach()
    again = DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, comm)
    model.add_module("adapter", torch.nn.Linear(4, 4))  # added after, with a GradSync of its
    adapter = collectives.GradSync(comm).attach(model.adapter)  # own: not "unaveraged" (the
    model.zero_grad(set_to_none=True)  # ninety-third review)
    _backward(model, r, 2)
    want = [torch.from_numpy(comm.allreduce(q.grad.numpy(), op="avg")) for q in model.parameters()]
    adapter.wait()
    again.step()
    adapter.detach()
    again.sync.detach()
    tally.check(all(torch.allclose(q.grad, w) for q, w in zip(model.parameters(), want)),
                "attached again after unfreezing: gradients not averaged")
    refused_here = r == p - 1
    for what, make, said in (
            ("a lazy parameter", lambda: torch.nn.LazyLinear(2), "not initialized yet"),
            ("a float8 parameter", lambda: torch.nn.Linear(2, 2).to(torch.float8_e4m3fn),
             "is torch.float8_e4m3fn")):
        module = make() if refused_here else torch.nn.Linear(2, 2)
        try:
            collectives.GradSync(comm).attach(module).detach()
            tally.check(p == 1 and not refused_here, f"attach took {what}")
        except (TypeError, ValueError, collectives.MismatchError) as error:
            tally.check(said in str(error) if refused_here
                        else type(error) is collectives.MismatchError, f"{what}: {error!r}")
    layer = torch.nn.Linear(3, 3, bias=False)
    sync = collectives.GradSync(comm).attach(layer)
    layer.weight.grad = torch.eye(3).to_sparse()
    try:
        sync.wait()
        tally.check(False, "wait() took a sparse gradient")
    except TypeError as error:
        tally.check("the gradient of weight:" in str(error), f"sparse by hand: {error}")
    sync.detach()


def check_bad_master_port(comm, tally: Tally) -> None:
    """MASTER_PORT=abc on rank 0: a bare int() ValueError there, PeerError on the others
    (the seventy-seventh review). Now named, and refused on every rank."""
    if torch.distributed.is_initialized():
        return  # (torchrun: init_process_group does nothing)
    if comm.rank == 0:
        os.environ["MASTER_PORT"] = "abc"
    try:
        init_process_group(comm)
        tally.check(False, "MASTER_PORT=abc on rank 0: accepted")
    except (ValueError, collectives.MismatchError) as error:
        said = "MASTER_PORT='abc' is not a port number" if comm.rank == 0 else \
            "rank 0 rejected its arguments"
        tally.check(said in str(error), f"MASTER_PORT=abc on rank 0: {error!r}")
    finally:
        os.environ.pop("MASTER_PORT", None)


def main() -> None:
    torch.set_num_threads(1)
    comm = collectives.init()
    tally = Tally(comm.rank)
    check_bad_master_port(comm, tally)
    init_process_group(comm)  # no-op under torchrun: init() started torch.distributed
    print(f"rank {comm.rank}: {comm!r}", flush=True)
    check_sync(comm, tally)
    check_training(comm, tally)
    check_unused_everywhere(comm, tally)
    check_two_hooks(comm, tally)
    check_hook_deterministic(tally)
    check_rebuilt_buckets(comm, tally)
    check_attach_refusals(comm, tally)
    check_attach_lifecycle(comm, tally)
    check_sync_feedback_per_layout(comm, tally)
    check_wait_settles_every_bucket(comm, tally)
    check_interrupted_wait(comm, tally)
    check_refused_bucket(comm, tally)
    check_hook_failure(comm, tally)
    tally.finish()


if __name__ == "__main__":
    main()
