"""An all-reduce of more than 2**31 elements: no 32-bit count overflows on the way.

Usage: mpiexec -n 2 python -m tests.workers.agreement_large ALGORITHM [COUNT]
float16 in place (out=x), so each rank holds x plus the plan's scratch: about 6 GiB per
rank at the default COUNT = 2**31 + 5 on a ring of 2. The head and the tail (the elements
past 2**31) carry distinct values, the bulk a constant; all are checked chunk by chunk.
"""
from __future__ import annotations

import sys

import numpy as np

import collectives
from tests.workers.common import Tally

CHUNK = 1 << 26


def main() -> None:
    algorithm = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else (1 << 31) + 5
    comm = collectives.init()
    p, rank = comm.size, comm.rank
    tally = Tally(rank)
    x = np.empty(count, np.float16)
    x.fill(rank + 1)
    x[:4] = np.arange(4) * (rank + 1)
    x[-4:] = np.arange(4) + 10 * rank
    y = comm.allreduce(x, algorithm=algorithm, out=x)
    tally.check(y is x, "result is not x")
    bulk = p * (p + 1) // 2
    head = np.arange(4) * bulk
    tail = np.arange(4) * p + 10 * (p * (p - 1) // 2)
    tally.check(np.array_equal(y[:4], head), f"head {y[:4]} != {head}")
    tally.check(np.array_equal(y[-4:], tail), f"tail {y[-4:]} != {tail}")
    wrong = 0
    for lo in range(4, count - 4, CHUNK):
        hi = min(lo + CHUNK, count - 4)
        wrong += int(np.count_nonzero(y[lo:hi] != bulk))
    tally.check(wrong == 0, f"{wrong} of {count - 8} bulk elements != {bulk}")
    print(f"rank {rank}: all-reduced {count} float16 elements ({count * 2 / 2**30:.2f} GiB) "
          f"with {algorithm}", flush=True)
    tally.finish()


if __name__ == "__main__":
    main()
