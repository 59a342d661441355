"""torch.distributed's functions on backend "collectives", each against a closed form.

Usage: torchrun --nproc-per-node P -m tests.workers.torch_backend_ops
       mpiexec -n P python -m tests.workers.torch_backend_ops
Runs on the default group, and with P >= 4 on subgroups too ([0, 2], [1, 3] and [1, 2, 3]).
Every collective torch offers a backend, any dtype where it only moves data, the four ops
where it reduces; errors surface as the Work's exception; send/recv.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

import collectives
from collectives import CollectiveError, MismatchError
from collectives.bootstrap import launched_by_torchrun
from collectives.progress import THREAD_NAME
from collectives.hooks.torch import init_process_group
from tests.workers.common import Tally, rank_data, reference

COUNT = 11  # not a multiple of any world size: blocks and padding are uneven
OPS = {dist.ReduceOp.SUM: "sum", dist.ReduceOp.AVG: "avg", dist.ReduceOp.MAX: "max",
       dist.ReduceOp.MIN: "min"}
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64)


def tensor(count: int, dtype: torch.dtype, rank: int) -> torch.Tensor:
    return torch.from_numpy(rank_data(count, np.float64, rank)).to(dtype)


def expected(count: int, dtype: torch.dtype, size: int, op: str) -> torch.Tensor:
    """The library's closed form (an integer average is floored)."""
    exact = np.int64 if not dtype.is_floating_point else np.float64
    return torch.from_numpy(reference(count, exact, size, op)).to(dtype)


