"""Start a bench tool on MPI ranks when it was not started by an MPI launcher.

A tool calls :func:`ensure_launched` before it imports ``mpi4py.MPI``. Under ``mpiexec``
or ``srun`` the call returns at once; started by hand, it replaces the process with
``mpiexec -n N <python> -m <module> <same args>``, so every rank runs the same command.
Tools that take :func:`add_lab_arguments` can run on a lab of emulated nodes instead
(``--nodes 2 --ppn 2 --link 1gbit``, bench/cluster, needs root): the lab is made, the tool
runs across it, the lab is removed, and the process exits with the tool's status.

Example::

    def main(argv=None):
        args = parser.parse_args(argv)
        launch.ensure_launched(module="bench.allreduce_perf", argv=argv, nranks=args.np,
                               lab=launch.lab_request(parser, args))
        from mpi4py import MPI  # only the ranks get here
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["LAUNCHER_VARIABLES", "PROGRESS_TTY", "LabRequest", "add_lab_arguments",
           "add_launch_argument", "agreed_checks", "ensure_launched", "find_mpiexec",
           "lab_request", "lab_tuning_environment", "launch_command", "link_bytes_per_s",
           "under_launcher", "world_size"]

# Set by the process managers of MPICH/Intel MPI (PMI), Open MPI, PMIx, MVAPICH and Slurm.
LAUNCHER_VARIABLES = (
    "PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK",
    "MV2_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_PROCID",
)
# Set on the ranks we start; a second launch from inside them would never end. Its value
# is "KIND:PID": KIND "local", or "lab" on the ranks of a lab we made for --nodes; PID the
# launching process, which counts only as an ancestor of a rank a launcher started (a
# leftover COLLECTIVES_BENCH_LAUNCHED=0 made --np 3 run as one rank: the fifty-third review).
_LAUNCHED = "COLLECTIVES_BENCH_LAUNCHED"
_LOCAL, _ON_LAB = "local", "lab"
# Set to "1" on the ranks when the terminal that started them shows a tty on stderr, so
# progress can redraw one line although the ranks' own stderr is a pipe.
PROGRESS_TTY = "COLLECTIVES_BENCH_TTY"
LAB_TIMEOUT_S = 3600.0  # a tool's run on a lab: ranks that cannot start leave mpiexec waiting


def add_launch_argument(parser: Any, *, default: int = 2) -> None:
    """``--np N``: how many local ranks to start when not under an MPI launcher."""
    from bench.arguments import positive_int

    parser.add_argument("--np", type=positive_int, default=default, metavar="N",
                        help="ranks to start with mpiexec when not already under an MPI "
                             f"launcher (default {default}; ignored under mpiexec/srun)")


@dataclass(frozen=True)
class LabRequest:
    """Run the tool on a lab: ``ppn`` ranks on each of ``nodes`` nodes, ``link`` each way."""

    nodes: int
    ppn: int | tuple[int, ...]
    link: str
    timeout: float = LAB_TIMEOUT_S


def add_lab_arguments(parser: Any) -> None:
    """``--nodes N --ppn K|K,K --link RATE``: run the ranks on a lab of emulated nodes."""
    from bench.arguments import link_rate, positive_seconds
    from bench.cluster.lab import parse_ppn

    def ppn(text: str) -> int | tuple[int, ...]:
        try:
            counts = parse_ppn(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return counts if isinstance(counts, int) else tuple(counts)

    def link(text: str) -> str:
        link_rate(text)
        return text

    parser.add_argument("--nodes", type=int, default=None, metavar="N",
                        help="run on a lab of N emulated nodes with shaped links (needs "
                             "root; docs/cluster.md) instead of local ranks; --np is ignored")
    parser.add_argument("--ppn", type=ppn, default=None, metavar="K|K,K",
                        help="with --nodes: ranks per node, one count or one per node such as "
                             "3,2 (default 1)")
    parser.add_argument("--link", type=link, default=None, metavar="RATE",
                        help="with --nodes: each node's link rate each way, e.g. 1gbit "
                             "(default none: unshaped)")
    parser.add_argument("--lab-timeout", type=positive_seconds, default=LAB_TIMEOUT_S,
                        metavar="S",
                        help="with --nodes: end the run and every process on the nodes after "
                             f"S seconds (default {LAB_TIMEOUT_S:.0f}): mpiexec never ends by "
                             "itself when some ranks cannot start")


def lab_request(parser: Any, args: Any) -> LabRequest | None:
    """The lab that ``add_lab_arguments``' options ask for; None without --nodes (or a
    --ppn list). Refused by ``parser.error``: a lab the lab cannot make, or whose ranks
    (all on this machine) would not fit in its memory."""
    from bench.arguments import refuse_beyond_memory
    from bench.cluster.layout import MAX_NODES

    if args.nodes is None and not isinstance(args.ppn, tuple):
        if args.ppn is not None or args.link is not None:
            parser.error("--ppn and --link need --nodes N (or a --ppn list such as 3,2)")
        return None
    nodes = len(args.ppn) if args.nodes is None else args.nodes
    if not 1 <= nodes <= MAX_NODES:
        parser.error(f"--nodes must be 1..{MAX_NODES}, got {nodes}")
    if isinstance(args.ppn, tuple) and len(args.ppn) != nodes:
        parser.error(f"--ppn {','.join(map(str, args.ppn))} gives {len(args.ppn)} counts "
                     f"for --nodes {nodes}: give one count, or one per node")
    lab = LabRequest(nodes=nodes, ppn=args.ppn or 1, link=args.link or "none",
                     timeout=args.lab_timeout)
    # (a lab's ranks all run here: --ppn 100000 began forking 200,000 of them)
    refuse_beyond_memory(parser, 0, ranks_here(1, lab))
    return lab


def link_bytes_per_s(lab: LabRequest | None) -> float | None:
    """The lab's link rate each way in bytes/s; None without a lab or on unshaped links."""
    from bench.cluster.rate import LinkRate

    rate = None if lab is None else LinkRate.parse(lab.link)
    return None if rate is None else rate.bytes_per_second


