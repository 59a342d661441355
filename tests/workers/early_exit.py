"""A rank that ends its program cleanly (sys.exit(0)) while the others still issue
collectives: they raise PeerError naming it within seconds, not after their timeout.

Usage: mpiexec -n P python -m tests.workers.early_exit OUTDIR
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

import collectives

TIMEOUT = 60.0
CALLS_BEFORE_EXIT = 5


def main() -> None:
    outdir = Path(sys.argv[1])
    comm = collectives.init(timeout=TIMEOUT)
    x = np.ones(1000, np.float32)
    for _ in range(CALLS_BEFORE_EXIT):
        comm.allreduce(x)
    if comm.rank == 1:
        sys.exit(0)
    seen: dict[str, object] = {"rank": comm.rank}
    start = time.monotonic()
    try:
        comm.allreduce(x)
        seen["error"] = None
    except collectives.CollectiveError as error:
        seen["error"], seen["message"] = type(error).__name__, str(error)
    seen["elapsed"] = time.monotonic() - start
    (outdir / f"rank{comm.rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main()
