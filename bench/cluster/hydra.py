"""Starting ranks on the lab's nodes with MPICH's hydra.

mpiexec runs in the lab's head namespace (on the switch, unshaped, holding no ranks), so
it is remote to every node and the nodes' hydra proxies reach it over the lab's subnet;
``-iface eth0`` makes it offer its address there. Hydra starts one proxy per node through
its ``ssh`` launcher, whose executable is the lab's ``ssh`` script: it runs the proxy
inside that node's namespace (``bench.cluster.remote``). ``-hosts 10.77.0.2:3,10.77.0.3:2``
puts ranks 0-2 on node 0 and ranks 3-4 on node 1, so MPI's nodes are the lab's nodes.

The ranks' environment routes bytes between nodes over TCP on the node's shaped link
(UCX_TLS=self,tcp, UCX_NET_DEVICES=eth0); ranks of one node keep MPICH's shared memory,
which UCX_TLS does not govern. Without it UCX would see that every node shares one
kernel and move bytes "between nodes" through shared memory, past the links.

Example::

    command = mpiexec_command(Layout("clab-1a2b3c"), [3, 2], ["python", "-m", "x"],
                              launcher=Path("/run/collectives-cluster/clab-1a2b3c/ssh"))
"""
from __future__ import annotations

import functools
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import LabError
from .layout import IFACE, Layout

__all__ = ["RANK_ENVIRONMENT", "find_hydra", "launcher_path", "mpiexec_command",
           "rank_environment", "write_launcher"]

RANK_ENVIRONMENT = {"UCX_TLS": "self,tcp", "UCX_NET_DEVICES": IFACE, "GLOO_SOCKET_IFNAME": IFACE}


@functools.cache
def find_hydra() -> str:
    """The venv's (or PATH's) mpiexec, checked to be MPICH's hydra."""
    from bench.launch import find_mpiexec

    mpiexec = find_mpiexec()
    try:
        version = subprocess.run([mpiexec, "--version"], capture_output=True, text=True,
                                 timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LabError(f"{mpiexec} --version failed ({error}): reinstall the 'mpi' extra "
                       "(pip install -e '.[mpi]')") from None
    if "HYDRA" not in version:
        raise LabError(f"{mpiexec} is not MPICH's hydra, which the lab needs to start ranks "
                       "in its namespaces: install the 'mpi' extra (pip install -e '.[mpi]', "
                       "which brings MPICH)")
    return mpiexec


def launcher_path(folder: Path) -> Path:
    """Where a lab keeps its ``ssh`` for hydra (``-launcher-exec``)."""
    return folder / "ssh"


def write_launcher(folder: Path, name: str) -> Path:
    """The ``ssh`` that hydra calls for lab ``name``, run as ``ssh [-x] HOST COMMAND``."""
    path = launcher_path(folder)
    path.write_text(f"#!/bin/sh\nexec {sys.executable} -m bench.cluster.remote {name} \"$@\"\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def mpiexec_command(layout: Layout, ppn: Sequence[int], command: Sequence[str], *,
                    launcher: Path) -> list[str]:
    """``ip netns exec HEAD mpiexec ...`` placing ``ppn[i]`` ranks of ``command`` on node i."""
    hosts = ",".join(f"{layout.address(i)}:{count}" for i, count in enumerate(ppn))
    return ["ip", "netns", "exec", layout.head, find_hydra(),
            "-launcher", "ssh", "-launcher-exec", str(launcher), "-iface", IFACE,
            "-hosts", hosts, "-n", str(sum(ppn)), *command]


def rank_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment, the lab's routing over the links, then ``extra``."""
    return {**os.environ, **RANK_ENVIRONMENT, **(extra or {})}
