"""The small-call lane: a repeated all-reduce of one NumPy array, decided once, run lean.

The general path (`allreduce_call`, `Communicator._execute`) parses the options, validates
the arrays, builds the signature, asks the tuner and walks the reducer on every call: about
15 us of Python where MPI's own all-reduce takes 2-4 us. A training loop repeats a few
calls, so the lane keeps one `Route` per (shape, dtype, op, algorithm, deterministic,
issuing thread) with everything those decide: the signature, whether the data rides with
the agreement record (check on, `auto`, small enough: the call is that one exchange),
goes through the transport's own all-reduce (`native`, or `auto` choosing it) with a
staging buffer, or runs a plan (ring, halving_doubling, ...: named, or `auto` choosing it)
on the reducer's runner. What stays per call is what the guarantees need, inline: the
issue order (the progress engine's `try_begin`), the sequence number and the peers' notices
(`Agreement.enter`), the deadline, the agreement exchange, the data, the statistics; an
error ends the collective as on the general path (`Agreement.failed`). Every call that
exchanged records looks for peers' notices after the exchange, before any data moves or
anything is written: a record sent before its rank gave up still arrives. MPI's own
all-reduce also completes with a peer that gave up on it (its request lives on): the
transport checks the notices as it completes, before the result is written anywhere.

Calls the lane does not take go the general path, which gives the same bits and raises
the errors: compression, check_finite, error feedback, deterministic, CuPy arrays,
non-contiguous x, an `out` that does not fit, no elements, an integer avg, MPI's own
all-reduce of more than LANE_BYTES, a call while others are queued or running.

The other collectives (reduce_scatter, allgather, broadcast, reduce, alltoall) take the
lane too, more simply: a `CallRoute` keeps the call as first built, its checks passed and
its signature made, and runs it again with the next x and out of the same kind (the same
arguments, shape and dtype; `out` None, x itself, or a separate array of the same shape and
dtype), through the same flow as the general path (`calls.base.execute`) without building
and checking it anew.

Example::

    lane = SmallLane(comm._ctx, engine)
    y = lane.allreduce(x, out, "sum", None, None)      # None: take the general path
    rows = lane.collective(("allgather", ...), x, out, build)  # GENERAL: the general path
"""
from __future__ import annotations

import threading
import time
from threading import current_thread

import numpy as np

import kernels

from ..agreement import HEADER_BYTES, Signature
from ..algorithms import plan_for
from ..deterministic import host_fold
from ..options import SUPPORTED, CallOptions, Op
from ..progress import THREAD_NAME
from ..stats import native_traffic, plan_traffic
from ..validation import overlaps_itself
from .allreduce import describe
from .base import TAG_LIMIT, Context, execute
from .riding import rides

__all__ = ["GENERAL", "SmallLane", "Route", "CallRoute"]

ROUTES_LIMIT = 256  # routes kept per communicator (a training loop repeats a few calls)
LANE_BYTES = 64 << 10  # MPI's own all-reduce above this takes the general path (no stage)
RIDE, NATIVE, PLAN = "ride", "native", "plan"  # how a route moves the data
GENERAL = object()  # what `SmallLane.collective` returns for a call it does not take


