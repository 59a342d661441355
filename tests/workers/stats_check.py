"""comm.stats(): wire bytes against the ring's closed form, 16-bit traffic half the 32-bit.

Usage: mpiexec -n P python -m tests.workers.stats_check
"""
from __future__ import annotations

import numpy as np

import collectives
from collectives.stats import native_traffic
from tests.workers.common import Tally

COUNT = 60060  # divisible by 2, 3, 4 and 5: equal ring chunks


def main() -> None:
    comm = collectives.init()
    tally = Tally(comm.rank)
    p = comm.size
    x = np.random.default_rng(comm.rank).standard_normal(COUNT).astype(np.float32)

    comm.reset_stats()
    comm.allreduce(x, algorithm="ring")
    comm.allreduce(x, algorithm="ring")
    full = comm.stats()["ring"]
    ring_bytes = 2 * 2 * (p - 1) * COUNT * 4 // p  # two calls of 2(p-1)/p * n bytes
    tally.check(full.calls == 2, f"ring calls {full.calls}, want 2")
    tally.check(full.bytes_sent == ring_bytes and full.bytes_received == ring_bytes,
                f"ring bytes sent {full.bytes_sent} received {full.bytes_received}, "
                f"want {ring_bytes}")
    tally.check(full.seconds > 0 or p == 1, "ring time not recorded")

    for compression in ("fp16", "bf16"):
        comm.reset_stats()
        comm.allreduce(x, algorithm="ring", compression=compression)
        comm.allreduce(x, algorithm="ring", compression=compression)
        stats = comm.stats()
        half = stats[f"ring+{compression}"]
        tally.check(2 * half.bytes_sent == full.bytes_sent
                    and 2 * half.bytes_received == full.bytes_received,
                    f"{compression}: sent {half.bytes_sent} received {half.bytes_received}, "
                    f"want half of {full.bytes_sent}")
        if p > 1:
            tally.check(stats["scale-agreement"].calls == 2, f"{compression}: scale agreements")
        if comm.rank == 0:
            print(f"np={p} ring float32 {COUNT} elements, 2 calls\n{stats}", flush=True)

    comm.reset_stats()
    comm.allreduce(x, algorithm="native")
    native = comm.stats()["native"]
    tally.check(native.modelled and native.bytes_sent == native_traffic(x.nbytes, p),
                f"native: {native}")
    check_riding_broadcast(comm, tally)
    comm.reset_stats()
    tally.check(len(comm.stats()) == 0 and comm.stats().bytes_sent == 0, "reset_stats kept totals")
    tally.finish()


def check_riding_broadcast(comm, tally: Tally) -> None:
    """Only root's data rides in a small broadcast: every rank counted (p - 1) * nbytes
    sent and received (the 107th review)."""
    p, root, nbytes = comm.size, comm.size - 1, 1000
    comm.reset_stats()
    comm.broadcast(np.zeros(nbytes, np.uint8).view(np.float32), root=root)
    if p == 1:
        return
    direct = comm.stats()["broadcast:direct"]
    want = ((p - 1) * nbytes, 0) if comm.rank == root else (0, nbytes)
    tally.check((direct.bytes_sent, direct.bytes_received) == want,
                f"riding broadcast: sent {direct.bytes_sent} received {direct.bytes_received}, "
                f"want {want}")


if __name__ == "__main__":
    main()
