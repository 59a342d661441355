"""``collectives-cluster``: make a lab of emulated nodes, run commands across it, remove it.

Example::

    collectives-cluster up --nodes 2 --link 1gbit            # prints the lab's name
    collectives-cluster run --ppn 3,2 -- python -m tests.workers.allreduce_matrix ring
    collectives-cluster check                                # the links carry their rate?
    collectives-cluster status
    collectives-cluster down clab-1a2b3c                     # or --stale, or --all
    collectives-cluster run --nodes 2 --link 1gbit --ppn 2 -- collectives-bench -b 16M -e 64M

``run`` and ``check`` use the lab named by ``--lab``, else the only lab made by ``up``;
with ``--nodes`` they make a lab just for the command and remove it afterwards. SIGTERM,
SIGHUP or Ctrl-C end the command and every process on the lab's nodes.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Sequence

from bench.arguments import link_rate, positive_int, positive_seconds

from . import linkcheck, registry
from .errors import LabError
from .lab import Lab, exiting_on_signals, parse_ppn, pids_of, remove_lab

__all__ = ["main"]

TIMEOUT_STATUS = 124  # as timeout(1)


def _ppn(text: str) -> int | list[int]:
    try:
        return parse_ppn(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_lab_choice(parser: argparse.ArgumentParser) -> None:
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--lab", metavar="NAME",
                       help="the lab to use (default: the only one made by `up`)")
    which.add_argument("--nodes", type=int, metavar="N",
                       help="instead, make a lab of N nodes for this command only")
    parser.add_argument("--link", type=link_rate, default=None, metavar="RATE",
                        help="with --nodes: each link's rate each way, e.g. 1gbit "
                             "(default none: unshaped)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collectives-cluster",
        description="A lab of emulated cluster nodes on this machine: network namespaces "
                    "on one bridge, links shaped to a rate both ways (needs root). "
                    "See docs/cluster.md.")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="make a lab that stays until `down`")
    up.add_argument("--nodes", type=int, required=True, metavar="N")
    up.add_argument("--link", type=link_rate, default=None, metavar="RATE",
                    help="each link's rate each way, e.g. 1gbit or 500mbit (default none: "
                         "unshaped)")

    run = commands.add_parser("run", help="run COMMAND on ranks across the nodes (mpiexec)")
    _add_lab_choice(run)
    run.add_argument("--ppn", type=_ppn, default=1, metavar="K|K,K,...",
                     help="ranks per node: one count for every node, or one per node such "
                          "as 3,2 (default 1)")
    run.add_argument("--timeout", type=positive_seconds, default=None, metavar="S",
                     help="end mpiexec and every process on the nodes after S seconds "
                          f"(exit status {TIMEOUT_STATUS}); mpiexec may never end by itself "
                          "when a node is cut off")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ...")

    check = commands.add_parser("check", help="measure the links: one way, both ways, "
                                              "into and out of a node, inside a node")
    _add_lab_choice(check)
    check.add_argument("--bytes", type=positive_int, default=None, metavar="N",
                       help="message size (default: ~0.3 s worth at the link rate)")
    check.add_argument("--repeat", type=positive_int, default=3, metavar="R")

    commands.add_parser("status", help="list the labs on this machine")

    down = commands.add_parser("down", help="remove labs: processes, namespaces, bridge, record")
    down.add_argument("names", nargs="*", metavar="NAME")
    down.add_argument("--stale", action="store_true",
                      help="every lab whose creating process is gone")
    down.add_argument("--all", action="store_true", help="every lab, in use or not")
    return parser


@contextlib.contextmanager
def _chosen_lab(args) -> Iterator[Lab]:
    """The lab for ``run``/``check``: made for the command (--nodes), named, or the only
    one made by ``up`` (a lab another process made for itself is not offered)."""
    if args.link is not None and args.nodes is None:
        raise LabError("--link shapes a lab made for this command (--nodes N); a lab made "
                       "by `up` keeps the rate it was made with")
    if args.nodes is not None:
        with Lab(nodes=args.nodes, link=args.link) as lab:
            print(f"collectives-cluster: lab {lab.name}: {lab.nodes} nodes, link "
                  f"{lab.rate or 'unshaped'}", file=sys.stderr)
            yield lab
        return
    if args.lab is not None:
        yield Lab.existing(args.lab)
        return
    names = [record.name for record in registry.records()
             if record.recorded and record.owner is None]
    if len(names) != 1:
        raise LabError(f"{'no lab' if not names else f'{len(names)} labs'} made by `up` to "
                       f"choose from ({', '.join(names) or 'none'}): name one with --lab, "
                       "make one with `collectives-cluster up`, or give --nodes")
    yield Lab.existing(names[0])


def _run(args) -> int:
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("no command to run: collectives-cluster run [options] -- COMMAND ...")
    with _chosen_lab(args) as lab:
        outcome = lab.mpiexec(argv, ppn=args.ppn, timeout=args.timeout, capture=False)
    if outcome.timed_out:
        print(f"collectives-cluster: mpiexec had not ended after {args.timeout:g} s; every "
              f"process of lab {lab.name} was killed", file=sys.stderr)
        return TIMEOUT_STATUS
    if outcome.signal is not None:  # (killed from outside, e.g. by `down`)
        print(f"collectives-cluster: mpiexec was killed by signal {outcome.signal}",
              file=sys.stderr)
    return outcome.exit_status


def _down(args) -> int:
    if os.geteuid() != 0:  # (as any other user the removal failed silently: "removed")
        raise LabError("removing a lab needs root, as making it did: run it as root, e.g. "
                       "sudo .venv/bin/collectives-cluster down ...")
    records = registry.records()
    if args.all:
        names = [record.name for record in records]
    elif args.stale:
        names = [record.name for record in records if record.stale]
    elif args.names:
        unknown = sorted(set(args.names) - {record.name for record in records})
        if unknown:
            raise LabError(f"no lab {', '.join(unknown)}: `collectives-cluster status` lists "
                           "the labs")
        names = args.names
    else:
        raise LabError("name the labs to remove (`collectives-cluster status` lists them), "
                       "or give --stale or --all")
    for name in names:
        remove_lab(name)
        print(f"removed {name}")
    return 0


def _status() -> int:
    records = registry.records()
    for record in records:
        print(f"{record.describe()}; {len(pids_of(record.name))} processes")
    if not records:
        print("no labs")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with exiting_on_signals():
            return _command(args)
    except (LabError, ValueError) as error:
        print(f"collectives-cluster: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # (the lab's processes were ended on the way out)
        return 130


def _command(args) -> int:
    if args.command == "up":
        lab = Lab(nodes=args.nodes, link=args.link, keep=True)
        print(lab.name)
        return 0
    if args.command == "run":
        return _run(args)
    if args.command == "check":
        with _chosen_lab(args) as lab:
            linkcheck.check(lab, nbytes=args.bytes, repeat=args.repeat, capture=False)
        return 0
    if args.command == "status":
        return _status()
    return _down(args)


if __name__ == "__main__":
    sys.exit(main())
