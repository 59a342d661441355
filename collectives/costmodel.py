"""Cost model constants: link classes, a cluster, and the tuning file that stores them.

A message of n bytes over a link costs ``alpha + n * beta`` (LogP's latency and inverse
bandwidth); reducing n bytes into the work buffer costs ``n * gamma`` on the receiver
(Thakur, Rabenseifner & Gropp 2005). A cluster has two link classes, intra-node and
inter-node, and a zero-copy link (shared memory whose peer buffer the receiver reduces
from directly) has no transfer of its own: the receiver reads the peer's memory while it
reduces. A host link (`cpu_copy`: MPI between processes of one machine) has no copy engine
either: the ranks' own cores move its bytes, so they queue with the receiver's reductions.
Where copies and reductions run faster for data that stays in cache, per-byte constants
measured per message size (`ClusterModel.by_size`) replace the flat ones for calls of that
size. The simulator (collectives.simulator) prices plans with these constants;
``collectives-bench --calibrate`` fits them on this machine and writes the tuning file.

Example::

    >>> nvlink = LinkModel.from_bandwidth(alpha_us=2, gbytes_per_s=450)
    >>> ib = LinkModel.from_bandwidth(alpha_us=5, gbytes_per_s=50)
    >>> cluster = ClusterModel.uniform(nodes=16, ranks_per_node=8, intra=nvlink, inter=ib,
    ...                                gamma=1 / 1000e9, name="16x8 NVLink+IB")
    >>> cluster.size, cluster.link(0, 7) is nvlink, cluster.link(0, 8) is ib
    (128, True, True)
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping, Sequence

from .files import check_writable, folder_locked, read_regular, write_atomically
from .topology import Topology

__all__ = [
    "LinkModel", "NativeModel", "ClusterModel", "Calibration", "DEFAULT_CALIBRATION",
    "tuning_path", "read_tuning", "check_tuning_file", "write_calibration", "load_calibration",
]

TUNING_ENV = "COLLECTIVES_TUNING_FILE"
DEFAULT_CODEC_BETA = 1 / 10e9  # the compiled codec on one core (docs/kernels.md)
TUNING_VERSION = 1
COPIES = ("none", "in", "in+out")


@dataclass(frozen=True)
class LinkModel:
    """One link class: ``alpha`` seconds per message, ``beta`` seconds per byte.

    `zero_copy`: the receiver reads the sender's memory in place (the shm transport).
    `cpu_copy`: the ranks' own cores move the bytes (MPI over shared memory on one host, no
    copy engine). Over both, a message costs `alpha` of latency, then its bytes occupy the
    receiver's compute engine, queued with its reductions: ``beta`` per byte to copy,
    ``gamma`` (the cluster's) per byte to reduce (for `cpu_copy`, gamma then includes the
    copy out of the transport, as measured by a reduce exchange).
    `per_node`: one such link per node (a NIC), shared by every flow entering or leaving
    the node: k concurrent flows move at beta * k each (simulator.flows); otherwise every
    pair of ranks has a link of its own.
    """

    alpha: float
    beta: float
    zero_copy: bool = False
    cpu_copy: bool = False
    per_node: bool = False

    @property
    def on_receiver(self) -> bool:
        """Whether the receiver's compute engine does the transfer's byte work."""
        return self.zero_copy or self.cpu_copy

    def __post_init__(self) -> None:
        for name in ("alpha", "beta"):
            _real(getattr(self, name), f"link {name}")
        if not (self.alpha >= 0 and self.beta >= 0 and math.isfinite(self.alpha + self.beta)):
            raise ValueError(f"link alpha and beta must be finite and >= 0, got {self.alpha}, {self.beta}")
        flags = {"zero_copy": self.zero_copy, "cpu_copy": self.cpu_copy,
                 "per_node": self.per_node}
        wrong = {name: value for name, value in flags.items() if not isinstance(value, bool)}
        if wrong:  # ("false", a non-empty string, would count as true)
            raise ValueError(f"link flags must be true or false, got {wrong}")
        if self.zero_copy and self.cpu_copy:
            raise ValueError("a link is zero_copy (the receiver reads in place) or cpu_copy "
                             "(a core copies), not both")

    @classmethod
    def from_bandwidth(cls, *, alpha_us: float, gbytes_per_s: float, zero_copy: bool = False,
                       cpu_copy: bool = False, per_node: bool = False) -> "LinkModel":
        """A link from a latency in microseconds and a bandwidth in GB/s (1e9 bytes/s)."""
        if gbytes_per_s <= 0:
            raise ValueError(f"link bandwidth must be > 0 GB/s, got {gbytes_per_s}")
        return cls(alpha_us * 1e-6, 1 / (gbytes_per_s * 1e9), zero_copy, cpu_copy, per_node)

    def time(self, nbytes: float) -> float:
        """Seconds for one message of `nbytes`."""
        return self.alpha + nbytes * self.beta


@dataclass(frozen=True)
class NativeModel:
    """The transport's own all-reduce, a black box priced from its measured times.

    `points` are (bytes, seconds) of whole calls measured at `size` ranks; between them the
    time is interpolated log-log, below them it is the smallest's, above them it grows
    linearly as between the last two. At another world size it is modelled as the cheaper
    of the two schedules MPI libraries switch between (recursive doubling, Rabenseifner's
    halving-doubling), priced with the link constants.
    """

    size: int
    points: tuple[tuple[int, float], ...] = ()

    def measured(self, nbytes: int, size: int) -> float | None:
        """The interpolated measured time, or None outside what was measured."""
        points = self.points
        if size != self.size or len(points) < 2:
            return None
        if nbytes <= points[0][0]:
            return points[0][1]
        if nbytes >= points[-1][0]:
            (x0, y0), (x1, y1) = points[-2:]
            return y1 + (nbytes - x1) * max(y1 - y0, 0.0) / (x1 - x0)
        return _interpolate_row(points, nbytes)[0]

    @staticmethod
    def modelled(nbytes: int, size: int, link: LinkModel, gamma: float,
                 collective: str = "allreduce") -> float:
        """The cheaper of the schedules MPI libraries switch between for `collective`:
        recursive doubling or Rabenseifner's halving-doubling for all-reduce, recursive
        halving or a ring for reduce-scatter and all-gather, a binomial tree or
        scatter + all-gather for broadcast, a tree or reduce-scatter + gather for reduce,
        pairwise exchange for all-to-all."""
        steps = math.ceil(math.log2(size)) if size > 1 else 0
        share = (size - 1) / size * nbytes
        alpha, beta = link.alpha, link.beta
        if collective == "allreduce":
            return min(steps * (alpha + nbytes * (beta + gamma)),
                       2 * steps * alpha + share * (2 * beta + gamma))
        if collective == "reduce_scatter":
            return steps * alpha + share * (beta + gamma)
        if collective == "allgather":
            return steps * alpha + share * beta
        if collective == "broadcast":
            return min(steps * (alpha + nbytes * beta), 2 * steps * alpha + 2 * share * beta)
        if collective == "reduce":
            return min(steps * (alpha + nbytes * (beta + gamma)),
                       2 * steps * alpha + share * (2 * beta + gamma))
        if collective == "alltoall":
            return (size - 1) * alpha + share * beta
        raise ValueError(f"no native model for {collective!r}")


def _interpolate_row(rows: Sequence[tuple], x: float) -> tuple[float, ...]:
    """The row at `x`, each column interpolated log-log (linearly where a value is 0)."""
    if x <= rows[0][0]:
        return tuple(rows[0][1:])
    if x >= rows[-1][0]:
        return tuple(rows[-1][1:])
    for low, high in zip(rows, rows[1:]):
        if low[0] <= x <= high[0]:
            if high[0] == low[0]:
                return tuple(low[1:])
            w = (math.log(x) - math.log(low[0])) / (math.log(high[0]) - math.log(low[0]))
            return tuple(math.exp((1 - w) * math.log(a) + w * math.log(b)) if a > 0 and b > 0
                         else (1 - w) * a + w * b for a, b in zip(low[1:], high[1:]))
    raise AssertionError("unreachable: rows are sorted")


def _check_by_size(rows) -> None:
    if any(len(row) != 6 or not row[0] > 0 or not all(0 <= v < math.inf for v in row[1:])
           for row in rows) or any(a[0] >= b[0] for a, b in zip(rows, rows[1:])):
        raise ValueError("by_size rows must be (bytes > 0, intra beta, inter beta, gamma, "
                         f"copy_beta, call_overhead) finite and >= 0 with increasing bytes, "
                         f"got {rows!r}")


@dataclass(frozen=True)
class ClusterModel:
    """A virtual cluster: which ranks share a node, two link classes, a reduction rate.

    `call_overhead` (seconds) is what every plan-based call costs besides its plan.
    `copies` says which copies the executor adds to the plan (executor.IoSchedule), each
    `copy_beta` seconds per byte on the rank's compute: "none" (data already in the work
    buffer), "in" (the input is loaded into the work buffer region by region), "in+out"
    (also the result is written out of a shared work buffer: the shm transport). The
    topology's `grid` is the (X, Y) shape torus2d runs on. With `torus_links`, the ranks
    are wired as that grid with wrap-around links, and a message between ranks `h` hops
    apart shares each link it crosses: it costs ``alpha + h * bytes * beta``.

    `by_size` rows ``(call bytes, intra beta, inter beta, gamma, copy_beta, call_overhead)``,
    measured with buffers of that size, give the constants of a call of that many bytes
    (`at_message`): interpolated log-log between rows, the nearest row outside them. On a
    host, 1 MiB stays in cache and 64 MiB does not, and that changes the per-byte costs
    several fold; the per-call cost grows too, as the call's Python runs on caches its data
    has just evicted.
    """

    topology: Topology
    intra: LinkModel
    inter: LinkModel
    gamma: float
    call_overhead: float = 0.0
    copy_beta: float = 0.0
    copies: str = "none"
    native: NativeModel | None = None
    name: str = ""
    torus_links: bool = False
    by_size: tuple[tuple[int, float, float, float, float, float], ...] = ()
    codec_beta: float = DEFAULT_CODEC_BETA  # seconds per float32 byte a 16-bit codec pass takes

    def __post_init__(self) -> None:
        if self.copies not in COPIES:
            raise ValueError(f"copies must be one of {', '.join(COPIES)}, got {self.copies!r}")
        _check_by_size(self.by_size)

    def at_message(self, nbytes: int) -> "ClusterModel":
        """This cluster with the constants of a call of `nbytes` (`by_size`)."""
        rows = self.by_size
        if not rows:
            return self
        cache = self.__dict__.setdefault("_at", {})
        model = cache.get(nbytes)
        if model is None:
            intra, inter, gamma, copy_beta, call_overhead = _interpolate_row(rows, nbytes)
            model = replace(self, intra=replace(self.intra, beta=intra),
                            inter=replace(self.inter, beta=inter), gamma=gamma,
                            copy_beta=copy_beta, call_overhead=call_overhead, by_size=())
            if len(cache) >= 256:
                cache.clear()
            cache[nbytes] = model
        return model

    @classmethod
    def uniform(cls, *, nodes: int, ranks_per_node: int, grid: tuple[int, int] | None = None,
                **kwargs) -> "ClusterModel":
        """`nodes` nodes of `ranks_per_node` consecutive ranks each (optionally on a torus grid)."""
        if nodes < 1 or ranks_per_node < 1:
            raise ValueError(f"need nodes >= 1 and ranks_per_node >= 1, got {nodes}, {ranks_per_node}")
        topology = Topology.from_local_size(nodes * ranks_per_node, ranks_per_node, grid=grid)
        return cls(topology, **kwargs)

    @property
    def size(self) -> int:
        return self.topology.size

    def link(self, src: int, dst: int) -> LinkModel:
        """The link class between two ranks."""
        node_of = self.topology.node_of
        return self.intra if node_of[src] == node_of[dst] else self.inter

    def hops(self, src: int, dst: int) -> int:
        """Links a message crosses: 1, or the wrap-around grid distance with torus_links."""
        if not self.torus_links:
            return 1
        where = self._grid_positions()
        (ys, xs), (yd, xd) = where[src], where[dst]
        x, y = self.topology.grid_shape()
        dx, dy = abs(xs - xd), abs(ys - yd)
        return max(1, min(dx, x - dx) + min(dy, y - dy))

    def _grid_positions(self) -> dict[int, tuple[int, int]]:
        cached = self.__dict__.get("_positions")
        if cached is None:
            cached = {rank: (y, x) for y, row in enumerate(self.topology.grid_rows())
                      for x, rank in enumerate(row)}
            object.__setattr__(self, "_positions", cached)
        return cached

    def native_time(self, nbytes: int, collective: str = "allreduce") -> float:
        """Predicted seconds of the transport's own `collective` of `nbytes` (as the plans
        count it: the whole buffer for allgather and alltoall)."""
        if collective == "allreduce":
            measured = self.native.measured(nbytes, self.size) if self.native else None
            if measured is not None:
                return measured
        slowest = self.inter if len(self.topology.nodes) > 1 else self.intra
        # MPI libraries first copy the send buffer into the receive buffer (MPICH's and
        # Open MPI's algorithms); the executor sends and reduces x where it lies.
        return (self.call_overhead + nbytes * self.copy_beta
                + NativeModel.modelled(nbytes, self.size, slowest, self.gamma, collective))

    def codec_time(self, nbytes: int, *, between_nodes: bool = False) -> float:
        """Seconds a compressed all-reduce of `nbytes` (float32) spends in its codec on each
        rank, beside its plan: the scale and the last rounding (a pass each over the
        buffer), and every byte sent encoded and received decoded (2 (p-1)/p n each way;
        `between_nodes`: only hierarchical's inter-node stage, 2 (N-1)/p n for N nodes)."""
        p, nodes = self.size, len(self.topology.nodes)
        if between_nodes:
            hops = 2 * (nodes - 1) / p if p > 1 else 0.0
        else:
            hops = 2 * (p - 1) / p if p > 1 else 0.0
        return (2 + 2 * hops) * nbytes * self.codec_beta

    def call_time(self, nbytes: int) -> float:
        """Seconds a plan-based call of `nbytes` spends outside its plan (validation,
        agreement, setup): `call_overhead`, or its `by_size` value for that size."""
        return self.at_message(nbytes).call_overhead


@dataclass(frozen=True)
class Calibration:
    """What `collectives-bench --calibrate` measured at one world size on one machine."""

    size: int
    intra: LinkModel
    inter: LinkModel
    gamma: float
    call_overhead: float
    copy_beta: float
    native: tuple[tuple[int, float], ...] = ()
    measured: Mapping[str, object] = field(default_factory=dict)
    by_size: tuple[tuple[int, float, float, float, float, float], ...] = ()
    codec_beta: float = 0.0  # 0: not measured (DEFAULT_CODEC_BETA is used)

    def __post_init__(self) -> None:
        constants = (self.gamma, self.call_overhead, self.copy_beta, self.codec_beta)
        if not all(0 <= v < math.inf for v in constants) or self.size < 0:
            raise ValueError(f"gamma, call_overhead, copy_beta and codec_beta must be finite "
                             f"and >= 0 and size >= 0, got {constants}, size {self.size}")
        native = self.native
        if not all(b > 0 and 0 <= t < math.inf for b, t in native) or any(
                a[0] >= b[0] for a, b in zip(native, native[1:])):
            raise ValueError(f"native points must be (bytes > 0, seconds >= 0) with increasing "
                             f"bytes, got {native}")
        _check_by_size(self.by_size)

    def cluster(self, topology: Topology, *, name: str = "") -> ClusterModel:
        """This machine as a ClusterModel for `topology` (its native table counts at `size`).

        The executor copies the input in region by region, and with a zero-copy (shared
        work buffer) transport the result out too.
        """
        return ClusterModel(topology, self.intra, self.inter, self.gamma, self.call_overhead,
                            self.copy_beta, "in+out" if self.intra.zero_copy else "in",
                            native=NativeModel(self.size, self.native), name=name,
                            by_size=self.by_size,
                            codec_beta=self.codec_beta or DEFAULT_CODEC_BETA)

    def as_json(self) -> dict:
        data = asdict(self)
        data["native"] = [list(point) for point in self.native]
        data["by_size"] = [list(row) for row in self.by_size]
        return data

    @classmethod
    def from_json(cls, data: Mapping) -> "Calibration":
        """A calibration from its JSON object; TypeError/KeyError/ValueError if malformed."""
        if not isinstance(data, Mapping):
            raise TypeError(f"expected an object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise KeyError(f"unknown keys {sorted(unknown)}")
        return cls(size=_whole(data["size"], "size"), intra=LinkModel(**data["intra"]),
                   inter=LinkModel(**data["inter"]), gamma=_real(data["gamma"], "gamma"),
                   call_overhead=_real(data["call_overhead"], "call_overhead"),
                   copy_beta=_real(data["copy_beta"], "copy_beta"),
                   native=_rows(data.get("native", []), "native", numbers=1),
                   measured=_object(data.get("measured", {}), "measured"),
                   by_size=_rows(data.get("by_size", []), "by_size", numbers=5),
                   codec_beta=_real(data.get("codec_beta", 0.0), "codec_beta"))


def _rows(table, name: str, *, numbers: int) -> tuple[tuple, ...]:
    """A JSON table of rows [bytes, `numbers` numbers] as tuples; ValueError naming the row
    of another shape (`"by_size": [[]]` was an IndexError), TypeError a value of another
    type."""
    if not isinstance(table, list):
        raise ValueError(f"{name} must be a list of rows, got {table!r}")
    rows = []
    for i, row in enumerate(table):
        if not isinstance(row, list) or len(row) != 1 + numbers:
            raise ValueError(f"{name} row {i} must be [bytes, {numbers} "
                             f"number{'s' * (numbers > 1)}], got {row!r}")
        try:
            rows.append((_whole(row[0], "bytes"), *(_real(v, "seconds") for v in row[1:])))
        except TypeError as error:
            raise TypeError(f"{name} row {i}: {error}") from None
    return tuple(rows)


def _real(value, name: str) -> float:
    """A JSON number as a float; TypeError for anything else (true, "1e-9")."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    return float(value)


def _object(value, name: str) -> dict:
    """A JSON object; TypeError for anything else (a list, a string)."""
    if not isinstance(value, dict):
        raise TypeError(f"{name} must be an object, got {type(value).__name__}")
    return value


def _whole(value, name: str) -> int:
    """A JSON integer; TypeError for anything else (true, 2.5, "2")."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return value


# Without a tuning file: MPI over shared memory inside a node (the default transport; the
# ranks' cores copy), a network link, and NumPy reductions of a typical small host, with
# Python's per-message cost in alpha. Calibrate for real numbers.
DEFAULT_CALIBRATION = Calibration(
    size=0, intra=LinkModel(alpha=15e-6, beta=1 / 4e9, cpu_copy=True),
    inter=LinkModel(alpha=30e-6, beta=1 / 1e9),
    gamma=1 / 3e9, call_overhead=20e-6, copy_beta=1 / 8e9)


def tuning_path() -> Path:
    """COLLECTIVES_TUNING_FILE, else $XDG_CACHE_HOME (~/.cache where it is unset or not an
    absolute path, as the XDG spec says)/collectives/tuning.json; ValueError naming the
    variable where a home directory it needs is unknown."""
    explicit = os.environ.get(TUNING_ENV)
    try:
        if explicit:
            return Path(explicit).expanduser()
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        cache = xdg if os.path.isabs(xdg) else Path.home() / ".cache"
    except RuntimeError as error:  # ("Could not determine home directory")
        where = (f"{TUNING_ENV}={explicit!r}" if explicit
                 else "the default tuning file (~/.cache/collectives/tuning.json)")
        raise ValueError(f"{where}: {str(error).rstrip('.')}: set {TUNING_ENV} to a path without '~'"
                         + ("" if explicit else " or XDG_CACHE_HOME")) from None
    return Path(cache) / "collectives" / "tuning.json"


TUNING_MAX_BYTES = 16 << 20  # a calibration per world size is a few hundred bytes


# What to do about a tuning file that cannot be used: when reading it, and when a
# calibration is to be added to it (there "recalibrate" would send the user in a circle).
# (the 84th review: "delete it or recalibrate" did, and --calibrate refused the same file)
_READ_ADVICE = (f"delete or move it (or set {TUNING_ENV} to another file), then recalibrate "
                "(collectives-bench --calibrate)")
_WRITE_ADVICE = (f"calibrating adds to this file: move what is in the way, or set {TUNING_ENV} "
                 "to another file, then calibrate")


def _document(path: Path, advice: str) -> dict:
    """The tuning file's JSON, {} when there is none; each ValueError ends with `advice`."""
    try:
        data = json.loads(read_regular(path, TUNING_MAX_BYTES))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise ValueError(f"tuning file {path} is unreadable ({type(error).__name__}: {error}); "
                         f"{advice}") from None
    if not isinstance(data, dict):
        raise ValueError(f"tuning file {path} holds a {type(data).__name__}, not an object; "
                         f"{advice}")
    if type(data.get("version")) is not int or data["version"] != TUNING_VERSION:
        raise ValueError(f"tuning file {path} has version {data.get('version')!r}, "
                         f"expected {TUNING_VERSION}; {advice}")
    return data


def read_tuning(path: Path | None = None) -> dict[int, Calibration]:
    """The calibrations in the tuning file by world size; {} when there is no file.

    Any malformed content (wrong types, missing or unknown keys) is a ValueError naming
    the file and the entry.
    """
    return _calibrations(tuning_path() if path is None else Path(path), _READ_ADVICE)


def _calibrations(path: Path, advice: str) -> dict[int, Calibration]:
    """read_tuning's work; each ValueError ends with `advice`."""
    data = _document(path, advice)
    entries = data.get("calibrations", {})
    if not isinstance(entries, dict):
        raise ValueError(f"tuning file {path}: 'calibrations' must be an object, got "
                         f"{type(entries).__name__}; {advice}")
    calibrations = {}
    for size, entry in entries.items():
        try:
            if not (size.isdigit() and size == str(int(size))):
                raise ValueError("the key must be a world size such as \"2\"")
            calibrations[int(size)] = Calibration.from_json(entry)
            if calibrations[int(size)].size != int(size):  # (its native table would not fit)
                raise ValueError(f"it was measured at np={calibrations[int(size)].size}")
        except (TypeError, KeyError, AttributeError, ValueError, OverflowError,
                RecursionError) as error:  # OverflowError: a 400-digit number
            raise ValueError(f"tuning file {path}: the entry for np={size!r} is malformed "
                             f"({type(error).__name__}: {error}); {advice}") from None
    return calibrations


def check_tuning_file(path: Path | None = None) -> Path:
    """The tuning file's path, once its folder is made; ValueError naming the file and what
    is wrong when a calibration could not be added to it: a folder on its path is no
    folder, no file can be created beside it, something other than a regular file is
    there, or it is a file read_tuning refuses. Calibrating calls it before measuring
    (after, a corrupt file lost 48 s of measurements, a parent that is a file gave a
    FileExistsError traceback).
    """
    path = tuning_path() if path is None else Path(path)
    blocking = next((p for p in path.parents if os.path.lexists(p) and not p.is_dir()), None)
    if blocking is not None:
        raise ValueError(f"tuning file {path}: {blocking} is not a folder; {_WRITE_ADVICE}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"tuning file {path}: cannot make its folder ({error.strerror or error}); "
                         f"{_WRITE_ADVICE}") from None
    try:
        check_writable(path)
    except ValueError as error:
        raise ValueError(f"tuning file: {error}; {_WRITE_ADVICE}") from None
    _calibrations(path, _WRITE_ADVICE)
    return path


def write_calibration(calibration: Calibration, path: Path | None = None, **about: object) -> Path:
    """Add (or replace) `calibration` in the tuning file, atomically; returns the path.

    `about` (host, date, transport, ...) is stored beside the calibrations. Check the file
    with check_tuning_file before measuring what goes into it.
    """
    path = tuning_path() if path is None else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with folder_locked(path.parent):  # calibrations written at once all stay
        document = _document(path, _WRITE_ADVICE)
        entries = document.setdefault("calibrations", {})
        entries[str(calibration.size)] = calibration.as_json()
        document.update(about, version=TUNING_VERSION)
        document["calibrations"] = {size: entries[size] for size in sorted(entries, key=int)}
        write_atomically(path, json.dumps(document, indent=1) + "\n")
    return path


def load_calibration(size: int, path: Path | None = None) -> tuple[Calibration, str]:
    """The calibration for `size` ranks and where it came from.

    The entry measured at `size`, else the one at the nearest measured size (its native
    table is then not used), else DEFAULT_CALIBRATION.
    """
    entries = read_tuning(path)
    if size in entries:
        return entries[size], f"tuning file, np={size}"
    if entries:
        nearest = min(entries, key=lambda measured: (abs(measured - size), measured))
        return replace(entries[nearest], size=size, native=()), f"tuning file, np={nearest} (nearest)"
    return replace(DEFAULT_CALIBRATION, size=size), "defaults (no tuning file)"
