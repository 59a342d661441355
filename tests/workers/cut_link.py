"""A loop of all-reduces whose ranks end on their own when a node's link is cut.

Usage (on a lab): python -m tests.workers.cut_link OUTDIR
Each rank writes OUTDIR/pid<rank> (its pid), then runs training-like steps: an all-reduce,
then STEP_PAUSE s of "compute". After READY_AFTER steps each rank writes OUTDIR/ready<rank>:
once every rank has, the test cuts a node's link, in the pause, so that every rank's next
all-reduce starts after the cut and times out in its agreement exchange, or hears first
from a rank on its node that gave up. A rank whose all-reduce raises (CollectiveTimeout
after COLLECTIVES_TIMEOUT, or PeerError) writes
OUTDIR/rank<rank>.json (the message and when, in time.time()) and calls comm.abort(), which
must end the process within COLLECTIVES_ABORT_GRACE even when the launcher is out of reach.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import collectives
from tests.workers.common import rank_data

COUNT = 1 << 16
READY_AFTER = 3
STEP_PAUSE = 1.0
MAX_STEPS = 120  # a bound in case nothing is cut


def main() -> None:
    outdir = Path(sys.argv[1])
    comm = collectives.init()
    (outdir / f"pid{comm.rank}").write_text(str(os.getpid()))
    x = rank_data(COUNT, np.float32, comm.rank)
    for step in range(MAX_STEPS):
        try:
            comm.allreduce(x, algorithm="ring")
        except collectives.CollectiveError as error:  # a timeout, or a peer that gave up
            seen = {"rank": comm.rank, "step": step, "error": type(error).__name__,
                    "message": str(error), "time": time.time()}
            (outdir / f"rank{comm.rank}.json").write_text(json.dumps(seen))
            comm.abort(3)
        if step + 1 == READY_AFTER:
            (outdir / f"ready{comm.rank}").write_text(str(time.time()))
        time.sleep(STEP_PAUSE)


if __name__ == "__main__":
    main()
