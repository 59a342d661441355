"""The flow every collective but all-reduce shares, and the checks they have in common.

A `Collective` call holds its checked input (`x`, `out`, options, root). Running it:

1. the agreement check; when the check is on, the algorithm `auto` and the data small, the
   data rides with the records (calls.riding) and the call is answered from them
   (`from_rows`); a named algorithm runs as named;
2. otherwise `auto` is made concrete by the tuner (per collective, per size), then the
   transport's own collective runs (`native`) or the algorithm's plan (`planned`).

MPI's own collectives cannot be cancelled, so `native` never writes memory the caller sees:
its result goes to a buffer of the library's, copied out after success (`landing`).
CuPy arrays take the same route; their natives stage through host memory.

Example::

    class Broadcast(Collective):
        collective = "broadcast"
        ...
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

import kernels

from ..agreement import Signature
from ..algorithms import plan_for
from ..execution import IDENTITY
from ..fusion import Layout, reduce_arrays
from ..options import ALGORITHMS, CallOptions, Op, check_compression
from ..stats import plan_traffic
from ..validation import check_array
from .base import TAG_LIMIT, Call, Context, Refused
from .riding import as_payload, rides

__all__ = ["Collective", "check_root", "collective_options", "issue"]


def collective_options(collective: str, *, op="sum", algorithm=None, compression=None,
                       deterministic: bool = False) -> CallOptions:
    """Checked options of `collective` (algorithm None: "auto")."""
    if compression == "auto":
        raise ValueError(f"compression='auto' is for allreduce and allreduce_many; pass "
                         f"None, 'fp16' or 'bf16' to {collective}")
    # (a typo is named as such, before what native lacks)
    check_compression(compression, collective)
    if compression is not None and algorithm == "native" and not deterministic:
        raise ValueError(f"compression={compression!r} needs a plan algorithm for "
                         f"{collective}: MPI's own {collective} has no codec; pass "
                         f"algorithm='auto' or one of its plans")
    return CallOptions.parse(op, "auto" if algorithm is None else algorithm, compression,
                             collective=collective, deterministic=deterministic)


def check_root(root, size: int) -> int:
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)) or not 0 <= root < size:
        raise ValueError(f"root must be a rank in [0, {size}), got {root!r}")
    return int(root)


def issue(name: str, issued: tuple, build):
    """The call `build()` makes, or a Refused call carrying the error it raised."""
    try:
        return build()
    except (TypeError, ValueError) as error:
        return Refused(name, issued, error)


class Collective(Call):
    """A checked call of one of the collectives besides all-reduce (see the module doc)."""

    collective = ""
    __slots__ = ("x", "out", "options", "root", "payload", "prepared")

    def __init__(self, x, out, options: CallOptions, root: int | None, issued: tuple):
        check_array(x)
        self.x, self.out, self.options, self.root = x, out, options, root
        self.payload = self.prepared = None
        self.check_shapes()
        array = kernels.array_module(x).__name__  # NumPy arrays ride, CuPy arrays do not
        super().__init__(self.collective, Signature.of(
            self.collective, (options, x.dtype, x.shape, array, root, issued),
            lambda: {"op": options.op if self.reduces else None, "algorithm": options.algorithm,
                     "compression": options.compression, "root": root, "dtype": x.dtype,
                     "shape": x.shape, "array": array, "deterministic": options.deterministic,
                     "issued": issued[0], "thread": issued[1],
                     **({"label": issued[2]} if len(issued) > 2 else {})}))

    reduces = False

    # ---------------------------------------------------------------- what each defines

    def check_shapes(self) -> None:
        """Refuse an `out` (or input) of the wrong shape; nothing to check by default."""

    def plan_count(self, size: int) -> int:
        """The plans' count of elements (the whole buffer for allgather and alltoall)."""
        return self.x.size

    def _result(self):
        """The array this call returns (`out` when given, None where this rank gets none),
        to be written."""
        raise NotImplementedError

    def prepare(self, ctx: Context) -> None:
        self.prepared = (self._result(),)

    def result(self):
        """The array this call returns, as `prepare` allocated it."""
        return self.prepared[0]

    def from_rows(self, ctx: Context, rows):
        raise NotImplementedError

    def native(self, ctx: Context, tag: int, deadline: float):
        raise NotImplementedError

    def planned(self, ctx: Context, algorithm: str, tag: int, deadline: float):
        raise NotImplementedError

    def reproducible(self, ctx: Context, tag: int, deadline: float):
        raise ValueError(f"{self.collective} has no deterministic mode")

    # ---------------------------------------------------------------- the shared flow

    def agree(self, ctx: Context, seq: int, deadline: float):
        if not ctx.agreement.check:
            return None
        x = self.x
        options = self.options
        if (options.algorithm == "auto" and options.compression is None
                and isinstance(x, np.ndarray) and rides(max(x.nbytes, 1), ctx.size)):
            self.payload = self.riding_payload(ctx)
        return ctx.agreement.agree(self.signature, seq, deadline, True, self.payload)

    def riding_payload(self, ctx: Context):
        """What this rank's record carries when the call rides (x itself by default)."""
        return as_payload(self.x)

    def riding_traffic(self, ctx: Context) -> tuple[int, int]:
        """(sent, received) bytes of data in the records when the call rides: every
        rank's x to every other rank by default."""
        moved = (ctx.size - 1) * self.x.nbytes
        return moved, moved

    def move(self, ctx: Context, seq: int, deadline: float, rows):
        start = time.perf_counter()
        if self.payload is not None:
            result = self.from_rows(ctx, rows)
            self._record(ctx, "direct", start, *self.riding_traffic(ctx))
            return result
        algorithm = self.options.algorithm
        if self.options.deterministic:
            return self.reproducible(ctx, seq % TAG_LIMIT, deadline)
        # An integer avg runs an all-reduce, which chooses and records for itself: a choice
        # made here was logged, never run, and a native one recorded twice (103rd, 105th).
        if algorithm == "auto" and not self.exact_mean():
            nbytes = self.plan_count(ctx.size) * self.x.itemsize
            plans_only = self.options.compression is not None  # (an empty call too: it
            algorithm = "native" if nbytes == 0 and not plans_only else ctx.reducer.tuner.choose(
                nbytes, self.collective, plans_only=plans_only)  # was "native+fp16")
        if algorithm == "native":
            result = self.native(ctx, seq % TAG_LIMIT, deadline)
            if not self.exact_mean():
                self._record(ctx, "native", start, self.x.nbytes, self.x.nbytes)
            return result
        return self.planned(ctx, algorithm, seq % TAG_LIMIT, deadline)

    def run_plan(self, ctx: Context, algorithm: str, work, tag: int, deadline: float, *,
                 op: str = "sum", codec=None, src=None, out=None) -> None:
        """Run `algorithm`'s plan of this collective on the flat `work` (with src, where
        the collective reads only what the plan receives, the rest of work is left as it
        was: `Plan.result_received`); `out`: where the result lands instead (a `Placed`
        part of it)."""
        start = time.perf_counter()
        wire = work.dtype if codec is None else codec.dtype
        plan = plan_for(self.collective, algorithm, ctx.rank, ctx.size, work.size,
                        wire.itemsize, ctx.topology, self.root or 0)
        ctx.reducer.runner(work).run(plan, work, op, tag, deadline, codec or IDENTITY, src=src,
                                     out=out, copy_untouched=not plan.result_received)
        sent, received = plan_traffic(plan)
        label = algorithm if codec is None else f"{algorithm}+{codec.name}"
        ctx.reducer.stats.record(f"{self.collective}:{label}", time.perf_counter() - start,
                                 sent * wire.itemsize, received * wire.itemsize)

    def landing(self, ctx: Context, result):
        """(flat buffer a native collective writes, whether to copy it into `result` after
        success): result itself when the library made it and it is contiguous, else a
        buffer of the library's (a native cannot be cancelled: it never writes `out`)."""
        if self.out is None and result.flags.c_contiguous:
            return result.reshape(-1), False
        return ctx.reducer.buffer("native", result, result.dtype, result.size), True

    def native_whole(self, ctx: Context, native):
        """The result of a native that writes all of it: `native(host x, host result)`."""
        result = self.result()
        dest, copy = self.landing(ctx, result)
        written = self.host_out(dest)
        native(self.host(self.x).ravel(), written)
        self.back(dest, written)
        if copy:
            kernels.unpack(dest, [result])
        return result

    @staticmethod
    def host(array):
        """`array` as a NumPy array: CuPy arrays are copied to the host for a native, which
        runs on the host transport."""
        return array if isinstance(array, np.ndarray) else kernels.array_module(array).asnumpy(array)

    @staticmethod
    def host_out(dest):
        """A host buffer a native writes `dest`'s values into (dest itself for NumPy)."""
        return dest if isinstance(dest, np.ndarray) else np.empty(dest.shape, dest.dtype)

    @staticmethod
    def back(dest, written) -> None:
        """Copy a native's host result into the device `dest` (nothing for NumPy)."""
        if written is not dest:
            kernels.copy_into(dest, kernels.array_module(dest).asarray(written))

    def exact_mean(self) -> bool:
        """An avg of integers: summed exactly by all-reduce's path (wide integers)."""
        return self.options.op is Op.AVG and self.x.dtype.kind == "i"

    def exact_mean_of_all(self, ctx: Context, tag: int, deadline: float):
        """The exact integer average of every rank's x (flat), by all-reduce's fusion path
        (the collective's algorithm when all-reduce has it, else auto)."""
        x, options = self.x, self.options
        if options.algorithm not in ALGORITHMS:
            options = dataclasses.replace(options, algorithm="auto")
        layout = Layout.of(((x.dtype, x.shape),), options.fusion_bytes)
        return reduce_arrays((x,), None, options, layout, ctx.reducer, tag=tag,
                             deadline=deadline)[0].reshape(-1)

    def scaled_input(self, ctx: Context, work, src):
        """The input of a plan on `work`: `src` as is (None: work holds it), or its scaled
        copy where the op scales it first (a float16 avg: FlatReducer.scaled_first)."""
        scaled = ctx.reducer.scaled_first(self.options.op, work if src is None else src)
        return src if scaled is None else scaled

    def native_input(self, ctx: Context):
        """x flat on the host for a native reduction (its scaled copy where the op scales
        it first)."""
        x = self.host(self.x).ravel()
        scaled = ctx.reducer.scaled_first(self.options.op, x)
        return x if scaled is None else scaled

    def finish_avg(self, ctx: Context, result) -> None:
        _, after = self.options.op.averaging(result.dtype, ctx.size)
        if after is not None:
            kernels.divide_into(result, after)

    def _record(self, ctx: Context, algorithm: str, start: float, sent: int,
                received: int) -> None:
        ctx.reducer.stats.record(f"{self.collective}:{algorithm}", time.perf_counter() - start,
                                 sent, received, modelled=algorithm == "native")
