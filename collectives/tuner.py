"""`algorithm="auto"`: price every candidate with the cost model and run the cheapest.

Each plan-based algorithm is priced by simulating its real plans on this communicator's
topology (collectives.simulator) with the constants from the tuning file that
`collectives-bench --calibrate` writes, plus the per-call cost every plan run pays. The
transport's own all-reduce (`native`) is a black box, priced from its calibrated times.
Without a tuning file, DEFAULT_CALIBRATION's constants are used. A plan is chosen over
`native` only when predicted NATIVE_MARGIN (25%) faster, LARGE_NATIVE_MARGIN (5%) from 1 MiB. Choices are cached per message
size, so the simulator runs once per distinct size. With COLLECTIVES_DEBUG=1 each new
choice is logged with every candidate's predicted time.

Example::

    tuner = Tuner.load(Topology.from_local_size(4, 4))
    tuner.choose(8)              # 'native' (latency-bound)
    tuner.predict(64 << 20)      # {'native': 0.05, 'ring': 0.03, ...} seconds
"""
from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .algorithms import PLANNERS
from .costmodel import DEFAULT_CALIBRATION, ClusterModel, load_calibration
from .errors import unknown_choice
from .simulator import simulate
from .topology import Topology

CHOICE_CACHE_SIZE = 4096  # message sizes whose choice is remembered (oldest dropped first)
# Larger messages are priced as one of this size, scaled: they are bandwidth-bound, and
# simulating every segment of many GiB takes seconds (2**62 bytes never returned).
PRICED_BYTES = 1 << 30
# A plan replaces the transport's own all-reduce only when predicted this much faster:
# native is the baseline users already have, and it runs in C where plans pay Python per
# message, which the model prices least well below LARGE_MESSAGE (the accuracy target).
# From LARGE_MESSAGE up the calls are bandwidth-bound and the model held plans within +-12%
# of measured on the lab's nodes (docs/cluster.md), where the wide margin kept MPI's own
# all-reduce though the plans ran 17% faster.
NATIVE_MARGIN = 0.25
LARGE_NATIVE_MARGIN = 0.05
LARGE_MESSAGE = 1 << 20
# compression="auto" compresses only when predicted this much faster: never slower by more
# than the model's error where it does not pay (one node's shared memory, small messages).
COMPRESSION_MARGIN = 0.10
# The plan whose rounds keep to one level each (inside nodes, then across, then inside):
# compression="auto" may compress its messages between nodes only.
BY_LEVEL = "hierarchical"

__all__ = ["CANDIDATES", "Tuner", "Wire"]

CANDIDATES: tuple[str, ...] = ("native", *PLANNERS["allreduce"])

log = logging.getLogger("collectives.tuner")


