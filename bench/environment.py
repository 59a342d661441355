"""What a benchmark's numbers depend on, its JSON file, and failing on every rank at once.

Example::

    env = environment(mpi_comm, collectives=collectives.__version__)
    with abort_on_error(mpi_comm):
        ...
    write_json("out.json", {"environment": env, "rows": rows})
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import socket
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from collectives.failure import FORWARD_PAUSE_S
from collectives.files import check_writable, write_atomically  # noqa: F401 (the tools')

if TYPE_CHECKING:
    from mpi4py import MPI

__all__ = ["abort_on_error", "environment", "write_json"]


def environment(mpi_comm: MPI.Comm, **extra: object) -> dict[str, object]:
    """Ranks, hosts, MPI library, Python and package versions, date, COLLECTIVES_* settings."""
    import mpi4py
    from mpi4py import MPI

    hostnames = mpi_comm.allgather(socket.gethostname())
    return {
        "nranks": mpi_comm.size,
        "hosts": len(set(hostnames)),
        "hostname": hostnames[0],
        "mpi_library": " ".join(MPI.Get_library_version().split("\n")[0].split()),
        "mpi_standard": "%d.%d" % MPI.Get_version(),
        "mpi4py": mpi4py.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "collectives_env": {key: value for key, value in os.environ.items()
                            if key.startswith("COLLECTIVES_")
                            and not key.startswith("COLLECTIVES_BENCH_")},
        **extra,
    }


def write_json(path: str, document: Mapping[str, object]) -> None:
    """Write ``document`` to ``path`` atomically (``collectives.files.write_atomically``:
    through a new file of its own, so concurrent writers and a planted ``.tmp`` do not
    tear it or send it elsewhere; a symlink at ``path`` is replaced, never followed, and a
    folder, FIFO, socket or device there is refused). A non-finite number (a prediction
    of a cost model whose finite figures overflowed) is written as null: JSON has no
    Infinity or NaN, and readers refuse the file (the sixty-ninth review)."""
    text = json.dumps(_finite(document), indent=1, allow_nan=False)
    write_atomically(Path(path), text + "\n")


def _finite(value):
    """`value` with every float that is inf or NaN, at any depth, made None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


# Per rank the largest message is held about this many times over (x, out, the library's
# staging and scratch), all ranks on this machine; and each rank is a Python process with
# NumPy and MPI loaded (about 80 MB resident measured).
BUFFERS_PER_RANK = 4
RANK_PROCESS_BYTES = 128 << 20


def check_memory(max_bytes: int, nranks: int, *, flag: str = "-e") -> None:
    """ValueError when `nranks` ranks sweeping up to `max_bytes` would need more memory than
    this machine has (1T asked for 256 GiB per array: a traceback, or the OOM killer;
    --ppn 100000 on a lab began forking 200,000 ranks); the advice names `flag`, the
    option that sets `max_bytes`."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    need = (BUFFERS_PER_RANK * max_bytes + RANK_PROCESS_BYTES) * nranks
    if need > physical:
        buffers = (f" and {BUFFERS_PER_RANK} buffers of the largest size, {max_bytes} "
                   "bytes" if max_bytes else "")
        raise ValueError(f"{nranks} rank(s) on this machine need about {need / 2**30:.1f} "
                         f"GiB ({RANK_PROCESS_BYTES >> 20} MiB a process{buffers}, each); it "
                         f"has {physical / 2**30:.1f} GiB: lower "
                         f"{flag + ' or ' if max_bytes else ''}the ranks")


@contextlib.contextmanager
def abort_on_error(mpi_comm: MPI.Comm) -> Iterator[None]:
    """Abort every rank when one raises, so the others do not wait for it forever."""
    try:
        yield
    except ValueError as error:  # a problem with what was asked: one line is enough
        print(f"rank {mpi_comm.rank}: error: {error}", file=sys.stderr, flush=True)
        _abort(mpi_comm, 2)
    except OSError as error:  # a file not written (a full disk): 3, where 1 says "wrong"
        print(f"rank {mpi_comm.rank}: error: {error}", file=sys.stderr, flush=True)
        _abort(mpi_comm, 3)
    except Exception:
        traceback.print_exc()
        sys.stderr.flush()
        _abort(mpi_comm, 1)


def _abort(mpi_comm: MPI.Comm, status: int) -> None:
    """MPI_Abort after a pause that lets the launcher forward the error just printed."""
    time.sleep(FORWARD_PAUSE_S)
    mpi_comm.Abort(status)
    os._exit(status)  # Abort may return before the launcher ends this rank