def same(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal; floats of 16 bits within their rounding of an average."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    if got.dtype in (torch.float16, torch.bfloat16):
        return bool(torch.allclose(got.float(), want.float(), rtol=1e-2, atol=1e-2))
    return bool(torch.equal(got, want))


def tell(group, what: str) -> None:
    """Say `what` happened on this rank, through torch's store (outside the group under
    test)."""
    key = f"{dist.get_process_group_ranks(group)} {what} {group.rank()}"
    dist.distributed_c10d._get_default_store().set(key, "1")


def wait_told(group, what: str, ranks, seconds: float = 10.0) -> None:
    """Until `ranks` of `group` said `what`, or `seconds` passed (a rank held until this
    one comes, the bug looked for, then fails its check instead of hanging)."""
    keys = [f"{dist.get_process_group_ranks(group)} {what} {q}" for q in ranks]
    store = dist.distributed_c10d._get_default_store()
    deadline = time.monotonic() + seconds
    while not store.check(keys) and time.monotonic() < deadline:
        time.sleep(0.01)


def check_reductions(group, tally: Tally) -> None:
    r, p = group.rank(), group.size()
    for dtype in DTYPES:
        for op, name in OPS.items():
            got = tensor(COUNT, dtype, r)
            dist.all_reduce(got, op, group=group)
            tally.check(same(got, expected(COUNT, dtype, p, name)), f"all_reduce {dtype} {name}")
    pair = [tensor(COUNT, torch.float32, r), tensor(3, torch.float32, r)]
    dist.all_reduce_coalesced(pair, dist.ReduceOp.SUM, group=group)
    tally.check(same(pair[0], expected(COUNT, torch.float32, p, "sum"))
                and same(pair[1], expected(3, torch.float32, p, "sum")), "all_reduce_coalesced")
    got = tensor(COUNT, torch.float64, r)
    dist.reduce(got, dst=dist.get_global_rank(group, p - 1), op=dist.ReduceOp.MAX, group=group)
    want = expected(COUNT, torch.float64, p, "max") if r == p - 1 else tensor(COUNT, torch.float64, r)
    tally.check(same(got, want), f"reduce to the last rank: {got}")
    for op, name in ((dist.ReduceOp.SUM, "sum"), (dist.ReduceOp.AVG, "avg")):
        whole = expected(3 * p, torch.float32, p, name)
        out = torch.empty(3)
        dist.reduce_scatter_tensor(out, tensor(3 * p, torch.float32, r), op, group=group)
        tally.check(same(out, whole[3 * r: 3 * r + 3]), f"reduce_scatter_tensor {name}: {out}")
        out = torch.empty(3)
        dist.reduce_scatter(out, list(tensor(3 * p, torch.float32, r).chunk(p)), op, group=group)
        tally.check(same(out, whole[3 * r: 3 * r + 3]), f"reduce_scatter {name}: {out}")


def check_movement(group, tally: Tally) -> None:
    r, p = group.rank(), group.size()
    last = dist.get_global_rank(group, p - 1)
    for dtype in (torch.float32, torch.bfloat16, torch.uint8, torch.bool, torch.int16):
        for count in (COUNT, 4, 0):  # 11 and 0 bytes of uint8/bool need padding, 4 do not
            got = tensor(count, dtype, r)
            dist.broadcast(got, src=last, group=group)
            tally.check(same(got, tensor(count, dtype, p - 1)), f"broadcast {dtype} x{count}")
            gathered = torch.empty(p * count, dtype=dtype)
            dist.all_gather_into_tensor(gathered, tensor(count, dtype, r), group=group)
            rows = torch.cat([tensor(count, dtype, q) for q in range(p)])
            tally.check(same(gathered, rows), f"all_gather_into_tensor {dtype} x{count}")
            listed = [torch.empty(count, dtype=dtype) for _ in range(p)]
            dist.all_gather(listed, tensor(count, dtype, r), group=group)
            tally.check(same(torch.cat(listed), rows), f"all_gather {dtype} x{count}")
    # torch's coalesced form holds outputs[rank][input], the list form's transpose (read as
    # the list form, ranks' inputs landed in each other's places; the 112th review); a
    # list form's future is the one output list, not nested in another
    ins = [torch.full((2 + j,), float(10 * r + j)) for j in range(3)]
    outs = [[torch.empty(2 + j) for j in range(3)] for _ in range(p)]
    dist.all_gather_coalesced(outs, ins, group=group)
    tally.check(all(torch.equal(outs[q][j], torch.full((2 + j,), float(10 * q + j)))
                    for q in range(p) for j in range(3)), f"all_gather_coalesced: {outs}")
    # One rank's wrong output, named as given (it named all_gather's transposed lists; the
    # 114th review), refuses each input's call: one refusal for three left the others'
    # later calls paired with this rank's next ones (the 116th review)
    if r == p - 1:
        outs[0][1] = torch.empty(7)
    try:
        dist.all_gather_coalesced(outs, ins, group=group)
        tally.check(False, "all_gather_coalesced into an output of another size")
    except (ValueError, RuntimeError) as error:
        tally.check(r != p - 1 or "outputs[0][1] holds 7 torch.float32, input 1 3" in
                    str(error), f"all_gather_coalesced into an output of another size: {error}")
    outs = [[torch.empty(2 + j) for j in range(3)] for _ in range(p)]
    dist.all_gather_coalesced(outs, ins, group=group)
    tally.check(all(torch.equal(outs[q][j], torch.full((2 + j,), float(10 * q + j)))
                    for q in range(p) for j in range(3)), f"after a refusal: {outs}")
    # One rank's second reduce-scatter output not contiguous: found as the calls were
    # issued, after the first, so that rank issued one call more (the 117th review)
    inputs = [[torch.ones(2) for _ in range(p)] for _ in range(2)]
    outs = [torch.zeros(2), torch.zeros(2, 2)[:, 0] if r == p - 1 else torch.zeros(2)]
    try:
        group.reduce_scatter(outs, inputs, dist.ReduceScatterOptions()).wait()
    except (ValueError, RuntimeError):
        pass
    outs = [torch.zeros(2), torch.zeros(2)]
    group.reduce_scatter(outs, inputs, dist.ReduceScatterOptions()).wait()
    tally.check(all(bool((o == p).all()) for o in outs), f"reduce_scatter after: {outs}")
    listed = [torch.empty(2) for _ in range(p)]
    value = dist.all_gather(listed, torch.full((2,), float(r)), group=group,
                            async_op=True).get_future().wait()
    tally.check(len(value) == p and all(torch.equal(v, torch.full((2,), float(q)))
                                        for q, v in enumerate(value)),
                f"all_gather's future value: {value}")
    sent = torch.arange(2 * p, dtype=torch.int16) + 100 * r  # rows 2q, 2q+1 go to rank q
    got = torch.empty_like(sent)
    dist.all_to_all_single(got, sent, group=group)
    want = torch.cat([torch.arange(2 * r, 2 * r + 2, dtype=torch.int16) + 100 * q
                      for q in range(p)])
    tally.check(torch.equal(got, want), f"all_to_all_single: {got}")
    # uneven: rank r sends q + 1 rows of 2 to rank q, each row (r, q)
    ins = [torch.tensor([[r, q]] * (q + 1), dtype=torch.float32) for q in range(p)]
    got = torch.empty(p * (r + 1), 2)
    dist.all_to_all_single(got, torch.cat(ins), [r + 1] * p, [q + 1 for q in range(p)],
                           group=group)
    want = torch.cat([torch.tensor([[q, r]] * (r + 1), dtype=torch.float32) for q in range(p)])
    tally.check(torch.equal(got, want), f"all_to_all_single uneven: {got}")
    outs = [torch.empty(r + 1, 2) for _ in range(p)]
    dist.all_to_all(outs, ins, group=group)
    tally.check(torch.equal(torch.cat(outs), want), f"all_to_all: {outs}")
    objects = [None] * p
    dist.all_gather_object(objects, {"rank": r, "text": "x" * r}, group=group)
    tally.check(objects == [{"rank": q, "text": "x" * q} for q in range(p)], f"objects {objects}")
    shared = [f"from {r}", r]
    dist.broadcast_object_list(shared, src=last, group=group)
    tally.check(shared == [f"from {p - 1}", p - 1], f"broadcast_object_list: {shared}")
    # torch's list form (as gloo): the root's tensors[rootTensor] into every tensor of
    # every rank's list, whatever the lists' lengths
    for dtype in (torch.float32, torch.uint8):
        listed = [tensor(COUNT, dtype, r + i) for i in range(2 + r)]
        group.broadcast(listed, _root_option(0, tensor=1)).wait()
        tally.check(all(torch.equal(got, tensor(COUNT, dtype, 1)) for got in listed),
                    f"broadcast of a list {dtype}: {listed}")
    dist.barrier(group=group)


def _root_option(root: int, tensor: int = 0) -> dist.BroadcastOptions:
    options = dist.BroadcastOptions()
    options.rootRank, options.rootTensor = root, tensor
    return options


def check_async_and_errors(group, tally: Tally) -> None:
    r, p = group.rank(), group.size()
    works = [dist.all_reduce(t, group=group, async_op=True)
             for t in (torch.ones(5) * i for i in range(4))]
    chained = works[-1].get_future().then(lambda fut: fut.value()[0] * 2)
    tally.check(all(w.wait() for w in works) and all(w.is_completed() for w in works),
                "async all_reduces")
    tally.check(torch.equal(chained.wait(), torch.full((5,), 6.0 * p)), "future.then")
    late = torch.ones(3)  # Work.wait(timeout) bounds the wait (it was ignored)
    if r == p - 1 and p > 1:
        wait_told(group, "wait timed out", [0])
    work = dist.all_reduce(late, group=group, async_op=True)
    if r == 0 and p > 1:
        try:
            work.wait(timeout=timedelta(seconds=0.2))
            tally.check(False, "wait(timeout=0.2 s) returned before the last rank came")
        except TimeoutError:
            pass
        tell(group, "wait timed out")
    tally.check(work.wait() and torch.equal(late, torch.full((3,), float(p))),
                f"wait after a wait timeout: {late}")
    try:
        dist.all_reduce(torch.ones(2), op=dist.ReduceOp.PRODUCT, group=group)
        tally.check(False, "PRODUCT was accepted")
    except ValueError as error:
        tally.check("ReduceOp.PRODUCT" in str(error), f"PRODUCT refused: {error}")
    work = dist.all_reduce(torch.ones(3 + r), group=group, async_op=True)  # shapes differ
    try:
        work.wait()
        tally.check(False, "shapes that differ between ranks were all-reduced")
    except MismatchError as error:
        tally.check(isinstance(work.exception(), MismatchError) and not work.is_success(),
                    f"Work.exception(): {work.exception()!r}")
        tally.check("shape" in str(error), f"mismatch names the shapes: {error}")
    try:
        dist.all_reduce(torch.ones(2, dtype=torch.uint8), group=group)
        tally.check(False, "uint8 was summed")
    except TypeError as error:
        tally.check("unsupported dtype uint8" in str(error), f"uint8 refused: {error}")
    check_wait_in_callback(group, tally)
    check_blocking_ops_in_callback(group, tally)
    ok = torch.ones(2)
    dist.all_reduce(ok, group=group)  # the group goes on after refused calls
    tally.check(torch.equal(ok, torch.full((2,), float(p))), "all_reduce after errors")
    check_interrupted_wait(group, tally)


def check_wait_in_callback(group, tally: Tally) -> None:
    """A then() callback runs on the progress thread (unless its future was done already):
    waiting there for a Work queued behind it hung for ever (the twelfth review); now
    CollectiveError at once."""
    r, p = group.rank(), group.size()
    if r == p - 1:
        time.sleep(0.2)  # the others' first Work is pending when they chain the callback
    first = dist.all_reduce(torch.ones(1), group=group, async_op=True)
    second = dist.all_reduce(torch.ones(1), group=group, async_op=True)
    seen = []

    def waiting(fut):
        on_progress = threading.current_thread().name == THREAD_NAME
        start = time.monotonic()
        try:
            second.wait()
            seen.append((on_progress, "returned"))
        except CollectiveError as error:
            seen.append((on_progress, time.monotonic() - start, str(error)))
        return fut.value()

    first.get_future().then(waiting).wait()
    second.wait()
    on_progress, *outcome = seen[0]
    tally.check(outcome[0] != "returned" and outcome[0] < 1.0 and "completion callback"
                in outcome[1] if on_progress else outcome == ["returned"],
                f"Work.wait() in then(): {seen}")


def check_blocking_ops_in_callback(group, tally: Tally) -> None:
    """barrier and all_to_all with given splits in a then() callback that runs on the
    progress thread on some ranks and on the main thread on another: each rank raises,
    and later calls still pair (they were blocking calls, refused on the progress thread
    without being counted: later all-reduces paired with the wrong calls, 31 for 21; the
    fifty-fourth review)."""
    r, p = group.rank(), group.size()
    if p == 1:
        return
    splits = [1] * p

    def barrier():
        dist.barrier(group=group)

    def alltoall():
        dist.all_to_all_single(torch.empty(p), torch.ones(p), splits, splits, group=group)

    for name, op in (("barrier", barrier), ("all_to_all_single", alltoall)):
        if r == p - 1:
            time.sleep(0.3)  # the others chain the callback while their Work is pending
        work = dist.all_reduce(torch.ones(1), group=group, async_op=True)
        if r == p - 1:
            work.wait()  # done: the callback runs here, on the main thread
        try:
            work.get_future().then(lambda fut: op()).wait()
        except RuntimeError:
            pass  # raised on every rank here; what counts is that later calls pair
        for round in (1, 2):
            z = torch.tensor([10.0 * round + r])
            dist.all_reduce(z, group=group)
            want = 10.0 * round * p + p * (p - 1) / 2
            tally.check(z.item() == want, f"{name} in then(): all_reduce {round} gave "
                        f"{z.item()}, expected {want}")


class Interrupted(Exception):
    pass


def _interrupt(signum, frame):
    raise Interrupted()


def check_interrupted_wait(group, tally: Tally) -> None:
    """An interrupt ends a sync collective's wait at once, not when the late rank comes
    (the twelfth review: held in torch's Future.wait); the collective goes on, in order."""
    r, p = group.rank(), group.size()
    if p == 1:
        return
    late = torch.ones(2)
    if r == p - 1:
        wait_told(group, "interrupted", range(p - 1))
    else:
        before = signal.signal(signal.SIGALRM, _interrupt)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
    start = time.monotonic()
    try:
        dist.all_reduce(late, group=group)
        tally.check(r == p - 1, "all_reduce waited out the interrupt")
    except Interrupted:
        tally.check(time.monotonic() - start < 2.0,
                    f"the interrupt surfaced after {time.monotonic() - start:.2f} s")
    finally:
        if r != p - 1:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, before)
            tell(group, "interrupted")
    after = torch.ones(2)
    dist.all_reduce(after, group=group)
    want = torch.full((2,), float(p))
    tally.check(torch.equal(late, want) and torch.equal(after, want),
                f"after an interrupted wait: {late}, {after}")