def ranks_here(np_: int, lab: LabRequest | None,
               environ: Mapping[str, str] = os.environ) -> int:
    """How many ranks run on this machine: all of a lab's; under a launcher its local count
    (MPICH's MPI_LOCALNRANKS, Open MPI's OMPI_COMM_WORLD_LOCAL_SIZE; 1 where none is set);
    else `np_` (--np, which a launcher's ranks ignore)."""
    if lab is not None:
        return sum(lab.ppn) if isinstance(lab.ppn, tuple) else lab.nodes * lab.ppn
    if under_launcher(environ):
        for name in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
            count = _count(environ.get(name, ""))
            if count is not None:
                return max(1, count)
        return 1
    return np_


def world_size(np_: int, lab: LabRequest | None,
               environ: Mapping[str, str] = os.environ) -> int | None:
    """How many ranks the run has, from the arguments and the environment alone: a lab's,
    `np_` when this process will start them, under a launcher the count it gives (MPICH's
    PMI_SIZE, Open MPI's OMPI_COMM_WORLD_SIZE, MVAPICH's MV2_COMM_WORLD_SIZE); None where
    it gives none."""
    if lab is not None or not under_launcher(environ):
        return ranks_here(np_, lab, environ)
    counts = (_count(environ.get(name, "")) for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                                                          "MV2_COMM_WORLD_SIZE"))
    return next((count for count in counts if count is not None), None)


def _count(text: str) -> int | None:
    """A count or process id from the environment: ASCII digits, at most 9 ('²' passed
    isdigit, then int() raised; so did 5000 digits); None otherwise."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def under_launcher(environ: Mapping[str, str] = os.environ) -> bool:
    """True when this process is a rank started by an MPI launcher (or by us)."""
    return bool(_launcher_marks(environ))


def _launcher_marks(environ: Mapping[str, str] = os.environ) -> list[str]:
    marked = [_LAUNCHED] if _launched_by_us(environ) else []
    return marked + [name for name in LAUNCHER_VARIABLES if name in environ]


def _launched_by_us(environ: Mapping[str, str] = os.environ) -> str | None:
    """The KIND of our launch that started this process (``local`` or ``lab``); None
    without the marker, with one whose launching process is not an ancestor (stale), or
    where no launcher started this process (the marker exported in a shell names the
    shell, an ancestor: `--np 2` ran as one rank; the fifty-seventh review)."""
    kind, _, pid = environ.get(_LAUNCHED, "").partition(":")
    number = _count(pid)
    if kind not in (_LOCAL, _ON_LAB) or number is None or number <= 1:
        return None
    launched = any(name in environ for name in LAUNCHER_VARIABLES)
    return kind if launched and number in _ancestors() else None


def _ancestors() -> set[int]:
    """This process and its parents up to init, from /proc (Linux)."""
    found, pid = set(), os.getpid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rpartition(")")[2].split()[1])  # (the name may hold spaces and ")")
    return found


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
    environ = {**os.environ, **_rank_marks()}
    if _is_open_mpi(mpiexec):
        command.append("--oversubscribe")
        environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    command += [sys.executable, "-m", module, *argv]
    return command, environ


def _rank_marks(kind: str = _LOCAL) -> dict[str, str]:
    """What the ranks we start are told: that this process launched them (`kind`), and
    whether stderr is a tty."""
    return {_LAUNCHED: f"{kind}:{os.getpid()}",
            **({PROGRESS_TTY: "1"} if sys.stderr.isatty() else {})}


def lab_tuning_environment(counts: Sequence[int], link: str) -> dict[str, str]:
    """COLLECTIVES_TUNING_FILE for a lab's ranks: the user's, else one per lab shape.

    The tuning file keeps one calibration per world size; one measured on shaped links
    must not become what ``auto`` reads on local ranks of the same count. ``[2, 2]`` at
    1gbit: ``~/.cache/collectives/tuning-lab-2+2-1gbit.json``.
    """
    from collectives.costmodel import TUNING_ENV, tuning_path

    if os.environ.get(TUNING_ENV):
        return {}
    shape = f"{'+'.join(map(str, counts))}-{link}"
    return {TUNING_ENV: str(tuning_path().with_name(f"tuning-lab-{shape}.json"))}


def _run_on_lab(*, module: str, argv: Sequence[str], lab: LabRequest) -> int:
    """Make the lab, run ``module`` across it, remove the lab; the tool's exit status."""
    from bench.cluster import Lab, LabError

    try:
        cluster = Lab(nodes=lab.nodes, link=lab.link)
    except (LabError, ValueError) as error:
        print(f"error: no lab for --nodes {lab.nodes}: {error}", file=sys.stderr)
        return 1
    with cluster:
        counts = cluster.ranks_per_node(lab.ppn)
        print(f"# lab {cluster.name}: {lab.nodes} nodes, ranks per node "
              f"{','.join(map(str, counts))}, link {cluster.rate or 'unshaped'}",
              file=sys.stderr, flush=True)
        env = {**_rank_marks(_ON_LAB),
               **lab_tuning_environment(counts, str(cluster.rate or "none"))}
        outcome = cluster.mpiexec([sys.executable, "-m", module, *argv], ppn=counts, env=env,
                                  capture=False, timeout=lab.timeout)
    if outcome.timed_out:
        print(f"error: the run on lab {cluster.name} had not ended after {lab.timeout:.0f} s "
              "(--lab-timeout); every process on its nodes was ended", file=sys.stderr)
        return 1
    if outcome.signal is not None:  # (exit 247, without a word, was sys.exit(-9))
        print(f"error: mpiexec on lab {cluster.name} was killed by signal {outcome.signal}",
              file=sys.stderr)
    return outcome.exit_status


