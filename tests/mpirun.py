"""Launch a test worker under a real mpiexec and fail the test with its output if it fails."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def mpiexec() -> str:
    """The mpiexec installed beside this Python (the `mpi` extra), else the one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise RuntimeError("no mpiexec: install the project with the `mpi` extra")
    return found


def run_workers(np_: int, worker: str, *args: str, env: dict | None = None,
                timeout: float = 600, expect_ok: bool = True) -> subprocess.CompletedProcess:
    """Run `python -m tests.workers.<worker> args` on `np_` ranks; return the finished process.

    With expect_ok, a non-zero exit fails the calling test and shows every rank's output.
    """
    command = [mpiexec(), "-n", str(np_), sys.executable, "-m", f"tests.workers.{worker}", *args]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run(command, cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if expect_ok and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(command[1:])} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout[-20000:]}\n--- stderr ---\n{proc.stderr[-20000:]}"
        )
    return proc


def ended_by_abort(proc: subprocess.CompletedProcess, code: int) -> bool:
    """Whether rank 0's MPI_Abort(code) ended the job: MPICH's line names the code, or
    mpiexec exits with it (or 9, when it reports the ranks it killed); hydra sometimes drops
    the line under load (a CI failure)."""
    return proc.returncode in (code, 9) or f", {code}) - process 0" in proc.stderr