def check_one_rank_refusals(group, tally: Tally) -> None:
    """The backend's own checks on one rank only (a non-contiguous tensor, a bad split, an
    input of the wrong size) raised there before any collective: the others paired their
    call with that rank's next one, and broadcasts were silently a step behind. Now they
    refuse on every rank (MismatchError on the others) and the next call is right."""
    r, p = group.rank(), group.size()
    odd = r == p - 1
    root = dist.get_global_rank(group, 0)
    cases = (
        ("non-contiguous broadcast", lambda: dist.broadcast(
            torch.ones(8)[::2] if odd else torch.ones(4), root, group=group)),
        ("bad all_to_all_single split", lambda: dist.all_to_all_single(
            torch.zeros(2 * p), torch.ones(2 * p), group=group,
            input_split_sizes=[2] * (p - 1) + [2 + odd], output_split_sizes=[2] * p)),
        ("reduce_scatter_tensor of the wrong size", lambda: dist.reduce_scatter_tensor(
            torch.zeros(2), torch.ones(2 * p + odd), group=group)),
        ("all_gather into a list one short", lambda: dist.all_gather(
            [torch.zeros(3) for _ in range(p - odd)], torch.ones(3), group=group)),
        ("all_gather into a tensor of another size", lambda: dist.all_gather(
            [torch.zeros(3 + odd * (q == 0)) for q in range(p)], torch.ones(3), group=group)),
        # splits adding up with a negative one wrapped around into blocks nobody asked for
        # (the sixty-seventh review)
        ("negative all_to_all_single split", lambda: dist.all_to_all_single(
            torch.zeros(2 * p), torch.ones(2 * p), group=group,
            input_split_sizes=[-1, 5] + [2] * (p - 2) if odd and p > 1 else [2] * p,
            output_split_sizes=[2] * p)),
        ("all_to_all of lists one short", lambda: dist.all_to_all(
            [torch.zeros(2) for _ in range(p - odd)], [torch.ones(2) for _ in range(p - odd)],
            group=group)))
    for what, call in cases:
        try:
            call()
            tally.check(p == 1, f"{what}: accepted")
        except (ValueError, MismatchError) as error:
            tally.check(isinstance(error, ValueError if odd else MismatchError),
                        f"{what}: {error!r}")
        step = torch.full((3,), 7.0) if r == 0 else torch.zeros(3)
        dist.broadcast(step, root, group=group)
        tally.check(torch.equal(step, torch.full((3,), 7.0)), f"broadcast after {what}: {step}")
    lists = (  # a list broadcast one rank cannot send: refused on every rank
        ("root tensor out of range", [torch.zeros(3)] * (2 - odd), 1),
        ("list of two shapes", [torch.zeros(3), torch.zeros(3 - odd)], 0),
        # torch's RuntimeError of a conjugate view escaped: ranks out of step (the
        # forty-third review)
        ("conjugate view", [torch.zeros(3, dtype=torch.complex64).conj() if odd else
                            torch.zeros(3, dtype=torch.complex64)], 0))
    for what, ours, index in lists:
        try:
            group.broadcast(ours, _root_option(0, tensor=index)).wait()
            tally.check(p == 1, f"{what}: accepted")
        except (ValueError, RuntimeError, MismatchError) as error:
            tally.check(isinstance(error, MismatchError) != odd, f"{what}: {error!r}")
        step = torch.full((3,), 7.0) if r == 0 else torch.zeros(3)
        dist.broadcast(step, root, group=group)
        tally.check(torch.equal(step, torch.full((3,), 7.0)), f"broadcast after {what}: {step}")
    if p > 1:  # sizes every rank gives but that do not meet: refused on every rank
        try:
            dist.all_to_all_single(torch.zeros(2 * p), torch.ones(p), group=group,
                                   input_split_sizes=[1] * p, output_split_sizes=[2] * p)
            tally.check(False, "all_to_all blocks of 1 row into 2 rows accepted")
        except ValueError as error:
            tally.check("expects" in str(error), f"all_to_all sizes that differ: {error}")
    # bytes of 3 and 2 elements pad to one word alike, and only the receivers whose row
    # differed raised, the root and the others returned (the thirty-ninth review): every
    # rank's byte count and dtype are the broadcast's label, and every rank raises
    odd_bytes = torch.full((3 if r == 0 else 2,), 9, dtype=torch.uint8)
    try:
        dist.broadcast(odd_bytes, root, group=group)
        tally.check(p == 1, f"uint8 of 3 bytes broadcast into 2: {odd_bytes}")
    except MismatchError as error:
        tally.check("rank 0 has label 3 bytes of torch.uint8" in str(error)
                    and "2 bytes of torch.uint8" in str(error)
                    and odd_bytes.tolist() == [9] * (3 if r == 0 else 2),
                    f"uint8 sizes that differ: {error}")
    # dtypes of one byte size looked alike (uint8 x 4 and int32 x 1 in one int32 word; bool
    # and uint8): now mismatched rows, or the byte counts and dtypes compared (every rank)
    for ours, refused in ((torch.ones(4, dtype=torch.uint8) if r == 0 else
                           torch.zeros(1, dtype=torch.int32), MismatchError),
                          # 16 uint8 padded and 6 int32 (a view, written in place) made one
                          # shape: the receivers' int32 were overwritten (the fortieth review)
                          (torch.ones(16, dtype=torch.uint8) if r == 0 else
                           torch.zeros(6, dtype=torch.int32), MismatchError),
                          (torch.ones(2, dtype=torch.bool) if r == 0 else
                           torch.zeros(2, dtype=torch.uint8), MismatchError)):
        kept = ours.clone()
        try:
            dist.broadcast(ours, root, group=group)
            tally.check(p == 1, f"{kept.dtype} broadcast accepted: {ours}")
        except MismatchError as error:
            # the agreement compares the backend's int32 word rows: its message also names
            # the tensors (it named rank 1's uint8 as int32 rows, the sixty-seventh review)
            tally.check(type(error) is refused and torch.equal(ours, kept)
                        and "rank 0 has label " in str(error)
                        and f"this rank's tensor: {kept.dtype}" in str(error),
                        f"{kept.dtype}: {error!r}")
    if p > 1:  # a broadcast sent its sizes in an all-gather issued before it: a user's
        # all-gather of that shape took them as data, and a refusal left the broadcast to
        # pair with the next call (the ninety-fourth review)
        try:
            if r == 0:
                dist.broadcast(torch.zeros(4), root, group=group)
            else:
                dist.all_gather_into_tensor(torch.zeros(2 * p, dtype=torch.int64),
                                            torch.tensor([111, 222]), group=group)
            tally.check(False, "a broadcast paired with an all-gather")
        except MismatchError as error:
            tally.check("collective" in str(error), f"broadcast against all-gather: {error}")
        step = torch.ones(2)
        dist.all_reduce(step, group=group)
        tally.check(torch.equal(step, torch.full((2,), float(p))),
                    f"an all-reduce after a broadcast met an all-gather: {step}")
    if p > 1:  # the same in an all-gather, which sends no byte counts: this rank's tensor
        mine = torch.zeros(3, dtype=torch.uint8 if odd else torch.float32)
        try:
            dist.all_gather_into_tensor(torch.zeros(3 * p, dtype=mine.dtype), mine, group=group)
            tally.check(False, "all_gather_into_tensor of uint8 and float32 accepted")
        except MismatchError as error:
            tally.check(f"this rank's tensor: {mine.dtype} of shape (3,)" in str(error),
                        f"all_gather_into_tensor of uint8 and float32: {error}")
    if p > 1:  # blocks of another dtype landed unchecked (the thirty-ninth review)
        mine = torch.bool if odd else torch.uint8
        for what, call in (
                ("all_to_all of bool blocks into uint8", lambda: dist.all_to_all(
                    [torch.zeros(2, dtype=mine) for _ in range(p)],
                    [torch.ones(2, dtype=mine) for _ in range(p)], group=group)),
                ("all_to_all_single of int32 splits into float32", lambda: dist.all_to_all_single(
                    torch.zeros(p, dtype=torch.int32 if odd else torch.float32),
                    torch.ones(p, dtype=torch.int32 if odd else torch.float32), group=group,
                    input_split_sizes=[1] * p, output_split_sizes=[1] * p))):
            try:
                call()
                tally.check(False, f"{what}: accepted")
            except ValueError as error:
                tally.check(" sends torch." in str(error) and "which expects torch." in str(error),
                            f"{what}: {error}")
    both = torch.arange(2.0 * p) + 10 * r  # in place with equal splits (was "overlaps")
    dist.all_to_all_single(both, both, group=group)
    want = torch.tensor([10.0 * q + 2 * r + i for q in range(p) for i in range(2)])
    tally.check(torch.equal(both, want), f"all_to_all_single in place: {both} != {want}")


