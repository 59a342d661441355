"""What workers share: deterministic per-rank data, the NumPy reference, a failure tally."""
from __future__ import annotations

import hashlib
import signal
import sys

import numpy as np

OPS = ("sum", "avg", "max", "min")


def rank_data(count: int, dtype: np.dtype, rank: int) -> np.ndarray:
    """Small integers (exact in every dtype when summed over <= 8 ranks), different per rank."""
    values = (np.arange(count, dtype=np.int64) * 7 + rank * 3) % 9 - 4
    return values.astype(dtype)


def reference(count: int, dtype: np.dtype, size: int, op: str) -> np.ndarray:
    """The expected all-reduce of rank_data over `size` ranks, computed in float64/int64."""
    if count == 0:
        return np.zeros(0, dtype)
    stack = np.stack([rank_data(count, np.float64, r) for r in range(size)])
    if op in ("sum", "avg"):
        total = stack.sum(axis=0)
        if op == "avg":
            total = total // size if np.dtype(dtype).kind == "i" else total / size
        return total.astype(dtype)
    return (stack.max(axis=0) if op == "max" else stack.min(axis=0)).astype(dtype)


def digest(array: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).view(np.uint8).tobytes()).hexdigest()


class Tally:
    """Collects failures; `finish()` prints them and exits non-zero if there were any."""

    def __init__(self, rank: int):
        self.rank = rank
        self.checked = 0
        self.failures: list[str] = []

    def check(self, ok: bool, what) -> None:
        """`what`: the failure's text, or a function making it (arrays formatted for every
        passing check cost a tenth of a matrix worker's run)."""
        self.checked += 1
        if not ok:
            self.failures.append(what() if callable(what) else what)

    def finish(self) -> None:
        for failure in self.failures[:50]:
            print(f"rank {self.rank} FAIL {failure}", flush=True)
        print(f"rank {self.rank}: {self.checked - len(self.failures)}/{self.checked} checks passed",
              flush=True)
        sys.exit(1 if self.failures else 0)


def everyone(obj) -> list:
    """`obj` from every rank, gathered outside the library under test: over MPI's world
    communicator, or torch.distributed's default group under torchrun."""
    from collectives.bootstrap import launched_by_torchrun

    if launched_by_torchrun():
        import torch.distributed as dist

        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, obj)
        return gathered
    from mpi4py import MPI

    return MPI.COMM_WORLD.allgather(obj)


def check_shape_mismatch(comm, tally: Tally, call, expected: np.ndarray) -> None:
    """`call(x)` of 4 ones (a route cached), then of 5 on the last rank only: MismatchError
    naming the shape on every rank; then `call(x)` again gives `expected`."""
    import collectives

    x = np.ones(4, np.float32)
    call(x)
    try:
        call(np.ones(5 if comm.rank == comm.size - 1 else 4, np.float32))
        tally.check(comm.size == 1, "a shape mismatch went through")
    except collectives.MismatchError as error:
        tally.check("shape" in str(error), f"mismatch names no shape: {error}")
    got = call(x)
    tally.check(got.shape == expected.shape and np.array_equal(got, expected),
                f"after the mismatch: {got}")


def interrupted_after(seconds: float, call) -> bool:
    """Run `call()` with a SIGALRM due after `seconds` whose handler raises
    KeyboardInterrupt, as a user's timeout helper or Ctrl-C would; whether it was
    interrupted (the alarm and the previous handler are restored)."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt("the test's alarm")

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        call()
        return False
    except KeyboardInterrupt:
        return True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_refused_on_one_rank(tally: Tally, what: str, call, refused_here: bool) -> None:
    """`call()` made with an argument wrong on some ranks only: TypeError or ValueError
    there, MismatchError on the others (at once: the refusal is shared)."""
    import collectives

    try:
        call()
        tally.check(False, f"{what}: accepted")
    except (TypeError, ValueError, collectives.MismatchError) as error:
        expected = (TypeError, ValueError) if refused_here else collectives.MismatchError
        tally.check(isinstance(error, expected), f"{what}: {error!r}")
