"""init(transport=...) on any machine: what moves CuPy arrays, and NumPy work never loads CuPy.

Usage: mpiexec -n P python -m tests.workers.transport_choice
"""
from __future__ import annotations

import sys

import numpy as np

import collectives
from tests.workers.common import Tally, everyone


def nccl_reason(comm) -> str | None:
    """Why NCCL cannot run on some rank, by the transport's own test (None: it can)."""
    try:
        from collectives.transport import nccl
    except ImportError as error:
        return str(error)
    keys = everyone(comm.topology.node_of[comm.rank])
    reasons = everyone(nccl.unusable_reason(keys, comm.rank))
    return next((r for r in reasons if r is not None), None)


def main() -> None:
    comm = collectives.init(transport="mpi")
    tally = Tally(comm.rank)
    y = comm.allreduce(np.arange(10, dtype=np.float32), op="sum", algorithm="ring")
    tally.check(bool((y == np.arange(10) * comm.size).all()), f"numpy sum over mpi: {y}")
    tally.check("cupy" not in sys.modules, "transport='mpi' with NumPy arrays imported CuPy")
    tally.check(comm.device_transport_name == "mpi", "CuPy arrays should go over MPI")

    reason = nccl_reason(comm)
    auto = collectives.init(transport="auto")
    want = "mpi" if reason else "nccl"
    tally.check(auto.device_transport_name == want,
                f"auto chose {auto.device_transport_name}, expected {want} ({reason})")
    y = auto.allreduce(np.ones(5, np.int64), op="max", algorithm="ring")
    tally.check(bool((y == 1).all()), f"numpy max over auto: {y}")

    try:
        collectives.init(transport="nccl")
        tally.check(reason is None, f"init(transport='nccl') worked although {reason}")
    except collectives.CollectiveError as error:
        tally.check(reason is not None and "nccl" in str(error), f"unexpected: {error}")
        if comm.rank == 0:
            print(f"transport 'nccl' refused as expected: {error}", flush=True)
    try:
        collectives.init(transport="ncl")
        tally.check(False, "init(transport='ncl') was accepted")
    except ValueError as error:
        tally.check("'nccl'" in str(error) and "'auto'" in str(error), f"message: {error}")
    tally.finish()


if __name__ == "__main__":
    main()