def check_point_to_point(group, tally: Tally) -> None:
    """A ring of messages, twice in flight at once, against the NumPy reference."""
    r, p = group.rank(), group.size()
    nxt, prev = (dist.get_global_rank(group, (r + d) % p) for d in (1, -1))
    for dtype in (torch.float32, torch.bfloat16, torch.uint8):  # uint8 x11: a padded copy
        received = [torch.zeros(COUNT, dtype=dtype), torch.zeros(4, dtype=dtype)]
        works = [dist.isend(tensor(COUNT, dtype, r), nxt, group=group, tag=5),
                 dist.isend(tensor(4, dtype, r + 1), nxt, group=group, tag=5),
                 dist.irecv(received[0], prev, group=group, tag=5),
                 dist.irecv(received[1], prev, group=group, tag=5)]
        for work in works:
            work.wait()
        sender = (r - 1) % p  # tensor(): the NumPy reference (rank_data) in `dtype`
        want = [tensor(COUNT, dtype, sender), tensor(4, dtype, sender + 1)]
        tally.check(all(torch.equal(got, w) for got, w in zip(received, want)),
                    f"send/recv {dtype}: {received}, expected {want}")
    # A bounded wait that runs out names the message (it said "the message"; the 113th
    # review), which stays posted and completes later
    got = torch.zeros(3)
    work = dist.irecv(got, prev, group=group, tag=6)
    try:
        work.wait(timeout=timedelta(seconds=0.1))
        tally.check(False, "a bounded wait for a message nobody sent returned")
    except TimeoutError as error:
        tally.check(f"receive from rank {(r - 1) % p} (tag 6" in str(error),
                    f"bounded wait: {error}")
    dist.barrier(group=group)
    dist.send(torch.full((3,), float(r)), nxt, group=group, tag=6)
    work.wait()
    tally.check(torch.equal(got, torch.full((3,), float((r - 1) % p))), f"then: {got}")