class Tuner:
    """Picks, per message size, the candidate with the least predicted time on `cluster`."""

    def __init__(self, cluster: ClusterModel, *, source: str = "", debug: bool = False,
                 itemsize: int = 4):
        self.cluster = cluster
        self.source = source
        self.itemsize = itemsize
        self._debug = debug
        self._choices: dict = {}  # nbytes (all-reduce) or (collective, nbytes) -> choice
        if debug:
            _show_debug(log)

    @classmethod
    def load(cls, topology: Topology, *, path: Path | None = None, debug: bool = False) -> "Tuner":
        """A tuner for `topology` from the tuning file (COLLECTIVES_TUNING_FILE or the cache)."""
        calibration, source = load_calibration(topology.size, path)
        return cls(calibration.cluster(topology, name="this machine"), source=source, debug=debug)

    @classmethod
    def agreed(cls, transport, topology: Topology, *, debug: bool = False) -> "Tuner":
        """Like load, but only rank 0 reads the tuning file and every rank takes its
        calibration, so all ranks choose alike (other ranks' files are never read).

        An unreadable or malformed tuning file is reported (a warning) and the defaults
        are used, whatever went wrong on rank 0 (the others wait for its answer).
        """
        mine = None
        if transport.rank == 0:
            try:
                calibration, source = load_calibration(topology.size)
                # sent without `measured`, which no rank reads here: a `measured` nested
                # 960 deep failed to pickle, and the others waited for ever in init (the
                # ninety-second review)
                mine = (replace(calibration, measured={}), source)
            except Exception as error:  # (e.g. Path.home()'s RuntimeError without a HOME)
                log.warning("%s; auto uses the default cost model", error)
                mine = (replace(DEFAULT_CALIBRATION, size=topology.size),
                        "defaults (bad tuning file)")
        calibration, source = transport.allgather_object(mine)[0]
        return cls(calibration.cluster(topology, name="this machine"), source=source, debug=debug)

    def predict(self, nbytes: int, collective: str = "allreduce") -> dict[str, float]:
        """Predicted seconds of one `collective` of `nbytes` (the plans' count of bytes: the
        whole buffer for allgather and alltoall) per candidate; beyond PRICED_BYTES the
        times of PRICED_BYTES, scaled."""
        nbytes = _message_bytes(nbytes)
        _known(collective)
        if nbytes > PRICED_BYTES:
            scale = nbytes / PRICED_BYTES
            return {name: t * scale for name, t in self.predict(PRICED_BYTES, collective).items()}
        count = nbytes // self.itemsize
        if collective in ("allgather", "alltoall"):  # whole rows, one per rank
            count -= count % self.cluster.size
        times = {"native": self.cluster.native_time(nbytes, collective)}
        for name in PLANNERS[collective]:
            plan_time = simulate(name, self.cluster, count, itemsize=self.itemsize,
                                 collective=collective).time
            times[name] = self.cluster.call_time(nbytes) + plan_time
        return times

    def choose(self, nbytes: int, collective: str = "allreduce", *,
               plans_only: bool = False) -> str:
        """The candidate to run for a `collective` of `nbytes` (cached per size);
        `plans_only`: the best plan, never `native` (a compressed call: MPI's own
        collective has no codec)."""
        nbytes = min(_message_bytes(nbytes), PRICED_BYTES)  # larger: the same choice
        _known(collective)
        key = nbytes if collective == "allreduce" and not plans_only else \
            (collective, nbytes, plans_only)
        choice = self._choices.get(key)
        if choice is None:
            times = self.predict(nbytes, collective)
            if plans_only:
                del times["native"]
            if len(self._choices) >= CHOICE_CACHE_SIZE:  # sizes that vary forever stay bounded
                del self._choices[next(iter(self._choices))]
            choice = self._choices[key] = _cheapest(times, nbytes)
            if self._debug:
                ranked = ", ".join(f"{name} {times[name] * 1e6:.1f} us"
                                   for name in sorted(times, key=times.get))
                log.debug("auto: %s of %d bytes on %d ranks -> %s; predicted %s (%s)",
                          collective, nbytes, self.cluster.size, choice, ranked, self.source)
        return choice

    def predict_compressed(self, nbytes: int, algorithm: str) -> float:
        """Predicted seconds of a plan's all-reduce of `nbytes` (float32) with 16 bits on the
        wire: the plan, the codec's passes, and the agreement on the scale (the max of
        |x| over ranks: a native all-reduce of one float) before it."""
        plan = simulate(algorithm, self.cluster, nbytes // self.itemsize,
                        itemsize=self.itemsize, wire_itemsize=2)
        return (self.cluster.call_time(nbytes) + self.cluster.codec_time(nbytes)
                + self.cluster.native_time(8) + plan.time)

    def predict_between_nodes(self, nbytes: int, algorithm: str) -> float:
        """Predicted seconds of a plan's all-reduce of `nbytes` (float32) with 16 bits on
        its messages between nodes only: the uncompressed plan less half the time its
        critical path spends on inter-node messages, queued or moving (half the bytes), plus
        the codec's passes over the inter-node stage's bytes and the scale's agreement."""
        plan = simulate(algorithm, self.cluster, nbytes // self.itemsize, itemsize=self.itemsize)
        across = sum(hop.seconds for hop in plan.critical_path.hops
                     if hop.kind in ("message", "queued") and hop.link == "inter")
        return (self.cluster.call_time(nbytes)
                + self.cluster.codec_time(nbytes, between_nodes=True)
                + self.cluster.native_time(8) + plan.time - across / 2)

    def compression(self, nbytes: int, algorithm: str) -> Wire:
        """What `compression="auto"` runs for an all-reduce of `nbytes` of float32: 16 bits
        on the wire only where the predicted time with the codec's passes
        (ClusterModel.codec_time) and the scale's agreement (a native all-reduce of one
        float) beats the uncompressed best by COMPRESSION_MARGIN; on several nodes also
        hierarchical with 16 bits between nodes only (its nodes' stages stay 32-bit).
        `algorithm` "auto" may change with compression; MPI's own all-reduce is never
        compressed (it reduces 16-bit values through a Python user op)."""
        nbytes = min(_message_bytes(nbytes), PRICED_BYTES)
        if algorithm not in ("auto", "native", *PLANNERS["allreduce"]):
            raise unknown_choice("algorithm", algorithm, ("auto", "native", *PLANNERS["allreduce"]))
        key = ("compression", algorithm, nbytes)
        choice = self._choices.get(key)
        if choice is None:
            plain = self.predict(nbytes)
            best = _cheapest(plain, nbytes) if algorithm == "auto" else algorithm
            plans = list(PLANNERS["allreduce"]) if algorithm == "auto" else \
                [algorithm] if algorithm in PLANNERS["allreduce"] else []
            packed = {Wire(name, "fp16"): self.predict_compressed(nbytes, name)
                      for name in plans}
            if len(self.cluster.topology.nodes) > 1 and BY_LEVEL in plans:
                packed[Wire(BY_LEVEL, "fp16", True)] = \
                    self.predict_between_nodes(nbytes, BY_LEVEL)
            choice = Wire(best)
            if packed:
                fastest = min(packed, key=lambda wire: (packed[wire], wire))
                if packed[fastest] * (1 + COMPRESSION_MARGIN) < plain[best]:
                    choice = fastest
            if len(self._choices) >= CHOICE_CACHE_SIZE:
                del self._choices[next(iter(self._choices))]
            self._choices[key] = choice
            if self._debug:
                said = ", ".join(f"{wire} {t * 1e6:.1f} us" for wire, t in packed.items())
                log.debug("auto compression: %d bytes -> %s; uncompressed %s %.1f us; %s (%s)",
                          nbytes, choice, best, plain[best] * 1e6,
                          said or "no plan to compress", self.source)
        return choice


class Wire(NamedTuple):
    """What compression="auto" runs: the algorithm, its compression (None: uncompressed),
    and whether the codec travels between nodes only."""

    algorithm: str
    compression: str | None = None
    between_nodes: bool = False

    def __str__(self) -> str:
        if self.compression is None:
            return self.algorithm
        return f"{self.algorithm}+{self.compression}" + \
            (" between nodes" if self.between_nodes else "")


MAX_MESSAGE_BYTES = 1 << 62  # (2**1100 overflowed a float in predict)


def _message_bytes(nbytes) -> int:
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) \
            or not 0 <= nbytes <= MAX_MESSAGE_BYTES:
        raise ValueError(f"nbytes must be an int in [0, 2**62], got {nbytes!r}")
    return int(nbytes)


def _known(collective: str) -> None:
    if collective not in PLANNERS:
        raise unknown_choice("collective", collective, PLANNERS)


def _cheapest(times: dict[str, float], nbytes: int) -> str:
    """The least predicted time; `native` (where priced) unless a plan beats it by
    NATIVE_MARGIN (LARGE_NATIVE_MARGIN for messages of LARGE_MESSAGE and more)."""
    best = min(times, key=lambda name: (times[name], name))
    margin = LARGE_NATIVE_MARGIN if nbytes >= LARGE_MESSAGE else NATIVE_MARGIN
    if best != "native" and "native" in times and times[best] * (1 + margin) >= times["native"]:
        return "native"
    return best


def _show_debug(logger: logging.Logger) -> None:
    """Make COLLECTIVES_DEBUG=1 visible on stderr unless the application set up logging."""
    logger.setLevel(logging.DEBUG)
    if not logger.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("collectives: %(message)s"))
        logger.addHandler(handler)
