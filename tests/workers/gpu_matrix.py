"""The all-reduce matrix on CuPy arrays: algorithm x dtype x op x awkward size x layout.

Usage: mpiexec -n P python -m tests.workers.gpu_matrix ALG[,ALG...]|all [--transport T] [--large]
Inputs are those of tests.workers.allreduce_matrix, moved to the GPU in the same layout.
Checks: the result is a CuPy array with the NumPy reference's values, shape and dtype; x is
untouched; out / in place are honoured; every rank holds the same bits.
`--dry-run-on-numpy` runs the same code with NumPy in CuPy's place (checks the worker).
"""
from __future__ import annotations

import sys

if "--dry-run-on-numpy" in sys.argv:  # checks this worker's own logic on a CPU
    import numpy as cp

    cp.asnumpy = cp.asarray
else:
    import cupy as cp
import numpy as np

import collectives
from tests.workers.allreduce_matrix import LAYOUTS, check_case, sizes
from tests.workers.common import OPS, Tally, everyone


def to_device(x: np.ndarray) -> cp.ndarray:
    """x on the GPU with the same values and the same kind of layout."""
    flat = cp.asarray(np.ascontiguousarray(x))
    if x.flags.f_contiguous and not x.flags.c_contiguous:
        return cp.asfortranarray(flat)
    if not x.flags.c_contiguous:
        spaced = cp.zeros(2 * x.size, x.dtype)
        spaced[::2] = flat.reshape(-1)
        return spaced[::2]
    return flat


def option(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def main() -> None:
    names = sys.argv[1]
    comm = collectives.init(transport=option("--transport", "mpi"))
    algorithms = collectives.ALGORITHMS if names == "all" else names.split(",")
    tally = Tally(comm.rank)
    for algorithm in algorithms:
        for dtype in collectives.DTYPES:
            for count in sizes(comm.size, "--large" in sys.argv):
                for op in OPS:
                    for layout in LAYOUTS if count < 1 << 16 else ("contiguous",):
                        case, mine = check_case(comm, tally, algorithm, dtype, count, op, layout,
                                                to_array=to_device, to_host=cp.asnumpy)
                        digests = everyone(mine)
                        tally.check(len(set(digests)) == 1, f"{case}: ranks differ in bits")
    tally.finish()


if __name__ == "__main__":
    main()
