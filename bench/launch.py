"""Start a bench tool on local MPI ranks when it was not started by an MPI launcher.

A tool calls :func:`ensure_launched` before it imports ``mpi4py.MPI``. Under ``mpiexec``
or ``srun`` the call returns at once; started by hand, it replaces the process with
``mpiexec -n N <python> -m <module> <same args>``, so every rank runs the same command.

Example::

    def main(argv=None):
        args = parser.parse_args(argv)
        launch.ensure_launched(module="bench.allreduce_perf", argv=argv, nranks=args.np)
        from mpi4py import MPI  # only the ranks get here
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["LAUNCHER_VARIABLES", "PROGRESS_TTY", "add_launch_argument", "ensure_launched",
           "find_mpiexec", "launch_command", "under_launcher"]

# Set by the process managers of MPICH/Intel MPI (PMI), Open MPI, PMIx, MVAPICH and Slurm.
LAUNCHER_VARIABLES = (
    "PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
    "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_PROCID",
)
# Set on the ranks we start; a second launch from inside them would never end.
_LAUNCHED = "COLLECTIVES_BENCH_LAUNCHED"
# Set to "1" on the ranks when the terminal that started them shows a tty on stderr, so
# progress can redraw one line although the ranks' own stderr is a pipe.
PROGRESS_TTY = "COLLECTIVES_BENCH_TTY"


def add_launch_argument(parser: Any, *, default: int = 2) -> None:
    """``--np N``: how many local ranks to start when not under an MPI launcher."""
    parser.add_argument("--np", type=int, default=default, metavar="N",
                        help="ranks to start with mpiexec when not already under an MPI "
                             f"launcher (default {default}; ignored under mpiexec/srun)")


def under_launcher(environ: Mapping[str, str] = os.environ) -> bool:
    """True when this process is a rank started by an MPI launcher (or by us)."""
    return _LAUNCHED in environ or any(name in environ for name in LAUNCHER_VARIABLES)


def find_mpiexec() -> str:
    """The ``mpiexec`` beside the running interpreter (the venv's), else the first on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mpiexec")
    if found is None:
        raise FileNotFoundError(
            "no mpiexec next to %s or on PATH: install the 'mpi' extra "
            "(pip install -e '.[mpi]') or start the tool under your MPI launcher"
            % sys.executable)
    return found


def _is_open_mpi(mpiexec: str) -> bool:
    """Whether ``mpiexec`` belongs to Open MPI (which refuses to oversubscribe by default)."""
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                                 timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    text = (version.stdout + version.stderr).lower()
    return "open mpi" in text or "open-mpi" in text or "openrte" in text


def launch_command(*, module: str, argv: Sequence[str], nranks: int,
                   mpiexec: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start ``module`` with ``argv`` on ``nranks`` ranks."""
    command = [mpiexec, "-n", str(nranks)]
    environ = dict(os.environ)
    environ[_LAUNCHED] = "1"
    if sys.stderr.isatty():
        environ[PROGRESS_TTY] = "1"
    if _is_open_mpi(mpiexec):
        command.append("--oversubscribe")
        environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    command += [sys.executable, "-m", module, *argv]
    return command, environ


def ensure_launched(*, module: str, argv: Sequence[str], nranks: int) -> None:
    """Return when running under an MPI launcher; otherwise exec ``mpiexec`` on ourselves.

    ``module`` is what ``python -m`` runs on each rank and ``argv`` its arguments (the
    same the user gave, ``--np`` included: the ranks ignore it). Never returns when it
    launches: the process becomes ``mpiexec`` and exits with its status.
    """
    if under_launcher():
        return
    if nranks < 1:
        raise ValueError(f"--np must be at least 1, got {nranks}")
    command, environ = launch_command(module=module, argv=argv, nranks=nranks,
                                      mpiexec=find_mpiexec())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environ)