def check_options_agreed(tally: Tally) -> None:
    """A group whose ranks' options differ (COLLECTIVES_COMPRESSION on one rank only) is
    refused when made, naming the option and where it comes from: each call's mismatch
    had named a compression nobody passed (the seventy-seventh review)."""
    rank, size = dist.get_rank(), dist.get_world_size()
    descriptors = len(os.listdir("/proc/self/fd"))
    for variable, value in (("COLLECTIVES_COMPRESSION", "fp16"), ("COLLECTIVES_COMPRESSION",
                                                                   "fp61")) * 3:
        if rank == size - 1:
            os.environ[variable] = value
        try:
            dist.new_group(list(range(size)), backend="collectives")
            tally.check(size == 1 and value == "fp16", f"{variable}={value} on one rank only: "
                                                       "the group was made")
        except (ValueError, MismatchError) as error:
            if value == "fp16":
                said = "has compression" in str(error) and "COLLECTIVES_COMPRESSION" in str(error)
                tally.check(type(error) is MismatchError and said, f"{variable}: {error}")
            else:
                tally.check(type(error) is (ValueError if rank == size - 1 else MismatchError)
                            and "fp61" in str(error), f"{variable}={value}: {error!r}")
        finally:
            os.environ.pop(variable, None)
    reduced = torch.ones(3)
    dist.all_reduce(reduced)
    tally.check(bool((reduced == size).all()), "an all-reduce after the refused groups")
    kept = len(os.listdir("/proc/self/fd")) - descriptors  # (each refused group's gloo pairs
    tally.check(kept < 6, f"6 refused groups kept {kept} descriptors")  # stayed open: the 79th)


def main() -> None:
    torch.set_num_threads(1)
    if launched_by_torchrun():
        dist.init_process_group(backend="collectives")
    else:
        init_process_group(collectives.init(), backend="collectives")
    rank, size = dist.get_rank(), dist.get_world_size()
    groups = [None]
    if size >= 4:
        pairs = [dist.new_group([0, 2], backend="collectives"),
                 dist.new_group([1, 3], backend="collectives")]
        triple = dist.new_group([1, 2, 3], backend="collectives")
        groups += [pairs[rank % 2]] + ([triple] if rank in (1, 2, 3) else [])
    tally = Tally(rank)
    for group in groups:
        group = group or dist.distributed_c10d._get_default_group()
        check_reductions(group, tally)
        check_movement(group, tally)
        check_async_and_errors(group, tally)
        check_one_rank_refusals(group, tally)
        check_point_to_point(group, tally)
    check_options_agreed(tally)
    print(f"rank {rank}: {len(groups)} groups", flush=True)
    dist.barrier()  # under mpiexec rank 0 hosts the store, which wait_told may still poll
    dist.destroy_process_group()
    tally.finish()


if __name__ == "__main__":
    main()
