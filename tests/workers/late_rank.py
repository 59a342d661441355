"""A rank that arrives after the others timed out: no memory touched after the error, and
the late rank never reports success.

Usage: mpiexec -n 2 python -m tests.workers.late_rank ALGORITHM CHECK OUTDIR
           [COLLECTIVE COUNT [DTYPE]]

Collective #2 (allreduce, or broadcast from rank 0; COUNT of DTYPE, default 64 Ki float32;
a float16 avg scales its input first, into a buffer of the library's) is in
place (out=x). Rank 1 calls it once rank 0 gave up on it (OUTDIR/gave_up). Rank 0
must raise CollectiveTimeout; then, while rank 1 arrives and runs, rank 0 fills fresh
arrays with a pattern and watches them and x for WATCH seconds: nothing may change them
(before the fix a late rank's bytes landed in freed memory: new arrays held agreement
records, `out=x` changed 2.5 s after the error, `native` crashed). Rank 1 must raise
(CollectiveTimeout or PeerError), never return a result; it reports whether its x changed
(a small `auto` call rides with rank 0's record, sent before rank 0 gave up: it must not
write x and then raise). With LATE_RANK_MISSES_NOTICE=1 rank 1 does not see rank 0's notice
as its call starts (as under load, when it waits behind the orphaned collective's messages):
MPI's own collective then completes with rank 0's orphaned request, and rank 1 must still
raise before it writes x. LATE_RANK_OUT=none: rank 1 calls without out. Each rank writes what it saw to OUTDIR/rank<r>.json; rank 0 then
ends the job with comm.abort(ABORT).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import collectives

TIMEOUT = 2.0
WATCH = 4.0
ABORT = 5
COUNT = 1 << 16  # 256 KiB of float32: large enough for MPI's rendezvous protocol
SIZES = (16, 32, 64, 128, 256, 512, 1024, COUNT)  # small and large allocations alike


def watch_memory(x: np.ndarray, seconds: float) -> list[str]:
    """Fill fresh arrays with a pattern and keep checking them and x, while driving MPI's
    progress (as any later MPI call of the program would); what changed."""
    from mpi4py import MPI

    snapshot = x.copy()
    changed = []
    held = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for size in SIZES:  # new arrays reuse freed memory, if any was freed
            fresh = np.empty(size, np.float32)
            fresh[:] = 7.0
            held.append(fresh)
        for i, a in enumerate(held):
            if not (a == 7.0).all():
                changed.append(f"fresh array {i} changed: {a[(a != 7.0)][:3]}")
        if not np.array_equal(x, snapshot, equal_nan=True):
            changed.append("out=x changed after the error")
        if changed:
            break
        held = held[-512:]
        for _ in range(100):
            MPI.COMM_WORLD.Iprobe(MPI.ANY_SOURCE, 12345)  # progress, as any MPI call makes
        time.sleep(0.001)
    return changed


def miss_notices_as_calls_begin(transport) -> None:
    """The transport's `begin` without its look at the notices (as when one waits behind
    other messages)."""
    def begin(seq: int) -> None:
        transport._seq = seq

    transport.begin = begin


def main() -> None:
    from mpi4py import MPI

    algorithm, check, outdir = sys.argv[1], sys.argv[2] == "1", Path(sys.argv[3])
    collective, count = ("allreduce", COUNT) if len(sys.argv) < 5 else (sys.argv[4],
                                                                        int(sys.argv[5]))
    dtype = np.dtype(sys.argv[6] if len(sys.argv) > 6 else np.float32)
    MPI.COMM_WORLD.Barrier()  # init must meet within TIMEOUT (MPI_Init need not sync ranks)
    comm = collectives.init(timeout=TIMEOUT, check=check)
    x = np.full(count, comm.rank + 1.0, dtype)
    options = {"op": "avg"} if dtype == np.float16 else {}
    call = getattr(comm, collective)
    call(x, algorithm=algorithm, **options)  # everyone is here
    seen: dict[str, object] = {"rank": comm.rank}
    out = x
    if comm.rank == 1:
        if os.environ.get("LATE_RANK_MISSES_NOTICE") == "1":
            miss_notices_as_calls_begin(comm._transport)
        if os.environ.get("LATE_RANK_OUT") == "none":
            out = None
        gave_up = outdir / "gave_up"
        deadline = time.monotonic() + 30
        while not gave_up.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    before = x.copy()
    start = time.monotonic()
    try:
        call(x, algorithm=algorithm, out=out, **options)
        seen["error"] = None
    except collectives.CollectiveError as error:
        seen["error"], seen["message"] = type(error).__name__, str(error)
    seen["elapsed"] = time.monotonic() - start
    seen["x_changed"] = not np.array_equal(x, before)
    if comm.rank == 0:
        (outdir / "gave_up").touch()
        seen["changed"] = watch_memory(x, WATCH)
    (outdir / f"rank{comm.rank}.json").write_text(json.dumps(seen))
    if comm.rank == 0:
        deadline = time.monotonic() + 30
        while not (outdir / "rank1.json").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        comm.abort(ABORT)
    time.sleep(60)  # ended by rank 0's abort


if __name__ == "__main__":
    main()