class _Refused(Exception):
    """A check's refusal held until the ranks compare theirs (`agreed_checks`)."""


@contextlib.contextmanager
def agreed_checks(parser: argparse.ArgumentParser):
    """Checks whose `parser.error` every rank shares.

    Under a launcher each rank checks for itself, and a check of the machine (a --json
    folder present on one node only, its memory) may fail on one rank: that rank exited
    alone and the others waited in MPI for good (the sixty-ninth review). Inside the block
    `parser.error` is held; leaving it, the ranks compare their refusals, and where any
    rank has one, rank 0 says it (naming the ranks unless all have it) and every rank
    exits with status 2. Outside a launcher, or without mpi4py, `parser.error` runs as it
    is. Refusals only: a rank that raises anything else leaves the others waiting.

    Example::

        with launch.agreed_checks(parser):
            args = parser.parse_args(argv)
            environment.check_writable(args.json)   # ValueError: parser.error it
    """
    refuse = parser.error

    def hold(message: str):
        raise _Refused(message)

    parser.error = hold
    problem = None
    try:
        yield
    except _Refused as refused:
        problem = str(refused)
    finally:
        del parser.error  # (the class's again)
    world = _launched_world()
    if world is None:
        if problem is not None:
            refuse(problem)
        return
    problems = world.allgather(problem)
    first = next((p for p in problems if p is not None), None)
    if first is None:
        return
    if world.rank == 0:
        ranks = [r for r, p in enumerate(problems) if p == first]
        refuse(first if len(ranks) == len(problems) else
               f"{_ranks_named(ranks)} (of {len(problems)}): {first}")
    sys.exit(2)


def _launched_world():
    """MPI's world communicator under a launcher (None outside one, or without mpi4py)."""
    if not under_launcher():
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        return None
    return MPI.COMM_WORLD


def _ranks_named(ranks: list[int]) -> str:
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {', '.join(map(str, ranks))}"


def ensure_launched(*, module: str, argv: Sequence[str], nranks: int,
                    lab: LabRequest | None = None) -> None:
    """Return when running under an MPI launcher; otherwise start the ranks and exit.

    ``module`` is what ``python -m`` runs on each rank and ``argv`` its arguments (the
    same the user gave, ``--np`` included: the ranks ignore it). Never returns when it
    launches: without ``lab`` the process becomes ``mpiexec -n nranks``; with it, the
    tool runs on a lab made for it, and the process exits with the tool's status.
    """
    if under_launcher():
        if lab is not None and _launched_by_us() != _ON_LAB:
            sys.exit("error: --nodes makes a lab and starts the ranks on it, but this process "
                     f"already runs under a launcher ({', '.join(_launcher_marks())} set): "
                     "run it outside mpiexec and `collectives-cluster run`, or drop --nodes")
        return
    if _LAUNCHED in os.environ:
        print(f"warning: ignoring {_LAUNCHED}={os.environ[_LAUNCHED]!r} left in the "
              "environment: no process above this one set it", file=sys.stderr, flush=True)
    if lab is not None:
        sys.exit(_run_on_lab(module=module, argv=argv, lab=lab))
    assert nranks >= 1, nranks  # (--np is a positive_int)
    command, environ = launch_command(module=module, argv=argv, nranks=nranks,
                                      mpiexec=find_mpiexec())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, environ)
