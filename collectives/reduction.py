"""The all-reduce of one flat work buffer: the transport's own (`native`) or a plan.

`FlatReducer` owns what every flat all-reduce needs: a PlanRunner per transport (host
arrays over the host transport, CuPy arrays over the device transport), the tuner that
makes `auto` concrete, the error-feedback residuals, and the statistics. Fusion and
compression call it; it calls the executor or the transport, and nothing calls back.

A native all-reduce cannot be cancelled: after a timeout it may still write its result.
So it never writes memory the caller sees (`exposed`): such results go through a buffer
of the reducer's and are copied out after success.

Example::

    reducer.reduce(work, "sum", reducer.resolve("auto", work.nbytes), None, None, 7, deadline)
"""
from __future__ import annotations

import logging
import time

import numpy as np

import kernels

from .algorithms import plan_for
from .algorithms.levels import by_level
from .compression import ErrorFeedback
from .execution import IDENTITY, PlanRunner
from .stats import StatsRecorder, plan_traffic
from .topology import Topology

__all__ = ["FlatReducer"]

log = logging.getLogger("collectives")


class FlatReducer:
    """All-reduces of flat work buffers over a communicator's transports."""

    def __init__(self, host, device, topology: Topology, tuner, *, debug: bool = False):
        self.host = host
        self.size = host.size
        self.rank = host.rank
        self.topology = topology
        self.tuner = tuner
        self.stats = StatsRecorder()
        self.feedback = ErrorFeedback()
        self._debug = debug
        self.host_runner = PlanRunner(host)
        self.device_runner = None if device is None else PlanRunner(device)
        self._scalar = np.empty(1, np.float64)

    def runner(self, like) -> PlanRunner:
        """The runner whose transport moves like's memory (the device one for CuPy)."""
        if self.device_runner is None or type(like) is np.ndarray \
                or kernels.array_module(like) is np:
            return self.host_runner
        return self.device_runner

    def buffer(self, purpose: str, like, dtype, elements: int):
        """A reusable flat buffer on like's array module (see PlanRunner.buffer)."""
        return self.runner(like).buffer(purpose, like, dtype, elements)

    def scaled_first(self, op, source):
        """The flat `source` scaled in a buffer of ours where `op` scales its input before
        the sum (a float16 avg: Op.averaging); None where it does not. Never the caller's
        memory: a failed call leaves that as it was."""
        before, _ = op.averaging(source.dtype, self.size)
        if before is None:
            return None
        scaled = self.buffer("scaled", source, source.dtype, source.size)
        kernels.scale_into(scaled, source, before)
        return scaled

    def resolve(self, algorithm: str, nbytes: int, *, compressed: bool = False) -> str:
        """`auto` made concrete for a message of `nbytes` (the tuner's choice; `compressed`:
        among the plans, whose codec runs per message, never MPI's own all-reduce, which
        reduces 16-bit values through a Python user op)."""
        if algorithm != "auto":
            return algorithm
        if nbytes == 0 and not compressed:  # (compressed: a plan, as documented; the 88th
            return "native"  # review) nothing to move: the cheapest call, no pricing needed
        name = self.tuner.choose(nbytes, plans_only=compressed)
        if self._debug:
            log.debug("rank %d: auto chose %s for %d bytes", self.rank, name, nbytes)
        return name

    def reduce(self, work, op: str, algorithm: str, codec, src, tag: int, deadline: float,
               exposed: bool = False, between_nodes: bool = False) -> None:
        """All-reduce the flat `work` in place (`op`: sum, max, min) with `algorithm`
        (concrete) and `codec` (None: uncompressed); `src`: read the input there instead
        (None: work holds it). `exposed`: work is memory the caller sees. `between_nodes`:
        the codec travels on the plan's messages between nodes only, where its rounds keep
        to one level each (algorithms.levels), else on all."""
        runner = self.host_runner if self.device_runner is None else self.runner(work)
        start = time.perf_counter()
        if algorithm == "native":
            if codec is None and not exposed:  # the common case, kept short
                runner.transport.native_allreduce(work if src is None else src, work, op,
                                                  deadline)
                label, nbytes = algorithm, work.nbytes
            else:
                self._native(runner, work, op, codec, src, deadline, exposed)
                label, nbytes = f"{algorithm}+{codec.name}" if codec else algorithm, \
                    work.size * (work.itemsize if codec is None else codec.dtype.itemsize)
            moved = 2 * (self.size - 1) * nbytes // self.size
            self.stats.record(label, time.perf_counter() - start, moved, moved, modelled=True)
            return
        wire = work.dtype if codec is None else codec.dtype
        label = algorithm if codec is None else f"{algorithm}+{codec.name}"
        plan = plan_for("allreduce", algorithm, self.rank, self.size, work.size, wire.itemsize,
                        self.topology)
        parts = by_level(plan, self.topology.node_of) if codec and between_nodes else None
        if parts is None:
            parts = [(True, plan)]
        else:
            label += " between nodes"
        sent = received = 0
        for i, (across, part) in enumerate(parts):
            part_codec, part_wire = (codec or IDENTITY, wire) if across else (IDENTITY, work.dtype)
            runner.run(part, work, op, tag, deadline, part_codec, src=src if i == 0 else None)
            part_sent, part_received = plan_traffic(part)
            sent += part_sent * part_wire.itemsize
            received += part_received * part_wire.itemsize
        self.stats.record(label, time.perf_counter() - start, sent, received)

    def _native(self, runner: PlanRunner, work, op: str, codec, src, deadline: float,
                exposed: bool) -> None:
        transport = runner.transport
        if codec is not None:
            payload = runner.buffer("wire", work, codec.dtype, work.size)
            codec.encode(work, payload)
            transport.native_allreduce(payload, payload, op, deadline)
            codec.decode_copy(work, payload)
        elif exposed:
            result = runner.buffer("native", work, work.dtype, work.size)
            transport.native_allreduce(work if src is None else src, result, op, deadline)
            kernels.copy_into(work, result)
        else:
            transport.native_allreduce(work if src is None else src, work, op, deadline)

    def agree_max(self, value: float, deadline: float) -> float:
        """max of `value` over ranks: one all-reduce of one float (compression's scale)."""
        self._scalar[0] = value
        return float(self.agree_maxes(self._scalar, deadline)[0])

    def agree_maxes(self, values: np.ndarray, deadline: float) -> np.ndarray:
        """Each of the float64 `values` maxed over ranks, in place: one all-reduce."""
        if self.size == 1:
            return values
        start = time.perf_counter()
        self.host.native_allreduce(values, values, "max", deadline)
        moved = 2 * (self.size - 1) * values.nbytes // self.size
        self.stats.record("scale-agreement", time.perf_counter() - start, moved, moved,
                          modelled=True)
        return values