class Route:
    """What one repeated call decided: its signature, how the data moves, its buffers."""

    __slots__ = ("signature", "shape", "dtype", "op", "elementwise", "kind", "plan", "nbytes",
                 "flat", "count", "stage", "fold", "slot", "sent", "received", "scale_before",
                 "divide_after", "_stats", "_totals", "_values")

    def __init__(self, signature: Signature, shape: tuple, dtype: np.dtype, op: Op,
                 kind: str, size: int, stats, agreement, plan=None):
        self.signature = signature
        self.shape, self.dtype, self.op = shape, dtype, op
        self.flat = len(shape) == 1
        self.elementwise = op.elementwise
        self.scale_before, self.divide_after = op.averaging(dtype, size)
        self.count = count = int(np.prod(shape, dtype=np.int64))
        self.kind, self.plan = kind, plan
        self.nbytes = nbytes = count * dtype.itemsize
        self.stage = np.empty(count, dtype) if kind == NATIVE else None  # its result, then out
        self.fold = host_fold(dtype, op) if kind == RIDE else None
        self.slot = agreement.payload_slot(dtype, shape) if kind == RIDE else None
        if kind == PLAN:
            self.sent, self.received = (n * dtype.itemsize for n in plan_traffic(plan))
            label = plan.algorithm
        else:
            self.sent = self.received = ((size - 1) * nbytes if kind == RIDE
                                         else native_traffic(nbytes, size))
            label = "direct" if kind == RIDE else "native"
        self._values: dict[int, tuple] = {}  # id(records) -> (records, the data's view)
        self._stats = stats
        self._totals = stats.totals(label, modelled=kind == NATIVE)

    def tally(self, seconds: float) -> None:
        """One more call in comm.stats()."""
        self._stats.add(self._totals, seconds, self.sent, self.received)

    def fits(self, out, x) -> bool:
        """Whether `out` can take the result of x as it is (else the general path takes the
        call, and raises where out is wrong)."""
        if type(out) is not np.ndarray or out.shape != self.shape or out.dtype != self.dtype:
            return False
        flags = out.flags
        return (flags.c_contiguous and flags.writeable
                and (out is x or (flags.owndata and x.flags.owndata)  # separate memory
                     or not np.may_share_memory(out, x)))

    def values(self, rows: np.ndarray) -> tuple:
        """Every rank's data in the agreement records: a view of `rows` per rank (the
        transport's, reused: the views are kept per records array)."""
        cached = self._values.get(id(rows))
        if cached is None or cached[0] is not rows:
            if len(self._values) >= 4:  # transports reuse a few records arrays
                self._values.clear()
            view = rows[:, HEADER_BYTES: HEADER_BYTES + self.nbytes].view(self.dtype)
            cached = self._values[id(rows)] = (rows, tuple(view))
        return cached[1]


class CallRoute:
    """A repeated call of a collective besides all-reduce: the call as first built, run
    again with another x and out of the same kind (`fits`)."""

    __slots__ = ("call", "out_shape", "out_dtype")

    def __init__(self, call):
        self.call = call
        out = call.out
        self.out_shape, self.out_dtype = (None, None) if out is None else (out.shape, out.dtype)
        call.x = call.out = None  # the caller's arrays are not kept between calls

    def fits(self, x: np.ndarray, out) -> bool:
        """Whether `out` passes the checks the first call's passed (x's shape and dtype, and
        whether out is None or x, are in the route's key): writable, no two elements in one
        place, and a separate out of the same shape and dtype apart from x."""
        if out is None:
            return True
        if out is not x and not (type(out) is np.ndarray and out.shape == self.out_shape
                                 and out.dtype == self.out_dtype
                                 and not np.may_share_memory(out, x)):
            return False
        flags = out.flags
        return flags.writeable and (flags.c_contiguous or not overlaps_itself(out))


class SmallLane:
    """A communicator's small-call lane (see the module doc)."""

    def __init__(self, ctx: Context, engine):
        transport, agreement, reducer, settings = (ctx.transport, ctx.agreement, ctx.reducer,
                                                    ctx.settings)
        self._ctx = ctx
        self._transport = transport
        self._agreement = agreement
        self._reducer = reducer
        self._settings = settings
        self._engine = engine
        self._timeout = settings.timeout
        self._routes: dict[tuple, Route | None] = {}
        self._calls: dict[tuple, CallRoute | None] = {}
        self._adding = threading.Lock()

    def allreduce(self, x: np.ndarray, out, op, algorithm, deterministic):
        """`allreduce(x, op, algorithm, out=out, deterministic=...)` of a NumPy array with
        no compression, finite check or error feedback; None where the general path runs."""
        if not x.flags.c_contiguous:  # (before a route is built: a broadcast view of 1 TiB
            return None  # took seconds to plan, the peers waiting on the records)
        thread = current_thread()
        key = (x.shape, x.dtype, op, algorithm, deterministic, thread.name)
        try:
            route = self._routes.get(key, False)
        except (TypeError, ValueError):  # an op or algorithm that cannot hash: the general
            return None  # path refuses it
        if route is False:
            route = self._route(key)
        if route is None or (out is not None and not route.fits(out, x)):
            return None
        try:  # before anything is agreed (the general path refuses it on every rank)
            result = np.empty(route.shape, route.dtype) if out is None else out
        except MemoryError:
            return None
        engine = self._engine
        engine.admit("allreduce", thread)
        try:  # (end() also where an interrupt lands as try_begin takes the lock)
            if not engine.try_begin():
                return None
            kind = route.kind
            if kind == RIDE:
                return self._ride(route, x, result)
            return self._checked(route, self._native if kind == NATIVE else self._plan, x, out,
                                 result)
        finally:
            engine.end()

    def collective(self, arguments: tuple, x, out, build):
        """A sync call of a collective besides all-reduce: its result, or GENERAL where the
        general path must run it. `arguments`: the collective's name and its arguments
        besides x and out; `build()` makes the call (its checks run once per route)."""
        if type(x) is not np.ndarray:
            return GENERAL
        kind = None if out is None else "x" if out is x else "out"
        thread = current_thread()
        try:  # each argument's type too: 1, True and 1.0 are one key but not one call
            key = (tuple((type(a), a) for a in arguments), x.shape, x.dtype, kind, thread.name)
            route = self._calls.get(key, False)
        except (TypeError, ValueError):  # an argument that cannot hash: the general path
            return GENERAL  # refuses it
        if route is False:
            route = self._call_route(key, build)
        if route is None or not route.fits(x, out):
            return GENERAL
        engine = self._engine
        engine.admit(arguments[0], thread)
        call = route.call
        try:  # (end() also where an interrupt lands as try_begin takes the lock)
            if not engine.try_begin():
                return GENERAL
            try:  # the route's call is this thread's now, until it returns
                call.x, call.out = x, out
                return execute(self._ctx, call)
            finally:
                call.x = call.out = call.payload = call.prepared = None
        finally:
            engine.end()

    def _call_route(self, key: tuple, build) -> CallRoute | None:
        """The route of a call first seen, or None (a call refused: the general path raises
        its error every time)."""
        call = build()
        route = None if call.error is not None or key[-1] == THREAD_NAME else CallRoute(call)
        with self._adding:
            if len(self._calls) >= ROUTES_LIMIT:
                del self._calls[next(iter(self._calls))]
            self._calls[key] = route
        return route

    def _ride(self, route: Route, x: np.ndarray, result: np.ndarray):
        """Check on, auto, small: every rank's data comes with the records; each rank folds
        them in rank order (the same bits everywhere, those of reference_reduce)."""
        agreement = self._agreement
        moving = False
        seq = agreement.enter("allreduce")
        try:  # (right after enter, as in calls.base.execute)
            route.slot[...] = x
            rows = agreement.ride(route.signature, seq, time.monotonic() + self._timeout,
                                  route.nbytes)
            self._transport.check_peers()  # records sent before a peer gave up still arrive
            moving = True
            start = time.perf_counter()  # what the general path's "direct" times: the fold
            route.fold(route.values(rows), result if route.flat else result.reshape(-1))
            route.tally(time.perf_counter() - start)
        except BaseException as error:
            agreement.raise_failed(route.signature, seq, error, moving)
        return result

    def _checked(self, route: Route, move, x: np.ndarray, out, result: np.ndarray):
        """`move(route, x, out, result, seq, deadline)` as one collective: sequence number and
        notices, deadline, the records' check when it is on; an error ends it as on the
        general path."""
        agreement = self._agreement
        moving = False
        seq = agreement.enter("allreduce")
        try:  # (right after enter, as in calls.base.execute)
            deadline = time.monotonic() + self._timeout
            if agreement.check:
                agreement.agree(route.signature, seq, deadline)
                self._transport.check_peers()  # as the riding call: records sent first
            moving = True
            return move(route, x, out, result, seq, deadline)
        except BaseException as error:
            agreement.raise_failed(route.signature, seq, error, moving)

    def _native(self, route: Route, x: np.ndarray, out, result: np.ndarray, seq: int,
                deadline: float):
        """The transport's own all-reduce. It cannot be cancelled, so memory the caller
        sees is written once it completed."""
        target = route.stage if out is not None else result if route.flat else \
            result.reshape(-1)
        source = x if route.flat else x.reshape(-1)
        if route.scale_before is not None:
            kernels.scale_into(target, source, route.scale_before)
            source = target
        start = time.perf_counter()  # what the general path's "native" times: the call
        self._transport.native_allreduce(source, target, route.elementwise, deadline)
        route.tally(time.perf_counter() - start)
        if route.divide_after is not None:
            kernels.divide_into(target, route.divide_after)
        if out is None:
            return result
        out[...] = target if route.flat else target.reshape(route.shape)  # (np.copyto: 3x)
        return out

    def _plan(self, route: Route, x: np.ndarray, out, result: np.ndarray, seq: int,
              deadline: float):
        """A plan on the reducer's runner: the general path's `_single` without its
        per-call decisions."""
        work = result if route.flat else result.reshape(-1)
        src = None if out is x else (x if route.flat else x.reshape(-1))
        if route.scale_before is not None:
            src = self._reducer.scaled_first(route.op, work if src is None else src)
        start = time.perf_counter()
        self._reducer.host_runner.run(route.plan, work, route.elementwise, seq % TAG_LIMIT,
                                      deadline, src=src)
        route.tally(time.perf_counter() - start)
        if route.divide_after is not None:
            kernels.divide_into(work, route.divide_after)
        self._transport.check_peers()
        return result

    def _route(self, key: tuple) -> Route | None:
        """The route of a call first seen, or None (the general path takes it)."""
        shape, dtype, op, algorithm, deterministic, thread = key
        route = None
        settings = self._settings
        try:
            options = CallOptions.parse(
                op, settings.algorithm if algorithm is None else algorithm, None,
                settings.fusion_bytes, False, False, "allreduce",
                settings.deterministic if deterministic is None else deterministic)
        except (TypeError, ValueError):
            options = None  # the general path raises it
        if options is not None and dtype in SUPPORTED and thread != THREAD_NAME:
            route = self._decide(options, shape, dtype, ("sync", thread))
        with self._adding:  # threads may meet here; the lookups need no lock
            if len(self._routes) >= ROUTES_LIMIT:
                del self._routes[next(iter(self._routes))]
            self._routes[key] = route
        return route

    def _decide(self, options: CallOptions, shape: tuple, dtype: np.dtype,
                issued: tuple) -> Route | None:
        size = self._transport.size
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * dtype.itemsize
        shapes = ((dtype, shape),)
        signature = Signature.of("allreduce", (options, shapes, issued, "numpy"),
                                 lambda: describe(options, shapes, issued, "numpy"))
        reducer = self._reducer
        if self._agreement.check and options.algorithm == "auto" and rides(nbytes, size):
            return Route(signature, shape, dtype, options.op, RIDE, size, reducer.stats,
                         self._agreement)
        if (nbytes == 0 or options.deterministic
                or (options.op is Op.AVG and dtype.kind == "i")):
            return None
        algorithm = reducer.resolve(options.algorithm, nbytes)
        if algorithm == "native":
            return (Route(signature, shape, dtype, options.op, NATIVE, size, reducer.stats,
                          self._agreement) if nbytes <= LANE_BYTES else None)
        plan = plan_for("allreduce", algorithm, reducer.rank, size, count, dtype.itemsize,
                        reducer.topology)
        return Route(signature, shape, dtype, options.op, PLAN, size, reducer.stats,
                     self._agreement, plan)
